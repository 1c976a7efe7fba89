//! `pedinorm users`: manage service users and their tokens.

use crate::service::auth;
use crate::service::roles::Role;
use crate::service::store::Store;
use std::path::PathBuf;

/// Arguments of `pedinorm users`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a user; prints only the new bearer token on standard output (it is not stored).
    Add {
        /// Service data directory.
        #[arg(long)]
        data_dir: PathBuf,
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
    /// List users (no tokens).
    List {
        /// Service data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Runs `pedinorm users`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Add { data_dir, name, role, centre } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let store = Store::open(&data_dir)?;
            let token = auth::add_user(&store, &name, role, centre.as_deref())?;
            println!("{token}");
        }
        Command::List { data_dir } => {
            let store = Store::open(&data_dir)?;
            for user in auth::list_users(&store)? {
                println!("{}\t{}\t{}\t{}", user.id, user.name, user.role, user.centre);
            }
        }
    }
    Ok(())
}
