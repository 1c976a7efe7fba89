//! The base brain prepared for one output resolution, and the subjects made from it.

use super::anatomy::{mean_log_jacobian, outward_normal, ventricle_mask, ventricle_outward_velocity};
use super::lesions::{Placed, centroid};
use super::*;
use crate::SynthError;
use crate::abnormality::{Abnormality, SubjectKind};
use crate::base::BaseBrain;
use crate::bias::{bias_field, rician_noise};
use crate::contrast::{TissueIntensities, relative_contrast, white_matter_maturity};
use crate::growth::scale_factors;
use crate::rng::{standard_normal, stream, streams, uniform};
use crate::site::Site;
use crate::warp::{exponential, field_from_fn, image_from_fn, max_displacement_mm, scale_field};
use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use pedinorm_registration::interpolate::sample_linear;
use pedinorm_registration::resample::resample;
use pedinorm_registration::smooth::{smooth_mm, smooth_voxels};
use pedinorm_registration::{AffineTransform, DisplacementField, Grid, Identity, Image, Interpolation};

/// The base brain prepared for one output resolution: anti-aliased channels on the base grid
/// (sampled by every subject) and the same channels on the output grid (for placing
/// abnormalities and building their warps). Build once, generate many subjects.
pub struct Generator {
    pub(super) resolution_mm: f64,
    pub(super) grid: Grid,
    pub(super) adult: TissueIntensities,
    pub(super) fine: Channels,
    pub(super) coarse: Channels,
    pub(super) ventricles: Image<f32>,
    pub(super) centre: [f64; 3],
    pub(super) half_extent: [f64; 3],
    /// Grid of the individual warps and abnormality warps (output grid, at least 2 mm).
    pub(super) warp_grid: Grid,
    /// Outward unit normals (soft: fading away from the boundary) of the grey/white and the
    /// pial boundary, on the output grid.
    pub(super) wm_normal: DisplacementField,
    pub(super) tissue_normal: DisplacementField,
    /// Velocity pushing the ventricle walls outward, largest value 1 mm, on `warp_grid`.
    pub(super) ventricle_velocity: DisplacementField,
    /// Mean log-Jacobian over the ventricles of the exponential of `ventricle_velocity`.
    pub(super) ventricle_log_growth_per_mm: f64,
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
pub(super) struct Sampled {
    pub(super) csf: f32,
    pub(super) gm: f32,
    pub(super) wm: f32,
    pub(super) mask: f32,
    pub(super) texture: f32,
}

impl Channels {
    pub(super) fn sample(&self, world: [f64; 3]) -> Sampled {
        let voxel = self.mask.grid().world_to_voxel(world);
        Sampled {
            csf: sample_linear(&self.csf, voxel, 0.0),
            gm: sample_linear(&self.gm, voxel, 0.0),
            wm: sample_linear(&self.wm, voxel, 0.0),
            mask: sample_linear(&self.mask, voxel, 0.0),
            texture: sample_linear(&self.texture, voxel, 0.0),
        }
    }

    pub(super) fn map(&self, f: impl Fn(&Image<f32>) -> Image<f32>) -> Channels {
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
pub(super) fn anti_alias_sigma(base_mm: f64, output_mm: f64) -> f64 {
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
            Some(abnormality) => {
                Some(self.place(abnormality, spec.abnormality_site, spec.seed, mean_scale)?)
            }
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
}

/// The site's point-spread blur (in-plane along the first two voxel axes, slice profile along
/// the third).
pub(super) fn site_blur(image: Image<f32>, site: &Site) -> Image<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::tests::{generator, mean_where, spec};

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
}
