//! Bias-field correction in the manner of N4 (Tustison et al. 2010, IEEE TMI 29:1310).
//!
//! The image is modelled as `observed = true · field` with a smooth multiplicative field, so in
//! the log domain the field is additive. Each iteration (1) sharpens the histogram of the
//! current log-corrected intensities by Wiener deconvolution of a Gaussian, which estimates
//! the field-free intensity of every voxel, (2) fits the residual (current − sharpened) with a
//! cubic B-spline on a control-point lattice inside the mask and adds it to the field. The
//! lattice is refined ×2 per fitting level. Work is done on a shrunken copy; the final field is
//! evaluated at full resolution from the lattice, so it is smooth at every scale.

use super::bspline::{AxisSampling, ControlLattice};
use super::{IntensityError, check_image, check_same_grid};
use crate::image::Image;
use crate::interpolate::Interpolation;
use crate::resample::resample;
use crate::transform::Identity;
use ndarray::Array3;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex64;

/// Parameters of [`correct_bias_field`]; the defaults follow N4's.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasFieldParams {
    /// Integer subsampling of the image for the estimation (N4: 4 for 1 mm brains).
    pub shrink_factor: usize,
    /// Knot spans per axis of the first lattice (N4's initial mesh: 1×1×1).
    pub initial_mesh: [usize; 3],
    /// Maximum iterations at each fitting level; its length is the number of levels, each
    /// level doubling the knot spans.
    pub iterations: Vec<usize>,
    /// A level stops when the coefficient of variation of the field update (exp of the change
    /// in log field, inside the mask) falls below this.
    pub convergence_threshold: f64,
    /// Bins of the log-intensity histogram used for sharpening.
    pub histogram_bins: usize,
    /// Full width at half maximum of the Gaussian assumed to blur the histogram (log units).
    pub bias_fwhm: f64,
    /// Wiener filter noise term of the deconvolution.
    pub wiener_noise: f64,
}

impl Default for BiasFieldParams {
    fn default() -> Self {
        Self {
            shrink_factor: 4,
            initial_mesh: [1, 1, 1],
            iterations: vec![50, 50, 50, 50],
            convergence_threshold: 0.001,
            histogram_bins: 200,
            bias_fwhm: 0.15,
            wiener_noise: 0.01,
        }
    }
}

/// Result of [`correct_bias_field`].
#[derive(Debug, Clone)]
pub struct BiasCorrection {
    /// `image / field`.
    pub corrected: Image<f32>,
    /// The multiplicative field, scaled to geometric mean 1 inside the mask so the corrected
    /// image keeps the input's overall intensity scale.
    pub field: Image<f32>,
    /// Iterations run at each fitting level.
    pub iterations: Vec<usize>,
    /// Convergence measure at the end of each level.
    pub final_convergence: Vec<f64>,
}

/// Estimates and removes a smooth multiplicative bias field.
///
/// `mask` (same grid, voxels > 0.5 count) restricts the estimation; without one, voxels above
/// the Otsu threshold of the image are used. Voxels with intensity ≤ 0 never count. The field is
/// returned for every voxel. Errors on non-finite or constant images, an empty mask, a mask on
/// another grid and out-of-range parameters.
pub fn correct_bias_field(
    image: &Image<f32>,
    mask: Option<&Image<f32>>,
    params: &BiasFieldParams,
) -> Result<BiasCorrection, IntensityError> {
    check_params(params)?;
    check_image(image)?;
    let full_mask: Vec<bool> = match mask {
        Some(m) => {
            check_same_grid(image, m, "mask")?;
            m.as_slice().iter().zip(image.as_slice()).map(|(&m, &v)| m > 0.5 && v > 0.0).collect()
        }
        None => {
            let threshold = super::brain_mask::foreground_threshold(image);
            image.as_slice().iter().map(|&v| v > threshold && v > 0.0).collect()
        }
    };
    let used = full_mask.iter().filter(|&&m| m).count();
    if used == 0 {
        return Err(IntensityError::EmptyMask {
            reason: "no voxel inside the mask has a positive intensity".into(),
        });
    }
    let (lo, hi) = full_mask
        .iter()
        .zip(image.as_slice())
        .filter(|(m, _)| **m)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, &v)| (lo.min(v), hi.max(v)));
    if lo == hi {
        return Err(IntensityError::Constant { value: lo, region: "inside the mask" });
    }

    // Shrink by subsampling (as ITK's shrink filter): averaging would create partial-volume
    // intensities that blur the histogram the sharpening relies on.
    let full_dims = image.grid().dims();
    let shrink = params.shrink_factor.max(1);
    let small_grid = image.grid().shrink(shrink);
    let small_dims = small_grid.dims();
    let small_image = resample(image, &small_grid, &Identity, Interpolation::Nearest, 0.0);
    let mask_image = image
        .with_data(
            Array3::from_shape_vec(
                (full_dims[0], full_dims[1], full_dims[2]),
                full_mask.iter().map(|&m| if m { 1.0f32 } else { 0.0 }).collect(),
            )
            .expect("mask has the image shape"),
        )
        .expect("same grid");
    let small_mask_image = resample(&mask_image, &small_grid, &Identity, Interpolation::Nearest, 0.0);
    let mut small_mask: Vec<bool> = small_mask_image.as_slice().iter().map(|&m| m > 0.5).collect();
    if !small_mask.iter().any(|&m| m) {
        // A mask thinner than the shrink factor: estimate on the full grid instead.
        return correct_bias_field(image, mask, &BiasFieldParams { shrink_factor: 1, ..params.clone() });
    }
    // Positions of shrunken voxels on the full-resolution axes (see `Grid::shrink`).
    let small_axis = |a: usize, spans: usize| {
        let scale = full_dims[a] as f64 / small_dims[a] as f64;
        AxisSampling::for_axis(small_dims[a], scale, 0.5 * scale - 0.5, full_dims[a], spans)
    };
    let log_input: Vec<f64> = small_image
        .as_slice()
        .iter()
        .zip(small_mask.iter_mut())
        .map(|(&v, m)| {
            if v > 0.0 {
                (v as f64).ln()
            } else {
                *m = false;
                0.0
            }
        })
        .collect();
    let weight: Vec<f64> = small_mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    let masked: Vec<usize> = (0..small_mask.len()).filter(|&i| small_mask[i]).collect();

    let mut spans = params.initial_mesh.map(|s| s.max(1));
    let mut lattice = ControlLattice::zeros(spans);
    let mut log_field = vec![0.0f64; log_input.len()];
    let mut iterations_run = Vec::new();
    let mut final_convergence = Vec::new();
    let mut sharpener = Sharpener::new(params);
    for (level, &max_iterations) in params.iterations.iter().enumerate() {
        if level > 0 {
            lattice = lattice.refine();
            spans = lattice.spans();
        }
        let sampling = [small_axis(0, spans[0]), small_axis(1, spans[1]), small_axis(2, spans[2])];
        let mut convergence = f64::INFINITY;
        let mut count = 0;
        while count < max_iterations {
            count += 1;
            let current: Vec<f64> = masked.iter().map(|&i| log_input[i] - log_field[i]).collect();
            let sharpened = sharpener.sharpen(&current);
            let mut residual = vec![0.0; log_input.len()];
            for ((&i, c), s) in masked.iter().zip(&current).zip(&sharpened) {
                residual[i] = c - s;
            }
            lattice.add(&ControlLattice::fit(spans, &sampling, &residual, &weight));
            let new_field = lattice.evaluate(&sampling);
            convergence =
                coefficient_of_variation(masked.iter().map(|&i| (new_field[i] - log_field[i]).exp()));
            log_field = new_field;
            if convergence < params.convergence_threshold {
                break;
            }
        }
        iterations_run.push(count);
        final_convergence.push(convergence);
    }

    // Full-resolution field from the final lattice.
    let full_axes: [AxisSampling; 3] =
        std::array::from_fn(|a| AxisSampling::for_axis(full_dims[a], 1.0, 0.0, full_dims[a], spans[a]));
    let mut full_log_field = lattice.evaluate(&full_axes);
    // Geometric mean 1 inside the mask: the field's overall level is not identifiable.
    let mean_log =
        full_log_field.iter().zip(&full_mask).filter(|(_, m)| **m).map(|(v, _)| v).sum::<f64>() / used as f64;
    full_log_field.iter_mut().for_each(|v| *v -= mean_log);
    let field_values: Vec<f32> = full_log_field.iter().map(|v| v.exp() as f32).collect();
    let corrected_values: Vec<f32> =
        image.as_slice().iter().zip(&field_values).map(|(&v, &f)| v / f).collect();
    let shape = (full_dims[0], full_dims[1], full_dims[2]);
    let field = image.with_data(Array3::from_shape_vec(shape, field_values).expect("shape")).expect("grid");
    let corrected =
        image.with_data(Array3::from_shape_vec(shape, corrected_values).expect("shape")).expect("grid");
    Ok(BiasCorrection { corrected, field, iterations: iterations_run, final_convergence })
}

fn check_params(params: &BiasFieldParams) -> Result<(), IntensityError> {
    let fail = |name, rule: &str| Err(IntensityError::Parameter { name, rule: rule.into() });
    if params.shrink_factor == 0 {
        return fail("shrink_factor", "must be at least 1");
    }
    if params.iterations.is_empty() {
        return fail("iterations", "needs at least one fitting level");
    }
    if params.iterations.len() > 8 {
        return fail("iterations", "at most 8 fitting levels (the lattice doubles per level)");
    }
    if params.histogram_bins < 10 {
        return fail("histogram_bins", "must be at least 10");
    }
    if !(params.bias_fwhm > 0.0 && params.bias_fwhm.is_finite()) {
        return fail("bias_fwhm", "must be positive");
    }
    if !(params.wiener_noise > 0.0 && params.wiener_noise.is_finite()) {
        return fail("wiener_noise", "must be positive");
    }
    if params.initial_mesh.contains(&0) {
        return fail("initial_mesh", "every axis needs at least one knot span");
    }
    Ok(())
}

/// Standard deviation over mean of a sequence (two passes, fixed order).
fn coefficient_of_variation(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let (n, sum) = values.clone().fold((0usize, 0.0), |(n, s), v| (n + 1, s + v));
    if n < 2 {
        return 0.0;
    }
    let mean = sum / n as f64;
    let variance = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    variance.sqrt() / mean
}

/// Histogram sharpening as in ITK's N4 `SharpenImage`, with FFT plans kept across iterations.
struct Sharpener {
    bins: usize,
    padded: usize,
    fwhm: f64,
    wiener_noise: f64,
    planner: FftPlanner<f64>,
}

impl Sharpener {
    fn new(params: &BiasFieldParams) -> Self {
        let bins = params.histogram_bins;
        // N4 pads to the power of two above twice the bin count, centring the histogram.
        let exponent = (bins as f64).log2().ceil() as u32 + 1;
        Self {
            bins,
            padded: 1usize << exponent,
            fwhm: params.bias_fwhm,
            wiener_noise: params.wiener_noise,
            planner: FftPlanner::new(),
        }
    }

    /// The expected field-free log intensity of each of `values` (log intensities in the mask).
    fn sharpen(&mut self, values: &[f64]) -> Vec<f64> {
        let bins = self.bins;
        let padded = self.padded;
        let (min, max) =
            values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if max <= min {
            return values.to_vec();
        }
        let slope = (max - min) / (bins - 1) as f64;
        // Histogram with linear (triangular) bin assignment.
        let mut histogram = vec![0.0; bins];
        for &v in values {
            let position = (v - min) / slope;
            let index = (position.floor() as usize).min(bins - 1);
            let offset = position - index as f64;
            histogram[index] += 1.0 - offset;
            if index + 1 < bins {
                histogram[index + 1] += offset;
            }
        }
        let shift = (padded - bins) / 2;
        let fft = self.planner.plan_fft_forward(padded);
        let ifft = self.planner.plan_fft_inverse(padded);
        let mut v: Vec<Complex64> = vec![Complex64::new(0.0, 0.0); padded];
        for (n, &h) in histogram.iter().enumerate() {
            v[n + shift] = Complex64::new(h, 0.0);
        }
        fft.process(&mut v);
        // Gaussian of the given FWHM in bin units, normalized, wrapped around zero.
        let scaled_fwhm = self.fwhm / slope;
        let exp_factor = 4.0 * std::f64::consts::LN_2 / (scaled_fwhm * scaled_fwhm);
        let scale = 2.0 * (std::f64::consts::LN_2 / std::f64::consts::PI).sqrt() / scaled_fwhm;
        let mut f: Vec<Complex64> = vec![Complex64::new(0.0, 0.0); padded];
        f[0] = Complex64::new(scale, 0.0);
        for n in 1..=padded / 2 {
            let value = scale * (-((n * n) as f64) * exp_factor).exp();
            f[n] = Complex64::new(value, 0.0);
            f[padded - n] = Complex64::new(value, 0.0);
        }
        fft.process(&mut f);
        // Wiener deconvolution: U = V · conj(F) / (|F|² + noise).
        let mut u: Vec<Complex64> =
            v.iter().zip(&f).map(|(v, f)| v * f.conj() / (f.norm_sqr() + self.wiener_noise)).collect();
        ifft.process(&mut u);
        let inverse_n = 1.0 / padded as f64;
        let u: Vec<f64> = u.iter().map(|c| (c.re * inverse_n).max(0.0)).collect();
        // E[true | observed] = (F ∗ (x · U)) / (F ∗ U).
        let mut numerator: Vec<Complex64> = u
            .iter()
            .enumerate()
            .map(|(n, &un)| Complex64::new((min + (n as f64 - shift as f64) * slope) * un, 0.0))
            .collect();
        let mut denominator: Vec<Complex64> = u.iter().map(|&un| Complex64::new(un, 0.0)).collect();
        fft.process(&mut numerator);
        fft.process(&mut denominator);
        numerator.iter_mut().zip(&f).for_each(|(a, b)| *a *= b);
        denominator.iter_mut().zip(&f).for_each(|(a, b)| *a *= b);
        ifft.process(&mut numerator);
        ifft.process(&mut denominator);
        let expected: Vec<f64> = (0..bins)
            .map(|n| {
                let d = denominator[n + shift].re;
                let x = min + n as f64 * slope;
                // Where the deconvolved histogram vanishes, keep the observed value.
                if d.abs() > 1e-10 * padded as f64 { numerator[n + shift].re / d } else { x }
            })
            .collect();
        values
            .iter()
            .map(|&v| {
                let position = (v - min) / slope;
                let index = position.floor() as usize;
                if index + 1 < bins {
                    let t = position - index as f64;
                    expected[index] + (expected[index + 1] - expected[index]) * t
                } else {
                    expected[bins - 1]
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A two-tissue ellipsoid phantom (inner "white matter", outer "grey matter") on a
    /// background of zeros, times a smooth field, plus noise. Returns (image, mask, true field).
    pub(crate) fn phantom(dims: [usize; 3], amplitude: f64, seed: u64) -> (Image<f32>, Image<f32>, Vec<f64>) {
        let grid = Grid::axis_aligned(dims, [2.0; 3], [0.0; 3]).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = dims.map(|d| (d as f64 - 1.0) / 2.0);
        let mut image = Vec::new();
        let mut mask = Vec::new();
        let mut field = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let p = [(i as f64 - c[0]) / c[0], (j as f64 - c[1]) / c[1], (k as f64 - c[2]) / c[2]];
                    let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
                    let tissue = if r < 0.55 {
                        100.0
                    } else if r < 0.85 {
                        60.0
                    } else {
                        0.0
                    };
                    let f = (amplitude * (0.8 * p[0] + 0.5 * p[1] * p[2] - 0.4 * p[2] * p[2])).exp();
                    let noise = if tissue > 0.0 { 2.0 * (rng.random::<f64>() - 0.5) * 3.0 } else { 0.0 };
                    image.push(((tissue + noise) * f) as f32);
                    mask.push(if tissue > 0.0 { 1.0f32 } else { 0.0 });
                    field.push(f);
                }
            }
        }
        let shape = (dims[0], dims[1], dims[2]);
        (
            Image::new(Array3::from_shape_vec(shape, image).unwrap(), grid.clone()).unwrap(),
            Image::new(Array3::from_shape_vec(shape, mask).unwrap(), grid).unwrap(),
            field,
        )
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    fn tissue_cv(image: &Image<f32>, clean: &Image<f32>, level: f32) -> f64 {
        let values: Vec<f64> = image
            .as_slice()
            .iter()
            .zip(clean.as_slice())
            .filter(|(_, c)| (**c - level).abs() < 1e-3)
            .map(|(v, _)| *v as f64)
            .collect();
        coefficient_of_variation(values.iter().copied())
    }

    #[test]
    fn recovers_a_known_smooth_field() {
        let dims = [40, 44, 36];
        let (image, mask, truth) = phantom(dims, 0.3, 7);
        let params = BiasFieldParams { shrink_factor: 2, iterations: vec![50, 50, 50], ..Default::default() };
        let result = correct_bias_field(&image, Some(&mask), &params).unwrap();
        let inside: Vec<usize> = (0..truth.len()).filter(|&i| mask.as_slice()[i] > 0.5).collect();
        let recovered: Vec<f64> = inside.iter().map(|&i| (result.field.as_slice()[i] as f64).ln()).collect();
        let expected: Vec<f64> = inside.iter().map(|&i| truth[i].ln()).collect();
        let r = correlation(&recovered, &expected);
        assert!(r > 0.9, "log-field correlation {r}");
        // The inner tissue's spread drops.
        let clean = {
            let (flat, _, _) = phantom(dims, 0.0, 7);
            flat.map(|v| {
                if *v > 80.0 {
                    100.0f32
                } else if *v > 30.0 {
                    60.0
                } else {
                    0.0
                }
            })
        };
        let before = tissue_cv(&image, &clean, 100.0);
        let after = tissue_cv(&result.corrected, &clean, 100.0);
        assert!(after < 0.5 * before, "CV before {before}, after {after}");
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let (image, mask, _) = phantom([24, 26, 22], 0.3, 2);
        let params = BiasFieldParams { shrink_factor: 2, iterations: vec![10, 10], ..Default::default() };
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| correct_bias_field(&image, Some(&mask), &params).unwrap())
        };
        let (a, b) = (run(1), run(2));
        assert_eq!(a.field.as_slice(), b.field.as_slice());
        assert_eq!(a.corrected.as_slice(), b.corrected.as_slice());
    }

    #[test]
    fn bad_inputs_are_refused() {
        let grid = Grid::axis_aligned([8, 8, 8], [1.0; 3], [0.0; 3]).unwrap();
        let constant = Image::filled(grid.clone(), 5.0f32);
        assert!(matches!(
            correct_bias_field(&constant, None, &BiasFieldParams::default()),
            Err(IntensityError::Constant { .. })
        ));
        let mut nan = Image::filled(grid.clone(), 5.0f32);
        nan.data_mut()[[1, 2, 3]] = f32::NAN;
        nan.data_mut()[[0, 0, 1]] = 1.0;
        assert_eq!(
            correct_bias_field(&nan, None, &BiasFieldParams::default()).unwrap_err(),
            IntensityError::NonFinite { count: 1, first: [1, 2, 3] }
        );
        let (image, _, _) = phantom([16, 16, 16], 0.2, 1);
        let empty = Image::filled(image.grid().clone(), 0.0f32);
        assert!(matches!(
            correct_bias_field(&image, Some(&empty), &BiasFieldParams::default()),
            Err(IntensityError::EmptyMask { .. })
        ));
        let bad = BiasFieldParams { iterations: vec![], ..Default::default() };
        assert!(matches!(correct_bias_field(&image, None, &bad), Err(IntensityError::Parameter { .. })));
    }
}
