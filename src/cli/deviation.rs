//! `pedinorm deviation`: deviation maps of one case against the normative database.

/// Arguments of `pedinorm deviation`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm deviation`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm deviation` is not available in this build")
}
