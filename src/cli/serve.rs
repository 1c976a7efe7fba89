//! `pedinorm serve`: run the HTTP back-end service.

use anyhow::Context;
use pedinorm::service::Service;
use pedinorm::service::config::ServiceConfig;
use pedinorm::service::layout::StateEntry;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `pedinorm serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML; see docs/service.md). Without it, embedded defaults under --data-dir.
    #[arg(long, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite state, uploads, job outputs, ingested studies).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (overrides the configuration). Port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Write the bound address (`host:port`) to this file once listening (for scripts and tests).
    #[arg(long)]
    pub address_file: Option<PathBuf>,
    /// Start even when the data directory is open to group or others (warns instead of refusing).
    #[arg(long)]
    pub allow_shared_data_dir: bool,
    /// Rebuild the similar-case index (the signatures of the cases' deviation results) from
    /// every finished deviation job's outputs before serving.
    #[arg(long)]
    pub rebuild_similar: bool,
}

/// Runs `pedinorm serve`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut config = match (&args.config, &args.data_dir) {
        (Some(path), _) => ServiceConfig::from_file(path)?,
        (None, Some(dir)) => ServiceConfig::with_data_dir(
            dir.clone(),
            args.listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        ),
        (None, None) => anyhow::bail!("give --config FILE or --data-dir DIR"),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.allow_shared_data_dir |= args.allow_shared_data_dir;
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, args.address_file, args.rebuild_similar))
}

async fn serve(
    config: ServiceConfig,
    address_file: Option<PathBuf>,
    rebuild_similar: bool,
) -> anyhow::Result<()> {
    let tls = config.tls.clone();
    let listen = config.listen;
    let service = Service::start(config).context("opening the service state")?;
    if rebuild_similar {
        let state = service.state.clone();
        let rebuilt = tokio::task::spawn_blocking(move || {
            let jobs_dir = state.config.state_path(StateEntry::Jobs);
            pedinorm::service::similar::rebuild(&state.store.lock(), &jobs_dir)
        })
        .await??;
        eprintln!(
            "similar-case index rebuilt: {} signatures recorded, {} finished deviation jobs without readable outputs",
            rebuilt.recorded, rebuilt.unreadable
        );
    }
    let router = service.router();
    let std_listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown_handle.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(path) = &address_file {
        pedinorm::atomic::write_bytes(path, bound.to_string().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!("pedinorm service listening on {scheme}://{bound}");
    // The client address keys the rate limit of requests without a valid token.
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(tls) => {
            // The ring provider is the one compiled in; install it once for rustls.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls_config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .with_context(|| {
                    format!("TLS certificate {} / key {}", tls.cert.display(), tls.key.display())
                })?;
            axum_server::from_tcp_rustls(std_listener, tls_config).handle(handle).serve(app).await?;
        }
        None => {
            axum_server::from_tcp(std_listener).handle(handle).serve(app).await?;
        }
    }
    service.flush_anonymous().await;
    let stopper = tokio::task::spawn_blocking(move || service.stop());
    let _ = stopper.await;
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}
