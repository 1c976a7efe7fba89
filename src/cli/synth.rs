//! `pedinorm synth`: generate a synthetic paediatric cohort with known ground truth.

/// Arguments of `pedinorm synth`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `pedinorm synth`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`pedinorm synth` is not available in this build")
}
