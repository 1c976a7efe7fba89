//! The voxel threshold: the pooled leave-one-out null, the achieved rate by an outer
//! leave-one-out, and the Gaussian threshold it is compared with.

use super::histogram::threshold_for;
use super::{AbsZHistogram, CURVE_POINTS, CURVE_STEP, CalibrationError, check_rate};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// The voxelwise calibration of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoxelCalibration {
    /// Nominal two-sided voxelwise false-positive rate `α`.
    pub nominal_rate: f64,
    /// Calibrated `|z|` threshold.
    pub z_threshold: f64,
    /// Mean false-positive rate of held-out normals at thresholds computed without them.
    pub achieved_rate: f64,
    /// The same rate per held-out normal.
    pub achieved_rate_per_subject: Vec<f64>,
    /// The Gaussian threshold `Φ⁻¹(1 − α/2)`.
    pub gaussian_threshold: f64,
    /// Mean false-positive rate of the null maps at the Gaussian threshold (uncalibrated).
    pub gaussian_achieved_rate: f64,
    /// Number of held-out normals.
    pub subjects: usize,
}

/// Voxel thresholds from leave-one-out null maps (`|z|` histograms, one per held-out normal).
pub fn calibrate_voxels(
    nulls: &[AbsZHistogram],
    nominal_rate: f64,
) -> Result<VoxelCalibration, CalibrationError> {
    check_rate("nominal voxelwise rate", nominal_rate)?;
    if nulls.len() < 3 {
        return Err(CalibrationError::TooFewSubjects { needed: 3, found: nulls.len() });
    }
    // Every null map has equal say, whatever its voxel count.
    let bins = nulls[0].counts.len();
    let mut pooled = vec![0f64; bins];
    for null in nulls {
        if null.total > 0 {
            null.add_scaled(&mut pooled, 1.0 / null.total as f64);
        }
    }
    let present = nulls.iter().filter(|n| n.total > 0).count() as f64;
    let z_threshold = snap_up(threshold_for(&pooled, present, nominal_rate));
    let achieved_rate_per_subject: Vec<f64> = nulls
        .iter()
        .map(|null| {
            if null.total == 0 {
                return 0.0;
            }
            let mut others = pooled.clone();
            null.add_scaled(&mut others, -1.0 / null.total as f64);
            let t = snap_up(threshold_for(&others, present - 1.0, nominal_rate));
            null.exceedance(t)
        })
        .collect();
    let achieved_rate = achieved_rate_per_subject.iter().sum::<f64>() / nulls.len() as f64;
    let gaussian_threshold = gaussian_two_sided(nominal_rate);
    let gaussian_achieved_rate =
        nulls.iter().map(|n| n.exceedance(gaussian_threshold)).sum::<f64>() / nulls.len() as f64;
    Ok(VoxelCalibration {
        nominal_rate,
        z_threshold,
        achieved_rate,
        achieved_rate_per_subject,
        gaussian_threshold,
        gaussian_achieved_rate,
        subjects: nulls.len(),
    })
}

/// `t` rounded up to the threshold grid ([`CURVE_STEP`]), so null summaries are exact at it.
fn snap_up(t: f64) -> f64 {
    let steps = (t / CURVE_STEP - 1e-9).ceil().max(0.0);
    steps * CURVE_STEP
}

/// Index of the recorded threshold at or below `t` (clamped to the grid).
pub(super) fn curve_index(t: f64) -> usize {
    ((t / CURVE_STEP + 1e-6).floor().max(0.0) as usize).min(CURVE_POINTS - 1)
}

/// `Φ⁻¹(1 − α/2)`.
pub fn gaussian_two_sided(rate: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - rate / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::tests::normal_sample;
    use crate::stats::tests::Uniform;

    #[test]
    fn calibrated_threshold_corrects_inflated_null() {
        // Null maps with σ = 1.6 instead of 1: the Gaussian threshold gives far too many false
        // positives; the calibrated one matches the nominal rate on held-out maps.
        let mut rng = Uniform(21);
        let nulls: Vec<AbsZHistogram> =
            (0..30).map(|_| AbsZHistogram::from_z(&normal_sample(&mut rng, 50_000, 1.6))).collect();
        let c = calibrate_voxels(&nulls, 0.01).unwrap();
        assert!((c.gaussian_threshold - 2.5758).abs() < 1e-3);
        assert!(c.gaussian_achieved_rate > 0.08, "inflated {}", c.gaussian_achieved_rate);
        assert!((c.z_threshold - 1.6 * 2.5758).abs() < 0.1, "threshold {}", c.z_threshold);
        assert!((c.achieved_rate - 0.01).abs() < 0.002, "achieved {}", c.achieved_rate);
        assert_eq!(c.achieved_rate_per_subject.len(), 30);
    }
}
