//! `pedinorm audit`: verify the service's audit log.

/// Arguments of `pedinorm audit`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm audit`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm audit` is not available in this build")
}
