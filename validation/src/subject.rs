//! One synthetic subject: the base brain grown to an age, given its own anatomy, pose, tissue
//! contrast, optional abnormality, bias field and noise, with the ground truth of every step.

use crate::SynthError;
use crate::abnormality::{Abnormality, LesionTissue, SubjectKind};
use crate::base::BaseBrain;
use crate::bias::{bias_field, rician_noise};
use crate::contrast::{TissueIntensities, relative_contrast, white_matter_maturity};
use crate::growth::{Sex, scale_factors};
use crate::rng::{standard_normal, stream, streams, uniform};
use crate::site::Site;
use crate::warp::{
    exponential, field_from_fn, image_from_fn, jacobian_determinant, max_displacement_mm, random_field_rms,
    random_velocity, scale_field,
};
use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use pedinorm_registration::interpolate::sample_linear;
use pedinorm_registration::resample::resample;
use pedinorm_registration::smooth::{smooth_mm, smooth_voxels};
use pedinorm_registration::{AffineTransform, DisplacementField, Grid, Identity, Image, Interpolation};
use rand::Rng;
use serde::{Deserialize, Serialize};

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

/// The base brain prepared for one output resolution: anti-aliased channels on the base grid
/// (sampled by every subject) and the same channels on the output grid (for placing
/// abnormalities and building their warps). Build once, generate many subjects.
pub struct Generator {
    resolution_mm: f64,
    grid: Grid,
    adult: TissueIntensities,
    fine: Channels,
    coarse: Channels,
    ventricles: Image<f32>,
    centre: [f64; 3],
    half_extent: [f64; 3],
    /// Grid of the individual warps and abnormality warps (output grid, at least 2 mm).
    warp_grid: Grid,
    /// Outward unit normals (soft: fading away from the boundary) of the grey/white and the
    /// pial boundary, on the output grid.
    wm_normal: DisplacementField,
    tissue_normal: DisplacementField,
    /// Velocity pushing the ventricle walls outward, largest value 1 mm, on `warp_grid`.
    ventricle_velocity: DisplacementField,
    /// Mean log-Jacobian over the ventricles of the exponential of `ventricle_velocity`.
    ventricle_log_growth_per_mm: f64,
}

/// The base's tissue fractions, brain mask and texture residual on one grid.
pub(crate) struct Channels {
    pub(crate) csf: Image<f32>,
    pub(crate) gm: Image<f32>,
    pub(crate) wm: Image<f32>,
    pub(crate) mask: Image<f32>,
    pub(crate) texture: Image<f32>,
}

/// Values of the base channels at one base point.
#[derive(Default, Clone, Copy)]
struct Sampled {
    csf: f32,
    gm: f32,
    wm: f32,
    mask: f32,
    texture: f32,
}

impl Channels {
    fn sample(&self, world: [f64; 3]) -> Sampled {
        let voxel = self.mask.grid().world_to_voxel(world);
        Sampled {
            csf: sample_linear(&self.csf, voxel, 0.0),
            gm: sample_linear(&self.gm, voxel, 0.0),
            wm: sample_linear(&self.wm, voxel, 0.0),
            mask: sample_linear(&self.mask, voxel, 0.0),
            texture: sample_linear(&self.texture, voxel, 0.0),
        }
    }

    fn map(&self, f: impl Fn(&Image<f32>) -> Image<f32>) -> Channels {
        Channels {
            csf: f(&self.csf),
            gm: f(&self.gm),
            wm: f(&self.wm),
            mask: f(&self.mask),
            texture: f(&self.texture),
        }
    }
}

/// Anti-aliasing blur for sampling a base of spacing `base_mm` at `output_mm` (mm σ); the
/// output is sampled up to ~1.25 times coarser in base space because young brains are smaller.
fn anti_alias_sigma(base_mm: f64, output_mm: f64) -> f64 {
    let effective = output_mm * 1.25;
    0.4 * (effective * effective - base_mm * base_mm).max(0.0).sqrt()
}

impl Generator {
    /// Prepares `base` for subjects at `resolution_mm`.
    pub fn new(base: &BaseBrain, resolution_mm: f64) -> Result<Self, SynthError> {
        if !(resolution_mm.is_finite() && (0.5..=8.0).contains(&resolution_mm)) {
            return Err(SynthError::InvalidSpec {
                field: "resolution_mm",
                rule: format!("{resolution_mm} must be within 0.5–8 mm"),
            });
        }
        let grid = resampled_grid(base.grid(), resolution_mm);
        let adult = base.adult_intensities();
        let mask = base.brain_mask();
        let csf = base.csf();
        let texture = image_from_fn(base.grid(), |[i, j, k]| {
            let idx = [i, j, k];
            if mask.data()[idx] < 0.5 {
                return 0.0;
            }
            let model = f64::from(csf.data()[idx]) * adult.csf
                + f64::from(base.gm.data()[idx]) * adult.grey_matter
                + f64::from(base.wm.data()[idx]) * adult.white_matter;
            (f64::from(base.t1.data()[idx]) - model) as f32
        });
        let raw = Channels { csf, gm: base.gm.clone(), wm: base.wm.clone(), mask, texture };
        let base_spacing = base.grid().spacing().iter().cloned().fold(f64::INFINITY, f64::min);
        let sigma = anti_alias_sigma(base_spacing, resolution_mm);
        let fine = if sigma > 0.05 { raw.map(|image| smooth_mm(image, sigma)) } else { raw };
        let coarse = fine.map(|image| resample(image, &grid, &Identity, Interpolation::Linear, 0.0));
        // Brain centroid and half extent (world) from the output-grid mask.
        let dims = grid.dims();
        let (mut sum, mut weight) = ([0.0f64; 3], 0.0f64);
        let (mut low, mut high) = ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let m = f64::from(coarse.mask.data()[[i, j, k]]);
                    if m < 0.5 {
                        continue;
                    }
                    let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    for a in 0..3 {
                        sum[a] += m * p[a];
                        low[a] = low[a].min(p[a]);
                        high[a] = high[a].max(p[a]);
                    }
                    weight += m;
                }
            }
        }
        if weight <= 0.0 {
            return Err(SynthError::InvalidBase {
                field: "t1",
                rule: format!("no brain voxel remains at {resolution_mm} mm"),
            });
        }
        let centre = [sum[0] / weight, sum[1] / weight, sum[2] / weight];
        let half_extent = [
            (0.5 * (high[0] - low[0])).max(1.0),
            (0.5 * (high[1] - low[1])).max(1.0),
            (0.5 * (high[2] - low[2])).max(1.0),
        ];
        let ventricles = ventricle_mask(&grid, &coarse, centre, half_extent);
        let warp_grid = resampled_grid(&grid, resolution_mm.max(2.0));
        let wm_normal = outward_normal(&coarse.wm);
        let tissue =
            image_from_fn(&grid, |[i, j, k]| coarse.wm.data()[[i, j, k]] + coarse.gm.data()[[i, j, k]]);
        let tissue_normal = outward_normal(&tissue);
        let ventricle_velocity = ventricle_outward_velocity(&ventricles, &warp_grid);
        let ventricle_log_growth_per_mm = match &ventricle_velocity {
            Some(velocity) => mean_log_jacobian(&exponential(velocity), &ventricles),
            None => 0.0,
        };
        let ventricle_velocity = ventricle_velocity.unwrap_or_else(|| DisplacementField::zeros(&warp_grid));
        Ok(Self {
            resolution_mm,
            grid,
            adult,
            fine,
            coarse,
            ventricles,
            centre,
            half_extent,
            warp_grid,
            wm_normal,
            tissue_normal,
            ventricle_velocity,
            ventricle_log_growth_per_mm,
        })
    }

    /// The output grid shared by every subject of this generator (base field of view).
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The output resolution (mm).
    pub fn resolution_mm(&self) -> f64 {
        self.resolution_mm
    }

    /// Adult tissue intensities fitted on the base.
    pub fn adult_intensities(&self) -> TissueIntensities {
        self.adult
    }

    /// The base channels on the output grid.
    pub(crate) fn coarse_channels(&self) -> &Channels {
        &self.coarse
    }

    /// The base's ventricles on the output grid (1 inside).
    pub fn ventricle_mask(&self) -> &Image<f32> {
        &self.ventricles
    }

    /// Centroid of the base brain (world mm); its x is the midline.
    pub fn brain_centre(&self) -> [f64; 3] {
        self.centre
    }

    /// The base brain resampled to the output grid (base space, adult contrast, no noise): a
    /// reference "template" for tests.
    pub fn base_on_grid(&self) -> Image<f32> {
        let c = &self.coarse;
        let adult = self.adult;
        image_from_fn(&self.grid, |idx| {
            let idx = [idx[0], idx[1], idx[2]];
            (f64::from(c.csf.data()[idx]) * adult.csf
                + f64::from(c.gm.data()[idx]) * adult.grey_matter
                + f64::from(c.wm.data()[idx]) * adult.white_matter
                + f64::from(c.texture.data()[idx]))
            .max(0.0) as f32
        })
    }

    /// Generates one subject; `spec.resolution_mm` must equal the generator's resolution.
    pub fn subject(&self, spec: &SubjectSpec) -> Result<SyntheticSubject, SynthError> {
        spec.validate()?;
        if (spec.resolution_mm - self.resolution_mm).abs() > 1e-9 {
            return Err(SynthError::InvalidSpec {
                field: "resolution_mm",
                rule: format!(
                    "{} differs from the generator's {} mm",
                    spec.resolution_mm, self.resolution_mm
                ),
            });
        }
        let options = &spec.options;
        let grid = &self.grid;
        let centre = Vector3::from(self.centre);

        // Growth and pose: subject point x ↦ base point c + D⁻¹(R(x − c) + t).
        let individual =
            (options.size_variation * standard_normal(&mut stream(spec.seed, streams::SIZE))).exp();
        let scale = scale_factors(spec.age_years, spec.sex, individual);
        let mean_scale = (scale[0] * scale[1] * scale[2]).cbrt();
        let mut pose_rng = stream(spec.seed, streams::POSE);
        let max_angle = options.pose_rotation_deg.to_radians();
        let angles: Vec<f64> = (0..3).map(|_| uniform(&mut pose_rng, -max_angle, max_angle)).collect();
        let translation: Vec<f64> = (0..3)
            .map(|_| uniform(&mut pose_rng, -options.pose_translation_mm, options.pose_translation_mm))
            .collect();
        let rotation = *Rotation3::from_euler_angles(angles[0], angles[1], angles[2]).matrix();
        let shrink = Matrix3::from_diagonal(&Vector3::new(1.0 / scale[0], 1.0 / scale[1], 1.0 / scale[2]));
        let linear = shrink * rotation;
        let offset =
            centre + shrink * Vector3::new(translation[0], translation[1], translation[2]) - linear * centre;
        let mut matrix = Matrix4::identity();
        matrix.fixed_view_mut::<3, 3>(0, 0).copy_from(&linear);
        for r in 0..3 {
            matrix[(r, 3)] = offset[r];
        }
        let affine = AffineTransform::from_matrix(matrix);
        let affine_inverse = affine.inverse().expect("scaled rotations are invertible");

        // Individual anatomy: a random diffeomorphism in base space (smooth shape, fine
        // folding, ventricle size, hemispheric asymmetry), and boundary shifts of the tissues.
        let (velocity, individual) = self.individual_velocity(spec);
        let anatomy = exponential(&velocity);
        let anatomy_inverse = exponential(&scale_field(&velocity, -1.0));
        let anatomy_warp_max_mm = max_displacement_mm(&anatomy);
        let boundaries = self.boundary_shifts(spec, &individual, mean_scale);

        // Abnormality (base space): a warp, an intensity profile, or nothing.
        let placed = match &spec.abnormality {
            Some(abnormality) => Some(self.place(abnormality, spec.seed, mean_scale)?),
            None => None,
        };
        let (abnormal_forward, abnormal_inverse) = match placed.as_ref().and_then(|p| p.velocity.as_ref()) {
            Some(v) => (Some(exponential(v)), Some(exponential(&scale_field(v, -1.0)))),
            None => (None, None),
        };

        let subject_to_base = |x: [f64; 3]| -> [f64; 3] {
            let q = pedinorm_registration::SpatialTransform::transform_point(&affine, x);
            let u = anatomy.displacement_at(q);
            let r = [q[0] + u[0], q[1] + u[1], q[2] + u[2]];
            match &abnormal_inverse {
                Some(field) => {
                    let a = field.displacement_at(r);
                    [r[0] + a[0], r[1] + a[1], r[2] + a[2]]
                }
                None => r,
            }
        };
        let base_to_subject = |w: [f64; 3]| -> [f64; 3] {
            let r = match &abnormal_forward {
                Some(field) => {
                    let a = field.displacement_at(w);
                    [w[0] + a[0], w[1] + a[1], w[2] + a[2]]
                }
                None => w,
            };
            let u = anatomy_inverse.displacement_at(r);
            let q = [r[0] + u[0], r[1] + u[1], r[2] + u[2]];
            pedinorm_registration::SpatialTransform::transform_point(&affine_inverse, q)
        };
        let deformation = field_from_fn(grid, |[i, j, k]| {
            let x = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let w = subject_to_base(x);
            [w[0] - x[0], w[1] - x[1], w[2] - x[2]]
        });
        let inverse_deformation = field_from_fn(grid, |[i, j, k]| {
            let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let x = base_to_subject(w);
            [x[0] - w[0], x[1] - w[1], x[2] - w[2]]
        });

        // Tissue image in subject space: pull the base channels through the deformation.
        let dims = grid.dims();
        let base_point = |[i, j, k]: [usize; 3]| -> [f64; 3] {
            let flat = (i * dims[1] + j) * dims[2] + k;
            let x = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let u = deformation.displacement_at_voxel(flat);
            [x[0] + u[0], x[1] + u[1], x[2] + u[2]]
        };
        let site = &spec.site;
        let adult = TissueIntensities {
            csf: self.adult.grey_matter - (self.adult.grey_matter - self.adult.csf) * site.csf_contrast,
            grey_matter: self.adult.grey_matter,
            white_matter: self.adult.grey_matter
                + (self.adult.white_matter - self.adult.grey_matter) * site.wm_contrast,
        };
        let delay_years = options.myelination_delay_years;
        let age = spec.age_years;
        let lesion_profile = |w: [f64; 3]| -> f32 {
            match &placed {
                Some(Placed { profile: Some(profile), .. }) => profile.value(w),
                _ => 0.0,
            }
        };
        let lesion_contrast = match spec.abnormality {
            Some(Abnormality::Lesion { contrast, .. }) => contrast,
            _ => 0.0,
        };
        let sampled: Vec<(Sampled, f32, f32)> = crate::warp::map_voxels(grid, |v| {
            let w = base_point(v);
            let s = boundaries.sample(self, w);
            let maturity = white_matter_maturity(age - delay_years * self.maturation_delay(w));
            let mu = adult.at_maturity(maturity);
            let texture_gain = relative_contrast(maturity).clamp(-1.0, 1.0) * site.wm_contrast;
            let tissue = f64::from(s.csf) * mu.csf
                + f64::from(s.gm) * mu.grey_matter
                + f64::from(s.wm) * mu.white_matter
                + f64::from(s.texture) * texture_gain;
            let profile = lesion_profile(w);
            let intensity = tissue.max(0.0) * (1.0 + lesion_contrast * f64::from(profile));
            (s, intensity as f32, profile)
        });
        let image_of = |f: &dyn Fn(&(Sampled, f32, f32)) -> f32| -> Image<f32> {
            let data =
                ndarray::Array3::from_shape_vec((dims[0], dims[1], dims[2]), sampled.iter().map(f).collect())
                    .expect("one value per voxel");
            Image::new(data, grid.clone()).expect("shape matches grid")
        };
        let tissue_image = image_of(&|(_, intensity, _)| *intensity);
        let brain_mask = image_of(&|(s, _, _)| if s.mask >= 0.5 { 1.0 } else { 0.0 });
        let labels = image_of(&|(s, _, _)| {
            if s.mask < 0.5 {
                0.0
            } else if s.wm >= s.gm && s.wm >= s.csf {
                3.0
            } else if s.gm >= s.csf {
                2.0
            } else {
                1.0
            }
        });
        let voxel_ml = grid.linear().determinant().abs() / 1000.0;
        let brain_volume_ml =
            sampled.iter().map(|(s, _, _)| f64::from(s.mask.clamp(0.0, 1.0))).sum::<f64>() * voxel_ml;

        // Truth region of the abnormality, in subject and base space.
        let (lesion_mask, lesion_mask_base) = match &placed {
            Some(p) => {
                let subject = image_from_fn(grid, |v| if p.inside(self, base_point(v)) { 1.0 } else { 0.0 });
                let base = image_from_fn(grid, |[i, j, k]| {
                    let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    if p.inside(self, w) { 1.0 } else { 0.0 }
                });
                (Some(subject), Some(base))
            }
            None => (None, None),
        };
        let abnormality_centre_mm = lesion_mask.as_ref().and_then(centroid);

        // Scanner: point-spread blur, bias field, site scale, Rician noise.
        let tissue_image = site_blur(tissue_image, site);
        let mut bias_rng = stream(spec.seed, streams::BIAS);
        let strength = uniform(&mut bias_rng, site.bias_range.0, site.bias_range.1);
        let bias = bias_field(grid, &brain_mask, strength, &mut bias_rng);
        let mut signal = tissue_image;
        for (value, b) in signal.as_mut_slice().iter_mut().zip(bias.as_slice()) {
            *value = (f64::from(*value) * f64::from(*b) * site.intensity_scale) as f32;
        }
        let (brain_sum, brain_count) = signal
            .as_slice()
            .iter()
            .zip(brain_mask.as_slice())
            .filter(|(_, m)| **m > 0.5)
            .fold((0.0f64, 0usize), |(s, n), (v, _)| (s + f64::from(*v), n + 1));
        let mean_brain = if brain_count > 0 { brain_sum / brain_count as f64 } else { 0.0 };
        let noise_sigma = if site.snr.is_finite() { mean_brain / site.snr } else { 0.0 };
        let image = rician_noise(&signal, noise_sigma, spec.seed);

        Ok(SyntheticSubject {
            id: format!("synthetic-{:016x}", spec.seed),
            image,
            brain_mask,
            truth: Truth {
                kind: spec.abnormality.map(|a| a.kind()).unwrap_or(SubjectKind::Normal),
                abnormality: spec.abnormality,
                deformation,
                inverse_deformation,
                affine,
                lesion_mask,
                lesion_mask_base,
                abnormality_centre_mm,
                labels,
                bias_field: bias,
                scale_factors: scale,
                brain_volume_ml,
                intensities: adult.at_age(age),
                noise_sigma,
                site: site.clone(),
                individual,
                anatomy_warp_max_mm,
            },
            age_years: spec.age_years,
            sex: spec.sex,
            site: site.id.clone(),
        })
    }

    /// The subject's individual-anatomy velocity in base space on the warp grid: the smooth
    /// shape warp, the fine folding warp, the ventricle push scaled to the drawn ventricle
    /// volume, and the hemispheric asymmetry (right hemisphere widened, shifted forward).
    fn individual_velocity(&self, spec: &SubjectSpec) -> (DisplacementField, IndividualAnatomy) {
        let o = &spec.options;
        let smooth_grid = resampled_grid(&self.grid, self.resolution_mm.max(o.warp_smoothness_mm / 3.0));
        let smooth =
            random_velocity(&smooth_grid, o.warp_smoothness_mm, o.max_warp_mm, spec.seed, streams::ANATOMY);
        let folding = (o.folding_rms_mm > 0.0).then(|| {
            random_field_rms(
                &self.warp_grid,
                o.folding_scale_mm,
                o.folding_rms_mm,
                spec.seed,
                streams::FOLDING,
            )
        });
        let mut rng = stream(spec.seed, streams::INDIVIDUAL);
        let z: Vec<f64> = (0..5).map(|_| standard_normal(&mut rng)).collect();
        let log_sd = (1.0 + o.ventricle_volume_cv.powi(2)).ln().sqrt();
        let ventricle_volume_factor = (log_sd * z[0] - 0.5 * log_sd * log_sd).exp();
        let ventricle_dilation_mm = if self.ventricle_log_growth_per_mm > 0.0 {
            (ventricle_volume_factor.ln() / self.ventricle_log_growth_per_mm)
                .clamp(-MAX_VENTRICLE_DILATION_MM, MAX_VENTRICLE_DILATION_MM)
        } else {
            0.0
        };
        let individual = IndividualAnatomy {
            ventricle_volume_factor,
            ventricle_dilation_mm,
            thickness_offset_mm: o.thickness_sd_mm * z[1],
            sulcal_csf_shift_mm: o.sulcal_csf_sd_mm * z[2],
            hemispheric_asymmetry: o.asymmetry_sd * z[3],
            petalia_mm: o.petalia_sd_mm * z[4],
        };
        let grid = &self.warp_grid;
        let dims = grid.dims();
        let midline = self.centre[0];
        let velocity = field_from_fn(grid, |[i, j, k]| {
            let flat = (i * dims[1] + j) * dims[2] + k;
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let mut v = smooth.displacement_at(p);
            let mut add = |u: [f64; 3], factor: f64| (0..3).for_each(|a| v[a] += factor * u[a]);
            if let Some(folding) = &folding {
                add(folding.displacement_at_voxel(flat), 1.0);
            }
            if ventricle_dilation_mm != 0.0 {
                add(self.ventricle_velocity.displacement_at_voxel(flat), ventricle_dilation_mm);
            }
            // Right of the midline (RAS+ x) stretched by the asymmetry; a smooth step over ~5 mm.
            let x = p[0] - midline;
            let right = 1.0 / (1.0 + (-x / 5.0).exp());
            v[0] += individual.hemispheric_asymmetry * x * right;
            v[1] += 0.5 * individual.petalia_mm * (x / 10.0).tanh();
            v
        });
        (velocity, individual)
    }

    /// The subject's boundary shifts in base space (millimetres of the subject divided by its
    /// growth scale): independent band-limited fields for the grey/white and the pial
    /// boundary, plus the global thickness and sulcal-CSF offsets along the normals.
    fn boundary_shifts(
        &self,
        spec: &SubjectSpec,
        individual: &IndividualAnatomy,
        mean_scale: f64,
    ) -> Boundaries {
        let o = &spec.options;
        let field = |stream_id| {
            (o.boundary_rms_mm > 0.0).then(|| {
                random_field_rms(
                    &self.warp_grid,
                    o.boundary_scale_mm / mean_scale,
                    o.boundary_rms_mm / mean_scale,
                    spec.seed,
                    stream_id,
                )
            })
        };
        let half_thickness = 0.5 * individual.thickness_offset_mm;
        Boundaries {
            wm: field(streams::BOUNDARY_WM),
            pial: field(streams::BOUNDARY_PIAL),
            // Sampling the white matter further out shrinks it (thicker cortex); sampling the
            // tissue further in grows it (thicker cortex), further out adds CSF.
            wm_shift_mm: half_thickness / mean_scale,
            pial_shift_mm: (individual.sulcal_csf_shift_mm - half_thickness) / mean_scale,
        }
    }

    /// Relative maturation delay in [0, 1] at a base point: 0 in the central posterior brain,
    /// 1 at the frontal periphery.
    fn maturation_delay(&self, w: [f64; 3]) -> f64 {
        let d: Vec<f64> = (0..3).map(|a| (w[a] - self.centre[a]) / self.half_extent[a]).collect();
        let radial = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt().min(1.0);
        let anterior = (0.5 * (d[1] + 1.0)).clamp(0.0, 1.0);
        (0.6 * anterior + 0.4 * radial).clamp(0.0, 1.0)
    }

    /// Chooses where the abnormality goes and builds its warp or intensity profile.
    fn place(&self, abnormality: &Abnormality, seed: u64, mean_scale: f64) -> Result<Placed, SynthError> {
        let mut rng = stream(seed, streams::ABNORMALITY);
        let grid = &self.grid;
        // Abnormality warps are smooth on a scale of several mm: a grid of at least 2 mm keeps
        // 1 mm subjects fast.
        let velocity_grid = &self.warp_grid;
        let c = &self.coarse;
        let pick =
            |candidates: &[usize], fallback: &Image<f32>, rng: &mut rand_chacha::ChaCha8Rng| -> [f64; 3] {
                let flat = if candidates.is_empty() {
                    // The best available voxel when no candidate meets the criteria.
                    fallback
                        .as_slice()
                        .iter()
                        .enumerate()
                        .fold(
                            (0usize, f32::NEG_INFINITY),
                            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
                        )
                        .0
                } else {
                    candidates[rng.random_range(0..candidates.len())]
                };
                let d = grid.dims();
                let (i, j, k) = (flat / (d[1] * d[2]), (flat / d[2]) % d[1], flat % d[2]);
                grid.voxel_to_world([i as f64, j as f64, k as f64])
            };
        let select = |image: &Image<f32>, threshold: f32| -> Vec<usize> {
            image.as_slice().iter().enumerate().filter(|(_, v)| **v >= threshold).map(|(i, _)| i).collect()
        };
        match *abnormality {
            Abnormality::Lesion { tissue, radius_mm, .. } => {
                let radius = radius_mm / mean_scale;
                let (smoothed, threshold) = match tissue {
                    LesionTissue::WhiteMatter => (smooth_mm(&c.wm, 0.5 * radius), 0.9),
                    LesionTissue::GreyMatter => (smooth_mm(&c.gm, 0.25 * radius), 0.6),
                };
                let mut candidates = select(&smoothed, threshold);
                if tissue == LesionTissue::GreyMatter {
                    candidates.retain(|&i| c.gm.as_slice()[i] >= 0.6);
                }
                let centre = pick(&candidates, &smoothed, &mut rng);
                let directions: Vec<([f64; 3], f64)> = (0..3)
                    .map(|_| {
                        let n =
                            [standard_normal(&mut rng), standard_normal(&mut rng), standard_normal(&mut rng)];
                        let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt().max(1e-9);
                        ([n[0] / len, n[1] / len, n[2] / len], uniform(&mut rng, -0.12, 0.12))
                    })
                    .collect();
                let ramp = self.resolution_mm / mean_scale;
                Ok(Placed {
                    centre,
                    radius,
                    velocity: None,
                    profile: Some(LesionProfile { centre, radius, ramp, lobes: directions }),
                    ventricles: false,
                })
            }
            Abnormality::Atrophy { radius_mm, volume_loss } => {
                let radius = radius_mm / mean_scale;
                let inside = smooth_mm(&c.mask, 0.5 * radius);
                let mut candidates = select(&c.gm, 0.6);
                candidates.retain(|&i| inside.as_slice()[i] >= 0.75);
                let centre = pick(&candidates, &c.gm, &mut rng);
                // v(y) = −a (y − c) exp(−|y − c|² / 2σ²): the flow contracts toward c with
                // Jacobian exp(−3a) at c; log-Jacobian is negative within √3 σ = radius.
                let sigma = radius / 3f64.sqrt();
                let a = -(1.0 - volume_loss).ln() / 3.0;
                let velocity = field_from_fn(velocity_grid, |[i, j, k]| {
                    let y = velocity_grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    let d = [y[0] - centre[0], y[1] - centre[1], y[2] - centre[2]];
                    let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                    let g = -a * (-r2 / (2.0 * sigma * sigma)).exp();
                    [g * d[0], g * d[1], g * d[2]]
                });
                Ok(Placed { centre, radius, velocity: Some(velocity), profile: None, ventricles: false })
            }
            Abnormality::EnlargedVentricles { dilation_mm } => {
                let count = self.ventricles.as_slice().iter().filter(|&&v| v > 0.5).count();
                if count == 0 {
                    return Err(SynthError::NoLocation("the base brain has no deep CSF (ventricles)".into()));
                }
                if self.ventricle_log_growth_per_mm <= 0.0 {
                    return Err(SynthError::NoLocation("the ventricle mask has no boundary".into()));
                }
                let velocity = scale_field(&self.ventricle_velocity, dilation_mm);
                let centre = centroid(&self.ventricles).expect("non-empty ventricle mask");
                Ok(Placed { centre, radius: 0.0, velocity: Some(velocity), profile: None, ventricles: true })
            }
        }
    }
}

/// Largest ventricle push (mm) of the individual anatomy, either way.
const MAX_VENTRICLE_DILATION_MM: f64 = 10.0;

/// A subject's shifts of the grey/white and pial boundaries (base space).
struct Boundaries {
    wm: Option<DisplacementField>,
    pial: Option<DisplacementField>,
    wm_shift_mm: f64,
    pial_shift_mm: f64,
}

impl Boundaries {
    /// The base channels at `w` with the white matter read at the shifted grey/white boundary
    /// and the tissue (grey + white) at the shifted pial boundary; the brain (tissue + CSF)
    /// stays as in the base, so what the tissue loses becomes CSF and vice versa.
    fn sample(&self, generator: &Generator, w: [f64; 3]) -> Sampled {
        let s = generator.fine.sample(w);
        if self.wm.is_none() && self.pial.is_none() && self.wm_shift_mm == 0.0 && self.pial_shift_mm == 0.0 {
            return s;
        }
        let shifted = |field: &Option<DisplacementField>, normal: &DisplacementField, along: f64| {
            let mut p = w;
            if let Some(field) = field {
                let u = field.displacement_at(w);
                (0..3).for_each(|a| p[a] += u[a]);
            }
            if along != 0.0 {
                let n = normal.displacement_at(w);
                (0..3).for_each(|a| p[a] += along * n[a]);
            }
            generator.fine.mask.grid().world_to_voxel(p)
        };
        let fine = &generator.fine;
        let at_wm = shifted(&self.wm, &generator.wm_normal, self.wm_shift_mm);
        let at_pial = shifted(&self.pial, &generator.tissue_normal, self.pial_shift_mm);
        let brain = s.csf + s.gm + s.wm;
        let tissue =
            (sample_linear(&fine.gm, at_pial, 0.0) + sample_linear(&fine.wm, at_pial, 0.0)).clamp(0.0, brain);
        let wm = sample_linear(&fine.wm, at_wm, 0.0).clamp(0.0, tissue);
        Sampled { csf: brain - tissue, gm: tissue - wm, wm, ..s }
    }
}

/// The site's point-spread blur (in-plane along the first two voxel axes, slice profile along
/// the third).
fn site_blur(image: Image<f32>, site: &Site) -> Image<f32> {
    let spacing = image.grid().spacing();
    let to_sigma = |fwhm: f64, axis: usize| fwhm / (8.0 * 2f64.ln()).sqrt() / spacing[axis];
    let sigma = [
        to_sigma(site.blur_fwhm_mm, 0),
        to_sigma(site.blur_fwhm_mm, 1),
        to_sigma(site.slice_blur_fwhm_mm, 2),
    ];
    if sigma.iter().all(|&s| s < 1e-3) {
        return image;
    }
    smooth_voxels(&image, sigma)
}

/// The lateral ventricles (and the third ventricle) of the base on the output grid: CSF deep
/// inside the brain (far from the surface), in the central part of the brain, keeping the
/// large connected components (sulcal and cisternal CSF fragments fall away).
fn ventricle_mask(grid: &Grid, coarse: &Channels, centre: [f64; 3], half_extent: [f64; 3]) -> Image<f32> {
    let depth = smooth_mm(&coarse.mask, 8.0);
    let candidate = image_from_fn(grid, |[i, j, k]| {
        let idx = [i, j, k];
        let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
        let d: f64 = (0..3).map(|a| ((w[a] - centre[a]) / half_extent[a]).powi(2)).sum::<f64>().sqrt();
        if coarse.csf.data()[idx] > 0.5 && depth.data()[idx] > 0.97 && d < 0.55 { 1.0 } else { 0.0 }
    });
    // 6-connected components, labelled in C order (deterministic).
    let dims = grid.dims();
    let values = candidate.as_slice();
    let mut label = vec![0u32; values.len()];
    let mut sizes = vec![0usize];
    let mut stack = Vec::new();
    for seed in 0..values.len() {
        if values[seed] < 0.5 || label[seed] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        sizes.push(0);
        label[seed] = id;
        stack.push(seed);
        while let Some(flat) = stack.pop() {
            sizes[id as usize] += 1;
            let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
            let mut visit = |n: usize| {
                if values[n] > 0.5 && label[n] == 0 {
                    label[n] = id;
                    stack.push(n);
                }
            };
            if i > 0 {
                visit(flat - dims[1] * dims[2]);
            }
            if i + 1 < dims[0] {
                visit(flat + dims[1] * dims[2]);
            }
            if j > 0 {
                visit(flat - dims[2]);
            }
            if j + 1 < dims[1] {
                visit(flat + dims[2]);
            }
            if k > 0 {
                visit(flat - 1);
            }
            if k + 1 < dims[2] {
                visit(flat + 1);
            }
        }
    }
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut mask = candidate;
    for (value, &l) in mask.as_mut_slice().iter_mut().zip(&label) {
        *value = if l > 0 && sizes[l as usize] * 4 >= largest { 1.0 } else { 0.0 };
    }
    mask
}

/// The velocity pushing the ventricle walls outward along −∇g, g the ventricle mask smoothed
/// at 3 mm, scaled so its largest value is 1 mm: its divergence −Δg is positive inside the
/// ventricles (expansion) and negative around them (compression). `None` without a boundary.
fn ventricle_outward_velocity(ventricles: &Image<f32>, warp_grid: &Grid) -> Option<DisplacementField> {
    let coarse = resample(ventricles, warp_grid, &Identity, Interpolation::Linear, 0.0);
    let gradient = gradient_field(&smooth_mm(&coarse, 3.0));
    let largest = max_displacement_mm(&gradient);
    (largest > 0.0).then(|| scale_field(&gradient, -1.0 / largest))
}

/// The world-space gradient of an image (central differences, one-sided at the border).
fn gradient_field(image: &Image<f32>) -> DisplacementField {
    let grid = image.grid().clone();
    let dims = grid.dims();
    let inverse_linear = grid.linear().try_inverse().expect("valid grid");
    field_from_fn(&grid, |[i, j, k]| {
        let idx = [i, j, k];
        let mut voxel_gradient = Vector3::zeros();
        for a in 0..3 {
            let (mut lo, mut hi) = (idx, idx);
            lo[a] = idx[a].saturating_sub(1);
            hi[a] = (idx[a] + 1).min(dims[a] - 1);
            if hi[a] > lo[a] {
                voxel_gradient[a] = f64::from(image.data()[hi] - image.data()[lo]) / (hi[a] - lo[a]) as f64;
            }
        }
        let world = inverse_linear.transpose() * voxel_gradient;
        [world[0], world[1], world[2]]
    })
}

/// Gradient magnitude (per mm) of a tissue fraction smoothed at 2 mm above which the normal
/// has unit length; below it the normal fades, so shifts vanish away from boundaries.
const NORMAL_FULL_GRADIENT: f64 = 0.05;

/// Soft outward normal of the boundary of a tissue fraction: `−∇f / |∇f|` of `f` smoothed at
/// 2 mm, shortened where `|∇f|` is below [`NORMAL_FULL_GRADIENT`].
fn outward_normal(fraction: &Image<f32>) -> DisplacementField {
    let gradient = gradient_field(&smooth_mm(fraction, 2.0));
    let [x, y, z] = gradient.components();
    let grid = fraction.grid().clone();
    let dims = grid.dims();
    field_from_fn(&grid, |[i, j, k]| {
        let flat = (i * dims[1] + j) * dims[2] + k;
        let g = [f64::from(x.as_slice()[flat]), f64::from(y.as_slice()[flat]), f64::from(z.as_slice()[flat])];
        let norm = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
        if norm <= 1e-12 {
            return [0.0; 3];
        }
        let length = (norm / NORMAL_FULL_GRADIENT).min(1.0) / norm;
        [-g[0] * length, -g[1] * length, -g[2] * length]
    })
}

/// Mean log-Jacobian of `field` over the voxels of `mask` (any grid: the mask is sampled at
/// the field's voxel centres).
fn mean_log_jacobian(field: &DisplacementField, mask: &Image<f32>) -> f64 {
    let det = jacobian_determinant(field);
    let grid = field.grid();
    let dims = grid.dims();
    let (mut sum, mut count) = (0.0, 0usize);
    for (flat, &d) in det.as_slice().iter().enumerate() {
        let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
        let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
        if sample_linear(mask, mask.grid().world_to_voxel(w), 0.0) >= 0.5 && d > 0.0 {
            sum += f64::from(d).ln();
            count += 1;
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Where an abnormality was placed (base space) and what it does.
struct Placed {
    centre: [f64; 3],
    radius: f64,
    velocity: Option<DisplacementField>,
    profile: Option<LesionProfile>,
    ventricles: bool,
}

impl Placed {
    /// Whether a base point lies in the truth region.
    fn inside(&self, generator: &Generator, w: [f64; 3]) -> bool {
        if let Some(profile) = &self.profile {
            return profile.value(w) >= 0.5;
        }
        if self.ventricles {
            let voxel = generator.grid.world_to_voxel(w);
            return sample_linear(&generator.ventricles, voxel, 0.0) >= 0.5;
        }
        let d2: f64 = (0..3).map(|a| (w[a] - self.centre[a]).powi(2)).sum();
        d2 < self.radius * self.radius
    }
}

/// A lesion's soft indicator in base space: 1 inside an irregular sphere, 0 outside, linear
/// over `ramp` mm across the boundary (partial volume of one output voxel).
struct LesionProfile {
    centre: [f64; 3],
    radius: f64,
    ramp: f64,
    /// Directions and amplitudes of second-order (Legendre P2) bumps of the outline.
    lobes: Vec<([f64; 3], f64)>,
}

impl LesionProfile {
    fn value(&self, w: [f64; 3]) -> f32 {
        let d = [w[0] - self.centre[0], w[1] - self.centre[1], w[2] - self.centre[2]];
        let distance = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if distance > 2.0 * self.radius + self.ramp {
            return 0.0;
        }
        let mut outline = 1.0;
        if distance > 1e-9 {
            for (n, amplitude) in &self.lobes {
                let cosine = (d[0] * n[0] + d[1] * n[1] + d[2] * n[2]) / distance;
                outline += amplitude * 0.5 * (3.0 * cosine * cosine - 1.0);
            }
        }
        (0.5 + (self.radius * outline - distance) / self.ramp).clamp(0.0, 1.0) as f32
    }
}

/// World centroid of the voxels above 0.5, `None` when there are none.
fn centroid(mask: &Image<f32>) -> Option<[f64; 3]> {
    let grid = mask.grid();
    let dims = grid.dims();
    let (mut sum, mut count) = ([0.0f64; 3], 0usize);
    for (flat, &v) in mask.as_slice().iter().enumerate() {
        if v > 0.5 {
            let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            for a in 0..3 {
                sum[a] += p[a];
            }
            count += 1;
        }
    }
    (count > 0).then(|| [sum[0] / count as f64, sum[1] / count as f64, sum[2] / count as f64])
}

/// Generates one subject from `base` (prepares the base for `spec.resolution_mm` first; use a
/// [`Generator`] to make many subjects at one resolution).
pub fn generate_subject(base: &BaseBrain, spec: &SubjectSpec) -> Result<SyntheticSubject, SynthError> {
    Generator::new(base, spec.resolution_mm)?.subject(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warp::jacobian_determinant;
    use pedinorm_registration::SpatialTransform;
    use std::sync::OnceLock;

    fn generator() -> &'static Generator {
        static GENERATOR: OnceLock<Generator> = OnceLock::new();
        GENERATOR.get_or_init(|| {
            let grid = Grid::axis_aligned([54, 64, 48], [3.0; 3], [-79.5, -94.5, -70.5]).unwrap();
            Generator::new(&BaseBrain::phantom(&grid), 3.0).unwrap()
        })
    }

    fn spec(age: f64, seed: u64) -> SubjectSpec {
        let mut spec = SubjectSpec::normal(age, Sex::Female, seed);
        spec.resolution_mm = 3.0;
        spec
    }

    fn mean_where(image: &Image<f32>, labels: &Image<f32>, label: f32) -> f64 {
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
    fn brain_volume_grows_with_age() {
        let mut previous = 0.0;
        for age in [0.0, 0.5, 1.0, 2.0, 6.0, 12.0, 17.0] {
            let mut s = spec(age, 3);
            s.options.size_variation = 0.0;
            let subject = generator().subject(&s).unwrap();
            let volume = subject.truth.brain_volume_ml;
            assert!(volume > previous, "age {age}: {volume} ml after {previous} ml");
            previous = volume;
        }
        let newborn = generator().subject(&spec(0.0, 3)).unwrap().truth.brain_volume_ml;
        assert!(newborn / previous > 0.25 && newborn / previous < 0.5, "{newborn} vs {previous}");
    }

    #[test]
    fn contrast_is_inverted_in_infants_and_adult_after_two() {
        let infant = generator().subject(&spec(0.25, 5)).unwrap();
        let (wm, gm) = (
            mean_where(&infant.image, &infant.truth.labels, 3.0),
            mean_where(&infant.image, &infant.truth.labels, 2.0),
        );
        assert!(wm < 0.95 * gm, "infant WM {wm} GM {gm}");
        let child = generator().subject(&spec(3.0, 5)).unwrap();
        let (wm, gm) = (
            mean_where(&child.image, &child.truth.labels, 3.0),
            mean_where(&child.image, &child.truth.labels, 2.0),
        );
        assert!(wm > 1.1 * gm, "child WM {wm} GM {gm}");
        let csf = mean_where(&child.image, &child.truth.labels, 1.0);
        assert!(csf < gm, "CSF {csf} GM {gm}");
    }

    #[test]
    fn lesion_mask_is_where_intensities_changed() {
        for contrast in [0.4, -0.4] {
            let mut normal = spec(8.0, 11);
            normal.site.snr = f64::INFINITY;
            let case = normal.clone().with_abnormality(Abnormality::Lesion {
                tissue: LesionTissue::WhiteMatter,
                radius_mm: 9.0,
                contrast,
            });
            let a = generator().subject(&normal).unwrap();
            let b = generator().subject(&case).unwrap();
            assert_eq!(
                b.truth.kind,
                if contrast > 0.0 { SubjectKind::HyperintenseLesion } else { SubjectKind::HypointenseLesion }
            );
            let mask = b.truth.lesion_mask.as_ref().unwrap();
            let dims = mask.grid().dims();
            let inside = mask.as_slice().iter().filter(|&&m| m > 0.5).count();
            assert!(inside > 20, "lesion of {inside} voxels");
            for (flat, ((&x, &y), &m)) in
                a.image.as_slice().iter().zip(b.image.as_slice()).zip(mask.as_slice()).enumerate()
            {
                let relative = (y - x) / x.max(1e-3);
                if m > 0.5 {
                    // Inside: changed by at least half the contrast, in its direction.
                    assert!(
                        relative * contrast as f32 > 0.5 * (contrast * contrast) as f32,
                        "voxel {flat}: {x} -> {y}"
                    );
                } else if (y - x).abs() > 1e-4 * x.abs().max(1.0) {
                    // Outside: only partial-volume voxels touching the mask change.
                    let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
                    let near = (i.saturating_sub(1)..=(i + 1).min(dims[0] - 1)).any(|ii| {
                        (j.saturating_sub(1)..=(j + 1).min(dims[1] - 1)).any(|jj| {
                            (k.saturating_sub(1)..=(k + 1).min(dims[2] - 1))
                                .any(|kk| mask.data()[[ii, jj, kk]] > 0.5)
                        })
                    });
                    assert!(near, "voxel {flat} changed far from the lesion");
                }
            }
            // The lesion sits in white matter.
            let wm = mask
                .as_slice()
                .iter()
                .zip(b.truth.labels.as_slice())
                .filter(|(m, l)| **m > 0.5 && **l == 3.0)
                .count();
            assert!(wm * 2 > inside, "{wm} of {inside} lesion voxels in WM");
        }
    }

    #[test]
    fn deformations_are_diffeomorphic_and_mutually_inverse() {
        let subject = generator().subject(&spec(1.5, 21)).unwrap();
        let truth = &subject.truth;
        for field in [&truth.deformation, &truth.inverse_deformation] {
            let det = jacobian_determinant(field);
            let min = det.as_slice().iter().cloned().fold(f32::INFINITY, f32::min);
            assert!(min > 0.0, "min Jacobian {min}");
        }
        assert!(truth.anatomy_warp_max_mm > 2.0 && truth.anatomy_warp_max_mm < 8.0);
        let grid = subject.image.grid();
        let dims = grid.dims();
        let mut worst: f64 = 0.0;
        for (flat, &m) in subject.brain_mask.as_slice().iter().enumerate() {
            if m < 0.5 {
                continue;
            }
            let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
            let x = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let back = truth.inverse_deformation.transform_point(truth.deformation.transform_point(x));
            worst = worst.max((0..3).map(|a| (back[a] - x[a]).abs()).fold(0.0, f64::max));
        }
        assert!(worst < 0.6, "round trip error {worst} mm");
    }

    #[test]
    fn atrophy_shrinks_and_ventricles_grow() {
        let normal = spec(9.0, 31);
        let atrophy =
            normal.clone().with_abnormality(Abnormality::Atrophy { radius_mm: 12.0, volume_loss: 0.4 });
        let subject = generator().subject(&atrophy).unwrap();
        let truth = &subject.truth;
        let region = truth.lesion_mask_base.as_ref().unwrap();
        let det = jacobian_determinant(&truth.inverse_deformation);
        let reference = generator().subject(&normal).unwrap();
        let reference_det = jacobian_determinant(&reference.truth.inverse_deformation);
        let mean_log = |det: &Image<f32>| {
            let (s, n) = det
                .as_slice()
                .iter()
                .zip(region.as_slice())
                .filter(|(_, m)| **m > 0.5)
                .fold((0.0, 0usize), |(s, n), (d, _)| (s + f64::from(*d).ln(), n + 1));
            assert!(n > 10);
            s / n as f64
        };
        let shrink = mean_log(&det) - mean_log(&reference_det);
        assert!(shrink < -0.1, "log-Jacobian change in the atrophy region {shrink}");

        let ventricles =
            normal.clone().with_abnormality(Abnormality::EnlargedVentricles { dilation_mm: 5.0 });
        let enlarged = generator().subject(&ventricles).unwrap();
        let csf_in_centre = |s: &SyntheticSubject| {
            let region = enlarged.truth.lesion_mask.as_ref().unwrap();
            s.truth
                .labels
                .as_slice()
                .iter()
                .zip(region.as_slice())
                .filter(|(l, m)| **l == 1.0 && **m > 0.5)
                .count()
        };
        let (big, small) = (csf_in_centre(&enlarged), csf_in_centre(&reference));
        assert!(big as f64 > 1.3 * small as f64, "ventricle CSF {big} vs {small} voxels");
    }

    #[test]
    fn same_seed_same_subject_at_any_thread_count() {
        let case = spec(4.0, 77).with_abnormality(Abnormality::Atrophy { radius_mm: 10.0, volume_loss: 0.3 });
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| generator().subject(&case).unwrap())
        };
        let (a, b) = (run(1), run(2));
        assert_eq!(a.image.as_slice(), b.image.as_slice());
        assert_eq!(a.truth.deformation, b.truth.deformation);
        assert_eq!(a.truth.lesion_mask, b.truth.lesion_mask);
        let other = generator().subject(&spec(4.0, 78)).unwrap();
        assert_ne!(a.image.as_slice(), other.image.as_slice());
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
