//! `pedinorm ingest`: de-identify, pseudonymize and admit a DICOM study into database A or B.

/// Arguments of `pedinorm ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm ingest`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm ingest` is not available in this build")
}
