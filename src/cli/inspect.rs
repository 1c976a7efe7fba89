//! `pedinorm inspect`: show geometry and metadata of a NIfTI file or DICOM series (no identities).

/// Arguments of `pedinorm inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm inspect`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm inspect` is not available in this build")
}
