//! Similarity metrics with analytic gradients: Mattes mutual information, normalized
//! cross-correlation, local (windowed) cross-correlation and mean squares.
//!
//! Every metric here is a *cost* (lower is better) over paired samples: fixed values `f_s`
//! and moving values `m_s` (the moving image sampled through the current transform). Each
//! returns the cost and its derivative with respect to every `m_s`; the registration code turns
//! that into a gradient with respect to transform parameters or displacements by the chain rule
//! (`∂cost/∂m_s · ∇M · ∂T/∂θ`).

mod global;
mod local_cc;

pub use global::{MattesMutualInformation, mean_squares, normalized_correlation};
pub use local_cc::{LocalCcVariant, LocalCcWork, box_sum, local_cc_forces};
