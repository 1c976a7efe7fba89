//! Calibration of deviation thresholds on held-out normals, and clusters.
//!
//! Single-subject comparisons against a control group give far more false positives than the
//! nominal rate (Scarpazza et al. 2013): the z-maps of normals are neither Gaussian nor
//! independent across voxels. So thresholds are set empirically. Each normal is scored
//! against the statistics of the *other* normals (leave-one-out), giving an empirical null of
//! `|z|`:
//!
//! - **Voxel threshold**: the `|z|` exceeded by a fraction `α` (the nominal voxelwise
//!   false-positive rate) of the pooled null voxels.
//! - **Cluster-size threshold**: at that voxel threshold, the largest cluster (26-connected,
//!   one sign) in each null map; the threshold is the order statistic that a new normal's largest
//!   cluster exceeds with probability at most `α_cluster` (the conformal rank `⌊α (n + 1)⌋`).
//! - **Achieved rates** are measured honestly by a second, outer leave-one-out: the thresholds
//!   are recomputed without normal `i`, applied to normal `i`, and the rates averaged. The rate
//!   the Gaussian threshold `Φ⁻¹(1 − α/2)` would have given is reported next to it.

use ndarray::Array3;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Width of the `|z|` histogram bins.
const BIN_WIDTH: f64 = 0.005;
/// Largest `|z|` resolved by the histogram; beyond it values share the last bin.
const MAX_ABS_Z: f64 = 40.0;

/// Why a calibration cannot be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrationError {
    /// Fewer held-out normals than needed.
    #[error("calibration needs at least {needed} normals, got {found}")]
    TooFewSubjects {
        /// Minimum.
        needed: usize,
        /// Given.
        found: usize,
    },
    /// A nominal rate outside (0, 1).
    #[error("{field} must be in (0, 1), got {value}")]
    InvalidRate {
        /// Which rate.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// Null maps of different sizes.
    #[error("null map {subject} has {found} voxels, expected {expected}")]
    VoxelCount {
        /// Index of the offending null map.
        subject: usize,
        /// Expected count.
        expected: usize,
        /// Found count.
        found: usize,
    },
}

/// Histogram of `|z|` of one null map.
#[derive(Debug, Clone, PartialEq)]
pub struct AbsZHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for AbsZHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl AbsZHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self { counts: vec![0; (MAX_ABS_Z / BIN_WIDTH) as usize + 1], total: 0 }
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

    fn add_scaled(&self, into: &mut [f64], scale: f64) {
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
fn threshold_for(counts: &[f64], total: f64, rate: f64) -> f64 {
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
    let z_threshold = threshold_for(&pooled, present, nominal_rate);
    let achieved_rate_per_subject: Vec<f64> = nulls
        .iter()
        .map(|null| {
            if null.total == 0 {
                return 0.0;
            }
            let mut others = pooled.clone();
            null.add_scaled(&mut others, -1.0 / null.total as f64);
            let t = threshold_for(&others, present - 1.0, nominal_rate);
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

/// `Φ⁻¹(1 − α/2)`.
pub fn gaussian_two_sided(rate: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - rate / 2.0)
}

/// The cluster-level calibration of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterCalibration {
    /// Nominal per-image rate of a false cluster at least this large (family-wise).
    pub nominal_rate: f64,
    /// A cluster is significant when it has *more* voxels than this.
    pub size_threshold_voxels: usize,
    /// Whether the number of normals allows the nominal rate (else the threshold is the largest
    /// null cluster and the achieved rate is what it is).
    pub nominal_reachable: bool,
    /// Fraction of held-out normals with a cluster above the threshold computed without them.
    pub achieved_rate: f64,
    /// Largest null cluster per held-out normal, in voxels.
    pub max_cluster_per_subject: Vec<usize>,
}

/// Cluster-size threshold from the largest cluster of each leave-one-out null map.
pub fn calibrate_clusters(
    max_cluster_sizes: &[usize],
    nominal_rate: f64,
) -> Result<ClusterCalibration, CalibrationError> {
    check_rate("nominal cluster rate", nominal_rate)?;
    if max_cluster_sizes.len() < 3 {
        return Err(CalibrationError::TooFewSubjects { needed: 3, found: max_cluster_sizes.len() });
    }
    let (size_threshold_voxels, nominal_reachable) =
        order_statistic_threshold(max_cluster_sizes, nominal_rate);
    let exceed = (0..max_cluster_sizes.len())
        .filter(|&i| {
            let others: Vec<usize> =
                max_cluster_sizes.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &s)| s).collect();
            max_cluster_sizes[i] > order_statistic_threshold(&others, nominal_rate).0
        })
        .count();
    Ok(ClusterCalibration {
        nominal_rate,
        size_threshold_voxels,
        nominal_reachable,
        achieved_rate: exceed as f64 / max_cluster_sizes.len() as f64,
        max_cluster_per_subject: max_cluster_sizes.to_vec(),
    })
}

/// The `k`-th largest value with `k = ⌊α (n + 1)⌋`: a new exchangeable value exceeds it with
/// probability at most `α`. With `k = 0` the largest value is used (`false`: not reachable).
fn order_statistic_threshold(values: &[usize], rate: f64) -> (usize, bool) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let k = (rate * (sorted.len() as f64 + 1.0)).floor() as usize;
    if k == 0 { (sorted[0], false) } else { (sorted[(k - 1).min(sorted.len() - 1)], true) }
}

fn check_rate(field: &'static str, value: f64) -> Result<(), CalibrationError> {
    if !(value > 0.0 && value < 1.0) {
        return Err(CalibrationError::InvalidRate { field, value });
    }
    Ok(())
}

/// One connected cluster of supra-threshold voxels of one sign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Label in the cluster map (1-based, in order of decreasing size).
    pub label: u32,
    /// +1 above the norm (hyper-intense, expanded), −1 below.
    pub sign: i8,
    /// Number of voxels.
    pub size_voxels: usize,
    /// Largest `|z|` in the cluster, with its sign.
    pub peak_z: f32,
    /// Voxel index of the peak.
    pub peak_voxel: [usize; 3],
    /// Mean voxel index (centre of mass of the cluster).
    pub centroid_voxel: [f64; 3],
    /// Mean z over the cluster.
    pub mean_z: f32,
}

/// Supra-threshold clusters of a z-map: `z > threshold` and `z < −threshold` separately, each
/// 26-connected, restricted to `mask` when given. Returns clusters sorted by decreasing size
/// (ties by scan order) and the label map (0 = none).
pub fn find_clusters(
    z: &Array3<f32>,
    mask: Option<&Array3<bool>>,
    threshold: f32,
) -> (Vec<Cluster>, Array3<u32>) {
    let dims = z.dim();
    let dims = [dims.0, dims.1, dims.2];
    let zs = z.as_standard_layout();
    let zs = zs.as_slice().expect("standard layout");
    let mask_std = mask.map(|m| m.as_standard_layout().into_owned());
    let mask_slice = mask_std.as_ref().map(|m| m.as_slice().expect("standard layout"));
    let len = zs.len();
    let sign_of = |i: usize| -> i8 {
        if mask_slice.is_some_and(|m| !m[i]) {
            return 0;
        }
        let v = zs[i];
        if v > threshold {
            1
        } else if v < -threshold {
            -1
        } else {
            0
        }
    };
    let mut provisional = vec![0u32; len];
    let mut found: Vec<Cluster> = Vec::new();
    let mut stack = Vec::new();
    let stride = [dims[1] * dims[2], dims[2], 1];
    for start in 0..len {
        let sign = sign_of(start);
        if sign == 0 || provisional[start] != 0 {
            continue;
        }
        let id = found.len() as u32 + 1;
        provisional[start] = id;
        stack.push(start);
        let mut size = 0usize;
        let mut sum_z = 0f64;
        let mut centroid = [0f64; 3];
        let mut peak = (0f32, start);
        while let Some(flat) = stack.pop() {
            let idx = [flat / stride[0], (flat / stride[1]) % dims[1], flat % dims[2]];
            size += 1;
            sum_z += zs[flat] as f64;
            for a in 0..3 {
                centroid[a] += idx[a] as f64;
            }
            if zs[flat].abs() > peak.0.abs() || (zs[flat].abs() == peak.0.abs() && flat < peak.1) {
                peak = (zs[flat], flat);
            }
            for di in -1i64..=1 {
                for dj in -1i64..=1 {
                    for dk in -1i64..=1 {
                        let n = [idx[0] as i64 + di, idx[1] as i64 + dj, idx[2] as i64 + dk];
                        if (0..3).any(|a| n[a] < 0 || n[a] >= dims[a] as i64) {
                            continue;
                        }
                        let nf = n[0] as usize * stride[0] + n[1] as usize * stride[1] + n[2] as usize;
                        if provisional[nf] == 0 && sign_of(nf) == sign {
                            provisional[nf] = id;
                            stack.push(nf);
                        }
                    }
                }
            }
        }
        let p = peak.1;
        found.push(Cluster {
            label: id,
            sign,
            size_voxels: size,
            peak_z: peak.0,
            peak_voxel: [p / stride[0], (p / stride[1]) % dims[1], p % dims[2]],
            centroid_voxel: centroid.map(|c| c / size as f64),
            mean_z: (sum_z / size as f64) as f32,
        });
    }
    // Relabel by decreasing size; stable sort keeps scan order among ties (deterministic).
    let mut order: Vec<usize> = (0..found.len()).collect();
    order.sort_by(|&a, &b| found[b].size_voxels.cmp(&found[a].size_voxels));
    let mut new_label = vec![0u32; found.len() + 1];
    for (rank, &old) in order.iter().enumerate() {
        new_label[old + 1] = rank as u32 + 1;
    }
    let labels: Vec<u32> = provisional.iter().map(|&l| new_label[l as usize]).collect();
    let clusters = order
        .iter()
        .map(|&old| {
            let mut c = found[old].clone();
            c.label = new_label[old + 1];
            c
        })
        .collect();
    let labels = Array3::from_shape_vec((dims[0], dims[1], dims[2]), labels).expect("shape preserved");
    (clusters, labels)
}

/// Size of the largest cluster of a null map (0 when none), for [`calibrate_clusters`].
pub fn largest_cluster(z: &Array3<f32>, mask: Option<&Array3<bool>>, threshold: f32) -> usize {
    find_clusters(z, mask, threshold).0.first().map(|c| c.size_voxels).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::Uniform;

    fn normal_sample(rng: &mut Uniform, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1 = rng.next().max(1e-300);
                let u2 = rng.next();
                (scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect()
    }

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

    #[test]
    fn cluster_threshold_is_conformal() {
        let sizes: Vec<usize> = (1..=39).collect();
        let c = calibrate_clusters(&sizes, 0.05).unwrap();
        // k = ⌊0.05 · 40⌋ = 2: second largest.
        assert_eq!(c.size_threshold_voxels, 38);
        assert!(c.nominal_reachable);
        assert!(c.achieved_rate <= 0.08, "achieved {}", c.achieved_rate);
        let few = calibrate_clusters(&[3, 5, 4], 0.05).unwrap();
        assert!(!few.nominal_reachable);
        assert_eq!(few.size_threshold_voxels, 5);
        assert!(matches!(calibrate_clusters(&[1, 2], 0.05), Err(CalibrationError::TooFewSubjects { .. })));
        assert!(matches!(calibrate_clusters(&[1, 2, 3], 1.5), Err(CalibrationError::InvalidRate { .. })));
    }

    #[test]
    fn clusters_use_26_connectivity_and_separate_signs() {
        let mut z = Array3::<f32>::zeros((6, 6, 6));
        // Diagonal chain of 3 positive voxels: one cluster under 26-connectivity.
        z[[0, 0, 0]] = 5.0;
        z[[1, 1, 1]] = 6.0;
        z[[2, 2, 2]] = 5.0;
        // A negative voxel touching the chain forms its own cluster.
        z[[2, 2, 3]] = -7.0;
        // An isolated positive voxel.
        z[[5, 5, 0]] = 4.0;
        let (clusters, labels) = find_clusters(&z, None, 3.0);
        assert_eq!(clusters.len(), 3);
        assert_eq!(clusters[0].size_voxels, 3);
        assert_eq!(clusters[0].label, 1);
        assert_eq!(clusters[0].peak_z, 6.0);
        assert_eq!(clusters[0].peak_voxel, [1, 1, 1]);
        assert_eq!(clusters[0].centroid_voxel, [1.0, 1.0, 1.0]);
        assert_eq!(labels[[2, 2, 2]], 1);
        let negative = clusters.iter().find(|c| c.sign < 0).unwrap();
        assert_eq!(negative.size_voxels, 1);
        assert_eq!(labels[[2, 2, 3]], negative.label);
        // The mask removes voxels.
        let mut mask = Array3::from_elem((6, 6, 6), true);
        mask[[1, 1, 1]] = false;
        let (masked, _) = find_clusters(&z, Some(&mask), 3.0);
        assert_eq!(masked.len(), 4, "the chain splits without its middle voxel");
        assert_eq!(largest_cluster(&z, None, 3.0), 3);
        assert_eq!(largest_cluster(&z, None, 10.0), 0);
    }
}
