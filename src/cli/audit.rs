//! `pedinorm audit`: verify the service's audit log.

use crate::service::{audit, store};
use std::path::PathBuf;

/// Arguments of `pedinorm audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check the hash chain; exits non-zero naming the first altered or removed record.
    Verify {
        /// Service data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Runs `pedinorm audit`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Verify { data_dir } => {
            let path = data_dir.join("service.sqlite");
            if !path.is_file() {
                anyhow::bail!("{}: no service state database", path.display());
            }
            // Open without the schema triggers being re-created on a tampered file: read only.
            let connection =
                rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            match audit::verify_connection(&connection).map_err(|e: store::StoreError| anyhow::anyhow!(e))? {
                Ok(records) => {
                    println!("audit log intact: {records} records");
                    Ok(())
                }
                Err(violation) => anyhow::bail!("{violation}"),
            }
        }
    }
}
