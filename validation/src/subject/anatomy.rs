//! A subject's individual anatomy: the shape and folding warps, the ventricle push, the
//! hemispheric asymmetry and the shifts of the grey/white and pial boundaries.

use super::generator::{Channels, Sampled};
use super::*;
use crate::rng::{standard_normal, stream, streams};
use crate::warp::{
    field_from_fn, image_from_fn, jacobian_determinant, max_displacement_mm, random_field_rms,
    random_velocity, scale_field,
};
use nalgebra::Vector3;
use pedinorm_registration::interpolate::sample_linear;
use pedinorm_registration::resample::resample;
use pedinorm_registration::smooth::smooth_mm;
use pedinorm_registration::{DisplacementField, Grid, Identity, Image, Interpolation};

impl Generator {
    /// The subject's individual-anatomy velocity in base space on the warp grid: the smooth
    /// shape warp, the fine folding warp, the ventricle push scaled to the drawn ventricle
    /// volume, and the hemispheric asymmetry (right hemisphere widened, shifted forward).
    pub(super) fn individual_velocity(&self, spec: &SubjectSpec) -> (DisplacementField, IndividualAnatomy) {
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
    pub(super) fn boundary_shifts(
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
    pub(super) fn maturation_delay(&self, w: [f64; 3]) -> f64 {
        let d: Vec<f64> = (0..3).map(|a| (w[a] - self.centre[a]) / self.half_extent[a]).collect();
        let radial = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt().min(1.0);
        let anterior = (0.5 * (d[1] + 1.0)).clamp(0.0, 1.0);
        (0.6 * anterior + 0.4 * radial).clamp(0.0, 1.0)
    }
}

/// Largest ventricle push (mm) of the individual anatomy, either way.
pub(super) const MAX_VENTRICLE_DILATION_MM: f64 = 10.0;

/// A subject's shifts of the grey/white and pial boundaries (base space).
pub(super) struct Boundaries {
    pub(super) wm: Option<DisplacementField>,
    pub(super) pial: Option<DisplacementField>,
    pub(super) wm_shift_mm: f64,
    pub(super) pial_shift_mm: f64,
}

impl Boundaries {
    /// The base channels at `w` with the white matter read at the shifted grey/white boundary
    /// and the tissue (grey + white) at the shifted pial boundary; the brain (tissue + CSF)
    /// stays as in the base, so what the tissue loses becomes CSF and vice versa.
    pub(super) fn sample(&self, generator: &Generator, w: [f64; 3]) -> Sampled {
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

/// The lateral ventricles (and the third ventricle) of the base on the output grid: CSF deep
/// inside the brain (far from the surface), in the central part of the brain, keeping the
/// large connected components (sulcal and cisternal CSF fragments fall away).
pub(super) fn ventricle_mask(
    grid: &Grid,
    coarse: &Channels,
    centre: [f64; 3],
    half_extent: [f64; 3],
) -> Image<f32> {
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
pub(super) fn ventricle_outward_velocity(
    ventricles: &Image<f32>,
    warp_grid: &Grid,
) -> Option<DisplacementField> {
    let coarse = resample(ventricles, warp_grid, &Identity, Interpolation::Linear, 0.0);
    let gradient = gradient_field(&smooth_mm(&coarse, 3.0));
    let largest = max_displacement_mm(&gradient);
    (largest > 0.0).then(|| scale_field(&gradient, -1.0 / largest))
}

/// The world-space gradient of an image (central differences, one-sided at the border).
pub(super) fn gradient_field(image: &Image<f32>) -> DisplacementField {
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
pub(super) const NORMAL_FULL_GRADIENT: f64 = 0.05;

/// Soft outward normal of the boundary of a tissue fraction: `−∇f / |∇f|` of `f` smoothed at
/// 2 mm, shortened where `|∇f|` is below [`NORMAL_FULL_GRADIENT`].
pub(super) fn outward_normal(fraction: &Image<f32>) -> DisplacementField {
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
pub(super) fn mean_log_jacobian(field: &DisplacementField, mask: &Image<f32>) -> f64 {
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

#[cfg(test)]
mod tests {

    use crate::subject::tests::{generator, spec};
    use crate::warp::jacobian_determinant;
    use pedinorm_registration::SpatialTransform;

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
}
