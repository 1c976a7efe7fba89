//! The `|z|` histogram of a null map and the exceedance and threshold read from pooled
//! histograms.

use super::{BIN_WIDTH, CalibrationError, HISTOGRAM_BINS};

/// Histogram of `|z|` of one null map.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsZHistogram {
    pub(super) counts: Vec<u64>,
    pub(super) total: u64,
}

impl Default for AbsZHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl AbsZHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self { counts: vec![0; HISTOGRAM_BINS], total: 0 }
    }

    /// A histogram from stored bin counts ([`HISTOGRAM_BINS`] bins of width [`BIN_WIDTH`]).
    pub fn from_counts(counts: Vec<u64>) -> Result<Self, CalibrationError> {
        if counts.len() != HISTOGRAM_BINS {
            return Err(CalibrationError::Layout {
                what: "|z| histogram",
                expected: HISTOGRAM_BINS,
                found: counts.len(),
            });
        }
        let total = counts.iter().sum();
        Ok(Self { counts, total })
    }

    /// Bin counts: bin `b` holds `|z|` in `[b, b + 1) · BIN_WIDTH`, the last bin everything above.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The histogram of `|z|` over `z` (non-finite values are ignored).
    pub fn from_z(z: &[f32]) -> Self {
        let mut histogram = Self::new();
        let last = histogram.counts.len() - 1;
        for &v in z.iter().filter(|v| v.is_finite()) {
            let bin = ((v.abs() as f64) / BIN_WIDTH) as usize;
            histogram.counts[bin.min(last)] += 1;
            histogram.total += 1;
        }
        histogram
    }

    /// Number of values.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Fraction of values with `|z| > t` (linear within a bin).
    pub fn exceedance(&self, t: f64) -> f64 {
        let counts: Vec<f64> = self.counts.iter().map(|&c| c as f64).collect();
        exceedance(&counts, self.total as f64, t)
    }

    pub(super) fn add_scaled(&self, into: &mut [f64], scale: f64) {
        for (acc, &c) in into.iter_mut().zip(&self.counts) {
            *acc += scale * c as f64;
        }
    }
}

fn exceedance(counts: &[f64], total: f64, t: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    let t = t.max(0.0);
    let bin = (t / BIN_WIDTH) as usize;
    if bin >= counts.len() {
        return 0.0;
    }
    let above: f64 = counts[bin + 1..].iter().sum();
    let within = counts[bin] * (1.0 - (t / BIN_WIDTH - bin as f64));
    (above + within) / total
}

/// Smallest `t` with exceedance of the density `counts` (sums to `total`) at most `rate`.
pub(super) fn threshold_for(counts: &[f64], total: f64, rate: f64) -> f64 {
    let target = rate * total;
    let mut above = 0.0;
    for bin in (0..counts.len()).rev() {
        if above + counts[bin] > target {
            // Solve above + counts[bin]·(1 − frac) = target inside this bin.
            let frac = 1.0 - (target - above) / counts[bin];
            return (bin as f64 + frac.clamp(0.0, 1.0)) * BIN_WIDTH;
        }
        above += counts[bin];
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::tests::normal_sample;
    use crate::stats::tests::Uniform;

    #[test]
    fn exceedance_and_threshold_are_inverse() {
        let mut rng = Uniform(22);
        let h = AbsZHistogram::from_z(&normal_sample(&mut rng, 100_000, 1.0));
        let counts: Vec<f64> = h.counts.iter().map(|&c| c as f64).collect();
        let t = threshold_for(&counts, h.total as f64, 0.05);
        assert!((t - 1.96).abs() < 0.03, "t {t}");
        assert!((h.exceedance(t) - 0.05).abs() < 1e-6);
        assert_eq!(h.exceedance(100.0), 0.0);
        assert!((h.exceedance(0.0) - 1.0).abs() < 1e-12);
    }
}
