//! `pedinorm jacobian`: Jacobian determinant (or its logarithm) of a displacement field.

use pedinorm::formats::nifti::{VoxelType, write_image};
use pedinorm::formats::transform::read_field;
use pedinorm_registration::jacobian::{LOG_FLOOR, count_non_positive, jacobian_determinant};
use std::path::PathBuf;

/// Arguments of `pedinorm jacobian`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Jacobian determinant map of a displacement field (ANTs NIfTI warp).\n\n\
Values > 1 mean the fixed-space neighbourhood maps to a larger moving-space volume; values \
≤ 0 mean folding (reported as a warning). With --log-jacobian, writes ln(det), with determinants below \
1e-6 clamped first.")]
pub struct Args {
    /// The displacement field (e.g. PREFIXwarp.nii.gz).
    #[arg(long)]
    pub warp: PathBuf,
    /// Write the natural logarithm of the determinant (`--log` is taken by the global log
    /// filter).
    #[arg(long = "log-jacobian")]
    pub log_jacobian: bool,
    /// Output image (float32, on the field's grid).
    #[arg(long)]
    pub output: PathBuf,
}

/// Runs `pedinorm jacobian`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let field = read_field(&args.warp)?;
    let determinant = jacobian_determinant(&field);
    let folded = count_non_positive(&determinant);
    if folded > 0 {
        tracing::warn!(voxels = folded, warp = %args.warp.display(), "field folds (non-positive Jacobian)");
    }
    let output = if args.log_jacobian { determinant.map(|&j| j.max(LOG_FLOOR).ln()) } else { determinant };
    write_image(&args.output, &output, VoxelType::F32)?;
    Ok(())
}
