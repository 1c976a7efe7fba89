//! Normative statistics: every normal subject is brought into its bracket template's space
//! (bias correction, affine + diffeomorphic registration, intensity matched to the template),
//! giving a normalized-intensity map and a log-Jacobian map (deformation-based morphometry),
//! both optionally smoothed; the maps are accumulated into mergeable age-node statistics and
//! then scored leave-one-out to calibrate thresholds (see `pedinorm_templates::calibration`).
//!
//! The same mapping, [`map_to_template`], is applied to cases by the deviation pipeline, so a
//! case is processed exactly like the normals it is compared with.

use super::site_model;
use crate::normdb::{
    BracketDb, BuildParameters, CalibrationRecord, Channel, Metadata, NormDb, NormDbError, SubjectNull,
    SubjectRecord, mask_indices,
};
use ndarray::Array3;
use pedinorm_registration::intensity::{
    BiasFieldParams, BrainMaskParams, NormalizationMethod, brain_mask_from_intensity, correct_bias_field,
    normalize_intensity,
};
use pedinorm_registration::metrics::Metric;
use pedinorm_registration::resample::resample;
use pedinorm_registration::smooth::{fwhm_to_sigma, smooth_mm};
use pedinorm_registration::{
    AffineTransform, DisplacementField, Image, Interpolation, RegistrationPlan, Sigma, TransformChain,
    register,
};
use pedinorm_templates::calibration::NullSummary;
use pedinorm_templates::normative::NormativeParams;
use pedinorm_templates::safeguards;
use pedinorm_templates::site_effects::SiteEffects;
use pedinorm_templates::stats::{AgeNode, NormativeAccumulator, Sex};
use rayon::prelude::*;
use std::collections::BTreeSet;

/// Why a normative step failed.
#[derive(Debug, thiserror::Error)]
pub enum NormativeError {
    /// A subject could not be processed.
    #[error("subject {subject}: {stage}: {message}")]
    Subject {
        /// Pseudonym or file of the subject.
        subject: String,
        /// Processing stage.
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The cohort or configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The database could not be built or written.
    #[error(transparent)]
    NormDb(#[from] NormDbError),
}

/// How a subject is brought into template space.
#[derive(Debug, Clone)]
pub struct MappingParams {
    /// Correct the bias field before registration.
    pub bias_correction: bool,
    /// Iterations per level of the affine stage of [`RegistrationPlan::template_map`]
    /// (template fixed, subject moving; three levels).
    pub affine_iterations: Vec<usize>,
    /// Iterations per level of its diffeomorphic stage (three levels).
    pub deformable_iterations: Vec<usize>,
    /// Smoothing of the intensity and log-Jacobian maps (FWHM, mm; 0 = none).
    pub smoothing_fwhm_mm: f64,
    /// Gaussian σ (mm) of the deformation field: the registration aligns anatomy at this
    /// scale and coarser, so a focal lesion is not warped away (a lesion that the deformation
    /// absorbs would vanish from the intensity map).
    pub field_sigma_mm: f64,
    /// Refinement of the deformation used only for the log-Jacobian channel (`None`: the
    /// log-Jacobian of the coarse deformation, as in databases of schema version 1).
    pub jacobian_refinement: Option<JacobianRefinement>,
    /// Gaussian σ (mm) of the differential bias correction of the intensity channel (`None`:
    /// none, as in databases written before it), see [`remove_differential_bias`].
    pub differential_bias_sigma_mm: Option<f64>,
}

/// σ (mm) of the standard differential bias correction: wide enough that a focal lesion
/// (radius ≤ ~10 mm) barely moves the smoothed ratio, narrow enough to follow the residual
/// bias left at the brain's edges by the template-free field estimate.
pub const DIFFERENTIAL_BIAS_SIGMA_MM: f64 = 15.0;

/// How far (natural log) one voxel's ratio to the template may pull the smoothed ratio: a
/// strong focal lesion or the ventricles must not bias their neighbourhood.
const DIFFERENTIAL_BIAS_CLAMP: f32 = 0.3;

/// Differential bias correction (Lewis & Fox 2004) of a subject warped and intensity-matched
/// to its template: the log ratio subject/template inside the template mask, clamped, is
/// smoothed with a mask-normalized Gaussian of σ mm and divided out. What a bias-field
/// estimate on the subject alone leaves — smooth over- or under-correction near the edges of
/// the brain — is removed; focal changes much smaller than σ stay.
pub fn remove_differential_bias(
    warped: &Image<f32>,
    template: &Image<f32>,
    mask: &Image<f32>,
    sigma_mm: f64,
) -> Image<f32> {
    let mut weights = Image::filled(warped.grid().clone(), 0f32);
    let mut log_ratio = Image::filled(warped.grid().clone(), 0f32);
    for (((w, t), m), (weight, ratio)) in warped
        .as_slice()
        .iter()
        .zip(template.as_slice())
        .zip(mask.as_slice())
        .zip(weights.data_mut().iter_mut().zip(log_ratio.data_mut().iter_mut()))
    {
        if *m > 0.5 && *w > 0.0 && *t > 0.0 {
            *weight = 1.0;
            *ratio = (w / t).ln().clamp(-DIFFERENTIAL_BIAS_CLAMP, DIFFERENTIAL_BIAS_CLAMP);
        }
    }
    let smooth_weights = smooth_mm(&weights, sigma_mm);
    let smooth_ratio = smooth_mm(&log_ratio, sigma_mm);
    let mut corrected = warped.clone();
    for ((v, m), (sw, sr)) in corrected
        .data_mut()
        .iter_mut()
        .zip(mask.as_slice())
        .zip(smooth_weights.as_slice().iter().zip(smooth_ratio.as_slice()))
    {
        if *m > 0.5 && *sw > 1e-3 {
            *v *= (-(sr / sw)).exp();
        }
    }
    corrected
}

/// A second, finer diffeomorphic registration of the (coarsely) warped subject to the template
/// whose composition with the coarse deformation gives the log-Jacobian channel.
///
/// The coarse deformation (σ [`MappingParams::field_sigma_mm`], regularized at
/// every iteration) cannot represent local volume change at the scale of a few millimetres: a
/// focal atrophy of 10 mm radius keeps only ~10 % of its log-Jacobian. The intensity channel
/// needs that coarseness (a lesion must not be warped away), the volume channel needs the
/// opposite, so the two channels are measured at two scales of the same mapping: intensity
/// after the coarse stage, log-Jacobian after the refinement (greedy's default regularization).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JacobianRefinement {
    /// Gaussian σ (mm) of the refinement's total field, applied after every update.
    pub field_sigma_mm: f64,
    /// Gaussian σ (mm) of the refinement's update field.
    pub update_sigma_mm: f64,
    /// Shrink factor per level, coarsest first.
    pub shrink_factors: Vec<usize>,
    /// Iterations per level.
    pub iterations: Vec<usize>,
}

impl JacobianRefinement {
    /// Greedy's default regularization (1.732 / 0.707 voxels at 2 mm, written in mm so the
    /// scale of the volume channel does not depend on the template's voxel size) on two levels.
    pub fn standard() -> Self {
        Self {
            field_sigma_mm: 1.4,
            update_sigma_mm: 3.5,
            shrink_factors: vec![2, 1],
            iterations: vec![30, 15],
        }
    }

    /// The refinement's registration plan, with the metric of the coarse registration.
    fn plan(&self, metric: std::sync::Arc<dyn Metric>) -> RegistrationPlan {
        RegistrationPlan::jacobian_refinement(
            metric,
            self.field_sigma_mm,
            self.update_sigma_mm,
            &self.shrink_factors,
            &self.iterations,
        )
    }
}

impl MappingParams {
    /// A schedule sized for 1–2 mm brains on a few cores: affine with mutual information on
    /// 4×2×1 levels, then greedy diffeomorphic with local correlation.
    pub fn standard() -> Self {
        let plan = RegistrationPlan::template_map(4.0);
        let iterations = |schedule: Option<&pedinorm_registration::Schedule>| {
            schedule.map(|s| s.iterations()).unwrap_or_default()
        };
        Self {
            bias_correction: true,
            affine_iterations: iterations(plan.affine.as_ref().map(|a| &a.schedule)),
            deformable_iterations: iterations(plan.deformable.as_ref().map(|d| &d.schedule)),
            smoothing_fwhm_mm: 4.0,
            field_sigma_mm: 4.0,
            jacobian_refinement: Some(JacobianRefinement::standard()),
            differential_bias_sigma_mm: Some(DIFFERENTIAL_BIAS_SIGMA_MM),
        }
    }

    /// The registration plan of a subject onto `space`'s template: the template-map preset
    /// with these iterations and field smoothness, the metrics restricted to the template mask.
    pub fn registration_plan(&self, space: &TemplateSpace) -> Result<RegistrationPlan, NormativeError> {
        let mut plan =
            RegistrationPlan::template_map(self.field_sigma_mm).with_fixed_mask(space.mask.clone());
        let invalid = |e: pedinorm_registration::RegistrationError| NormativeError::Config(e.to_string());
        if let Some(affine) = plan.affine.as_mut() {
            affine.schedule.set_iterations(&self.affine_iterations).map_err(invalid)?;
        }
        if let Some(deformable) = plan.deformable.as_mut() {
            deformable.schedule.set_iterations(&self.deformable_iterations).map_err(invalid)?;
        }
        Ok(plan)
    }

    /// These parameters with everything that changes the statistics (smoothing, field
    /// smoothness, log-Jacobian refinement) taken from the database the subject is compared
    /// with or added to, so a case or a new normal is processed exactly like its normals.
    pub fn for_database(&self, parameters: &BuildParameters) -> Self {
        Self {
            smoothing_fwhm_mm: parameters.smoothing_fwhm_mm,
            field_sigma_mm: parameters.field_sigma_mm,
            jacobian_refinement: parameters.jacobian_refinement.clone(),
            differential_bias_sigma_mm: parameters.differential_bias_sigma_mm,
            ..self.clone()
        }
    }

    /// A one-line description stored in the database.
    pub fn describe(&self) -> String {
        let plan = RegistrationPlan::template_map(self.field_sigma_mm);
        let stage = |metric: Option<&std::sync::Arc<dyn Metric>>, shrink: Option<Vec<usize>>| {
            (metric.map(|m| format!("{m:?}")).unwrap_or_default(), shrink.unwrap_or_default())
        };
        let affine = stage(
            plan.affine.as_ref().map(|a| &a.metric),
            plan.affine.as_ref().map(|a| a.schedule.shrink_factors()),
        );
        let deformable = stage(
            plan.deformable.as_ref().map(|d| &d.metric),
            plan.deformable.as_ref().map(|d| d.schedule.shrink_factors()),
        );
        format!(
            "affine {} shrink {:?} iterations {:?}; diffeomorphic {} shrink {:?} iterations {:?}, field smoothness ≥ {} mm; log-Jacobian refinement {}; bias correction {}",
            affine.0,
            affine.1,
            self.affine_iterations,
            deformable.0,
            deformable.1,
            self.deformable_iterations,
            self.field_sigma_mm,
            match &self.jacobian_refinement {
                Some(r) => format!(
                    "field σ {} mm, update σ {} mm, shrink {:?} iterations {:?}",
                    r.field_sigma_mm, r.update_sigma_mm, r.shrink_factors, r.iterations
                ),
                None => "none".into(),
            },
            self.bias_correction
        )
    }
}

/// A template with its mask and the intensity scale subjects are matched to.
#[derive(Debug, Clone)]
pub struct TemplateSpace {
    /// Template image.
    pub template: Image<f32>,
    /// Brain mask of the template.
    pub mask: Image<f32>,
    /// Flat indices of the mask voxels (the statistics' voxel order).
    pub indices: Vec<usize>,
    /// Template intensities at [`MATCH_PERCENTILES`] inside the mask.
    pub landmarks: Vec<f64>,
}

/// Percentiles at which subject intensities are matched to the template (piecewise linear).
pub const MATCH_PERCENTILES: [f64; 11] = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99];

impl TemplateSpace {
    /// A template space; the mask is computed from the template when not given.
    pub fn new(template: Image<f32>, mask: Option<Image<f32>>) -> Result<Self, NormativeError> {
        let mask = match mask {
            Some(m) => m,
            None => template_mask(&template)?,
        };
        if !mask.grid().same_as(template.grid(), 1e-3) {
            return Err(NormativeError::Config("template mask is on another grid than the template".into()));
        }
        let indices = mask_indices(&mask);
        if indices.len() < 27 {
            return Err(NormativeError::Config(format!("template mask has only {} voxels", indices.len())));
        }
        let landmarks = percentiles_in_mask(&template, &indices, &MATCH_PERCENTILES);
        Ok(Self { template, mask, indices, landmarks })
    }
}

/// Brain mask of a template: intensity-based, without requiring a skull.
pub fn template_mask(template: &Image<f32>) -> Result<Image<f32>, NormativeError> {
    brain_mask_from_intensity(template, &BrainMaskParams::default()).map_err(|e| NormativeError::Subject {
        subject: "template".into(),
        stage: "brain mask",
        message: e.to_string(),
    })
}

fn percentiles_in_mask(image: &Image<f32>, indices: &[usize], percentiles: &[f64]) -> Vec<f64> {
    let data = image.as_slice();
    let mut values: Vec<f32> = indices.iter().map(|&i| data[i]).collect();
    values.sort_unstable_by(|a, b| a.total_cmp(b));
    percentiles
        .iter()
        .map(|&p| {
            let position = p * (values.len() - 1) as f64;
            let lo = position.floor() as usize;
            let hi = position.ceil() as usize;
            let t = position - lo as f64;
            values[lo] as f64 * (1.0 - t) + values[hi] as f64 * t
        })
        .collect()
}

/// A subject in template space.
#[derive(Debug, Clone)]
pub struct SubjectMaps {
    /// Normalized intensity on the template grid (before smoothing).
    pub warped: Image<f32>,
    /// Smoothed normalized intensity on the template grid.
    pub intensity: Image<f32>,
    /// Smoothed log-Jacobian of the deformable part, on the template grid.
    pub logjac: Image<f32>,
    /// Template world → subject world, affine part.
    pub affine: AffineTransform,
    /// Deformable part on the template grid: template → subject is `p ↦ affine(p + forward(p))`.
    pub forward: DisplacementField,
    /// Inverse deformable part: subject → template is `q ↦ r + inverse(r)`, `r = affine⁻¹(q)`.
    pub inverse: DisplacementField,
    /// Correlation of the warped subject with the template inside the mask (QC).
    pub similarity: f64,
    /// Intensity-histogram distance of the warped subject (before intensity matching) to the
    /// template inside the mask (out-of-distribution index).
    pub histogram_distance: f64,
    /// Dice of the subject's own brain mask carried to the template with the template mask
    /// (out-of-distribution index).
    pub mask_dice: f64,
}

impl SubjectMaps {
    /// The map of one channel.
    pub fn channel(&self, channel: Channel) -> &Image<f32> {
        match channel {
            Channel::Intensity => &self.intensity,
            Channel::LogJacobian => &self.logjac,
        }
    }

    /// Pulls a template-space image onto the subject's own grid (`outside` beyond the template).
    pub fn to_native(
        &self,
        template_space_image: &Image<f32>,
        native: &pedinorm_registration::Grid,
        interpolation: Interpolation,
    ) -> Image<f32> {
        let inverse_affine = self.affine.inverse().expect("registration affines are invertible");
        let chain = TransformChain::new(vec![&inverse_affine, &self.inverse]);
        resample(template_space_image, native, &chain, interpolation, 0.0)
    }
}

/// Brings one subject into template space: bias correction, affine and diffeomorphic
/// registration (template fixed), resampling, intensity matching to the template inside its
/// mask, log-Jacobian, smoothing.
pub fn map_to_template(
    subject: &Image<f32>,
    space: &TemplateSpace,
    params: &MappingParams,
    name: &str,
) -> Result<SubjectMaps, NormativeError> {
    let fail = |stage: &'static str, message: String| NormativeError::Subject {
        subject: name.to_owned(),
        stage,
        message,
    };
    let subject_mask = brain_mask_from_intensity(subject, &BrainMaskParams::default()).ok();
    let corrected = if params.bias_correction {
        correct_bias_field(
            subject,
            subject_mask.as_ref(),
            &BiasFieldParams { iterations: vec![50, 50, 30], ..BiasFieldParams::default() },
        )
        .map_err(|e| fail("bias-field correction", e.to_string()))?
        .corrected
    } else {
        subject.clone()
    };
    let plan = params.registration_plan(space)?;
    let registration =
        register(&space.template, &corrected, &plan).map_err(|e| fail("registration", e.to_string()))?;
    let Some(result) = registration.deformable else {
        return Err(fail("registration", "the template-map plan has no diffeomorphic stage".into()));
    };
    let warped_raw = result.warp(&corrected, space.template.grid(), Interpolation::Linear);
    let method = NormalizationMethod::Landmarks {
        percentiles: MATCH_PERCENTILES.to_vec(),
        standard: monotone(&space.landmarks),
    };
    let (warped, _) = normalize_intensity(&warped_raw, &space.mask, &method)
        .map_err(|e| fail("intensity matching", e.to_string()))?;
    let warped = match params.differential_bias_sigma_mm {
        Some(sigma) if sigma > 0.0 => remove_differential_bias(&warped, &space.template, &space.mask, sigma),
        _ => warped,
    };
    let logjac_raw = match &params.jacobian_refinement {
        None => pedinorm_registration::jacobian::log_jacobian(&result.forward),
        Some(refinement) => {
            let coarse_metric = plan.deformable.as_ref().map(|d| d.metric.clone()).expect("checked above");
            let refined = register(
                &space.template,
                &warped_raw,
                &refinement.plan(coarse_metric).with_fixed_mask(space.mask.clone()),
            )
            .map_err(|e| fail("log-Jacobian refinement", e.to_string()))?;
            let Some(refined) = refined.forward() else {
                return Err(fail("log-Jacobian refinement", "no diffeomorphic stage".into()));
            };
            // Template → subject deformable part: p ↦ p + r(p) + u(p + r(p)).
            pedinorm_registration::jacobian::log_jacobian(&result.forward.compose(refined))
        }
    };
    let logjac_raw = if logjac_raw.grid().same_as(space.template.grid(), 1e-3) {
        logjac_raw
    } else {
        resample(
            &logjac_raw,
            space.template.grid(),
            &pedinorm_registration::Identity,
            Interpolation::Linear,
            0.0,
        )
    };
    let smooth = |image: &Image<f32>| {
        if params.smoothing_fwhm_mm > 0.0 {
            smooth_mm(image, fwhm_to_sigma(params.smoothing_fwhm_mm))
        } else {
            image.clone()
        }
    };
    let similarity = masked_correlation(&space.template, &warped, &space.indices);
    let histogram_distance = safeguards::histogram_distance(
        &gather(&warped_raw, &space.indices),
        &gather(&space.template, &space.indices),
    );
    let mask_dice = subject_mask.as_ref().map_or(f64::NAN, |m| {
        let carried = result.warp(m, space.template.grid(), Interpolation::Nearest);
        let a: Vec<bool> = carried.as_slice().iter().map(|&v| v > 0.5).collect();
        let b: Vec<bool> = space.mask.as_slice().iter().map(|&v| v > 0.5).collect();
        safeguards::dice(&a, &b)
    });
    Ok(SubjectMaps {
        intensity: smooth(&warped),
        logjac: smooth(&logjac_raw),
        warped,
        affine: result.affine,
        forward: result.forward,
        inverse: result.inverse,
        similarity,
        histogram_distance,
        mask_dice,
    })
}

/// Makes landmark values strictly increasing (a flat template histogram would otherwise give a
/// non-invertible map).
fn monotone(values: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::with_capacity(values.len());
    for &v in values {
        let floor = out.last().map(|&p: &f64| p + 1e-6 * p.abs().max(1.0)).unwrap_or(f64::NEG_INFINITY);
        out.push(v.max(floor));
    }
    out
}

/// Pearson correlation of two images over the given voxels.
pub fn masked_correlation(a: &Image<f32>, b: &Image<f32>, indices: &[usize]) -> f64 {
    let (da, db) = (a.as_slice(), b.as_slice());
    let n = indices.len() as f64;
    let (mut sa, mut sb) = (0.0, 0.0);
    for &i in indices {
        sa += da[i] as f64;
        sb += db[i] as f64;
    }
    let (ma, mb) = (sa / n, sb / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for &i in indices {
        let (x, y) = (da[i] as f64 - ma, db[i] as f64 - mb);
        cov += x * y;
        va += x * x;
        vb += y * y;
    }
    if va > 0.0 && vb > 0.0 { cov / (va * vb).sqrt() } else { 0.0 }
}

/// Values of `image` at `indices`.
pub fn gather(image: &Image<f32>, indices: &[usize]) -> Vec<f32> {
    let data = image.as_slice();
    indices.iter().map(|&i| data[i]).collect()
}

/// A volume on `grid` holding `values` at `indices` and `fill` elsewhere.
pub fn scatter(
    grid: &pedinorm_registration::Grid,
    indices: &[usize],
    values: &[f32],
    fill: f32,
) -> Image<f32> {
    let mut data = vec![fill; grid.len()];
    for (&i, &v) in indices.iter().zip(values) {
        data[i] = v;
    }
    let d = grid.dims();
    Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("grid size"), grid.clone())
        .expect("shape")
}

/// One normal subject offered to the database.
#[derive(Debug, Clone)]
pub struct NormalSubject {
    /// Pseudonym (no identity).
    pub pseudonym: String,
    /// Age at scan, years.
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Scanner or site label.
    pub scanner: String,
    /// The image (T1-weighted, any grid).
    pub image: Image<f32>,
}

/// A bracket to build: its age range and template.
#[derive(Debug, Clone)]
pub struct BracketInput {
    /// Bracket name.
    pub name: String,
    /// Lower bound (years, inclusive).
    pub min_years: f64,
    /// Upper bound (years, exclusive).
    pub max_years: f64,
    /// Template and mask.
    pub space: TemplateSpace,
    /// Atlas labels on the template grid, if any.
    pub labels: Option<Image<f32>>,
}

/// Parameters of a database build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Mapping of subjects into template space.
    pub mapping: MappingParams,
    /// Normative model used when scoring.
    pub normative: NormativeParams,
    /// Age nodes per bracket (evenly placed inside it).
    pub nodes_per_bracket: usize,
    /// Minimum kernel mass (subjects' worth of weight) at every node; kernels widen to reach it.
    pub min_node_subjects: f64,
    /// Nominal voxelwise false-positive rate of the calibration.
    pub voxel_rate: f64,
    /// Nominal per-image false-cluster rate of the calibration.
    pub cluster_rate: f64,
    /// Subjects whose warped image correlates with the template below this fail QC.
    pub min_similarity: f64,
    /// Ids of the normals the templates were built from. Their maps are closer to the template
    /// than a new case's can be, so the calibration's null comes from the other normals when
    /// at least [`MIN_CALIBRATION_NULLS`] of them passed QC.
    pub template_members: BTreeSet<String>,
    /// Estimate and apply scanner-site effects when the calibration normals come from several
    /// sites (see [`site_model`]); off, every site is pooled as one.
    pub site_effects: bool,
}

/// The fewest normals outside the templates that calibrate on their own; with fewer, every
/// QC-passed normal is used (and the thresholds are optimistic for new cases).
pub const MIN_CALIBRATION_NULLS: usize = 10;

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            mapping: MappingParams::standard(),
            normative: NormativeParams::default(),
            nodes_per_bracket: 2,
            min_node_subjects: 6.0,
            voxel_rate: 0.001,
            cluster_rate: 0.05,
            min_similarity: 0.5,
            template_members: BTreeSet::new(),
            site_effects: true,
        }
    }
}

impl BuildOptions {
    /// The parameters recorded in the database.
    pub fn build_parameters(&self) -> BuildParameters {
        BuildParameters {
            smoothing_fwhm_mm: self.mapping.smoothing_fwhm_mm,
            field_sigma_mm: self.mapping.field_sigma_mm,
            jacobian_refinement: self.mapping.jacobian_refinement.clone(),
            differential_bias_sigma_mm: self.mapping.differential_bias_sigma_mm,
            normative: self.normative,
            voxel_rate: self.voxel_rate,
            cluster_rate: self.cluster_rate,
            intensity_normalization: format!(
                "bias-field correction (N4-style), then piecewise-linear matching to the template at percentiles {MATCH_PERCENTILES:?} inside its mask{}",
                match self.mapping.differential_bias_sigma_mm {
                    Some(sigma) =>
                        format!(", then differential bias correction against the template (σ {sigma} mm)"),
                    None => String::new(),
                }
            ),
            registration: self.mapping.describe(),
        }
    }
}

/// Age nodes of a bracket: `count` evenly spaced inside it, kernels adapted to the ages.
pub fn bracket_nodes(
    min_years: f64,
    max_years: f64,
    count: usize,
    ages: &[f64],
    min_subjects: f64,
) -> Vec<AgeNode> {
    let count = count.max(1);
    let width = max_years - min_years;
    let node_ages: Vec<f64> =
        (0..count).map(|i| min_years + width * (i as f64 + 0.5) / count as f64).collect();
    let base = (width / count as f64 / 2.0).max(0.1);
    AgeNode::adaptive(&node_ages, ages, base, (width * 2.0).max(base), min_subjects)
}

/// A normal subject mapped to its bracket, kept for accumulation and leave-one-out.
#[derive(Debug, Clone)]
pub struct MappedNormal {
    /// The database record.
    pub record: SubjectRecord,
    /// Bracket index.
    pub bracket: usize,
    /// Masked values per channel ([`Channel::index`] order).
    pub values: [Vec<f32>; 2],
}

/// Index of the bracket a normal subject of `age` is registered to (the nearest centre among
/// brackets containing it).
pub fn bracket_of(brackets: &[BracketInput], age: f64) -> Option<usize> {
    brackets
        .iter()
        .enumerate()
        .filter(|(_, b)| age >= b.min_years && age < b.max_years)
        .min_by(|a, b| {
            let centre = |x: &BracketInput| (age - 0.5 * (x.min_years + x.max_years)).abs();
            centre(a.1).total_cmp(&centre(b.1))
        })
        .map(|(i, _)| i)
}

/// Maps every normal to its bracket (in parallel over subjects; each result is independent,
/// so the order and values do not depend on the thread count). `progress` is called once per
/// finished subject.
pub fn map_normals(
    normals: &[NormalSubject],
    brackets: &[BracketInput],
    options: &BuildOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<MappedNormal>, NormativeError> {
    let mut seen = std::collections::HashSet::new();
    for n in normals {
        if !seen.insert(&n.pseudonym) {
            return Err(NormativeError::Config(format!("subject {} is listed twice", n.pseudonym)));
        }
        if !(n.age_years.is_finite() && (0.0..=25.0).contains(&n.age_years)) {
            return Err(NormativeError::Config(format!(
                "subject {}: implausible age {}",
                n.pseudonym, n.age_years
            )));
        }
        if bracket_of(brackets, n.age_years).is_none() {
            return Err(NormativeError::Config(format!(
                "subject {}: age {:.2} is outside every bracket",
                n.pseudonym, n.age_years
            )));
        }
    }
    normals
        .par_iter()
        .with_max_len(1)
        .map(|n| {
            let b = bracket_of(brackets, n.age_years).expect("checked");
            let space = &brackets[b].space;
            let maps = map_to_template(&n.image, space, &options.mapping, &n.pseudonym)?;
            progress(&n.pseudonym);
            Ok(MappedNormal {
                record: SubjectRecord {
                    pseudonym: n.pseudonym.clone(),
                    age_years: n.age_years,
                    sex: n.sex,
                    scanner: n.scanner.clone(),
                    bracket: brackets[b].name.clone(),
                    qc_similarity: maps.similarity,
                    qc_histogram_distance: maps.histogram_distance,
                    qc_mask_dice: maps.mask_dice,
                    qc_passed: maps.similarity >= options.min_similarity,
                },
                bracket: b,
                values: [gather(&maps.intensity, &space.indices), gather(&maps.logjac, &space.indices)],
            })
        })
        .collect()
}

/// Accumulates mapped normals (QC-passed only) into per-bracket statistics.
pub fn accumulate(
    brackets: &[BracketInput],
    mapped: &[MappedNormal],
    options: &BuildOptions,
) -> Result<Vec<[NormativeAccumulator; 2]>, NormativeError> {
    brackets
        .iter()
        .enumerate()
        .map(|(b, bracket)| {
            let members: Vec<&MappedNormal> =
                mapped.iter().filter(|m| m.bracket == b && m.record.qc_passed).collect();
            let ages: Vec<f64> = members.iter().map(|m| m.record.age_years).collect();
            let nodes = bracket_nodes(
                bracket.min_years,
                bracket.max_years,
                options.nodes_per_bracket,
                &ages,
                options.min_node_subjects,
            );
            let n = bracket.space.indices.len();
            let mut stats = [
                NormativeAccumulator::new(nodes.clone(), n).map_err(NormDbError::from)?,
                NormativeAccumulator::new(nodes, n).map_err(NormDbError::from)?,
            ];
            for m in &members {
                for (accumulator, values) in stats.iter_mut().zip(&m.values) {
                    accumulator
                        .add_subject(m.record.age_years, m.record.sex, values)
                        .map_err(NormDbError::from)?;
                }
            }
            Ok(stats)
        })
        .collect()
}

/// One normal's maps scored against `stats` (statistics that do not contain it): z per mask
/// voxel, per channel.
pub fn held_out_z(
    space: &TemplateSpace,
    stats: &[NormativeAccumulator; 2],
    record: &SubjectRecord,
    values: &[Vec<f32>; 2],
    params: &NormativeParams,
) -> Result<[Vec<f32>; 2], NormativeError> {
    let floors = safeguards::channel_floors(params, &gather(&space.template, &space.indices));
    let score = |channel: Channel| -> Result<Vec<f32>, NormativeError> {
        let c = channel.index();
        let (model, _) =
            safeguards::floored_model(&stats[c], record.age_years, Some(record.sex), params, floors[c])
                .map_err(|e| NormativeError::Config(format!("calibration of {}: {e}", record.pseudonym)))?;
        model.z_scores(&values[c]).map_err(|e| NormativeError::Config(e.to_string()))
    };
    Ok([score(Channel::Intensity)?, score(Channel::LogJacobian)?])
}

/// The null summaries of one normal from its held-out z per channel.
pub fn null_from_z(space: &TemplateSpace, record: &SubjectRecord, z: &[Vec<f32>; 2]) -> SubjectNull {
    let mask = space.mask.data().mapv(|v| v > 0.5);
    let summary = |z: &[f32]| {
        let volume = scatter(space.template.grid(), &space.indices, z, 0.0);
        NullSummary::from_map(volume.data(), Some(&mask))
    };
    SubjectNull { pseudonym: record.pseudonym.clone(), channels: [summary(&z[0]), summary(&z[1])] }
}

/// The null summaries of one normal: its maps scored against `stats` (statistics that do not
/// contain it), per channel, corrected for its site when the database has site effects.
pub fn subject_null(
    space: &TemplateSpace,
    stats: &[NormativeAccumulator; 2],
    record: &SubjectRecord,
    values: &[Vec<f32>; 2],
    params: &NormativeParams,
    site_effects: Option<&[SiteEffects]>,
) -> Result<SubjectNull, NormativeError> {
    let mut z = held_out_z(space, stats, record, values, params)?;
    if let Some(effects) = site_effects {
        let classes = site_model::tissue_classes(space).map_err(|e| NormativeError::Config(e.to_string()))?;
        for channel in Channel::ALL {
            site_model::adjust(effects, channel, &classes, Some(&record.scanner), &mut z[channel.index()]);
        }
    }
    Ok(null_from_z(space, record, &z))
}

/// The normals whose leave-one-out maps make the calibration's null: the QC-passed normals
/// that were not in any template when enough of them exist, else every QC-passed normal.
pub fn calibration_normals<'a>(mapped: &'a [MappedNormal], options: &BuildOptions) -> Vec<&'a MappedNormal> {
    let passed: Vec<&MappedNormal> = mapped.iter().filter(|m| m.record.qc_passed).collect();
    let outside: Vec<&MappedNormal> =
        passed.iter().copied().filter(|m| !options.template_members.contains(&m.record.pseudonym)).collect();
    if outside.len() >= MIN_CALIBRATION_NULLS {
        return outside;
    }
    if !options.template_members.is_empty() {
        tracing::warn!(
            outside = outside.len(),
            needed = MIN_CALIBRATION_NULLS,
            "too few normals outside the templates: calibrating on every normal (thresholds are optimistic for new cases)"
        );
    }
    passed
}

/// Leave-one-out calibration over the mapped normals: each calibration normal (see
/// [`calibration_normals`]) is scored against its bracket's statistics without itself. When
/// the normals come from several sites, the site effects are estimated from these z-maps and
/// each normal's own removed (see [`site_model`]). The null summaries are pooled over brackets
/// per channel (see [`CalibrationRecord::from_nulls`]).
pub fn calibrate(
    brackets: &[BracketInput],
    stats: &[[NormativeAccumulator; 2]],
    mapped: &[MappedNormal],
    options: &BuildOptions,
) -> Result<CalibrationRecord, NormativeError> {
    let members = calibration_normals(mapped, options);
    let mut z: Vec<[Vec<f32>; 2]> = members
        .par_iter()
        .with_max_len(1)
        .map(|m| {
            let mut held_out = stats[m.bracket].clone();
            for (c, accumulator) in held_out.iter_mut().enumerate() {
                accumulator
                    .remove_subject(m.record.age_years, m.record.sex, &m.values[c])
                    .map_err(NormDbError::from)?;
            }
            held_out_z(&brackets[m.bracket].space, &held_out, &m.record, &m.values, &options.normative)
        })
        .collect::<Result<_, NormativeError>>()?;
    let site_error =
        |e: pedinorm_templates::site_effects::SiteEffectError| NormativeError::Config(e.to_string());
    let classes: Vec<Vec<u8>> = brackets
        .iter()
        .map(|b| site_model::tissue_classes(&b.space))
        .collect::<Result<_, _>>()
        .map_err(site_error)?;
    let site_effects = if options.site_effects {
        site_model::estimate(&members, &z, &classes).map_err(site_error)?
    } else {
        None
    };
    if let Some(effects) = &site_effects {
        for (m, z) in members.iter().zip(z.iter_mut()) {
            for channel in Channel::ALL {
                let classes = &classes[m.bracket];
                site_model::adjust(
                    effects,
                    channel,
                    classes,
                    Some(&m.record.scanner),
                    &mut z[channel.index()],
                );
            }
        }
    }
    let nulls: Vec<SubjectNull> =
        members.iter().zip(&z).map(|(m, z)| null_from_z(&brackets[m.bracket].space, &m.record, z)).collect();
    let mut record = CalibrationRecord::from_nulls(nulls, options.voxel_rate, options.cluster_rate)
        .map_err(|e| NormativeError::Config(format!("calibration: {e}")))?;
    record.site_effects = site_effects;
    Ok(record)
}

/// Builds a whole database from mapped normals.
pub fn assemble(
    brackets: &[BracketInput],
    mapped: &[MappedNormal],
    options: &BuildOptions,
    atlas: Option<crate::normdb::AtlasTable>,
) -> Result<NormDb, NormativeError> {
    let stats = accumulate(brackets, mapped, options)?;
    let passed = mapped.iter().filter(|m| m.record.qc_passed).count();
    let calibration = if passed >= 3 { Some(calibrate(brackets, &stats, mapped, options)?) } else { None };
    let bracket_dbs = brackets
        .iter()
        .zip(stats)
        .map(|(b, stats)| BracketDb {
            name: b.name.clone(),
            min_years: b.min_years,
            max_years: b.max_years,
            template: b.space.template.clone(),
            mask: b.space.mask.clone(),
            labels: b.labels.clone(),
            stats,
        })
        .collect();
    Ok(NormDb {
        metadata: Metadata::new(options.build_parameters(), &format!("built from {} normals", mapped.len())),
        brackets: bracket_dbs,
        subjects: mapped.iter().map(|m| m.record.clone()).collect(),
        calibration,
        atlas,
    })
}

/// Adds one normal to an existing database: the statistics are updated in place and the
/// calibration recomputed with the new normal's null (its maps scored against the database
/// before the addition, which is its leave-one-out reference). A database without null
/// summaries (schema version 1) keeps its thresholds, marked stale.
pub fn add_subject(
    db: &mut NormDb,
    subject: &NormalSubject,
    mapping: &MappingParams,
) -> Result<SubjectRecord, NormativeError> {
    if db.subjects.iter().any(|s| s.pseudonym == subject.pseudonym) {
        return Err(NormativeError::Config(format!(
            "subject {} is already in the database",
            subject.pseudonym
        )));
    }
    if !(subject.age_years.is_finite() && (0.0..=25.0).contains(&subject.age_years)) {
        return Err(NormativeError::Config(format!(
            "subject {}: implausible age {}",
            subject.pseudonym, subject.age_years
        )));
    }
    let b = db
        .brackets
        .iter()
        .enumerate()
        .filter(|(_, x)| x.contains(subject.age_years))
        .min_by(|a, c| {
            let d = |x: &BracketDb| (subject.age_years - 0.5 * (x.min_years + x.max_years)).abs();
            d(a.1).total_cmp(&d(c.1))
        })
        .map(|(i, _)| i)
        .ok_or_else(|| {
            NormativeError::Config(format!("age {:.2} is outside every bracket", subject.age_years))
        })?;
    let bracket = &db.brackets[b];
    let space = TemplateSpace::new(bracket.template.clone(), Some(bracket.mask.clone()))?;
    let mapping = mapping.for_database(&db.metadata.parameters);
    let maps = map_to_template(&subject.image, &space, &mapping, &subject.pseudonym)?;
    let record = SubjectRecord {
        pseudonym: subject.pseudonym.clone(),
        age_years: subject.age_years,
        sex: subject.sex,
        scanner: subject.scanner.clone(),
        bracket: bracket.name.clone(),
        qc_similarity: maps.similarity,
        qc_histogram_distance: maps.histogram_distance,
        qc_mask_dice: maps.mask_dice,
        qc_passed: maps.similarity >= 0.5,
    };
    if record.qc_passed {
        let values = [gather(&maps.intensity, &space.indices), gather(&maps.logjac, &space.indices)];
        // The database before the addition is exactly the new normal's leave-one-out reference.
        let recalibrated = match &db.calibration {
            Some(c) if !c.nulls.is_empty() && !c.stale => {
                let null = subject_null(
                    &space,
                    &db.brackets[b].stats,
                    &record,
                    &values,
                    &db.metadata.parameters.normative,
                    c.site_effects.as_deref(),
                )?;
                let p = &db.metadata.parameters;
                c.with_null(null, p.voxel_rate, p.cluster_rate)
            }
            _ => None,
        };
        let bracket = &mut db.brackets[b];
        for channel in Channel::ALL {
            bracket.stats[channel.index()]
                .add_subject(subject.age_years, subject.sex, &values[channel.index()])
                .map_err(NormDbError::from)?;
        }
        match (recalibrated, db.calibration.as_mut()) {
            (Some(c), _) => db.calibration = Some(c),
            // Without null summaries (schema version 1) the thresholds cannot be recomputed.
            (None, Some(c)) => c.stale = true,
            (None, None) => {}
        }
    }
    db.subjects.push(record.clone());
    db.metadata.touch(&format!("added subject {}", subject.pseudonym));
    Ok(record)
}

/// Carries an atlas into template space: `reference` (the atlas's own T1, e.g. MNI) is
/// registered to the template (affine + diffeomorphic) and `labels` (on the reference's world
/// space) are pulled through that mapping by nearest neighbour, then restricted to the
/// template mask.
pub fn carry_atlas(
    space: &TemplateSpace,
    reference: &Image<f32>,
    labels: &Image<f32>,
    mapping: &MappingParams,
) -> Result<Image<f32>, NormativeError> {
    let fail = |stage: &'static str, message: String| NormativeError::Subject {
        subject: "atlas reference".into(),
        stage,
        message,
    };
    // The atlas follows the anatomy at greedy's default field smoothness, not the subjects'
    // lesion-preserving one.
    let mut plan = mapping.registration_plan(space)?;
    if let Some(deformable) = plan.deformable.as_mut() {
        deformable.field_sigma = Sigma::Voxels(0.707);
    }
    let result =
        register(&space.template, reference, &plan).map_err(|e| fail("registration", e.to_string()))?;
    let carried = result.warp(labels, space.template.grid(), Interpolation::Nearest);
    let mask = space.mask.as_slice();
    let data: Vec<f32> =
        carried.as_slice().iter().zip(mask).map(|(&l, &m)| if m > 0.5 { l } else { 0.0 }).collect();
    let d = space.template.grid().dims();
    Ok(Image::new(
        Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("grid size"),
        space.template.grid().clone(),
    )
    .expect("shape"))
}

/// Parses a label table with one `VALUE<whitespace>NAME` per line (FSL/mricron `.txt`).
pub fn parse_label_names(text: &str) -> Vec<(i32, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(2, char::is_whitespace);
            let value = parts.next()?.parse::<i32>().ok()?;
            let name = parts.next()?.trim().replace('_', " ");
            (value > 0 && !name.is_empty()).then_some((value, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped_normal(id: &str, qc_passed: bool) -> MappedNormal {
        MappedNormal {
            record: SubjectRecord {
                pseudonym: id.into(),
                age_years: 5.0,
                sex: Sex::Female,
                scanner: String::new(),
                bracket: "b".into(),
                qc_similarity: 0.9,
                qc_histogram_distance: 0.02,
                qc_mask_dice: 0.95,
                qc_passed,
            },
            bracket: 0,
            values: [Vec::new(), Vec::new()],
        }
    }

    #[test]
    fn differential_bias_correction_removes_a_smooth_ratio_and_keeps_a_focal_change() {
        let grid = pedinorm_registration::Grid::axis_aligned([48, 48, 48], [2.0; 3], [0.0; 3]).unwrap();
        let image = |f: &dyn Fn([usize; 3]) -> f32| {
            Image::new(ndarray::Array3::from_shape_fn((48, 48, 48), |(i, j, k)| f([i, j, k])), grid.clone())
                .unwrap()
        };
        let template = image(&|[i, j, k]| 100.0 + ((i * 7 + j * 3 + k * 5) % 11) as f32);
        let mask = image(&|[i, j, k]| {
            let d = [i as f64 - 23.5, j as f64 - 23.5, k as f64 - 23.5];
            f32::from(d.iter().map(|v| v * v).sum::<f64>() < 20.0 * 20.0)
        });
        // A smooth 20 % gradient along x, and a 25 % bright lesion of radius 3 voxels (6 mm).
        let lesion = |[i, j, k]: [usize; 3]| {
            let d = [i as f64 - 30.0, j as f64 - 24.0, k as f64 - 24.0];
            d.iter().map(|v| v * v).sum::<f64>() < 9.0
        };
        let subject = image(&|v| {
            let bias = 0.9 + 0.2 * v[0] as f32 / 47.0;
            template.data()[v] * bias * if lesion(v) { 1.25 } else { 1.0 }
        });
        let corrected = remove_differential_bias(&subject, &template, &mask, 15.0);
        let (mut worst_background, mut lesion_ratio) = (0f32, Vec::new());
        for ((idx, &c), &m) in corrected.data().indexed_iter().zip(mask.as_slice()) {
            let v = [idx.0, idx.1, idx.2];
            let ratio = c / template.data()[v];
            if lesion(v) {
                lesion_ratio.push(ratio);
            } else if m > 0.5 && (12..36).contains(&v[0]) {
                worst_background = worst_background.max((ratio - 1.0).abs());
            }
        }
        let mean_lesion = lesion_ratio.iter().sum::<f32>() / lesion_ratio.len() as f32;
        assert!(worst_background < 0.03, "residual bias {worst_background}");
        assert!(mean_lesion > 1.2, "lesion contrast kept: {mean_lesion}");
        // Outside the mask nothing changes.
        assert_eq!(corrected.data()[[0, 0, 0]], subject.data()[[0, 0, 0]]);
    }

    #[test]
    fn calibration_leaves_out_template_members_when_enough_others_exist() {
        let mapped: Vec<MappedNormal> =
            (0..24).map(|i| mapped_normal(&format!("n{i:02}"), i != 23)).collect();
        let ids = |chosen: Vec<&MappedNormal>| -> Vec<String> {
            chosen.iter().map(|m| m.record.pseudonym.clone()).collect()
        };
        // No members known: every QC-passed normal.
        let mut options = BuildOptions::default();
        assert_eq!(calibration_normals(&mapped, &options).len(), 23);
        // Half of them in the templates: the other QC-passed half (11 ≥ the minimum).
        options.template_members = (0..12).map(|i| format!("n{:02}", 2 * i)).collect();
        let chosen = ids(calibration_normals(&mapped, &options));
        assert_eq!(chosen.len(), 11);
        assert!(chosen.iter().all(|id| !options.template_members.contains(id) && id != "n23"));
        // Too few outside the templates: back to every QC-passed normal.
        options.template_members = (0..16).map(|i| format!("n{i:02}")).collect();
        assert_eq!(calibration_normals(&mapped, &options).len(), 23);
    }

    #[test]
    fn nodes_cover_the_bracket() {
        let nodes = bracket_nodes(4.0, 8.0, 2, &[4.5, 5.0, 6.0, 7.0, 7.5], 2.0);
        assert_eq!(nodes.len(), 2);
        assert!((nodes[0].age_years - 5.0).abs() < 1e-12 && (nodes[1].age_years - 7.0).abs() < 1e-12);
        assert!(nodes.iter().all(|n| n.kernel_mass(&[4.5, 5.0, 6.0, 7.0, 7.5]) >= 2.0));
    }

    #[test]
    fn label_table_parses() {
        let names = parse_label_names("0\tUnclassified\n3\tGenu_of_corpus_callosum\nbad line\n");
        assert_eq!(names, vec![(3, "Genu of corpus callosum".to_string())]);
    }

    #[test]
    fn monotone_landmarks() {
        let m = monotone(&[0.0, 1.0, 1.0, 0.5, 3.0]);
        assert!(m.windows(2).all(|w| w[1] > w[0]), "{m:?}");
    }

    #[test]
    fn scatter_gather_round_trip() {
        let grid = pedinorm_registration::Grid::axis_aligned([3, 4, 5], [1.0; 3], [0.0; 3]).unwrap();
        let indices = vec![1, 7, 30, 59];
        let volume = scatter(&grid, &indices, &[1.0, 2.0, 3.0, 4.0], -1.0);
        assert_eq!(gather(&volume, &indices), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(volume.as_slice()[0], -1.0);
    }
}
