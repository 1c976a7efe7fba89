//! `pedinorm serve`: run the HTTP back-end service.

/// Arguments of `pedinorm serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm serve`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm serve` is not available in this build")
}
