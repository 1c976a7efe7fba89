//! Unbiased template construction in the manner of antsMultivariateTemplateConstruction2, as
//! explicit pure steps a batch system can run separately:
//!
//! * [`init_target`] — the starting target: the weighted average of the subjects, each
//!   translated so its intensity centre of mass lands on the mean centre of mass;
//! * [`map_subject`] — one subject against the current template (affine, then optionally
//!   deformable), giving the transform template → subject and the subject warped to the
//!   template grid;
//! * [`ReduceAccumulator`] — the reduce step, streaming over subjects (one image in memory at a
//!   time): weighted average of the warped subjects, then the *shape update*
//!   ([`shape_update`]): the weighted mean warp scaled by −gradient step (0.25), resampled
//!   through the inverse of the mean affine, applied four times after that inverse affine,
//!   so the template drifts toward the population centre; then optional Laplacian sharpening.
//!
//! The first iteration (index 0) maps affinely only, so the deformable iterations start from
//! an affine average, as the reference script does. Registration itself is behind the
//! [`Registrar`] trait; [`PedinormRegistrar`] is pedinorm's affine + diffeomorphic engine.
//!
//! One job per module: [`init`] (the first target, the template grid, weighted means),
//! [`registrar`] (the map step and the registration engines behind it), [`reduce`] (the
//! reduce step, the shape update and sharpening); this module holds the configuration.

use crate::age::{AgeBracket, AgeKernel};
use serde::{Deserialize, Serialize};

mod init;
mod reduce;
mod registrar;
#[cfg(test)]
mod testing;

pub use init::{WeightedMean, centre_of_mass, init_target, positive_mean, template_grid};
pub use reduce::{ReduceAccumulator, shape_update, sharpen_laplacian};
pub use registrar::{
    IdentityRegistrar, MapOutput, PedinormRegistrar, Registrar, SubjectMapping, map_subject,
    registration_factor, registration_grid,
};

/// Why a template step failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Registration of a subject failed.
    #[error("registration failed: {0}")]
    Registration(String),
    /// An input is unusable (empty image, zero weights, mismatched grids).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Laplacian sharpening of each new template (ANTs' default `Sharpen`), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sharpening {
    /// No sharpening.
    None,
    /// `T − ΔT` (voxel-unit Laplacian), rescaled to the original foreground mean and spread.
    #[default]
    Laplacian,
}

/// Settings of the per-subject registration inside a template build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationSettings {
    /// Images finer than this are shrunk to about this spacing (mm) for registration; the
    /// resulting transforms are applied to the full-resolution subject.
    pub spacing_mm: f64,
    /// Affine iterations per pyramid level (coarse to fine).
    pub affine_iterations: Vec<usize>,
    /// Deformable iterations per pyramid level (coarse to fine).
    pub deformable_iterations: Vec<usize>,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            spacing_mm: 2.0,
            affine_iterations: vec![100, 50, 25],
            deformable_iterations: vec![40, 20, 10],
        }
    }
}

/// Which subjects a template is built from, and with which weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateTarget {
    /// Every subject (weight 1).
    AllSubjects,
    /// The subjects whose age lies in the bracket (weight 1).
    Bracket(AgeBracket),
    /// Every subject weighted by a Gaussian age kernel centred at `age_years`.
    Age {
        /// The template's age (years).
        age_years: f64,
        /// The kernel.
        kernel: AgeKernel,
    },
}

/// Everything that decides a template build's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateConfig {
    /// Which subjects and weights.
    pub target: TemplateTarget,
    /// Deformable iterations after the affine one (ANTs' default is 4).
    pub iterations: usize,
    /// Shape-update gradient step (ANTs: 0.25).
    pub gradient_step: f64,
    /// Template sharpening after each reduce.
    pub sharpening: Sharpening,
    /// Divide each warped subject by its mean before averaging (ANTs' `-a 1`).
    pub normalize_intensity: bool,
    /// Template voxel spacing (mm); `None` keeps the reference subject's grid.
    pub template_spacing_mm: Option<f64>,
    /// Per-subject registration settings.
    pub registration: RegistrationSettings,
    /// Robust z of similarity below −this flags a subject as an outlier.
    pub outlier_z: f64,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            target: TemplateTarget::AllSubjects,
            iterations: 4,
            gradient_step: 0.25,
            sharpening: Sharpening::Laplacian,
            normalize_intensity: true,
            template_spacing_mm: None,
            registration: RegistrationSettings::default(),
            outlier_z: 3.5,
        }
    }
}

impl TemplateConfig {
    /// Checks the numeric settings.
    pub fn validate(&self) -> Result<(), TemplateError> {
        let bad = |rule: &str| Err(TemplateError::InvalidInput(format!("template config: {rule}")));
        if !(self.gradient_step.is_finite() && self.gradient_step > 0.0 && self.gradient_step <= 1.0) {
            return bad("gradient_step must be in (0, 1]");
        }
        if let Some(s) = self.template_spacing_mm
            && !(s.is_finite() && s > 0.0)
        {
            return bad("template_spacing_mm must be > 0");
        }
        if !(self.registration.spacing_mm.is_finite() && self.registration.spacing_mm > 0.0) {
            return bad("registration.spacing_mm must be > 0");
        }
        if !(self.outlier_z.is_finite() && self.outlier_z > 0.0) {
            return bad("outlier_z must be > 0");
        }
        Ok(())
    }
}

/// The per-iteration kind of map step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapStage {
    /// Affine only (the first iteration).
    Affine,
    /// Affine, then diffeomorphic.
    AffineAndDeformable,
}

impl MapStage {
    /// The stage of iteration `iteration` (0 is affine only).
    pub fn of_iteration(iteration: usize) -> Self {
        if iteration == 0 { MapStage::Affine } else { MapStage::AffineAndDeformable }
    }
}
