//! pedinorm's image core and registration engine: grids and images in RAS+ millimetres,
//! resampling and smoothing, spatial transforms, similarity metrics, affine and diffeomorphic
//! registration, Jacobians, and per-image intensity work. Pure compute: no file or network I/O.

pub mod grid;
pub mod image;
pub mod interpolate;
pub mod resample;
pub mod smooth;
pub mod transform;

pub use transform::{DisplacementField, TransformChain};

pub use grid::{Grid, GridError};
pub use image::{Image, ImageError, ImageF32};
pub use interpolate::Interpolation;
pub use transform::{AffineTransform, Identity, SpatialTransform};
pub mod affine_registration;
pub mod diffeomorphic;
mod finite_difference;
pub mod intensity;
pub mod jacobian;
pub mod metrics;
pub mod plan;
pub mod segmentation;
pub mod within_subject;

pub use plan::{
    AffineStage, DeformableStage, Level, Progress, Registration, RegistrationError, RegistrationPlan,
    Schedule, Sigma, Smoothing, register, register_with_progress,
};
