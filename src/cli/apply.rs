//! `pedinorm apply`: apply transforms to an image (antsApplyTransforms order).

/// Arguments of `pedinorm apply`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm apply`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm apply` is not available in this build")
}
