//! Per-image intensity work: N4-style bias-field correction, brain masks, intensity normalization.
//!
//! - [`bias_field`]: log-domain bias-field estimation in the manner of N4 (Tustison et al. 2010).
//! - [`brain_mask`]: a template-free brain mask from intensities and morphology.
//! - [`normalize`]: tissue-peak scaling, Nyúl–Udupa landmarks and histogram matching.
//! - [`histogram`], [`bspline`], [`morphology`]: the building blocks.

pub mod bias_field;
pub mod brain_mask;
pub mod bspline;
mod head_mask;
pub mod histogram;
pub mod morphology;
pub mod normalize;

pub use bias_field::{BiasCorrection, BiasFieldParams, correct_bias_field};
pub use brain_mask::{
    BrainExtraction, BrainMaskParams, brain_extraction, brain_mask_from_intensity, has_scalp,
};
pub use normalize::{NormalizationMethod, NormalizationReport, normalize_intensity};

/// Why an intensity step cannot run on its input.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum IntensityError {
    /// The image holds NaN or infinite values.
    #[error("image has {count} non-finite voxel values (NaN or infinity), first at voxel {first:?}")]
    NonFinite {
        /// How many voxels are not finite.
        count: usize,
        /// Index of the first one.
        first: [usize; 3],
    },
    /// All voxels considered have the same value.
    #[error("image is constant ({value}) {region}: nothing to correct or normalize")]
    Constant {
        /// The value.
        value: f32,
        /// Where: "over the whole image" or "inside the mask".
        region: &'static str,
    },
    /// The mask selects no usable voxel.
    #[error("mask is empty: {reason}")]
    EmptyMask {
        /// Why (no voxel above 0.5, or none with positive intensity).
        reason: String,
    },
    /// Two images that must share a grid do not.
    #[error("{what} grid {found:?} does not match the image grid {expected:?}")]
    GridMismatch {
        /// Which image.
        what: &'static str,
        /// Image dimensions.
        expected: [usize; 3],
        /// The other image's dimensions.
        found: [usize; 3],
    },
    /// A parameter is out of its range.
    #[error("parameter {name}: {rule}")]
    Parameter {
        /// The parameter.
        name: &'static str,
        /// The rule it breaks.
        rule: String,
    },
}

/// Checks that every voxel is finite and that the image is not constant.
pub fn check_image(image: &crate::Image<f32>) -> Result<(), IntensityError> {
    let data = image.as_slice();
    let mut count = 0usize;
    let mut first = None;
    for (index, v) in data.iter().enumerate() {
        if !v.is_finite() {
            count += 1;
            first.get_or_insert(index);
        }
    }
    if let Some(flat) = first {
        let d = image.grid().dims();
        let first = [flat / (d[1] * d[2]), (flat / d[2]) % d[1], flat % d[2]];
        return Err(IntensityError::NonFinite { count, first });
    }
    let (lo, hi) = image.finite_range().expect("all values are finite and the grid is non-empty");
    if lo == hi {
        return Err(IntensityError::Constant { value: lo, region: "over the whole image" });
    }
    Ok(())
}

/// Checks that a mask shares the image's grid dimensions.
pub fn check_same_grid(
    image: &crate::Image<f32>,
    other: &crate::Image<f32>,
    what: &'static str,
) -> Result<(), IntensityError> {
    if image.grid().dims() != other.grid().dims() {
        return Err(IntensityError::GridMismatch {
            what,
            expected: image.grid().dims(),
            found: other.grid().dims(),
        });
    }
    Ok(())
}
