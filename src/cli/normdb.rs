//! `pedinorm normdb`: build, extend, merge and inspect the HDF5 normative database.

/// Arguments of `pedinorm normdb`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm normdb`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm normdb` is not available in this build")
}
