//! `pedinorm users`: manage service users and their tokens. Users are never deleted: they are
//! disabled (their token fails at once) and enabled again. Every command writes an audit
//! record; `add`, which may run before the service ever started, creates the audit key where
//! the service would (`DATA_DIR/audit.key` unless a key file is named), as `serve` does.

use crate::cli::audit::AnchorArgs;
use pedinorm::service::audit::NewRecord;
use pedinorm::service::auth;
use pedinorm::service::roles::Role;
use pedinorm::service::store::Store;
use std::path::PathBuf;

/// Arguments of `pedinorm users`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// The data directory and the audit log's key and checkpoints.
#[derive(Debug, clap::Args)]
struct Audited {
    /// Service data directory.
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    anchor: AnchorArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a user; prints only the new bearer token on standard output (it is not stored).
    Add {
        #[command(flatten)]
        at: Audited,
        /// Account name.
        #[arg(long)]
        name: String,
        /// Role: admin, scientist, radiologist, committee, portal or auditor.
        #[arg(long)]
        role: String,
        /// Centre the user belongs to.
        #[arg(long)]
        centre: Option<String>,
    },
    /// List users, disabled ones included (no tokens): id, name, role, centre, state.
    List {
        #[command(flatten)]
        at: Audited,
    },
    /// Disable a user: their token fails from the next request on; nothing is deleted.
    Disable {
        #[command(flatten)]
        at: Audited,
        /// User id (from `users list`).
        #[arg(long)]
        id: i64,
    },
    /// Enable a disabled user again, with the token they had.
    Enable {
        #[command(flatten)]
        at: Audited,
        /// User id (from `users list`).
        #[arg(long)]
        id: i64,
    },
    /// Replace a user's token; prints the new token once (the old one fails at once).
    RotateToken {
        #[command(flatten)]
        at: Audited,
        /// User id (from `users list`).
        #[arg(long)]
        id: i64,
    },
}

/// Opens the state, runs `change` and records it in the audit log as `action` on `resource`.
/// The audit key must be at hand before anything changes (`create_key`: made where the
/// service would make it, when no key file is named and none exists yet).
fn audited<T>(
    at: &Audited,
    create_key: bool,
    action: &str,
    resource: String,
    change: impl FnOnce(&Store) -> Result<T, auth::AuthError>,
) -> anyhow::Result<T> {
    // `add` may be the first command of a new installation: the state and its private folder
    // come first, then the key inside it. Other commands touch nothing without the key.
    let new_store = create_key.then(|| Store::open(&at.data_dir)).transpose()?;
    let anchor = at.anchor.open(&at.data_dir, create_key)?;
    let store = match new_store {
        Some(store) => store,
        None => Store::open(&at.data_dir)?,
    };
    let result = change(&store);
    let account = std::env::var("USER").unwrap_or_default();
    let record = NewRecord {
        user: format!("{account} (command line)").trim_start().to_string(),
        role: "operator".into(),
        action: action.into(),
        resource,
        outcome: if result.is_ok() { "ok" } else { "failed" }.into(),
        ..NewRecord::default()
    };
    anchor.append_offline(&store, &record)?;
    Ok(result?)
}

/// Runs `pedinorm users`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Add { at, name, role, centre } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let add = |store: &Store| auth::add_user(store, &name, role, centre.as_deref());
            println!("{}", audited(&at, true, "user.add", "/api/v1/users".into(), add)?);
        }
        Command::List { at } => {
            for user in audited(&at, false, "user.list", "/api/v1/users".into(), auth::list_users)? {
                let state = if user.disabled { "disabled" } else { "enabled" };
                println!("{}\t{}\t{}\t{}\t{state}", user.id, user.name, user.role, user.centre);
            }
        }
        Command::Disable { at, id } => {
            let resource = format!("/api/v1/users/{id}/disable");
            let user =
                audited(&at, false, "user.disable", resource, |store| auth::set_disabled(store, id, true))?;
            eprintln!("user {} ({}) disabled", user.id, user.name);
        }
        Command::Enable { at, id } => {
            let resource = format!("/api/v1/users/{id}/enable");
            let user =
                audited(&at, false, "user.enable", resource, |store| auth::set_disabled(store, id, false))?;
            eprintln!("user {} ({}) enabled", user.id, user.name);
        }
        Command::RotateToken { at, id } => {
            let resource = format!("/api/v1/users/{id}/rotate-token");
            println!(
                "{}",
                audited(&at, false, "user.rotate_token", resource, |store| auth::rotate_token(store, id))?
            );
        }
    }
    Ok(())
}
