//! Metrics over a whole set of samples: mean squares, normalized correlation, Mattes MI.

use super::{Layout, Metric, MetricEvaluator};
use crate::plan::RegistrationError;

/// Mean squared intensity difference (same modality and scaling), as a [`Metric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanSquares;

/// Normalized cross-correlation (same modality and polarity), as a [`Metric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ncc;

/// Mattes mutual information as a [`Metric`]: `bins` histogram bins per axis. Affine
/// registration evaluates it on a seeded random subset of `sampling_fraction` of the fixed
/// voxels (ANTs: 32 bins, 25 %) with histogram bounds from the whole images; deformable
/// registration on every voxel, with bounds from the current values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MattesMi {
    /// Histogram bins per axis.
    pub bins: usize,
    /// Fraction of fixed voxels sampled (0, 1] by affine registration.
    pub sampling_fraction: f64,
    /// Seed of the sample selection.
    pub seed: u64,
}

/// A sample-wise cost function `(fixed, moving, derivative) → cost` as an evaluator: over
/// the samples of positive weight only, its derivative scattered back.
struct SampleCost<F> {
    fixed: Vec<f32>,
    cost: F,
    /// Dense MI's per-sample derivatives are O(1/N): it rescales them by the sample count
    /// (the step is normalized anyway); the others keep them.
    rescale_by_count: bool,
}

impl<F: Fn(&[f32], &[f32], &mut [f64]) -> f64 + Send> MetricEvaluator for SampleCost<F> {
    fn value_and_derivative(
        &mut self,
        moving: &[f32],
        weight: Option<&[f32]>,
        derivative: &mut [f64],
    ) -> f64 {
        let (cost, count) = match weight {
            None => ((self.cost)(&self.fixed, moving, derivative), moving.len()),
            Some(weight) => {
                let kept: Vec<usize> = (0..moving.len()).filter(|&s| weight[s] > 0.0).collect();
                let fixed: Vec<f32> = kept.iter().map(|&s| self.fixed[s]).collect();
                let picked: Vec<f32> = kept.iter().map(|&s| moving[s]).collect();
                let mut partial = vec![0f64; kept.len()];
                let cost = (self.cost)(&fixed, &picked, &mut partial);
                derivative.iter_mut().for_each(|d| *d = 0.0);
                for (&s, &d) in kept.iter().zip(&partial) {
                    derivative[s] = d;
                }
                (cost, kept.len())
            }
        };
        if self.rescale_by_count {
            let n = count as f64;
            derivative.iter_mut().for_each(|d| *d *= n);
        }
        cost
    }
}

impl Metric for MeanSquares {
    fn check(&self) -> Result<(), RegistrationError> {
        Ok(())
    }

    fn prepare(&self, fixed: &[f32], _layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
        Ok(Box::new(SampleCost { fixed: fixed.to_vec(), cost: mean_squares, rescale_by_count: false }))
    }
}

impl Metric for Ncc {
    fn check(&self) -> Result<(), RegistrationError> {
        Ok(())
    }

    fn prepare(&self, fixed: &[f32], _layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
        Ok(Box::new(SampleCost {
            fixed: fixed.to_vec(),
            cost: normalized_correlation,
            rescale_by_count: false,
        }))
    }
}

impl Metric for MattesMi {
    fn check(&self) -> Result<(), RegistrationError> {
        if self.bins < 8 || !(self.sampling_fraction > 0.0 && self.sampling_fraction <= 1.0) {
            return Err(RegistrationError::InvalidParameters {
                field: "metric",
                rule: "MI needs ≥ 8 bins and a sampling fraction in (0, 1]".into(),
            });
        }
        Ok(())
    }

    fn sampling(&self) -> Option<(f64, u64)> {
        Some((self.sampling_fraction, self.seed))
    }

    fn prepare(&self, fixed: &[f32], layout: Layout) -> Result<Box<dyn MetricEvaluator>, RegistrationError> {
        let bins = self.bins;
        Ok(match layout {
            Layout::Samples { fixed_range, moving_range } => {
                let histogram = MattesMutualInformation::new(bins, fixed_range, moving_range);
                Box::new(SampleCost {
                    fixed: fixed.to_vec(),
                    cost: move |f: &[f32], m: &[f32], d: &mut [f64]| histogram.evaluate(f, m, d),
                    rescale_by_count: false,
                })
            }
            // Every weighted voxel of a level, histogram bounds from the current values.
            Layout::Dense { .. } => Box::new(SampleCost {
                fixed: fixed.to_vec(),
                cost: move |f: &[f32], m: &[f32], d: &mut [f64]| {
                    let range = |x: &[f32]| {
                        x.iter()
                            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
                    };
                    MattesMutualInformation::new(bins, range(f), range(m)).evaluate(f, m, d)
                },
                rescale_by_count: true,
            }),
        })
    }
}

/// Mean squared difference `Σ (m − f)² / N`; writes `∂cost/∂m_s` into `derivative`.
pub fn mean_squares(fixed: &[f32], moving: &[f32], derivative: &mut [f64]) -> f64 {
    let n = fixed.len().max(1) as f64;
    let mut sum = 0.0;
    for ((&f, &m), d) in fixed.iter().zip(moving).zip(derivative.iter_mut()) {
        let diff = m as f64 - f as f64;
        sum += diff * diff;
        *d = 2.0 * diff / n;
    }
    sum / n
}

/// Negative normalized cross-correlation `−Σ f̃ m̃ / √(Σ f̃² Σ m̃²)` (tilde: mean removed), in
/// [−1, 1]; writes `∂cost/∂m_s`. Sign-sensitive: inverted contrast scores +1 (worst).
pub fn normalized_correlation(fixed: &[f32], moving: &[f32], derivative: &mut [f64]) -> f64 {
    let n = fixed.len();
    if n < 2 {
        derivative.iter_mut().for_each(|d| *d = 0.0);
        return 0.0;
    }
    let mean_f = fixed.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let mean_m = moving.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let (mut sfm, mut sff, mut smm) = (0.0, 0.0, 0.0);
    for (&f, &m) in fixed.iter().zip(moving) {
        let (a, b) = (f as f64 - mean_f, m as f64 - mean_m);
        sfm += a * b;
        sff += a * a;
        smm += b * b;
    }
    if sff <= 0.0 || smm <= 0.0 {
        derivative.iter_mut().for_each(|d| *d = 0.0);
        return 0.0;
    }
    let norm = (sff * smm).sqrt();
    // d/dm_s of sfm/√(sff·smm): (f̃_s − sfm/smm · m̃_s)/√(sff·smm) (the mean terms cancel).
    for ((&f, &m), d) in fixed.iter().zip(moving).zip(derivative.iter_mut()) {
        let (a, b) = (f as f64 - mean_f, m as f64 - mean_m);
        *d = -(a - sfm / smm * b) / norm;
    }
    -sfm / norm
}

/// Mattes et al. (2003) mutual information: a joint histogram with a zero-order (box) Parzen
/// window on fixed values and a cubic B-spline window on moving values, so the cost is
/// differentiable in the moving values. Two padding bins at each end keep the B-spline
/// support inside the histogram, as in ITK.
#[derive(Debug, Clone)]
pub struct MattesMutualInformation {
    bins: usize,
    fixed_min: f64,
    fixed_width: f64,
    moving_min: f64,
    moving_width: f64,
}

const PADDING: usize = 2;

#[inline]
fn bspline3(x: f64) -> f64 {
    let a = x.abs();
    if a < 1.0 {
        (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    } else if a < 2.0 {
        let t = 2.0 - a;
        t * t * t / 6.0
    } else {
        0.0
    }
}

#[inline]
fn bspline3_derivative(x: f64) -> f64 {
    let a = x.abs();
    let s = x.signum();
    if a < 1.0 {
        s * (-2.0 * a + 1.5 * a * a)
    } else if a < 2.0 {
        let t = 2.0 - a;
        -s * 0.5 * t * t
    } else {
        0.0
    }
}

impl MattesMutualInformation {
    /// A histogram of `bins` bins per axis (at least 8) over the given intensity ranges.
    pub fn new(bins: usize, fixed_range: (f32, f32), moving_range: (f32, f32)) -> Self {
        let bins = bins.max(8);
        let usable = (bins - 2 * PADDING) as f64;
        let width = |(lo, hi): (f32, f32)| (((hi - lo) as f64) / usable).max(1e-12);
        Self {
            bins,
            fixed_min: fixed_range.0 as f64,
            fixed_width: width(fixed_range),
            moving_min: moving_range.0 as f64,
            moving_width: width(moving_range),
        }
    }

    #[inline]
    fn fixed_bin(&self, f: f32) -> usize {
        let x = ((f as f64 - self.fixed_min) / self.fixed_width).floor() as i64 + PADDING as i64;
        x.clamp(PADDING as i64, (self.bins - PADDING - 1) as i64) as usize
    }

    #[inline]
    fn moving_position(&self, m: f32) -> f64 {
        let x = (m as f64 - self.moving_min) / self.moving_width + PADDING as f64;
        x.clamp(PADDING as f64, (self.bins - PADDING) as f64 - 1e-9)
    }

    /// Cost `−MI` of the sample pairs; writes `∂cost/∂m_s` into `derivative`.
    pub fn evaluate(&self, fixed: &[f32], moving: &[f32], derivative: &mut [f64]) -> f64 {
        let b = self.bins;
        let n = fixed.len();
        if n == 0 {
            return 0.0;
        }
        let mut joint = vec![0f64; b * b];
        for (&f, &m) in fixed.iter().zip(moving) {
            let row = self.fixed_bin(f) * b;
            let x = self.moving_position(m);
            let first = x.floor() as usize - 1;
            for l in first..first + 4 {
                joint[row + l] += bspline3(l as f64 - x);
            }
        }
        let total: f64 = joint.iter().sum();
        joint.iter_mut().for_each(|v| *v /= total);
        let mut fixed_marginal = vec![0f64; b];
        let mut moving_marginal = vec![0f64; b];
        for k in 0..b {
            for l in 0..b {
                fixed_marginal[k] += joint[k * b + l];
                moving_marginal[l] += joint[k * b + l];
            }
        }
        let mut mi = 0.0;
        // log(p(k,l)/p_m(l)) per cell: the part of ∂MI/∂p(k,l) that does not cancel.
        let mut log_ratio = vec![0f64; b * b];
        for k in 0..b {
            for l in 0..b {
                let p = joint[k * b + l];
                if p > 1e-16 && moving_marginal[l] > 1e-16 {
                    mi += p * (p / (fixed_marginal[k] * moving_marginal[l])).ln();
                    log_ratio[k * b + l] = (p / moving_marginal[l]).ln();
                }
            }
        }
        let scale = 1.0 / (total * self.moving_width);
        for ((&f, &m), d) in fixed.iter().zip(moving).zip(derivative.iter_mut()) {
            let row = self.fixed_bin(f) * b;
            let x = self.moving_position(m);
            let first = x.floor() as usize - 1;
            let mut g = 0.0;
            for l in first..first + 4 {
                // ∂β(l − x)/∂m = −β'(l − x)/width.
                g -= bspline3_derivative(l as f64 - x) * log_ratio[row + l];
            }
            *d = -g * scale;
        }
        -mi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> (Vec<f32>, Vec<f32>) {
        let fixed: Vec<f32> = (0..500).map(|i| ((i as f32) * 0.37).sin() * 50.0 + 100.0).collect();
        let moving: Vec<f32> =
            fixed.iter().enumerate().map(|(i, &f)| 0.5 * f + ((i * 7) % 13) as f32).collect();
        (fixed, moving)
    }

    fn check_derivative(cost: impl Fn(&[f32], &mut [f64]) -> f64, moving: &[f32]) {
        let mut d = vec![0f64; moving.len()];
        let c0 = cost(moving, &mut d);
        let mut scratch = vec![0f64; moving.len()];
        for s in [3usize, 77, 260] {
            let h = 1e-2f32;
            let mut plus = moving.to_vec();
            plus[s] += h;
            let mut minus = moving.to_vec();
            minus[s] -= h;
            let fd = (cost(&plus, &mut scratch) - cost(&minus, &mut scratch)) / (2.0 * h as f64);
            let tolerance = 1e-3 * d[s].abs().max(1e-6) + 1e-7;
            assert!(
                (fd - d[s]).abs() < tolerance.max(0.05 * d[s].abs()),
                "sample {s}: fd {fd} vs {} (cost {c0})",
                d[s]
            );
        }
    }

    #[test]
    fn mean_squares_and_correlation_gradients_match_finite_differences() {
        let (fixed, moving) = samples();
        check_derivative(|m, d| mean_squares(&fixed, m, d), &moving);
        check_derivative(|m, d| normalized_correlation(&fixed, m, d), &moving);
        let mut d = vec![0f64; fixed.len()];
        assert!((normalized_correlation(&fixed, &fixed, &mut d) + 1.0).abs() < 1e-9);
        let inverted: Vec<f32> = fixed.iter().map(|v| -v).collect();
        assert!((normalized_correlation(&fixed, &inverted, &mut d) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn mutual_information_gradient_and_polarity() {
        let (fixed, moving) = samples();
        let mi = MattesMutualInformation::new(32, (40.0, 160.0), (20.0, 95.0));
        check_derivative(|m, d| mi.evaluate(&fixed, m, d), &moving);
        // Inverted contrast is as informative as the original; noise is not.
        let mut d = vec![0f64; fixed.len()];
        let mi_same = MattesMutualInformation::new(32, (40.0, 160.0), (40.0, 160.0));
        let same = mi_same.evaluate(&fixed, &fixed, &mut d);
        let inverted: Vec<f32> = fixed.iter().map(|v| 200.0 - v).collect();
        let inv = mi_same.evaluate(&fixed, &inverted, &mut d);
        let noise: Vec<f32> = (0..500).map(|i| ((i * 7919) % 120) as f32 + 40.0).collect();
        let unrelated = mi_same.evaluate(&fixed, &noise, &mut d);
        assert!((same - inv).abs() < 0.05 * same.abs(), "{same} vs {inv}");
        assert!(unrelated > same + 0.5, "{unrelated} vs {same}");
    }
}
