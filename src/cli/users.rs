//! `pedinorm users`: manage service users and their tokens.

/// Arguments of `pedinorm users`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm users`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm users` is not available in this build")
}
