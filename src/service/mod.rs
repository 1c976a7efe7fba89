//! The HTTP back-end service: API, roles, audit log, persistent jobs, case workflow, PACS client.
//!
//! `pedinorm serve` runs it; see `docs/service.md` for the API, the role × endpoint table and
//! the data layout.

pub mod anonymous;
pub mod audit;
pub mod audit_anchor;
pub mod auth;
pub mod cases;
pub mod config;
pub mod consent;
pub mod derived;
pub mod error;
pub mod extract;
pub mod guard;
pub mod jobs;
pub mod layout;
pub mod openapi;
pub mod pacs;
pub mod protect;
pub mod roles;
pub mod router;
pub mod routes;
pub mod scope;
pub mod similar;
pub mod state;
pub mod store;
pub mod studies;
pub mod sweep;
pub mod viewer;
pub mod work;

use config::ServiceConfig;
use state::{AppState, Metrics};
use std::sync::Arc;

/// A running service's parts: the router to serve and the job queue to stop.
pub struct Service {
    /// Shared state (also inside the router).
    pub state: AppState,
    /// The job worker threads.
    pub workers: Vec<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Checks the data directory's permissions, opens the state in it, requeues interrupted
    /// jobs, sweeps identified staging data left by a crash and starts the workers.
    pub fn start(config: ServiceConfig) -> Result<Service, store::StoreError> {
        let config = Arc::new(config);
        protect::private_new_files();
        let data_dir = &config.data_dir;
        let io_error = |source| store::StoreError::Io { path: data_dir.display().to_string(), source };
        protect::create_private_dir(data_dir).map_err(io_error)?;
        if let Some(rule) = protect::shared_access(data_dir).map_err(io_error)? {
            if !config.allow_shared_data_dir {
                return Err(store::StoreError::Permissions(rule));
            }
            tracing::warn!("{rule}");
        }
        let store = store::Store::open(&config.data_dir)?;
        let jobs_dir = config.state_path(layout::StateEntry::Jobs);
        std::fs::create_dir_all(&jobs_dir)
            .map_err(|source| store::StoreError::Io { path: jobs_dir.display().to_string(), source })?;
        let mut queue = jobs::JobQueue::new(
            store.clone(),
            jobs_dir,
            config.jobs.concurrency,
            config.jobs.max_queued,
            std::time::Duration::from_millis(config.jobs.stage_delay_ms),
        );
        work::register_handlers(&mut queue, config.clone(), store.clone());
        let queue = Arc::new(queue);
        let recovered = queue.recover().map_err(|e| match e {
            jobs::JobError::Store(e) => e,
            other => store::StoreError::Io {
                path: "jobs".into(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
        if recovered > 0 {
            tracing::warn!("{recovered} interrupted job(s) queued again");
        }
        let swept = sweep::sweep_staging(&config.data_dir, &store)?;
        if swept.folders > 0 {
            tracing::warn!(
                "removed {} leftover staging folder(s) of identified data ({} files, {} bytes)",
                swept.folders,
                swept.files,
                swept.bytes
            );
        }
        let workers = queue.start();
        let audit = Arc::new(audit::AuditWriter::start(&config.data_dir, &config.audit)?);
        // Warm the normative database summary so the first readers do not wait for the file.
        let normdb = config.normdb_path();
        std::thread::spawn(move || {
            let _ = work::normdb_summary(&normdb);
        });
        let anonymous = Arc::new(anonymous::AnonymousGate::new(
            config.anonymous_requests_per_minute,
            std::time::Duration::from_secs(config.anonymous_audit_window_seconds),
        ));
        let state = AppState {
            anonymous,
            config,
            store,
            jobs: queue,
            metrics: Arc::new(Metrics::default()),
            audit,
            started: std::time::Instant::now(),
            viewer_sessions: Arc::new(viewer::session::Sessions::default()),
            similar_index: Arc::new(similar::IndexCache::default()),
        };
        Ok(Service { state, workers })
    }

    /// The HTTP router.
    pub fn router(&self) -> axum::Router {
        router::router(self.state.clone())
    }

    /// Writes the audit records of anonymous requests not yet reported (at shutdown).
    pub async fn flush_anonymous(&self) {
        for record in self.state.anonymous.due(true) {
            if let Err(error) = self.state.audit.append(record).await {
                tracing::error!("audit log: {error}");
            }
        }
    }

    /// Stops the workers after their current jobs.
    pub fn stop(self) {
        self.state.jobs.shutdown();
        // Anchor every request answered so far.
        self.state.audit.checkpoint_now();
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}
