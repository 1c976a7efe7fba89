//! One pyramid level of an affine registration: the fixed samples and moving image, the cost
//! and its analytic gradient in the scaled parameters, and the regular-step gradient descent.

use super::{AffineKind, AffineParams, Progress, RegistrationError};
use crate::image::Image;
use crate::interpolate::{sample_linear, sample_linear_with_gradient};
use crate::metrics::{Layout, MetricEvaluator};
use crate::smooth::pyramid_level;
use crate::transform::AffineTransform;
use nalgebra::{Matrix3, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Mutex;

/// Fixed samples and the moving level image of one pyramid level.
pub(super) struct LevelProblem {
    points: Vec<[f64; 3]>,
    pub(super) moving: Image<f32>,
    moving_mask: Option<Image<f32>>,
    metric: Mutex<Box<dyn MetricEvaluator>>,
}

/// Cost and gradient with respect to the local linear part and translation.
pub(super) struct Evaluation {
    pub(super) cost: f64,
    grad_linear: Matrix3<f64>,
    grad_translation: Vector3<f64>,
    valid: usize,
}

const BLOCK: usize = 4096;

impl LevelProblem {
    /// Evaluates the cost of `base ∘ local`, with `local(x) = linear (x − c) + c + t`, and
    /// its gradient with respect to `linear` and `t`.
    pub(super) fn evaluate(
        &self,
        base: &AffineTransform,
        linear: &Matrix3<f64>,
        translation: &Vector3<f64>,
        center: &Vector3<f64>,
    ) -> Evaluation {
        let grid = self.moving.grid();
        let dims = grid.dims();
        let data = self.moving.as_slice();
        // Moving voxel of a local-space point y: v = P y + p0.
        let to_voxel = grid.inverse_affine() * base.matrix();
        let p_lin: Matrix3<f64> = to_voxel.fixed_view::<3, 3>(0, 0).into_owned();
        let p_off: Vector3<f64> = to_voxel.fixed_view::<3, 1>(0, 3).into_owned();
        let p_t = p_lin.transpose();
        let n = self.points.len();
        let mut values = vec![0f32; n];
        let mut gradients = vec![[0f64; 3]; n];
        let mut valid = vec![false; n];
        values
            .par_chunks_mut(BLOCK)
            .zip(gradients.par_chunks_mut(BLOCK))
            .zip(valid.par_chunks_mut(BLOCK))
            .enumerate()
            .for_each(|(b, ((vals, grads), oks))| {
                for o in 0..vals.len() {
                    let x = Vector3::from(self.points[b * BLOCK + o]);
                    let y = linear * (x - center) + center + translation;
                    let v = p_lin * y + p_off;
                    let voxel = [v.x, v.y, v.z];
                    if let Some((value, g)) = sample_linear_with_gradient(data, dims, voxel) {
                        if let Some(mask) = &self.moving_mask
                            && sample_linear(mask, voxel, 0.0) < 0.5
                        {
                            continue;
                        }
                        let gy = p_t * Vector3::new(g[0] as f64, g[1] as f64, g[2] as f64);
                        vals[o] = value;
                        grads[o] = [gy.x, gy.y, gy.z];
                        oks[o] = true;
                    }
                }
            });
        let indices: Vec<usize> = (0..n).filter(|&s| valid[s]).collect();
        let count = indices.len();
        if count < 64 || count * 10 < n {
            return Evaluation {
                cost: f64::INFINITY,
                grad_linear: Matrix3::zeros(),
                grad_translation: Vector3::zeros(),
                valid: count,
            };
        }
        let weight: Vec<f32> = valid.iter().map(|&ok| if ok { 1.0 } else { 0.0 }).collect();
        let mut derivative = vec![0f64; n];
        let cost = self.metric.lock().expect("metric lock").value_and_derivative(
            &values,
            Some(&weight),
            &mut derivative,
        );
        let partials: Vec<(Matrix3<f64>, Vector3<f64>)> = indices
            .par_chunks(BLOCK)
            .map(|idx| {
                let mut gl = Matrix3::zeros();
                let mut gt = Vector3::zeros();
                for &s in idx {
                    let g = Vector3::from(gradients[s]) * derivative[s];
                    let r = Vector3::from(self.points[s]) - center;
                    gl += g * r.transpose();
                    gt += g;
                }
                (gl, gt)
            })
            .collect();
        let (grad_linear, grad_translation) =
            partials.iter().fold((Matrix3::zeros(), Vector3::zeros()), |(a, b), (c, d)| (a + c, b + d));
        Evaluation { cost, grad_linear, grad_translation, valid: count }
    }
}

/// Number of optimized parameters of a kind.
fn parameter_count(kind: AffineKind) -> usize {
    match kind {
        AffineKind::Rigid => 6,
        AffineKind::Similarity => 7,
        AffineKind::Affine => 12,
    }
}

/// Local linear part and translation from scaled parameters (`radius` turns rotations, log
/// scale and matrix entries into millimetres of motion at that distance from the centre, so
/// every parameter moves points by comparable amounts).
fn local_parts(kind: AffineKind, p: &[f64], radius: f64) -> (Matrix3<f64>, Vector3<f64>) {
    match kind {
        AffineKind::Rigid | AffineKind::Similarity => {
            let rotation =
                nalgebra::Rotation3::from_scaled_axis(Vector3::new(p[0], p[1], p[2]) / radius).into_inner();
            let (scale, t) = if kind == AffineKind::Rigid { (1.0, 3) } else { ((p[3] / radius).exp(), 4) };
            (rotation * scale, Vector3::new(p[t], p[t + 1], p[t + 2]))
        }
        AffineKind::Affine => {
            let mut m = Matrix3::identity();
            for r in 0..3 {
                for c in 0..3 {
                    m[(r, c)] += p[r * 3 + c] / radius;
                }
            }
            (m, Vector3::new(p[9], p[10], p[11]))
        }
    }
}

/// Gradient with respect to the scaled parameters, by the chain rule through
/// [`local_parts`] (whose own derivative is taken by central differences: it is a cheap
/// closed-form map, the image part stays analytic).
fn parameter_gradient(kind: AffineKind, p: &[f64], radius: f64, e: &Evaluation) -> Vec<f64> {
    let h = 1e-6 * radius;
    (0..p.len())
        .map(|k| {
            let mut plus = p.to_vec();
            plus[k] += h;
            let mut minus = p.to_vec();
            minus[k] -= h;
            let (lp, tp) = local_parts(kind, &plus, radius);
            let (lm, tm) = local_parts(kind, &minus, radius);
            let dl = (lp - lm) / (2.0 * h);
            let dt = (tp - tm) / (2.0 * h);
            e.grad_linear.component_mul(&dl).sum() + e.grad_translation.dot(&dt)
        })
        .collect()
}

/// Builds the samples of one level.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_level(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    params: &AffineParams,
    factor: usize,
    sigma: f64,
    level: usize,
    fixed_range: (f32, f32),
    moving_range: (f32, f32),
) -> Result<LevelProblem, RegistrationError> {
    let fixed_level = pyramid_level(fixed, factor, sigma);
    let moving_level = pyramid_level(moving, factor, sigma);
    // A mask follows its image down the pyramid (linear, thresholded at 0.5 where used).
    let on_level = |mask: &Option<Image<f32>>, level: &Image<f32>| {
        mask.as_ref().map(|m| {
            crate::resample::resample(
                m,
                level.grid(),
                &crate::transform::Identity,
                crate::interpolate::Interpolation::Linear,
                0.0,
            )
        })
    };
    let fixed_mask = on_level(&params.fixed_mask, &fixed_level);
    let moving_mask = on_level(&params.moving_mask, &moving_level);
    let grid = fixed_level.grid();
    let d = grid.dims();
    let candidates: Vec<usize> =
        (0..grid.len()).filter(|&v| fixed_mask.as_ref().is_none_or(|m| m.as_slice()[v] >= 0.5)).collect();
    let (fraction, seed) = match params.metric.sampling() {
        Some((sampling_fraction, seed)) => (sampling_fraction.clamp(1e-6, 1.0), seed),
        None => (1.0, 0x5eed),
    };
    // Coarse levels have few voxels: use them all; fine levels use the seeded subset.
    let wanted = ((candidates.len() as f64 * fraction) as usize)
        .max(candidates.len().min(20_000))
        .min(params.max_samples);
    let keep = wanted as f64 / candidates.len().max(1) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(level as u64 * 0x9e37_79b9));
    let chosen: Vec<usize> = if keep >= 1.0 {
        candidates
    } else {
        candidates.into_iter().filter(|_| rng.random::<f64>() < keep).collect()
    };
    let points: Vec<[f64; 3]> = chosen
        .iter()
        .map(|&v| {
            let i = v / (d[1] * d[2]);
            let j = (v / d[2]) % d[1];
            let k = v % d[2];
            grid.voxel_to_world([i as f64, j as f64, k as f64])
        })
        .collect();
    let fixed_values: Vec<f32> = chosen.iter().map(|&v| fixed_level.as_slice()[v]).collect();
    let metric = params.metric.prepare(&fixed_values, Layout::Samples { fixed_range, moving_range })?;
    Ok(LevelProblem { points, moving: moving_level, moving_mask, metric: Mutex::new(metric) })
}

fn stage_name(kind: AffineKind) -> &'static str {
    match kind {
        AffineKind::Rigid => "rigid",
        AffineKind::Similarity => "similarity",
        AffineKind::Affine => "affine",
    }
}

/// Regular-step gradient descent of one level; returns `base ∘ local(best)` and its cost.
#[allow(clippy::too_many_arguments)]
pub(super) fn optimize_level(
    problem: &LevelProblem,
    base: &AffineTransform,
    kind: AffineKind,
    center: &Vector3<f64>,
    radius: f64,
    spacing: f64,
    iterations: usize,
    level: usize,
    levels: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(AffineTransform, f64), RegistrationError> {
    let n = parameter_count(kind);
    let mut p = vec![0f64; n];
    let evaluate = |p: &[f64]| {
        let (l, t) = local_parts(kind, p, radius);
        problem.evaluate(base, &l, &t, center)
    };
    let mut current = evaluate(&p);
    if !current.cost.is_finite() {
        return Err(RegistrationError::NoOverlap {
            stage: stage_name(kind).into(),
            level,
            valid: current.valid,
            total: problem.points.len(),
        });
    }
    let mut gradient = parameter_gradient(kind, &p, radius, &current);
    let mut step = 0.5 * spacing;
    let min_step = 0.002 * spacing;
    for iteration in 1..=iterations {
        let norm = gradient.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            break;
        }
        let candidate: Vec<f64> = p.iter().zip(&gradient).map(|(v, g)| v - step * g / norm).collect();
        let trial = evaluate(&candidate);
        if trial.cost.is_finite() && trial.cost <= current.cost {
            let new_gradient = parameter_gradient(kind, &candidate, radius, &trial);
            let turn: f64 = new_gradient.iter().zip(&gradient).map(|(a, b)| a * b).sum();
            if turn < 0.0 {
                step *= 0.5;
            }
            p = candidate;
            current = trial;
            gradient = new_gradient;
        } else {
            step *= 0.5;
        }
        progress(&Progress {
            stage: stage_name(kind).into(),
            level,
            levels,
            iteration,
            iterations,
            metric: current.cost,
        });
        if step < min_step {
            break;
        }
    }
    let (l, t) = local_parts(kind, &p, radius);
    let local = AffineTransform::about_center(&l, t.into(), (*center).into());
    Ok((base.compose(&local), current.cost))
}
