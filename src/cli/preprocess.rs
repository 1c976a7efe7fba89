//! `pedinorm preprocess`: bias-field correction, brain mask and intensity normalization.

/// Arguments of `pedinorm preprocess`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm preprocess`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm preprocess` is not available in this build")
}
