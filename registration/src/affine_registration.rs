//! Affine registration: centre-of-mass / principal-axes initialization, rigid, similarity and
//! full affine (12 parameters) over a multi-resolution pyramid, optimized by a regular-step
//! gradient descent on analytic metric gradients (ITK's `RegularStepGradientDescent`: the step
//! halves when the gradient turns back or the cost gets worse).
//!
//! The result maps fixed world points to moving world points (pull), like ITK and ANTs.

use crate::grid::Grid;
use crate::image::Image;
use crate::interpolate::{sample_linear, sample_linear_with_gradient};
use crate::metrics::{Layout, Metric, MetricEvaluator};
pub use crate::plan::{Progress, RegistrationError};
use crate::smooth::{adapt_shrink_factors, pyramid_level};
use crate::transform::AffineTransform;
use nalgebra::{Matrix3, SymmetricEigen, Vector3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Degrees of freedom of the affine model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineKind {
    /// Rotation and translation (6 parameters).
    Rigid,
    /// Rotation, isotropic scale and translation (7 parameters).
    Similarity,
    /// Full affine (12 parameters); run after a similarity stage on the coarsest level.
    Affine,
}

/// How the optimization starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineInit {
    /// Match intensity centres of mass; for similarity and affine also the overall size
    /// (radius of gyration), which brings a child's head near a template's scale.
    CenterOfMass,
    /// Centres of mass plus the rotation aligning the principal axes of the intensity
    /// distributions (the sign ambiguity is resolved by the metric at the coarsest level).
    PrincipalAxes,
    /// Start from the identity.
    Identity,
}

/// Parameters of [`register_affine`], the schedule resolved to voxels (built by
/// [`crate::plan::register`] from an [`crate::plan::AffineStage`]).
#[derive(Debug, Clone)]
pub(crate) struct AffineParams {
    /// Degrees of freedom.
    pub kind: AffineKind,
    /// The metric.
    pub metric: Arc<dyn Metric>,
    /// Shrink factor per level, coarsest first (capped so each level keeps ≥ 16 voxels).
    pub shrink_factors: Vec<usize>,
    /// Gaussian smoothing per level, in voxels of the full-resolution fixed image.
    pub smoothing_sigmas_voxels: Vec<f64>,
    /// Iteration budget per level.
    pub iterations: Vec<usize>,
    /// Initialization.
    pub init: AffineInit,
    /// Metric restricted to fixed voxels where this mask is ≥ 0.5 (fixed grid).
    pub fixed_mask: Option<Image<f32>>,
    /// Metric restricted to samples mapping where this mask is ≥ 0.5 (moving grid).
    pub moving_mask: Option<Image<f32>>,
    /// Cap on metric samples per level (keeps full-resolution levels fast).
    pub max_samples: usize,
    /// Optional initial transform used instead of `init` (fixed world → moving world).
    pub initial_transform: Option<AffineTransform>,
}

#[cfg(test)]
impl Default for AffineParams {
    /// [`crate::plan::AffineStage::default`] with the schedule in voxels.
    fn default() -> Self {
        let plan = crate::plan::RegistrationPlan::default();
        crate::plan::affine_params(&crate::plan::AffineStage::default(), &plan, 1.0)
    }
}

/// The outcome of [`register_affine`].
#[derive(Debug, Clone)]
pub(crate) struct AffineResult {
    /// Fixed world → moving world.
    pub transform: AffineTransform,
    /// Final cost at the finest level (lower is better; −MI, −NCC or mean squares).
    pub metric_value: f64,
}

/// Intensity moments of an image: total weight, centre of mass (world) and covariance.
pub(crate) struct Moments {
    pub center: Vector3<f64>,
    pub covariance: Matrix3<f64>,
}

/// Centre of mass and covariance of intensities above 5 % of the maximum (background and
/// noise excluded), optionally within a mask.
pub(crate) fn moments(
    image: &Image<f32>,
    mask: Option<&Image<f32>>,
    which: &'static str,
) -> Result<Moments, RegistrationError> {
    let max = image.as_slice().iter().fold(0f32, |a, &b| a.max(b));
    let threshold = 0.05 * max;
    let grid = image.grid();
    let d = grid.dims();
    let data = image.as_slice();
    let mut weight = 0.0;
    let mut first = Vector3::zeros();
    let mut second = Matrix3::zeros();
    for i in 0..d[0] {
        for j in 0..d[1] {
            for k in 0..d[2] {
                let flat = grid.flat_index(i, j, k);
                let v = data[flat];
                if v <= threshold || mask.is_some_and(|m| m.as_slice()[flat] < 0.5) {
                    continue;
                }
                let w = (v - threshold) as f64;
                let p = Vector3::from(grid.voxel_to_world([i as f64, j as f64, k as f64]));
                weight += w;
                first += w * p;
                second += w * p * p.transpose();
            }
        }
    }
    if weight <= 0.0 {
        return Err(RegistrationError::UnusableImage {
            which,
            rule: "no voxel above 5 % of the maximum intensity".into(),
        });
    }
    let center = first / weight;
    let covariance = second / weight - center * center.transpose();
    Ok(Moments { center, covariance })
}

/// The initial transform from moments.
fn initial_transform(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    params: &AffineParams,
) -> Result<Vec<AffineTransform>, RegistrationError> {
    if let Some(t) = &params.initial_transform {
        return Ok(vec![t.clone()]);
    }
    if params.init == AffineInit::Identity {
        return Ok(vec![AffineTransform::identity()]);
    }
    let mf = moments(fixed, params.fixed_mask.as_ref(), "fixed")?;
    let mm = moments(moving, params.moving_mask.as_ref(), "moving")?;
    let scale = if params.kind == AffineKind::Rigid {
        1.0
    } else {
        (mm.covariance.trace() / mf.covariance.trace()).sqrt().clamp(0.5, 2.0)
    };
    let centre_f: [f64; 3] = mf.center.into();
    let shift: [f64; 3] = (mm.center - mf.center).into();
    if params.init == AffineInit::CenterOfMass {
        let linear = Matrix3::identity() * scale;
        return Ok(vec![AffineTransform::about_center(&linear, shift, centre_f)]);
    }
    // Principal axes: eigenvectors sorted by eigenvalue; the rotation maps fixed axes onto
    // moving axes. Each axis sign is ambiguous: offer the four proper rotations.
    let sorted = |c: Matrix3<f64>| {
        let e = SymmetricEigen::new(c);
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
        Matrix3::from_columns(&[
            e.eigenvectors.column(order[0]),
            e.eigenvectors.column(order[1]),
            e.eigenvectors.column(order[2]),
        ])
    };
    let vf = sorted(mf.covariance);
    let vm = sorted(mm.covariance);
    let mut candidates = Vec::new();
    for signs in [[1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0]] {
        let s = Matrix3::from_diagonal(&Vector3::from(signs));
        let mut rotation = vm * s * vf.transpose();
        if rotation.determinant() < 0.0 {
            // Fix a reflection left by an improper eigenvector basis.
            let flip = Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, -1.0));
            rotation = vm * s * flip * vf.transpose();
        }
        candidates.push(AffineTransform::about_center(&(rotation * scale), shift, centre_f));
    }
    Ok(candidates)
}

/// Fixed samples and the moving level image of one pyramid level.
struct LevelProblem {
    points: Vec<[f64; 3]>,
    moving: Image<f32>,
    moving_mask: Option<Image<f32>>,
    metric: Mutex<Box<dyn MetricEvaluator>>,
}

/// Cost and gradient with respect to the local linear part and translation.
struct Evaluation {
    cost: f64,
    grad_linear: Matrix3<f64>,
    grad_translation: Vector3<f64>,
    valid: usize,
}

const BLOCK: usize = 4096;

impl LevelProblem {
    /// Evaluates the cost of `base ∘ local`, with `local(x) = linear (x − c) + c + t`, and
    /// its gradient with respect to `linear` and `t`.
    fn evaluate(
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
fn build_level(
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
    let fixed_mask = params.fixed_mask.as_ref().map(|m| {
        crate::resample::resample(
            m,
            fixed_level.grid(),
            &crate::transform::Identity,
            crate::interpolate::Interpolation::Linear,
            0.0,
        )
    });
    let moving_mask = params.moving_mask.as_ref().map(|m| {
        crate::resample::resample(
            m,
            moving_level.grid(),
            &crate::transform::Identity,
            crate::interpolate::Interpolation::Linear,
            0.0,
        )
    });
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

fn check_mask(mask: &Option<Image<f32>>, grid: &Grid, which: &'static str) -> Result<(), RegistrationError> {
    match mask {
        Some(m) if !m.grid().same_as(grid, 1e-3) => Err(RegistrationError::MaskGrid { which }),
        _ => Ok(()),
    }
}

fn check_schedule(shrink: &[usize], sigmas: &[f64], iterations: &[usize]) -> Result<(), RegistrationError> {
    if shrink.is_empty() {
        return Err(RegistrationError::InvalidParameters {
            field: "shrink_factors",
            rule: "at least one level".into(),
        });
    }
    if sigmas.len() != shrink.len() || iterations.len() != shrink.len() {
        return Err(RegistrationError::InvalidParameters {
            field: "smoothing_sigmas_voxels/iterations",
            rule: format!("need one value per level ({} levels)", shrink.len()),
        });
    }
    if sigmas.iter().any(|s| !s.is_finite() || *s < 0.0) {
        return Err(RegistrationError::InvalidParameters {
            field: "smoothing_sigmas_voxels",
            rule: "finite and ≥ 0".into(),
        });
    }
    Ok(())
}

/// Robust intensity range (0.5 and 99.5 percentiles would need a sort; min/max of a
/// smoothed level is close enough for histogram bounds and cheap).
fn intensity_range(image: &Image<f32>, which: &'static str) -> Result<(f32, f32), RegistrationError> {
    match image.finite_range() {
        Some((lo, hi)) if hi > lo => Ok((lo, hi)),
        _ => Err(RegistrationError::UnusableImage { which, rule: "constant intensity".into() }),
    }
}

/// Registers `moving` to `fixed` with an affine model: the returned transform maps fixed
/// world points to moving world points. Deterministic: bit-identical at any thread count.
pub(crate) fn register_affine(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    params: &AffineParams,
    progress: &mut dyn FnMut(&Progress),
) -> Result<AffineResult, RegistrationError> {
    check_schedule(&params.shrink_factors, &params.smoothing_sigmas_voxels, &params.iterations)?;
    check_mask(&params.fixed_mask, fixed.grid(), "fixed")?;
    check_mask(&params.moving_mask, moving.grid(), "moving")?;
    params.metric.check()?;
    let fixed_range = intensity_range(fixed, "fixed")?;
    let moving_range = intensity_range(moving, "moving")?;
    let candidates = initial_transform(fixed, moving, params)?;
    let fixed_moments = moments(fixed, params.fixed_mask.as_ref(), "fixed")?;
    let center = fixed_moments.center;
    // Radius of gyration: parameters are scaled so a unit step moves points ~1 mm there.
    let radius = fixed_moments.covariance.trace().sqrt().max(10.0);
    let factors = adapt_shrink_factors(fixed.grid().dims(), &params.shrink_factors, 16);
    let levels = factors.len();
    let mut base = candidates[0].clone();
    let mut cost = f64::INFINITY;
    for (level, &factor) in factors.iter().enumerate() {
        let problem = build_level(
            fixed,
            moving,
            params,
            factor,
            params.smoothing_sigmas_voxels[level],
            level,
            fixed_range,
            moving_range,
        )?;
        if level == 0 && candidates.len() > 1 {
            // Pick the principal-axes candidate with the best cost.
            let identity = Matrix3::identity();
            let zero = Vector3::zeros();
            let costs: Vec<f64> =
                candidates.iter().map(|c| problem.evaluate(c, &identity, &zero, &center).cost).collect();
            let best = (0..costs.len()).min_by(|&a, &b| costs[a].total_cmp(&costs[b])).expect("candidates");
            base = candidates[best].clone();
        }
        let stages: Vec<AffineKind> = match (params.kind, level) {
            (AffineKind::Affine, 0) => vec![AffineKind::Similarity, AffineKind::Affine],
            (kind, _) => vec![kind],
        };
        let spacing = problem
            .moving
            .grid()
            .spacing()
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .min(pyramid_spacing(fixed.grid(), factor));
        for kind in stages {
            let (new_base, new_cost) = optimize_level(
                &problem,
                &base,
                kind,
                &center,
                radius,
                spacing,
                params.iterations[level],
                level,
                levels,
                progress,
            )?;
            base = new_base;
            cost = new_cost;
        }
    }
    if !base.is_valid() {
        return Err(RegistrationError::InvalidParameters {
            field: "transform",
            rule: "optimization produced a singular transform".into(),
        });
    }
    Ok(AffineResult { transform: base, metric_value: cost })
}

fn pyramid_spacing(grid: &Grid, factor: usize) -> f64 {
    grid.spacing().iter().cloned().fold(f64::INFINITY, f64::min) * factor as f64
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
fn optimize_level(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::interpolate::Interpolation;
    use crate::metrics::MattesMi;
    use crate::resample::resample;
    use ndarray::Array3;

    /// A head-like phantom: an ellipsoid "brain" with an inner "white matter" ellipsoid, two
    /// asymmetric blobs (to fix rotations) and smooth texture, on a 2-voxel-margin grid.
    pub(crate) fn phantom(grid: &Grid) -> Image<f32> {
        let d = grid.dims();
        let data = Array3::from_shape_fn((d[0], d[1], d[2]), |(i, j, k)| {
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let (x, y, z) = (p[0], p[1], p[2]);
            let outer = (x / 30.0).powi(2) + (y / 36.0).powi(2) + (z / 27.0).powi(2);
            let inner = ((x - 3.0) / 18.0).powi(2) + (y / 24.0).powi(2) + ((z + 2.0) / 15.0).powi(2);
            let mut v = 0.0;
            if outer < 1.0 {
                v = 60.0 + 10.0 * (x / 7.0).sin() * (y / 9.0).cos();
            }
            if inner < 1.0 {
                v = 110.0;
            }
            let blob1 = ((x - 12.0).powi(2) + (y - 15.0).powi(2) + (z - 8.0).powi(2)) / 30.0;
            let blob2 = ((x + 14.0).powi(2) + (y + 10.0).powi(2) + (z - 12.0).powi(2)) / 20.0;
            v += 50.0 * (-blob1).exp() + 35.0 * (-blob2).exp();
            v as f32
        });
        Image::new(data, grid.clone()).unwrap()
    }

    pub(crate) fn test_grid() -> Grid {
        Grid::axis_aligned([40, 46, 36], [2.0; 3], [-40.0, -46.0, -36.0]).unwrap()
    }

    fn brain_points() -> Vec<[f64; 3]> {
        let mut v = Vec::new();
        for x in [-20.0, 0.0, 20.0] {
            for y in [-25.0, 0.0, 25.0] {
                for z in [-15.0, 0.0, 15.0] {
                    v.push([x, y, z]);
                }
            }
        }
        v
    }

    fn quick(kind: AffineKind, metric: impl Metric + 'static) -> AffineParams {
        AffineParams {
            kind,
            metric: Arc::new(metric),
            shrink_factors: vec![4, 2, 1],
            smoothing_sigmas_voxels: vec![2.0, 1.0, 0.0],
            iterations: vec![200, 100, 50],
            ..AffineParams::default()
        }
    }

    #[test]
    fn recovers_child_scale_affine_with_mutual_information() {
        let grid = test_grid();
        let fixed = phantom(&grid);
        // A "child" moving image: the template shrunk to 0.8 with a rotation and shift.
        let rotation = nalgebra::Rotation3::from_euler_angles(0.08, -0.05, 0.12).into_inner();
        let linear = rotation * Matrix3::from_diagonal(&Vector3::new(1.0 / 0.8, 1.0 / 0.78, 1.0 / 0.82));
        let truth = AffineTransform::about_center(&linear, [3.0, -2.0, 1.5], [0.0; 3]);
        // moving(x) = fixed(truth(x)), so the registration must find truth⁻¹.
        let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0);
        let mut calls = 0;
        let result = register_affine(
            &fixed,
            &moving,
            &quick(AffineKind::Affine, MattesMi { bins: 32, sampling_fraction: 0.5, seed: 7 }),
            &mut |_| calls += 1,
        )
        .unwrap();
        let expected = truth.inverse().unwrap();
        let error = result.transform.max_distance(&expected, &brain_points());
        assert!(error < 1.0, "max error {error} mm");
        assert!(calls > 10);
    }

    #[test]
    fn rigid_with_ncc_and_principal_axes() {
        let grid = test_grid();
        let fixed = phantom(&grid);
        let truth = AffineTransform::rigid([0.0, 0.0, 0.35], [4.0, 3.0, -2.0], [0.0; 3]);
        let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0);
        let mut params = quick(AffineKind::Rigid, crate::metrics::Ncc);
        params.init = AffineInit::PrincipalAxes;
        let result = register_affine(&fixed, &moving, &params, &mut |_| {}).unwrap();
        let expected = truth.inverse().unwrap();
        let error = result.transform.max_distance(&expected, &brain_points());
        assert!(error < 0.6, "max error {error} mm");
        assert!((result.transform.linear().determinant() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let grid = test_grid();
        let image = phantom(&grid);
        let mut params = AffineParams::default();
        params.iterations.pop();
        assert!(matches!(
            register_affine(&image, &image, &params, &mut |_| {}),
            Err(RegistrationError::InvalidParameters { .. })
        ));
        let flat = Image::filled(grid, 1.0f32);
        assert!(matches!(
            register_affine(&flat, &image, &AffineParams::default(), &mut |_| {}),
            Err(RegistrationError::UnusableImage { .. })
        ));
    }

    #[test]
    fn identical_at_one_and_two_threads() {
        let grid = test_grid();
        let fixed = phantom(&grid);
        let truth = AffineTransform::rigid([0.05, 0.0, 0.1], [2.0, 1.0, 0.0], [0.0; 3]);
        let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0);
        let params = quick(AffineKind::Affine, MattesMi { bins: 32, sampling_fraction: 0.3, seed: 3 });
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| register_affine(&fixed, &moving, &params, &mut |_| {}).unwrap())
        };
        let (a, b) = (run(1), run(2));
        assert_eq!(a.transform.matrix(), b.transform.matrix());
        assert_eq!(a.metric_value.to_bits(), b.metric_value.to_bits());
    }
}
