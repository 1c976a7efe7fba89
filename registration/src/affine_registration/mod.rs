//! Affine registration: centre-of-mass / principal-axes initialization, rigid, similarity and
//! full affine (12 parameters) over a multi-resolution pyramid, optimized by a regular-step
//! gradient descent on analytic metric gradients (ITK's `RegularStepGradientDescent`: the step
//! halves when the gradient turns back or the cost gets worse).
//!
//! The result maps fixed world points to moving world points (pull), like ITK and ANTs.
//!
//! [`init`] gives the starting transforms (moments, principal axes), [`level`] the problem of
//! one pyramid level and its gradient descent; this module runs the levels.

use crate::grid::Grid;
use crate::image::Image;
use crate::metrics::Metric;
pub use crate::plan::{Progress, RegistrationError};
use crate::smooth::adapt_shrink_factors;
use crate::transform::AffineTransform;
use nalgebra::{Matrix3, Vector3};
use std::sync::Arc;

mod init;
mod level;

use init::{initial_transform, moments};
use level::{build_level, optimize_level};

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

pub(super) fn pyramid_spacing(grid: &Grid, factor: usize) -> f64 {
    grid.spacing().iter().cloned().fold(f64::INFINITY, f64::min) * factor as f64
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
