//! `pedinorm jacobian`: jacobian determinant (or its log) of a displacement field.

/// Arguments of `pedinorm jacobian`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm jacobian`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm jacobian` is not available in this build")
}
