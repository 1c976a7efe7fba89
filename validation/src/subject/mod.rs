//! One synthetic subject: the base brain grown to an age, given its own anatomy, pose, tissue
//! contrast, optional abnormality, bias field and noise, with the ground truth of every step.
//!
//! [`generator`] prepares the base brain for one resolution and makes subjects, [`anatomy`]
//! gives each subject its individual anatomy (shape warps, boundary shifts, ventricles) and
//! [`lesions`] places abnormalities; this module holds the specification and the truth.

use crate::SynthError;
use crate::abnormality::{Abnormality, SubjectKind};
use crate::base::BaseBrain;
use crate::contrast::TissueIntensities;
use crate::growth::Sex;
use crate::site::Site;
use nalgebra::{Matrix4, Vector3};
use pedinorm_registration::{AffineTransform, DisplacementField, Grid, Image};
use serde::{Deserialize, Serialize};

mod anatomy;
mod generator;
mod lesions;

pub use generator::Generator;
pub use lesions::SITE_TOLERANCE_MM;

/// Knobs of the generator's anatomy that are not the subject's identity. The defaults give
/// the inter-individual variability of real children (see `docs/synthetic-cohort.md`);
/// [`GeneratorOptions::smooth_only`] gives the earlier population of one brain under smooth
/// warps only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorOptions {
    /// Largest displacement (mm) of the individual-anatomy warp.
    pub max_warp_mm: f64,
    /// Smoothness (Gaussian σ, mm) of the individual-anatomy velocity field.
    pub warp_smoothness_mm: f64,
    /// Standard deviation of the log of the individual brain-volume factor (0.07 ≈ 7 %).
    pub size_variation: f64,
    /// Largest head rotation about each axis (degrees).
    pub pose_rotation_deg: f64,
    /// Largest head translation along each axis (mm).
    pub pose_translation_mm: f64,
    /// Delay (years) of white-matter maturation in the frontal periphery relative to the
    /// central posterior white matter (myelination proceeds back to front, inside out).
    pub myelination_delay_years: f64,
    /// Root-mean-square velocity (mm, per axis) of the fine-scale folding warp: gyral and
    /// sulcal pattern differences at a few millimetres.
    pub folding_rms_mm: f64,
    /// Smoothness (Gaussian σ, mm) of the folding warp.
    pub folding_scale_mm: f64,
    /// Root-mean-square shift (mm, per axis) of the grey/white and of the pial boundary,
    /// drawn independently: local cortical thickness and boundary differences that no single
    /// diffeomorphism of the base explains.
    pub boundary_rms_mm: f64,
    /// Smoothness (Gaussian σ, mm) of the boundary shifts.
    pub boundary_scale_mm: f64,
    /// Standard deviation (mm) of a subject's global cortical thickness offset.
    pub thickness_sd_mm: f64,
    /// Standard deviation (mm) of a subject's global pial shift (sulcal and surface CSF).
    pub sulcal_csf_sd_mm: f64,
    /// Coefficient of variation of the ventricle volume (log-normal).
    pub ventricle_volume_cv: f64,
    /// Standard deviation of the right-minus-left hemispheric volume asymmetry (fraction).
    pub asymmetry_sd: f64,
    /// Standard deviation (mm) of the petalia: forward shift of the right hemisphere relative
    /// to the left.
    pub petalia_sd_mm: f64,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        Self {
            max_warp_mm: 4.0,
            warp_smoothness_mm: 12.0,
            size_variation: 0.07,
            pose_rotation_deg: 3.0,
            pose_translation_mm: 3.0,
            myelination_delay_years: 0.25,
            folding_rms_mm: 0.6,
            folding_scale_mm: 3.0,
            boundary_rms_mm: 0.4,
            boundary_scale_mm: 2.5,
            thickness_sd_mm: 0.15,
            sulcal_csf_sd_mm: 0.4,
            ventricle_volume_cv: 0.4,
            asymmetry_sd: 0.015,
            petalia_sd_mm: 1.5,
        }
    }
}

impl GeneratorOptions {
    /// The population of one brain under smooth warps: growth, size, pose and the smooth
    /// individual warp only, no folding, boundary, CSF, ventricle or asymmetry variation.
    pub fn smooth_only() -> Self {
        Self {
            folding_rms_mm: 0.0,
            boundary_rms_mm: 0.0,
            thickness_sd_mm: 0.0,
            sulcal_csf_sd_mm: 0.0,
            ventricle_volume_cv: 0.0,
            asymmetry_sd: 0.0,
            petalia_sd_mm: 0.0,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        let checks: [(&'static str, f64, f64, f64, &str); 15] = [
            ("max_warp_mm", self.max_warp_mm, 0.0, 20.0, "0–20 mm"),
            ("warp_smoothness_mm", self.warp_smoothness_mm, 2.0, 60.0, "2–60 mm"),
            ("size_variation", self.size_variation, 0.0, 0.3, "0–0.3"),
            ("pose_rotation_deg", self.pose_rotation_deg, 0.0, 30.0, "0–30°"),
            ("pose_translation_mm", self.pose_translation_mm, 0.0, 30.0, "0–30 mm"),
            ("myelination_delay_years", self.myelination_delay_years, 0.0, 2.0, "0–2 years"),
            ("folding_rms_mm", self.folding_rms_mm, 0.0, 5.0, "0–5 mm"),
            ("folding_scale_mm", self.folding_scale_mm, 1.0, 20.0, "1–20 mm"),
            ("boundary_rms_mm", self.boundary_rms_mm, 0.0, 3.0, "0–3 mm"),
            ("boundary_scale_mm", self.boundary_scale_mm, 1.0, 20.0, "1–20 mm"),
            ("thickness_sd_mm", self.thickness_sd_mm, 0.0, 2.0, "0–2 mm"),
            ("sulcal_csf_sd_mm", self.sulcal_csf_sd_mm, 0.0, 3.0, "0–3 mm"),
            ("ventricle_volume_cv", self.ventricle_volume_cv, 0.0, 1.5, "0–1.5"),
            ("asymmetry_sd", self.asymmetry_sd, 0.0, 0.2, "0–0.2"),
            ("petalia_sd_mm", self.petalia_sd_mm, 0.0, 10.0, "0–10 mm"),
        ];
        for (field, value, lo, hi, rule) in checks {
            if !within(value, lo, hi) {
                return Err(SynthError::InvalidSpec { field, rule: format!("{value} must be {rule}") });
            }
        }
        Ok(())
    }
}

/// The individual anatomy drawn for one subject beyond the smooth warp (ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct IndividualAnatomy {
    /// Ventricle volume factor aimed at (log-normal around 1).
    pub ventricle_volume_factor: f64,
    /// Largest displacement of the ventricle part of the warp (mm, base space; negative:
    /// the ventricles shrink).
    pub ventricle_dilation_mm: f64,
    /// Global cortical thickness offset (mm, subject space).
    pub thickness_offset_mm: f64,
    /// Global pial shift (mm, subject space; positive: more sulcal and surface CSF).
    pub sulcal_csf_shift_mm: f64,
    /// Right-minus-left hemispheric volume asymmetry (fraction) of the warp.
    pub hemispheric_asymmetry: f64,
    /// Forward shift of the right hemisphere relative to the left (mm).
    pub petalia_mm: f64,
}

/// What to generate: who the subject is and how the image is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectSpec {
    /// Age in years, 0–18.
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Seed of every random choice.
    pub seed: u64,
    /// Isotropic voxel size of the output (mm).
    pub resolution_mm: f64,
    /// An abnormality, for a case.
    pub abnormality: Option<Abnormality>,
    /// Where a lesion or focal atrophy is centred (base world mm): the candidate voxel of the
    /// abnormality's tissue nearest to it within [`SITE_TOLERANCE_MM`] is drawn (the nearest
    /// anywhere when none is that close). `None`: anywhere its tissue allows. Ventricles ignore
    /// it. Cases of one disease pattern share a typical site.
    #[serde(default)]
    pub abnormality_site: Option<[f64; 3]>,
    /// Anatomy knobs.
    pub options: GeneratorOptions,
    /// The scanner site the subject is imaged at.
    pub site: Site,
}

impl SubjectSpec {
    /// A normal subject at 2 mm with default options at the reference site.
    pub fn normal(age_years: f64, sex: Sex, seed: u64) -> Self {
        Self {
            age_years,
            sex,
            seed,
            resolution_mm: 2.0,
            abnormality: None,
            abnormality_site: None,
            options: GeneratorOptions::default(),
            site: Site::reference(),
        }
    }

    /// The same subject with an abnormality.
    pub fn with_abnormality(mut self, abnormality: Abnormality) -> Self {
        self.abnormality = Some(abnormality);
        self
    }

    fn validate(&self) -> Result<(), SynthError> {
        let invalid = |field: &'static str, rule: String| Err(SynthError::InvalidSpec { field, rule });
        if !(self.age_years.is_finite() && (0.0..=18.0).contains(&self.age_years)) {
            return invalid("age_years", format!("{} must be within 0–18 years", self.age_years));
        }
        if !(self.resolution_mm.is_finite() && (0.5..=8.0).contains(&self.resolution_mm)) {
            return invalid("resolution_mm", format!("{} must be within 0.5–8 mm", self.resolution_mm));
        }
        self.options.validate()?;
        self.site.validate()?;
        if let Some(abnormality) = &self.abnormality {
            abnormality.validate().map_err(|(field, rule)| SynthError::InvalidSpec { field, rule })?;
        }
        Ok(())
    }
}

/// The known truth of a synthetic subject.
#[derive(Debug, Clone)]
pub struct Truth {
    /// Normal, or the kind of abnormality.
    pub kind: SubjectKind,
    /// The abnormality's parameters, for a case.
    pub abnormality: Option<Abnormality>,
    /// Subject → base mapping on the subject grid: the subject voxel at world point `p` shows
    /// the base anatomy at `p + u(p)`. This is the transform (fixed = subject, moving = base)
    /// a perfect registration of the base onto the subject would find; it includes pose,
    /// growth, individual anatomy and any abnormality warp.
    pub deformation: DisplacementField,
    /// Base → subject mapping, sampled on the same grid geometry read as base space: the base
    /// point `q` appears in the subject at `q + v(q)`. The transform (fixed = base or a
    /// template in base space, moving = subject). Its log-Jacobian is negative where the
    /// subject has less tissue (atrophy) and positive in enlarged ventricles.
    pub inverse_deformation: DisplacementField,
    /// The affine part of `deformation` (pose and growth), subject → base.
    pub affine: AffineTransform,
    /// Ground-truth region of the abnormality on the subject grid (1 inside): the lesion, the
    /// shrunken region, or the enlarged ventricles.
    pub lesion_mask: Option<Image<f32>>,
    /// The same region in base space (on the subject grid's geometry read as base space).
    pub lesion_mask_base: Option<Image<f32>>,
    /// Centroid of `lesion_mask` in subject world coordinates (mm).
    pub abnormality_centre_mm: Option<[f64; 3]>,
    /// Tissue labels on the subject grid: 0 background, 1 CSF, 2 grey matter, 3 white matter.
    pub labels: Image<f32>,
    /// The multiplicative bias field applied.
    pub bias_field: Image<f32>,
    /// Linear scale factors of growth (left-right, posterior-anterior, inferior-superior).
    pub scale_factors: [f64; 3],
    /// Brain volume (mm³ / 1000 = ml) inside the subject's brain mask, partial volume counted.
    pub brain_volume_ml: f64,
    /// Mean tissue intensities at this age before bias, site scale and noise.
    pub intensities: TissueIntensities,
    /// Noise standard deviation of the Rician noise (image units).
    pub noise_sigma: f64,
    /// The scanner site (contrast, blur, noise, bias, scale) the image was made with.
    pub site: Site,
    /// Individual anatomy beyond the smooth warp.
    pub individual: IndividualAnatomy,
    /// Largest displacement of the individual-anatomy warp (mm).
    pub anatomy_warp_max_mm: f64,
}

/// A generated subject: image, brain mask and truth.
#[derive(Debug, Clone)]
pub struct SyntheticSubject {
    /// Synthetic identifier (no relation to any person).
    pub id: String,
    /// The T1-weighted image.
    pub image: Image<f32>,
    /// Brain mask (1 inside).
    pub brain_mask: Image<f32>,
    /// Known truth.
    pub truth: Truth,
    /// Age in years.
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Label of the scanner site.
    pub site: String,
}

/// A grid covering the same field of view as `grid` (same centre and directions) with
/// isotropic voxels of `spacing_mm`.
pub fn resampled_grid(grid: &Grid, spacing_mm: f64) -> Grid {
    let dims = grid.dims();
    let spacing = grid.spacing();
    let mut new_dims = [0usize; 3];
    for a in 0..3 {
        new_dims[a] = ((dims[a] as f64 * spacing[a] / spacing_mm).round() as usize).max(1);
    }
    let direction = grid.direction();
    let mut affine = Matrix4::identity();
    affine.fixed_view_mut::<3, 3>(0, 0).copy_from(&(direction * spacing_mm));
    let centre = Vector3::from(grid.center_world());
    let half = Vector3::new(
        (new_dims[0] as f64 - 1.0) / 2.0,
        (new_dims[1] as f64 - 1.0) / 2.0,
        (new_dims[2] as f64 - 1.0) / 2.0,
    );
    let origin = centre - direction * spacing_mm * half;
    for r in 0..3 {
        affine[(r, 3)] = origin[r];
    }
    Grid::new(new_dims, affine).expect("a resampled valid grid is valid")
}

/// Generates one subject from `base` (prepares the base for `spec.resolution_mm` first; use a
/// [`Generator`] to make many subjects at one resolution).
pub fn generate_subject(base: &BaseBrain, spec: &SubjectSpec) -> Result<SyntheticSubject, SynthError> {
    Generator::new(base, spec.resolution_mm)?.subject(spec)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::abnormality::LesionTissue;
    use std::sync::OnceLock;

    pub(super) fn generator() -> &'static Generator {
        static GENERATOR: OnceLock<Generator> = OnceLock::new();
        GENERATOR.get_or_init(|| {
            let grid = Grid::axis_aligned([54, 64, 48], [3.0; 3], [-79.5, -94.5, -70.5]).unwrap();
            Generator::new(&BaseBrain::phantom(&grid), 3.0).unwrap()
        })
    }

    pub(super) fn spec(age: f64, seed: u64) -> SubjectSpec {
        let mut spec = SubjectSpec::normal(age, Sex::Female, seed);
        spec.resolution_mm = 3.0;
        spec
    }

    pub(super) fn mean_where(image: &Image<f32>, labels: &Image<f32>, label: f32) -> f64 {
        let (sum, n) = image
            .as_slice()
            .iter()
            .zip(labels.as_slice())
            .filter(|(_, l)| **l == label)
            .fold((0.0, 0usize), |(s, n), (v, _)| (s + f64::from(*v), n + 1));
        assert!(n > 50, "only {n} voxels of label {label}");
        sum / n as f64
    }

    #[test]
    fn invalid_specifications_name_the_field() {
        let mut bad = spec(25.0, 1);
        assert!(generator().subject(&bad).unwrap_err().to_string().contains("age_years"));
        bad.age_years = 3.0;
        bad.resolution_mm = 2.0;
        assert!(generator().subject(&bad).unwrap_err().to_string().contains("resolution_mm"));
        let lesion = spec(3.0, 1).with_abnormality(Abnormality::Lesion {
            tissue: LesionTissue::GreyMatter,
            radius_mm: -1.0,
            contrast: 0.3,
        });
        assert!(generator().subject(&lesion).unwrap_err().to_string().contains("radius_mm"));
    }
}
