//! `pedinorm demo`: run the whole job on built-in synthetic data.

/// Arguments of `pedinorm demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm demo`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm demo` is not available in this build")
}
