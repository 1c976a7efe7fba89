//! `pedinorm audit`: verify the service's audit log.

use pedinorm::service::audit::Anchor;
use pedinorm::service::layout::StateEntry;
use std::path::PathBuf;

/// Arguments of `pedinorm audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Where the audit key and checkpoints are, when not in their default places.
#[derive(Debug, clap::Args)]
pub struct AnchorArgs {
    /// The audit key file (default: the file named by PEDINORM_AUDIT_KEY_FILE, else
    /// DATA_DIR/audit.key); must be the service's `audit.key_file`.
    #[arg(long)]
    pub audit_key_file: Option<PathBuf>,
    /// The checkpoint file (default DATA_DIR/audit.checkpoints).
    #[arg(long)]
    pub checkpoint_file: Option<PathBuf>,
}

impl AnchorArgs {
    /// Opens the key and checkpoint file of `data_dir`; the key must exist unless `create_key`
    /// (then the default key is made as the service makes it).
    pub fn open(&self, data_dir: &std::path::Path, create_key: bool) -> anyhow::Result<Anchor> {
        Ok(Anchor::open(
            self.audit_key_file.as_deref(),
            self.checkpoint_file.as_deref(),
            data_dir,
            create_key,
        )?)
    }
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check the sealed hash chain and that the log reaches its newest signed checkpoint; exits
    /// non-zero naming the first altered or removed record.
    Verify {
        /// Service data directory.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        anchor: AnchorArgs,
    },
}

/// Runs `pedinorm audit`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Verify { data_dir, anchor } => {
            let path = StateEntry::Database.under(&data_dir);
            if !path.is_file() {
                anyhow::bail!("{}: no service state database", path.display());
            }
            let anchor = anchor.open(&data_dir, false)?;
            // Open without the schema triggers being re-created on a tampered file: read only.
            let connection =
                rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let report = anchor.verify(&connection)?;
            match report.problem {
                None => {
                    let checkpoint = report.checkpoint.as_ref().map_or(0, |c| c.seq);
                    println!(
                        "audit log intact: {} records ({} sealed, {} from before the audit key), newest checkpoint at record {checkpoint}",
                        report.records,
                        report.records - report.unkeyed_records,
                        report.unkeyed_records
                    );
                    Ok(())
                }
                Some(problem) => anyhow::bail!("{problem}"),
            }
        }
    }
}
