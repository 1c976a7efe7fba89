//! `pedinorm convert`: convert DICOM series (folder, zip or files) to NIfTI volumes with JSON sidecars.

/// Arguments of `pedinorm convert`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm convert`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm convert` is not available in this build")
}
