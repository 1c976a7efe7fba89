//! `pedinorm template`: build age-specific templates.

/// Arguments of `pedinorm template`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm template`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm template` is not available in this build")
}
