//! Similarity metrics with analytic gradients: Mattes mutual information, normalized
//! cross-correlation, local (windowed) cross-correlation and mean squares, and a weighted sum of
//! metrics over channel pairs.
//!
//! Every metric here follows ITK's metric contract: a *cost* (lower is better) over paired
//! samples, fixed values `f_s` and moving values `m_s` (the moving image sampled through the
//! current transform), returned with its derivative with respect to every `m_s`; the
//! registration code turns that into a gradient with respect to transform parameters or
//! displacements by the chain rule (`∂cost/∂m_s · ∇M · ∂T/∂θ`). The contract is the
//! [`Metric`] trait: the optimizers know nothing else about a metric, so a new metric is a new
//! implementation, not a new case in the optimizers.

mod global;
mod local_cc;
mod weighted_sum;

pub use global::{MattesMi, MattesMutualInformation, MeanSquares, Ncc, mean_squares, normalized_correlation};
pub use local_cc::{LocalCc, LocalCcVariant, LocalCcWork, SquaredLocalCc, box_sum, local_cc_forces};
pub use weighted_sum::WeightedSum;

use crate::plan::RegistrationError;
use std::fmt::Debug;

/// How the samples handed to a metric are laid out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// A list of sample points (affine registration): the fixed and moving intensity ranges
    /// of the whole images, for histogram bounds.
    Samples {
        /// Intensity range of the fixed image.
        fixed_range: (f32, f32),
        /// Intensity range of the moving image.
        moving_range: (f32, f32),
    },
    /// Every voxel of a C-order grid of these dimensions (deformable registration).
    Dense {
        /// Grid dimensions.
        dims: [usize; 3],
    },
}

/// A similarity metric: its parameters, checked once, and a per-level evaluator.
///
/// Implementations are values (`Debug` prints their parameters, which registration
/// descriptions record), shared between threads.
pub trait Metric: Debug + Send + Sync {
    /// Refuses parameters that break a rule (e.g. too few histogram bins).
    fn check(&self) -> Result<(), RegistrationError>;

    /// The seeded fraction of fixed samples affine registration draws (`None`: all of them).
    fn sampling(&self) -> Option<(f64, u64)> {
        None
    }

    /// An evaluator for the fixed values of one pyramid level (fixed values never change
    /// within a level, so whatever depends only on them is computed here, once). Fails when
    /// the metric cannot work on this layout (e.g. a windowed metric on scattered samples).
    fn prepare(&self, fixed: &[f32], layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError>;
}

/// A metric bound to the fixed values of one level.
pub trait MetricEvaluator: Send {
    /// The cost of the pairs (fixed values of [`Metric::prepare`], `moving`) over the samples
    /// whose `weight` is > 0 (all when `None`), and into `derivative` `∂cost/∂m_s` for every
    /// sample, up to one positive factor shared by all samples (the optimizers normalize their
    /// steps); zero where the weight is zero.
    fn value_and_derivative(&mut self, moving: &[f32], weight: Option<&[f32]>, derivative: &mut [f64])
    -> f64;
}
