//! `pedinorm plan`: compute per-task resources for batch builds.

/// Arguments of `pedinorm plan`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm plan`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm plan` is not available in this build")
}
