//! An image resampled through a chain of transforms, as antsApplyTransforms does: what
//! `pedinorm apply` and the Python package's `apply_transforms` run.

use crate::formats::nifti::VoxelType;
use pedinorm_registration::resample::resample;
use pedinorm_registration::{Grid, Image, Interpolation, SpatialTransform, TransformChain};

/// How values are taken from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyInterpolation {
    /// Trilinear (intensities).
    Linear,
    /// Nearest voxel (masks).
    Nearest,
    /// Nearest voxel, stored as integers (label images).
    Label,
}

impl std::str::FromStr for ApplyInterpolation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "linear" => Ok(Self::Linear),
            "nearest" | "nearestNeighbor" => Ok(Self::Nearest),
            "label" | "genericLabel" | "multiLabel" => Ok(Self::Label),
            other => Err(format!("unknown interpolation `{other}` (linear, nearest, label)")),
        }
    }
}

/// `input` resampled on `reference` through `transforms` listed in antsApplyTransforms' order
/// (as a point mapping from the reference space the first listed acts first), with the voxel
/// type it is stored as: float32, or for labels the smallest integer type holding them.
pub fn apply_transforms(
    reference: &Grid,
    input: &Image<f32>,
    transforms: &[&dyn SpatialTransform],
    interpolation: ApplyInterpolation,
    default_value: f32,
) -> (Image<f32>, VoxelType) {
    let chain = TransformChain::new(transforms.to_vec());
    let (method, voxel_type) = match interpolation {
        ApplyInterpolation::Linear => (Interpolation::Linear, VoxelType::F32),
        ApplyInterpolation::Nearest => (Interpolation::Nearest, VoxelType::F32),
        ApplyInterpolation::Label => (Interpolation::Nearest, label_type(input)),
    };
    (resample(input, reference, &chain, method, default_value), voxel_type)
}

/// The smallest integer type holding the input's labels.
fn label_type(input: &Image<f32>) -> VoxelType {
    match input.finite_range() {
        Some((lo, hi)) if lo >= 0.0 && hi <= 255.0 => VoxelType::U8,
        _ => VoxelType::I16,
    }
}
