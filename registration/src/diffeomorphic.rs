//! Greedy diffeomorphic registration (in the manner of greedy and ANTs' SyN): multi-resolution,
//! local cross-correlation (signed or squared) or Mattes MI, the update field smoothed by a
//! Gaussian (`update_sigma_voxels`, greedy's first `-s`) and composed with the current map
//! (a small smooth update composed onto a diffeomorphism stays a diffeomorphism, so the map
//! does not fold), then the total field smoothed (`field_sigma_voxels`, greedy's second `-s`).
//! The inverse field is computed by fixed-point iteration at the end.
//!
//! Conventions: the forward field `u` lives on the fixed grid and the full fixed → moving map
//! is `p ↦ A(p + u(p))`, i.e. the chain `[forward, affine]` in antsApplyTransforms order. The
//! inverse field `w` also lives on the fixed grid (as ANTs' `InverseWarp`): moving → fixed is
//! `q ↦ A⁻¹q + w(A⁻¹q)`, the chain `[inverse affine, inverse]`.

use crate::finite_difference::voxel_derivatives;
use crate::grid::Grid;
use crate::image::Image;
use crate::interpolate::{Interpolation, sample_clamped, sample_clamped3};
use crate::metrics::{Layout, Metric};
use crate::plan::{Progress, RegistrationError};
use crate::resample::resample;
use crate::smooth::{adapt_shrink_factors, pyramid_level, smooth_slice_in_place};
use crate::transform::{AffineTransform, DisplacementField, Identity, TransformChain};
use nalgebra::{Matrix3, Matrix4, Vector3};
use rayon::prelude::*;
use std::sync::Arc;

/// Parameters of [`register_diffeomorphic`], the schedule and regularization resolved to
/// voxels (built by [`crate::plan::register`] from a [`crate::plan::DeformableStage`]).
#[derive(Debug, Clone)]
pub(crate) struct DiffeoParams {
    /// The metric.
    pub metric: Arc<dyn Metric>,
    /// Shrink factor per level, coarsest first (capped so levels keep ≥ 16 voxels per axis).
    pub shrink_factors: Vec<usize>,
    /// Gaussian smoothing of the images per level, in full-resolution voxels.
    pub smoothing_sigmas_voxels: Vec<f64>,
    /// Iterations per level (a level may stop early when the cost stops improving).
    pub iterations: Vec<usize>,
    /// Largest displacement of one update, in voxels of the current level.
    pub step_size: f64,
    /// Gaussian σ (voxels) of the update field (greedy `-s` first value, 1.732).
    pub update_sigma_voxels: f64,
    /// Gaussian σ (voxels) of the total field after each update (greedy `-s` second, 0.707).
    pub field_sigma_voxels: f64,
    /// Symmetric forces: the gradient is the average of the fixed image's and the warped
    /// moving image's gradients (as in ESM / symmetric demons), which converges faster on
    /// large deformations; `false` uses the warped moving gradient only.
    pub symmetric: bool,
    /// Metric restricted to fixed voxels where this mask is ≥ 0.5 (fixed grid).
    pub fixed_mask: Option<Image<f32>>,
    /// Metric restricted to points mapping where this mask is ≥ 0.5 (moving grid).
    pub moving_mask: Option<Image<f32>>,
    /// Fixed-point iterations of the final field inversion.
    pub inverse_iterations: usize,
    /// A level stops when the cost's slope over the last 10 iterations, relative to the
    /// cost, is flatter than this per iteration.
    pub convergence_slope: f64,
}

#[cfg(test)]
impl Default for DiffeoParams {
    /// [`crate::plan::DeformableStage::default`] with the schedule in voxels.
    fn default() -> Self {
        let plan = crate::plan::RegistrationPlan::default();
        crate::plan::deformable_params(&crate::plan::DeformableStage::default(), &plan, 1.0)
    }
}

/// The deformable part of a registration (see [`crate::plan::register`]).
#[derive(Debug, Clone)]
pub struct DiffeoResult {
    /// Forward field on the fixed grid: fixed → moving is `p ↦ affine(p + forward(p))`.
    pub forward: DisplacementField,
    /// Inverse field on the fixed grid: moving → fixed is `q ↦ r + inverse(r)`, `r = affine⁻¹(q)`.
    pub inverse: DisplacementField,
    /// The affine part (fixed world → moving world).
    pub affine: AffineTransform,
    /// Final cost at the finest level (lower is better).
    pub metric_value: f64,
}

impl DiffeoResult {
    /// `moving` resampled into the fixed space on `target` (normally the fixed grid).
    pub fn warp(&self, moving: &Image<f32>, target: &Grid, interpolation: Interpolation) -> Image<f32> {
        let chain = TransformChain::new(vec![&self.forward, &self.affine]);
        resample(moving, target, &chain, interpolation, 0.0)
    }

    /// `fixed` resampled into the moving space on `target` (normally the moving grid).
    pub fn warp_inverse(
        &self,
        fixed: &Image<f32>,
        target: &Grid,
        interpolation: Interpolation,
    ) -> Image<f32> {
        let inverse_affine = self.affine.inverse().expect("registration affines are invertible");
        let chain = TransformChain::new(vec![&inverse_affine, &self.inverse]);
        resample(fixed, target, &chain, interpolation, 0.0)
    }
}

fn affine_to_matrix(m: &Matrix4<f64>) -> (Matrix3<f64>, Vector3<f64>) {
    (m.fixed_view::<3, 3>(0, 0).into_owned(), m.fixed_view::<3, 1>(0, 3).into_owned())
}

/// Image scaled to a maximum of one so window sums stay well conditioned in `f32`.
fn unit_scaled(image: &Image<f32>, which: &'static str) -> Result<Image<f32>, RegistrationError> {
    match image.finite_range() {
        Some((lo, hi)) if hi > lo => {
            let span = hi - lo;
            Ok(image.map(|v| (v - lo) / span))
        }
        _ => Err(RegistrationError::UnusableImage { which, rule: "constant intensity".into() }),
    }
}

/// Central-difference gradient of a buffer on `grid`, in world coordinates (one-sided at the
/// borders), into three buffers.
fn world_gradient(data: &[f32], grid: &Grid, out: &mut [Vec<f32>; 3]) {
    let d = grid.dims();
    let inv_t = grid.linear().try_inverse().expect("valid grid").transpose();
    let m = inv_t.map(|v| v as f32);
    let slab = d[1] * d[2];
    let [gx, gy, gz] = out;
    gx.par_chunks_mut(slab).zip(gy.par_chunks_mut(slab)).zip(gz.par_chunks_mut(slab)).enumerate().for_each(
        |(i, ((cx, cy), cz))| {
            for j in 0..d[1] {
                for k in 0..d[2] {
                    let [di, dj, dk] = voxel_derivatives(data, d, [i, j, k]);
                    let o = j * d[2] + k;
                    cx[o] = m[(0, 0)] * di + m[(0, 1)] * dj + m[(0, 2)] * dk;
                    cy[o] = m[(1, 0)] * di + m[(1, 1)] * dj + m[(1, 2)] * dk;
                    cz[o] = m[(2, 0)] * di + m[(2, 1)] * dj + m[(2, 2)] * dk;
                }
            }
        },
    );
}

/// Checks the schedule and masks.
fn validate(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    initial: &AffineTransform,
    params: &DiffeoParams,
) -> Result<(), RegistrationError> {
    let n = params.shrink_factors.len();
    if n == 0 || params.smoothing_sigmas_voxels.len() != n || params.iterations.len() != n {
        return Err(RegistrationError::InvalidParameters {
            field: "shrink_factors/smoothing_sigmas_voxels/iterations",
            rule: "one value per level, at least one level".into(),
        });
    }
    let positive = |v: f64| v.is_finite() && v >= 0.0;
    if !(params.step_size.is_finite() && params.step_size > 0.0 && params.step_size <= 2.0) {
        return Err(RegistrationError::InvalidParameters {
            field: "step_size",
            rule: "in (0, 2] voxels".into(),
        });
    }
    if !positive(params.update_sigma_voxels)
        || !positive(params.field_sigma_voxels)
        || !params.smoothing_sigmas_voxels.iter().all(|&s| positive(s))
    {
        return Err(RegistrationError::InvalidParameters {
            field: "sigmas", rule: "finite and ≥ 0".into()
        });
    }
    params.metric.check()?;
    if !initial.is_valid() {
        return Err(RegistrationError::InvalidParameters {
            field: "initial",
            rule: "affine must be finite and invertible".into(),
        });
    }
    if let Some(m) = &params.fixed_mask
        && !m.grid().same_as(fixed.grid(), 1e-3)
    {
        return Err(RegistrationError::MaskGrid { which: "fixed" });
    }
    if let Some(m) = &params.moving_mask
        && !m.grid().same_as(moving.grid(), 1e-3)
    {
        return Err(RegistrationError::MaskGrid { which: "moving" });
    }
    Ok(())
}

/// Registers `moving` to `fixed` deformably after the affine `initial` (fixed world → moving
/// world). Deterministic: bit-identical at any thread count.
pub(crate) fn register_diffeomorphic(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    initial: &AffineTransform,
    params: &DiffeoParams,
    progress: &mut dyn FnMut(&Progress),
) -> Result<DiffeoResult, RegistrationError> {
    validate(fixed, moving, initial, params)?;
    let fixed_unit = unit_scaled(fixed, "fixed")?;
    let moving_unit = unit_scaled(moving, "moving")?;
    let factors = adapt_shrink_factors(fixed.grid().dims(), &params.shrink_factors, 16);
    let levels = factors.len();
    let mut field: Option<DisplacementField> = None;
    let mut cost = 0.0;
    for (level, &factor) in factors.iter().enumerate() {
        let sigma = params.smoothing_sigmas_voxels[level];
        let fixed_level = pyramid_level(&fixed_unit, factor, sigma);
        let moving_level = pyramid_level(&moving_unit, factor, sigma);
        let grid = fixed_level.grid().clone();
        let u = match field.take() {
            None => DisplacementField::zeros(&grid),
            Some(f) => f.resampled(&grid),
        };
        let fixed_weight =
            params.fixed_mask.as_ref().map(|m| resample(m, &grid, &Identity, Interpolation::Linear, 0.0));
        let moving_weight = params
            .moving_mask
            .as_ref()
            .map(|m| resample(m, moving_level.grid(), &Identity, Interpolation::Linear, 0.0));
        let (u_new, level_cost) = run_level(
            &fixed_level,
            &moving_level,
            fixed_weight.as_ref(),
            moving_weight.as_ref(),
            initial,
            u,
            params,
            params.iterations[level],
            level,
            levels,
            progress,
        )?;
        field = Some(u_new);
        cost = level_cost;
    }
    let mut forward = field.expect("at least one level");
    if !forward.grid().same_as(fixed.grid(), 1e-9) {
        forward = forward.resampled(fixed.grid());
    }
    let inverse = forward.invert(fixed.grid(), params.inverse_iterations, 1e-2);
    progress(&Progress {
        stage: "inverse".into(),
        level: levels - 1,
        levels,
        iteration: 1,
        iterations: 1,
        metric: cost,
    });
    Ok(DiffeoResult { forward, inverse, affine: initial.clone(), metric_value: cost })
}

/// Iterations of one level; returns the field and the last cost.
#[allow(clippy::too_many_arguments)]
fn run_level(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    fixed_weight: Option<&Image<f32>>,
    moving_weight: Option<&Image<f32>>,
    affine: &AffineTransform,
    field: DisplacementField,
    params: &DiffeoParams,
    iterations: usize,
    level: usize,
    levels: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(DisplacementField, f64), RegistrationError> {
    let grid = fixed.grid().clone();
    let dims = grid.dims();
    let n = grid.len();
    let slab = dims[1] * dims[2];
    let [mut ux, mut uy, mut uz] = field.into_components().map(|c| c.as_slice().to_vec());
    // Moving voxel of fixed voxel x with displacement u: K W x + K_lin u, K = M⁻¹ A.
    let k = moving.grid().inverse_affine() * affine.matrix();
    let (kw_lin, kw_off) = affine_to_matrix(&(k * grid.affine()));
    let (k_lin, _) = affine_to_matrix(&k);
    let kw_lin = kw_lin.map(|v| v as f32);
    let kw_off = kw_off.map(|v| v as f32);
    let k_lin = k_lin.map(|v| v as f32);
    // World displacement → fixed voxel offset.
    let to_voxel = grid.linear().try_inverse().expect("valid grid").map(|v| v as f32);
    let moving_dims = moving.grid().dims();
    let moving_data = moving.as_slice();
    let fixed_data = fixed.as_slice();
    let spacing = grid.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
    let max_step = (params.step_size * spacing) as f32;
    let mut warped = vec![0f32; n];
    let mut weight = vec![1f32; n];
    let mut gradient = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    let mut fixed_gradient = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    if params.symmetric {
        world_gradient(fixed_data, &grid, &mut fixed_gradient);
    }
    let mut coefficient = vec![0f64; n];
    let mut next = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    let mut metric = params.metric.prepare(fixed_data, Layout::Dense { dims })?;
    let use_weight = fixed_weight.is_some() || moving_weight.is_some();
    let mut history: Vec<f64> = Vec::new();
    let mut cost = 0.0;
    for iteration in 1..=iterations {
        // 1. Warp the moving level image (and its mask) through the current map.
        warped.par_chunks_mut(slab).zip(weight.par_chunks_mut(slab)).enumerate().for_each(
            |(i, (w_out, m_out))| {
                for j in 0..dims[1] {
                    for kk in 0..dims[2] {
                        let o = j * dims[2] + kk;
                        let v = i * slab + o;
                        let x = Vector3::new(i as f32, j as f32, kk as f32);
                        let u = Vector3::new(ux[v], uy[v], uz[v]);
                        let p = kw_lin * x + kw_off + k_lin * u;
                        let voxel = [p.x as f64, p.y as f64, p.z as f64];
                        w_out[o] = sample_clamped(moving_data, moving_dims, voxel);
                        let mut wt =
                            fixed_weight.map_or(1.0, |f| if f.as_slice()[v] >= 0.5 { 1.0 } else { 0.0 });
                        if let Some(mw) = moving_weight
                            && sample_clamped(mw.as_slice(), moving_dims, voxel) < 0.5
                        {
                            wt = 0.0;
                        }
                        m_out[o] = wt;
                    }
                }
            },
        );
        // 2. Metric and its derivative with respect to the warped intensities.
        let weights = if use_weight { Some(weight.as_slice()) } else { None };
        cost = metric.value_and_derivative(&warped, weights, &mut coefficient);
        progress(&Progress {
            stage: "deformable".into(),
            level,
            levels,
            iteration,
            iterations,
            metric: cost,
        });
        history.push(cost);
        // Stop when the least-squares slope of the last 10 costs is flat (ANTs' convergence
        // window): robust to the small oscillation of fixed-length steps.
        if history.len() >= 10 {
            let window = &history[history.len() - 10..];
            let mean = window.iter().sum::<f64>() / 10.0;
            let slope =
                window.iter().enumerate().map(|(t, c)| (t as f64 - 4.5) * (c - mean)).sum::<f64>() / 82.5;
            if slope > -params.convergence_slope * mean.abs().max(1e-3) {
                break;
            }
        }
        // 3. Force = −∂cost/∂J · ∇J, smoothed (update regularization).
        world_gradient(&warped, &grid, &mut gradient);
        if params.symmetric {
            // Average with the fixed gradient, oriented like the moving one (an inverted
            // contrast must not cancel the force).
            let [gx, gy, gz] = &mut gradient;
            let [fx, fy, fz] = &fixed_gradient;
            gx.par_iter_mut().zip(gy.par_iter_mut()).zip(gz.par_iter_mut()).enumerate().for_each(
                |(v, ((x, y), z))| {
                    let dot = *x * fx[v] + *y * fy[v] + *z * fz[v];
                    let s = if dot < 0.0 { -1.0 } else { 1.0 };
                    *x = 0.5 * (*x + s * fx[v]);
                    *y = 0.5 * (*y + s * fy[v]);
                    *z = 0.5 * (*z + s * fz[v]);
                },
            );
        }
        for g in gradient.iter_mut() {
            g.par_iter_mut().zip(coefficient.par_iter()).for_each(|(g, &a)| *g *= -(a as f32));
            smooth_slice_in_place(g, dims, [params.update_sigma_voxels; 3]);
        }
        // 4. Scale so the largest update moves `step_size` voxels.
        let partial: Vec<f32> = (0..dims[0])
            .into_par_iter()
            .map(|i| {
                let r = i * slab..(i + 1) * slab;
                gradient[0][r.clone()]
                    .iter()
                    .zip(&gradient[1][r.clone()])
                    .zip(&gradient[2][r])
                    .map(|((a, b), c)| a * a + b * b + c * c)
                    .fold(0f32, f32::max)
            })
            .collect();
        let largest = partial.iter().cloned().fold(0f32, f32::max).sqrt();
        if largest <= 0.0 || !largest.is_finite() {
            break;
        }
        let scale = max_step / largest;
        // 5. Compose: u ← v + u∘(id + v).
        let (gx, gy, gz) = (&gradient[0], &gradient[1], &gradient[2]);
        let current = [ux.as_slice(), uy.as_slice(), uz.as_slice()];
        let [nx, ny, nz] = &mut next;
        nx.par_chunks_mut(slab)
            .zip(ny.par_chunks_mut(slab))
            .zip(nz.par_chunks_mut(slab))
            .enumerate()
            .for_each(|(i, ((cx, cy), cz))| {
                for j in 0..dims[1] {
                    for kk in 0..dims[2] {
                        let o = j * dims[2] + kk;
                        let v = i * slab + o;
                        let step = Vector3::new(gx[v], gy[v], gz[v]) * scale;
                        let offset = to_voxel * step;
                        let at = [
                            i as f64 + offset.x as f64,
                            j as f64 + offset.y as f64,
                            kk as f64 + offset.z as f64,
                        ];
                        let u = sample_clamped3(current, dims, at);
                        cx[o] = step.x + u[0];
                        cy[o] = step.y + u[1];
                        cz[o] = step.z + u[2];
                    }
                }
            });
        std::mem::swap(&mut ux, nx);
        std::mem::swap(&mut uy, ny);
        std::mem::swap(&mut uz, nz);
        // 6. Regularize the total field.
        for c in [&mut ux, &mut uy, &mut uz] {
            smooth_slice_in_place(c, dims, [params.field_sigma_voxels; 3]);
        }
    }
    Ok((DisplacementField::from_flat(&grid, [ux, uy, uz]), cost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine_registration::tests::{phantom, test_grid};
    use crate::jacobian::jacobian_determinant;
    use crate::transform::SpatialTransform;

    /// A smooth bump deformation of up to `amplitude` mm.
    fn bump_field(grid: &Grid, amplitude: f64) -> DisplacementField {
        let parts = crate::transform::map_voxels(grid, |v| {
            let p = grid.voxel_to_world(v);
            let g = (-(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) / (2.0 * 15.0f64.powi(2))).exp();
            [
                (amplitude * g) as f32,
                (0.6 * amplitude * g * (p[2] / 20.0).sin()) as f32,
                (-0.5 * amplitude * g) as f32,
            ]
        });
        DisplacementField::from_flat(grid, parts)
    }

    /// Mean distance of `truth(forward(p))` from `p` (zero when the registration inverts the
    /// truth) over a lattice inside the phantom, before (identity) and after registration.
    fn endpoint_errors(truth: &DisplacementField, forward: &DisplacementField) -> (f64, f64) {
        let (mut before, mut after, mut count) = (0.0, 0.0, 0.0);
        let distance = |a: [f64; 3], b: [f64; 3]| {
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
        };
        for x in (-20..=20).step_by(5) {
            for y in (-25..=25).step_by(5) {
                for z in (-15..=15).step_by(5) {
                    let p = [x as f64, y as f64, z as f64];
                    before += distance(truth.transform_point(p), p);
                    after += distance(truth.transform_point(forward.transform_point(p)), p);
                    count += 1.0;
                }
            }
        }
        (before / count, after / count)
    }

    fn quick() -> DiffeoParams {
        DiffeoParams {
            shrink_factors: vec![2, 1],
            smoothing_sigmas_voxels: vec![1.0, 0.0],
            iterations: vec![40, 30],
            ..DiffeoParams::default()
        }
    }

    #[test]
    fn recovers_a_smooth_warp_without_folding() {
        let grid = test_grid();
        let fixed = phantom(&grid);
        let truth = bump_field(&grid, 4.0);
        let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0);
        // moving(x) = fixed(x + t(x)): the registration (fixed → moving) must find t⁻¹.
        let result =
            register_diffeomorphic(&fixed, &moving, &AffineTransform::identity(), &quick(), &mut |_| {})
                .unwrap();
        let (before, after) = endpoint_errors(&truth, &result.forward);
        assert!(after < 0.5 * before, "mean endpoint error {before} → {after} mm");
        let jacobian = jacobian_determinant(&result.forward);
        assert!(jacobian.as_slice().iter().all(|&j| j > 0.0));
        // The inverse undoes the forward map.
        let back = result.forward.transform_point(result.inverse.transform_point([3.0, -2.0, 1.0]));
        assert!(
            (back[0] - 3.0).abs() < 0.1 && (back[1] + 2.0).abs() < 0.1 && (back[2] - 1.0).abs() < 0.1,
            "{back:?}"
        );
    }

    #[test]
    fn mutual_information_copes_with_inverted_contrast() {
        let grid = test_grid();
        let fixed = phantom(&grid);
        let truth = bump_field(&grid, 3.0);
        let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0)
            .map(|v| if *v > 0.0 { 200.0 - v } else { 0.0 });
        // Dense MI is the weaker metric (a global histogram, little local information).
        let metrics: [(Arc<dyn Metric>, f64); 2] = [
            (Arc::new(crate::metrics::MattesMi { bins: 32, sampling_fraction: 1.0, seed: 1 }), 0.9),
            (Arc::new(crate::metrics::SquaredLocalCc { radius: 2 }), 0.6),
        ];
        for (metric, gain) in metrics {
            let params = DiffeoParams { metric: metric.clone(), ..quick() };
            let result =
                register_diffeomorphic(&fixed, &moving, &AffineTransform::identity(), &params, &mut |_| {})
                    .unwrap();
            let (before, after) = endpoint_errors(&truth, &result.forward);
            assert!(after < gain * before, "{metric:?}: mean endpoint error {before} → {after} mm");
        }
    }

    #[test]
    fn bit_identical_at_one_and_two_threads() {
        let grid = test_grid();
        let fixed = phantom(&grid);
        let moving = resample(&fixed, &grid, &bump_field(&grid, 3.0), Interpolation::Linear, 0.0);
        let params = DiffeoParams { iterations: vec![10, 5], ..quick() };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                register_diffeomorphic(&fixed, &moving, &AffineTransform::identity(), &params, &mut |_| {})
                    .unwrap()
            })
        };
        let (a, b) = (run(1), run(2));
        assert_eq!(a.forward, b.forward);
        assert_eq!(a.inverse, b.inverse);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let grid = test_grid();
        let image = phantom(&grid);
        let params = DiffeoParams { step_size: 0.0, ..DiffeoParams::default() };
        assert!(
            register_diffeomorphic(&image, &image, &AffineTransform::identity(), &params, &mut |_| {})
                .is_err()
        );
        let params =
            DiffeoParams { fixed_mask: Some(Image::filled(grid.shrink(2), 1.0)), ..DiffeoParams::default() };
        assert_eq!(
            register_diffeomorphic(&image, &image, &AffineTransform::identity(), &params, &mut |_| {})
                .unwrap_err(),
            RegistrationError::MaskGrid { which: "fixed" }
        );
    }
}
