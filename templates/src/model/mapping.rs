//! Mapping one subject to a template: bias correction, affine and diffeomorphic registration
//! (template fixed), intensity matching, differential bias correction, log-Jacobian (after an
//! optional finer refinement), smoothing, and the QC and out-of-distribution figures of the
//! mapping. Normals and cases go through the same function, so a case is processed exactly
//! like the normals it is compared with.

use super::ModelError;
use super::database::Channel;
use super::differential_bias::{DIFFERENTIAL_BIAS_SIGMA_MM, remove_differential_bias};
use super::space::{MATCH_PERCENTILES, TemplateSpace, gather, masked_correlation};
use crate::safeguards;
use pedinorm_registration::intensity::{
    BiasFieldParams, BrainMaskParams, NormalizationMethod, brain_extraction, correct_bias_field,
    normalize_intensity,
};
use pedinorm_registration::metrics::Metric;
use pedinorm_registration::resample::resample;
use pedinorm_registration::smooth::{fwhm_to_sigma, smooth_mm};
use pedinorm_registration::{
    AffineTransform, DisplacementField, Image, Interpolation, RegistrationPlan, register,
};

/// How a subject is brought into template space. A normative database stores it whole (see
/// [`super::BuildParameters`]) and every later case or normal is mapped with exactly these
/// settings. A field missing from a stored record takes the value databases written before it
/// was recorded were built with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MappingParams {
    /// Correct the bias field before registration.
    #[serde(default = "standard_bias_correction")]
    pub bias_correction: bool,
    /// Iterations per level of the affine stage of [`RegistrationPlan::template_map`]
    /// (template fixed, subject moving; three levels).
    #[serde(default = "standard_affine_iterations")]
    pub affine_iterations: Vec<usize>,
    /// Iterations per level of its diffeomorphic stage (three levels).
    #[serde(default = "standard_deformable_iterations")]
    pub deformable_iterations: Vec<usize>,
    /// Smoothing of the intensity and log-Jacobian maps (FWHM, mm; 0 = none).
    pub smoothing_fwhm_mm: f64,
    /// Gaussian σ (mm) of the deformation field: the registration aligns anatomy at this
    /// scale and coarser, so a focal lesion is not warped away (a lesion that the deformation
    /// absorbs would vanish from the intensity map). Stored under its former name; 4 mm in
    /// databases written before it was recorded.
    #[serde(rename = "deformation_smoothness_mm", default = "legacy_field_sigma_mm")]
    pub field_sigma_mm: f64,
    /// Refinement of the deformation used only for the log-Jacobian channel (`None`: the
    /// log-Jacobian of the coarse deformation, as in databases of schema version 1).
    #[serde(default)]
    pub jacobian_refinement: Option<JacobianRefinement>,
    /// Gaussian σ (mm) of the differential bias correction of the intensity channel (`None`:
    /// none, as in databases written before it), see [`remove_differential_bias`].
    #[serde(default)]
    pub differential_bias_sigma_mm: Option<f64>,
    /// Take the brain out of an image that still shows the whole head (skull, scalp, face,
    /// neck) before mapping it, with the template-free whole-head method
    /// ([`brain_extraction`]); a skull-stripped image is mapped as it is. On in databases
    /// written before it was recorded too: their normals were skull-stripped, where the
    /// setting changes nothing, and a whole-head case mapped without it fails.
    #[serde(default = "standard_brain_from_head")]
    pub brain_from_head: bool,
}

fn standard_brain_from_head() -> bool {
    MappingParams::standard().brain_from_head
}

fn standard_bias_correction() -> bool {
    MappingParams::standard().bias_correction
}

fn standard_affine_iterations() -> Vec<usize> {
    MappingParams::standard().affine_iterations
}

fn standard_deformable_iterations() -> Vec<usize> {
    MappingParams::standard().deformable_iterations
}

fn legacy_field_sigma_mm() -> f64 {
    4.0
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
            brain_from_head: true,
        }
    }

    /// The registration plan of a subject onto `space`'s template: the template-map preset
    /// with these iterations and field smoothness, the metrics restricted to the template mask.
    pub fn registration_plan(&self, space: &TemplateSpace) -> Result<RegistrationPlan, ModelError> {
        let mut plan =
            RegistrationPlan::template_map(self.field_sigma_mm).with_fixed_mask(space.mask.clone());
        let invalid = |e: pedinorm_registration::RegistrationError| ModelError::Config(e.to_string());
        if let Some(affine) = plan.affine.as_mut() {
            affine.schedule.set_iterations(&self.affine_iterations).map_err(invalid)?;
        }
        if let Some(deformable) = plan.deformable.as_mut() {
            deformable.schedule.set_iterations(&self.deformable_iterations).map_err(invalid)?;
        }
        Ok(plan)
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
    /// The subject's image on its own grid after bias-field correction (as registered).
    pub corrected: Image<f32>,
    /// Whether the subject showed a whole head and its brain was extracted before mapping
    /// (see [`MappingParams::brain_from_head`]); `corrected` is then the brain only.
    pub brain_extracted: bool,
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
        super::regional::to_native(&self.affine, &self.inverse, template_space_image, native, interpolation)
    }

    /// The subject on its own grid with the inverse mapping, for its regional volumes.
    pub fn native(&self) -> super::regional::NativeSubject {
        super::regional::NativeSubject {
            image: self.corrected.clone(),
            affine: self.affine.clone(),
            inverse: self.inverse.clone(),
        }
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
) -> Result<SubjectMaps, ModelError> {
    let fail = |stage: &'static str, message: String| ModelError::Subject {
        subject: name.to_owned(),
        stage,
        message,
    };
    let mask_params = BrainMaskParams {
        whole_head: params.brain_from_head,
        expected_brain_ml: Some(space.brain_volume_ml()),
        ..BrainMaskParams::default()
    };
    let extraction = brain_extraction(subject, &mask_params).ok();
    let brain_extracted = extraction.as_ref().is_some_and(|e| e.scalp);
    let subject_mask = extraction.map(|e| e.mask);
    // A whole head: skull, scalp and face would pull the registration off the brain-only
    // template, so only the brain is mapped.
    let brain_only;
    let subject = match (&subject_mask, brain_extracted) {
        (Some(mask), true) => {
            brain_only = masked(subject, mask);
            &brain_only
        }
        _ => subject,
    };
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
        corrected,
        brain_extracted,
    })
}

/// `image` with every voxel outside `mask` set to zero (both on one grid).
fn masked(image: &Image<f32>, mask: &Image<f32>) -> Image<f32> {
    let dims = image.grid().dims();
    let values =
        image.as_slice().iter().zip(mask.as_slice()).map(|(&v, &m)| if m > 0.5 { v } else { 0.0 }).collect();
    let data = ndarray::Array3::from_shape_vec((dims[0], dims[1], dims[2]), values).expect("one grid");
    image.with_data(data).expect("same grid")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotone_landmarks() {
        let m = monotone(&[0.0, 1.0, 1.0, 0.5, 3.0]);
        assert!(m.windows(2).all(|w| w[1] > w[0]), "{m:?}");
    }
}
