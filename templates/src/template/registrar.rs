//! The map step: a subject registered to the current template and warped onto its grid, and
//! the registration engines behind the [`Registrar`] trait.

use super::{MapStage, RegistrationSettings, TemplateError};
use pedinorm_registration::{
    AffineTransform, DisplacementField, Grid, Image, Interpolation, SpatialTransform, TransformChain,
    resample::resample,
};

/// The transform template → subject: `p ↦ affine(p + warp(p))` (antsApplyTransforms order
/// `[warp, affine]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectMapping {
    /// Template world → subject world affine part.
    pub affine: AffineTransform,
    /// Displacement field on the registration grid of the template, if deformable.
    pub warp: Option<DisplacementField>,
}

impl SubjectMapping {
    /// The mapping as a point transform.
    pub fn chain(&self) -> TransformChain<'_> {
        match &self.warp {
            Some(warp) => TransformChain::new(vec![warp as &dyn SpatialTransform, &self.affine]),
            None => TransformChain::new(vec![&self.affine]),
        }
    }
}

/// Registers a subject (moving) to a template (fixed).
pub trait Registrar: Sync {
    /// The transform template → subject for one map step.
    fn register(
        &self,
        template: &Image<f32>,
        subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError>;
}

/// The output of one map step.
#[derive(Debug, Clone)]
pub struct MapOutput {
    /// Template → subject.
    pub mapping: SubjectMapping,
    /// The subject resampled onto the template grid through the mapping.
    pub warped: Image<f32>,
    /// Correlation of the warped subject with the template over the template foreground.
    pub similarity: f64,
    /// Mean displacement norm (mm) of the warp over its grid, `None` for affine-only steps.
    pub warp_norm_mm: Option<f64>,
}

/// The map step: registers `subject` to `template` and warps it onto the template grid.
pub fn map_subject(
    template: &Image<f32>,
    subject: &Image<f32>,
    stage: MapStage,
    registrar: &dyn Registrar,
) -> Result<MapOutput, TemplateError> {
    let mapping = registrar.register(template, subject, stage)?;
    let warped = resample(subject, template.grid(), &mapping.chain(), Interpolation::Linear, 0.0);
    let similarity = crate::qc::foreground_correlation(template, &warped);
    let warp_norm_mm = mapping.warp.as_ref().map(crate::qc::mean_displacement_norm);
    Ok(MapOutput { mapping, warped, similarity, warp_norm_mm })
}

/// pedinorm's registration engine as a [`Registrar`]: the template is shrunk (with Gaussian
/// anti-aliasing) to about `spacing_mm`, the subject is registered at full resolution onto
/// it, affine (Mattes MI, centre-of-mass and size initialization) then, in deformable
/// iterations, greedy diffeomorphic with squared local correlation (radius 2 voxels).
#[derive(Debug, Clone, Default)]
pub struct PedinormRegistrar {
    /// The settings (spacing, iterations).
    pub settings: RegistrationSettings,
}

impl Registrar for PedinormRegistrar {
    fn register(
        &self,
        template: &Image<f32>,
        subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError> {
        use pedinorm_registration::{RegistrationPlan, register};
        let settings = &self.settings;
        let factor = registration_factor(template.grid(), settings.spacing_mm);
        let fixed = pedinorm_registration::smooth::anti_aliased_level(template, factor);
        let mut plan =
            RegistrationPlan::template_build(&settings.affine_iterations, &settings.deformable_iterations);
        if stage == MapStage::Affine {
            plan.deformable = None;
        }
        let result =
            register(&fixed, subject, &plan).map_err(|e| TemplateError::Registration(e.to_string()))?;
        let warp = result.deformable.map(|deformable| deformable.forward);
        Ok(SubjectMapping { affine: result.affine, warp })
    }
}

/// The integer shrink factor bringing a grid's finest spacing closest to `spacing_mm` (≥ 1).
pub fn registration_factor(template: &Grid, spacing_mm: f64) -> usize {
    let finest = template.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
    if spacing_mm > 0.0 { (spacing_mm / finest).round().max(1.0) as usize } else { 1 }
}

/// A registrar for tests and for inputs already in template space: identity affine, no warp
/// in the affine stage, a zero warp on the registration grid in the deformable stage.
#[derive(Debug, Clone, Default)]
pub struct IdentityRegistrar {
    /// Registration spacing (mm) deciding the warp grid, as the real registrar does.
    pub spacing_mm: f64,
}

impl Registrar for IdentityRegistrar {
    fn register(
        &self,
        template: &Image<f32>,
        _subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError> {
        let warp = match stage {
            MapStage::Affine => None,
            MapStage::AffineAndDeformable => {
                Some(DisplacementField::zeros(&registration_grid(template.grid(), self.spacing_mm)))
            }
        };
        Ok(SubjectMapping { affine: AffineTransform::identity(), warp })
    }
}

/// The grid registration runs on: the template grid shrunk by the integer factor that brings
/// its finest spacing closest to `spacing_mm` (at least 1).
pub fn registration_grid(template: &Grid, spacing_mm: f64) -> Grid {
    template.shrink(registration_factor(template, spacing_mm))
}
