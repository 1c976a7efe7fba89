//! Local (windowed) cross-correlation with box-filter sums, the metric of ANTs' SyN `CC` and
//! greedy's `NCC`. The window sums are separable box filters, so the cost per voxel does not
//! grow with the cube of the radius.

use super::{Layout, Metric, MetricEvaluator};
use crate::plan::RegistrationError;
use crate::smooth::convolve_axis_slice;
use rayon::prelude::*;

/// Signed local correlation over a `(2r+1)³` window (greedy's `NCC rxrxr`), as a [`Metric`]
/// of dense (deformable) registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCc {
    /// Window radius in voxels (1 to 10).
    pub radius: usize,
}

/// Squared local correlation (ANTs' `CC`), which tolerates inverted local contrast, as a
/// [`Metric`] of dense (deformable) registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquaredLocalCc {
    /// Window radius in voxels (1 to 10).
    pub radius: usize,
}

fn check_radius(radius: usize) -> Result<(), RegistrationError> {
    if radius == 0 || radius > 10 {
        return Err(RegistrationError::InvalidParameters {
            field: "metric radius",
            rule: "1 to 10 voxels".into(),
        });
    }
    Ok(())
}

fn prepare_windows(
    fixed: &[f32],
    layout: Layout,
    radius: usize,
    variant: LocalCcVariant,
) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
    match layout {
        Layout::Dense { dims } => Ok(Box::new(LocalCcEvaluator {
            work: LocalCcWork::new(fixed, dims, radius),
            fixed: fixed.to_vec(),
            variant,
        })),
        Layout::Samples { .. } => Err(RegistrationError::InvalidParameters {
            field: "metric",
            rule: "local correlation needs whole images (a deformable stage), not scattered samples".into(),
        }),
    }
}

impl Metric for LocalCc {
    fn check(&self) -> Result<(), RegistrationError> {
        check_radius(self.radius)
    }

    fn prepare(&self, fixed: &[f32], layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
        prepare_windows(fixed, layout, self.radius, LocalCcVariant::Signed)
    }
}

impl Metric for SquaredLocalCc {
    fn check(&self) -> Result<(), RegistrationError> {
        check_radius(self.radius)
    }

    fn prepare(&self, fixed: &[f32], layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
        prepare_windows(fixed, layout, self.radius, LocalCcVariant::Squared)
    }
}

/// A local-CC metric bound to one level's fixed image and window sums.
struct LocalCcEvaluator {
    work: LocalCcWork,
    fixed: Vec<f32>,
    variant: LocalCcVariant,
}

impl MetricEvaluator for LocalCcEvaluator {
    fn value_and_derivative(
        &mut self,
        moving: &[f32],
        weight: Option<&[f32]>,
        derivative: &mut [f64],
    ) -> f64 {
        local_cc_forces(&mut self.work, &self.fixed, moving, weight, self.variant, derivative)
    }
}

/// Which local correlation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCcVariant {
    /// `A / √(B C)`: signed, wants the same contrast polarity (greedy's NCC).
    Signed,
    /// `A² / (B C)`: ANTs' CC; insensitive to a local contrast inversion, so it copes with an
    /// infant's inverted grey/white contrast against an older template.
    Squared,
}

/// Sums of `data` over a `(2r+1)³` box around every voxel (edges replicated), into `out`;
/// `scratch` must have the same length.
pub fn box_sum(data: &[f32], out: &mut [f32], scratch: &mut [f32], dims: [usize; 3], radius: usize) {
    let ones = vec![1f32; 2 * radius + 1];
    convolve_axis_slice(data, out, dims, 0, &ones);
    convolve_axis_slice(out, scratch, dims, 1, &ones);
    convolve_axis_slice(scratch, out, dims, 2, &ones);
}

/// Reusable buffers and the fixed image's window sums for repeated local-CC evaluations on
/// one grid (the fixed sums never change during a registration level).
#[derive(Debug, Clone)]
pub struct LocalCcWork {
    dims: [usize; 3],
    radius: usize,
    sum_fixed: Vec<f32>,
    sum_fixed2: Vec<f32>,
    sum_moving: Vec<f32>,
    sum_moving2: Vec<f32>,
    sum_cross: Vec<f32>,
    product: Vec<f32>,
    scratch: Vec<f32>,
}

impl LocalCcWork {
    /// Precomputes the fixed image's window sums.
    pub fn new(fixed: &[f32], dims: [usize; 3], radius: usize) -> Self {
        let n = fixed.len();
        let mut work = Self {
            dims,
            radius,
            sum_fixed: vec![0.0; n],
            sum_fixed2: vec![0.0; n],
            sum_moving: vec![0.0; n],
            sum_moving2: vec![0.0; n],
            sum_cross: vec![0.0; n],
            product: vec![0.0; n],
            scratch: vec![0.0; n],
        };
        box_sum(fixed, &mut work.sum_fixed, &mut work.scratch, dims, radius);
        work.product.par_iter_mut().zip(fixed.par_iter()).for_each(|(p, &f)| *p = f * f);
        box_sum(&work.product, &mut work.sum_fixed2, &mut work.scratch, dims, radius);
        work
    }
}

/// Local-CC cost (minus the masked mean of the local correlation) of `fixed` against `moving`
/// (the warped moving image on the same grid), and per voxel `∂cost/∂moving` times the
/// voxel's `weight` (mask) into `coefficient`. Uses ANTs' per-window approximation of the
/// derivative: each voxel's term is differentiated with its own window's statistics.
pub fn local_cc_forces(
    work: &mut LocalCcWork,
    fixed: &[f32],
    moving: &[f32],
    weight: Option<&[f32]>,
    variant: LocalCcVariant,
    coefficient: &mut [f64],
) -> f64 {
    let dims = work.dims;
    let radius = work.radius;
    box_sum(moving, &mut work.sum_moving, &mut work.scratch, dims, radius);
    work.product.par_iter_mut().zip(moving.par_iter()).for_each(|(p, &m)| *p = m * m);
    box_sum(&work.product, &mut work.sum_moving2, &mut work.scratch, dims, radius);
    work.product
        .par_iter_mut()
        .zip(moving.par_iter().zip(fixed.par_iter()))
        .for_each(|(p, (&m, &f))| *p = m * f);
    box_sum(&work.product, &mut work.sum_cross, &mut work.scratch, dims, radius);
    let count = ((2 * radius + 1) as f64).powi(3);
    let slab = dims[1] * dims[2];
    let partials: Vec<(f64, f64)> = coefficient
        .par_chunks_mut(slab)
        .enumerate()
        .map(|(i, out)| {
            let (mut total, mut weight_sum) = (0.0f64, 0.0f64);
            for (o, c) in out.iter_mut().enumerate() {
                let v = i * slab + o;
                let w = weight.map_or(1.0, |w| w[v]) as f64;
                if w <= 0.0 {
                    *c = 0.0;
                    continue;
                }
                let (si, sj) = (work.sum_fixed[v] as f64, work.sum_moving[v] as f64);
                let a = work.sum_cross[v] as f64 - si * sj / count;
                let b = work.sum_fixed2[v] as f64 - si * si / count;
                let cc = work.sum_moving2[v] as f64 - sj * sj / count;
                // Flat windows carry no information (and would divide by ~0).
                let floor = 1e-5 * count;
                if b <= floor || cc <= floor {
                    *c = 0.0;
                    weight_sum += w;
                    continue;
                }
                let ic = fixed[v] as f64 - si / count;
                let jc = moving[v] as f64 - sj / count;
                let (value, derivative) = match variant {
                    LocalCcVariant::Squared => (a * a / (b * cc), 2.0 * a / (b * cc) * (ic - a / cc * jc)),
                    LocalCcVariant::Signed => {
                        let norm = (b * cc).sqrt();
                        (a / norm, (ic - a / cc * jc) / norm)
                    }
                };
                total += w * value;
                weight_sum += w;
                *c = -w * derivative;
            }
            (total, weight_sum)
        })
        .collect();
    let (total, weight_sum) = partials.iter().fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
    if weight_sum > 0.0 { -total / weight_sum } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(dims: [usize; 3], shift: f32) -> Vec<f32> {
        let mut v = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let x = i as f32 + shift;
                    v.push(
                        (x * 0.7).sin() + (j as f32 * 0.5).cos() * 0.5 + (k as f32 * 0.3).sin() * 0.2 + 2.0,
                    );
                }
            }
        }
        v
    }

    #[test]
    fn box_sum_counts_window() {
        let dims = [6, 7, 8];
        let ones = vec![1f32; 6 * 7 * 8];
        let mut out = vec![0f32; ones.len()];
        let mut scratch = out.clone();
        box_sum(&ones, &mut out, &mut scratch, dims, 2);
        assert!(out.iter().all(|&v| v == 125.0));
    }

    #[test]
    fn identical_images_score_minus_one_and_polarity_variants_differ() {
        let dims = [10, 9, 8];
        let fixed = pattern(dims, 0.0);
        let mut work = LocalCcWork::new(&fixed, dims, 2);
        let mut coefficient = vec![0f64; fixed.len()];
        let same = local_cc_forces(&mut work, &fixed, &fixed, None, LocalCcVariant::Signed, &mut coefficient);
        assert!((same + 1.0).abs() < 1e-3, "{same}");
        let inverted: Vec<f32> = fixed.iter().map(|v| 5.0 - v).collect();
        let signed =
            local_cc_forces(&mut work, &fixed, &inverted, None, LocalCcVariant::Signed, &mut coefficient);
        let squared =
            local_cc_forces(&mut work, &fixed, &inverted, None, LocalCcVariant::Squared, &mut coefficient);
        assert!(signed > 0.99 && squared < -0.99, "{signed} {squared}");
    }

    #[test]
    fn step_along_force_improves_cost() {
        let dims = [12, 10, 9];
        let fixed = pattern(dims, 0.0);
        let moving = pattern(dims, 0.6);
        let mut work = LocalCcWork::new(&fixed, dims, 2);
        let mut coefficient = vec![0f64; fixed.len()];
        let before =
            local_cc_forces(&mut work, &fixed, &moving, None, LocalCcVariant::Squared, &mut coefficient);
        let stepped: Vec<f32> = moving.iter().zip(&coefficient).map(|(m, c)| m - 0.5 * *c as f32).collect();
        let mut scratch = coefficient.clone();
        let after = local_cc_forces(&mut work, &fixed, &stepped, None, LocalCcVariant::Squared, &mut scratch);
        assert!(after < before, "{after} !< {before}");
    }
}
