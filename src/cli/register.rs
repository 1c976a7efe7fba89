//! `pedinorm register`: register a moving image to a fixed image (rigid, affine or diffeomorphic).

/// Arguments of `pedinorm register`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm register`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm register` is not available in this build")
}
