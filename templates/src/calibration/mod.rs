//! Calibration of deviation thresholds on held-out normals, and clusters.
//!
//! Single-subject comparisons against a control group give far more false positives than the
//! nominal rate (Scarpazza et al. 2013): the z-maps of normals are neither Gaussian nor
//! independent across voxels. So thresholds are set empirically. Each normal is scored
//! against the statistics of the *other* normals (leave-one-out), giving an empirical null of
//! `|z|`:
//!
//! - **Voxel threshold** (the cluster-forming threshold): the `|z|` exceeded by a fraction `α`
//!   (the nominal voxelwise false-positive rate) of the pooled null voxels, rounded up to the
//!   grid of [`CURVE_STEP`].
//! - **Cluster-mass threshold**: clusters are 26-connected supra-threshold voxels of one sign;
//!   a cluster's *mass* is `Σ (|z| − t)` over its voxels (Bullmore et al. 1999), which grows
//!   with both extent and height, so a small lesion with a very high z and a wide region of
//!   moderate z (focal atrophy) are judged by one statistic. At the voxel threshold, the
//!   largest cluster mass of each null map is taken; the threshold is the order statistic that
//!   a new normal's largest mass exceeds with probability at most `α_cluster` (the conformal
//!   rank `⌊α (n + 1)⌋`). The largest cluster *size* is calibrated the same way and reported.
//! - **Achieved rates** are measured honestly by a second, outer leave-one-out: the thresholds
//!   are recomputed without normal `i`, applied to normal `i`, and the rates averaged. The rate
//!   the Gaussian threshold `Φ⁻¹(1 − α/2)` would have given is reported next to it.
//!
//! What a null map contributes is kept in a mergeable form, a [`NullSummary`]: its `|z|`
//! histogram and its largest cluster size and mass at every threshold of a fixed grid. Pooling
//! summaries needs no image, so a database that grows or is merged recalibrates from the union
//!
//! One job per module: [`histogram`] (`|z|` histograms of null maps), [`voxel`] (the voxel
//! threshold), [`null_summary`] (a null map's largest-cluster curves and the cluster
//! thresholds), [`clusters`] (the 26-connected clusters of a z-map), [`local_volume`] (the
//! log-Jacobian z averaged over neighbourhoods of focal atrophy's size); this module combines
//! them into the calibration of a channel.

mod clusters;
mod histogram;
mod local_volume;
mod null_summary;
mod voxel;

pub use clusters::{Cluster, find_clusters, largest_cluster};
pub use histogram::AbsZHistogram;
pub use local_volume::{
    LOCAL_VOLUME_RATE, LocalVolumeCalibration, LocalVolumeNull, SCALES_MM, neighbourhood_means,
};
pub use null_summary::{ClusterCalibration, NullSummary, calibrate_clusters};
pub use voxel::{VoxelCalibration, calibrate_voxels, gaussian_two_sided};

/// Width of the `|z|` histogram bins.
pub const BIN_WIDTH: f64 = 0.005;
/// Largest `|z|` resolved by the histogram; beyond it values share the last bin.
const MAX_ABS_Z: f64 = 40.0;
/// Number of bins of an [`AbsZHistogram`].
pub const HISTOGRAM_BINS: usize = (MAX_ABS_Z / BIN_WIDTH) as usize + 1;
/// Step of the cluster-forming thresholds at which a [`NullSummary`] records its largest
/// cluster (`|z|` thresholds `0, 0.01, …`); calibrated thresholds are rounded up to it.
pub const CURVE_STEP: f64 = 0.01;
/// Number of recorded thresholds (`0` to `20` in steps of [`CURVE_STEP`]); above the last one
/// the last value is used (conservative: the largest cluster never grows with the threshold).
pub const CURVE_POINTS: usize = 2001;

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
    /// A stored summary does not have the expected layout.
    #[error("{what}: expected {expected} values, found {found}")]
    Layout {
        /// Which array.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
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

/// Voxel and cluster calibration of one channel from the leave-one-out null summaries, with
/// the achieved cluster rate measured by an outer leave-one-out over both thresholds.
pub fn calibrate_channel(
    nulls: &[NullSummary],
    voxel_rate: f64,
    cluster_rate: f64,
) -> Result<(VoxelCalibration, ClusterCalibration), CalibrationError> {
    let histograms: Vec<AbsZHistogram> = nulls.iter().map(|n| n.histogram.clone()).collect();
    let voxel = calibrate_voxels(&histograms, voxel_rate)?;
    let mut cluster = calibrate_clusters(nulls, voxel.z_threshold, cluster_rate)?;
    if nulls.len() >= 4 {
        let exceed = (0..nulls.len())
            .filter(|&i| {
                let others: Vec<NullSummary> =
                    nulls.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, n)| n.clone()).collect();
                let others_histograms: Vec<AbsZHistogram> =
                    others.iter().map(|n| n.histogram.clone()).collect();
                let Ok(v) = calibrate_voxels(&others_histograms, voxel_rate) else { return false };
                let masses: Vec<f64> = others.iter().map(|n| n.max_mass_at(v.z_threshold)).collect();
                let (threshold, _) = order_statistic_threshold(&masses, cluster_rate);
                nulls[i].max_mass_at(v.z_threshold) > threshold
            })
            .count();
        cluster.achieved_rate = exceed as f64 / nulls.len() as f64;
    } else {
        // Too few normals to leave one out and still calibrate: the in-sample rate.
        cluster.achieved_rate =
            cluster.max_mass_per_subject.iter().filter(|&&m| m > cluster.mass_threshold).count() as f64
                / nulls.len() as f64;
    }
    Ok((voxel, cluster))
}

/// Why a family-wise limit read from `normals` order statistics cannot promise `rate`: `None`
/// when the rank `⌊rate (n + 1)⌋` is at least 1, else a sentence for reports naming `what` the
/// limit is for. With too few normals the limit is the largest normal's, which a new normal
/// exceeds with probability up to `1 / (n + 1)`, above `rate`.
pub fn shortfall(what: &str, normals: usize, rate: f64) -> Option<String> {
    if (rate * (normals as f64 + 1.0)).floor() >= 1.0 {
        return None;
    }
    let needed = (1.0 / rate).ceil() as usize - 1;
    Some(format!(
        "{what}: {normals} calibration normals are too few for a family-wise rate of {} % (at least {needed} are \
         needed); the limit is the largest normal's, which a new normal exceeds with probability up to {:.1} %",
        rate * 100.0,
        100.0 / (normals as f64 + 1.0)
    ))
}

/// The `k`-th largest value with `k = ⌊α (n + 1)⌋`: a new exchangeable value exceeds it with
/// probability at most `α`. With `k = 0` the largest value is used (`false`: not reachable).
pub(crate) fn order_statistic_threshold<T: Copy + PartialOrd>(values: &[T], rate: f64) -> (T, bool) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let k = (rate * (sorted.len() as f64 + 1.0)).floor() as usize;
    if k == 0 { (sorted[0], false) } else { (sorted[(k - 1).min(sorted.len() - 1)], true) }
}

fn check_rate(field: &'static str, value: f64) -> Result<(), CalibrationError> {
    if !(value > 0.0 && value < 1.0) {
        return Err(CalibrationError::InvalidRate { field, value });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::tests::Uniform;
    use ndarray::Array3;

    pub(crate) fn normal_sample(rng: &mut Uniform, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u1 = rng.next().max(1e-300);
                let u2 = rng.next();
                (scale * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn cluster_threshold_is_conformal() {
        let sizes: Vec<usize> = (1..=39).collect();
        // k = ⌊0.05 · 40⌋ = 2: second largest.
        assert_eq!(order_statistic_threshold(&sizes, 0.05), (38, true));
        assert_eq!(order_statistic_threshold(&[3.0, 5.0, 4.0], 0.05), (5.0, false));
        let nulls: Vec<NullSummary> =
            (0..3).map(|_| NullSummary::from_map(&Array3::zeros((3, 3, 3)), None)).collect();
        assert!(matches!(
            calibrate_clusters(&nulls[..2], 3.0, 0.05),
            Err(CalibrationError::TooFewSubjects { .. })
        ));
        assert!(matches!(calibrate_clusters(&nulls, 3.0, 1.5), Err(CalibrationError::InvalidRate { .. })));
    }

    /// Smooth random null maps: the summaries' curves equal a direct cluster search at every
    /// threshold, and the calibrated rates match the nominal ones on held-out maps.
    #[test]
    fn null_summaries_match_direct_clusters_and_calibrate() {
        let mut rng = Uniform(23);
        let dims = (14, 12, 10);
        let maps: Vec<Array3<f32>> = (0..24)
            .map(|_| {
                let noise = normal_sample(&mut rng, dims.0 * dims.1 * dims.2, 1.0);
                let raw = Array3::from_shape_vec(dims, noise).unwrap();
                // Neighbour averaging makes clusters of several voxels, then rescale to unit SD.
                Array3::from_shape_fn(dims, |(i, j, k)| {
                    let mut acc = 0.0;
                    let mut n = 0.0;
                    for (a, b, c) in [
                        (0i64, 0i64, 0i64),
                        (1, 0, 0),
                        (-1, 0, 0),
                        (0, 1, 0),
                        (0, -1, 0),
                        (0, 0, 1),
                        (0, 0, -1),
                    ] {
                        let (x, y, z) = (i as i64 + a, j as i64 + b, k as i64 + c);
                        if x >= 0
                            && y >= 0
                            && z >= 0
                            && (x as usize) < dims.0
                            && (y as usize) < dims.1
                            && (z as usize) < dims.2
                        {
                            acc += raw[[x as usize, y as usize, z as usize]];
                            n += 1.0;
                        }
                    }
                    acc / n * 2.2
                })
            })
            .collect();
        let mut mask = Array3::from_elem(dims, true);
        mask[[0, 0, 0]] = false;
        let nulls: Vec<NullSummary> = maps.iter().map(|z| NullSummary::from_map(z, Some(&mask))).collect();
        for (z, null) in maps.iter().zip(&nulls) {
            for t in [0.5, 1.0, 1.73, 2.5, 3.0] {
                let (clusters, _) = find_clusters(z, Some(&mask), t as f32);
                let size = clusters.first().map(|c| c.size_voxels).unwrap_or(0);
                let mass = clusters.iter().map(|c| c.mass).fold(0.0, f64::max);
                assert_eq!(null.max_size_at(t), size, "size at {t}");
                assert!(
                    (null.max_mass_at(t) - mass).abs() < 1e-3 * mass.max(1.0),
                    "mass at {t}: {} vs {mass}",
                    null.max_mass_at(t)
                );
            }
        }
        let (voxel, cluster) = calibrate_channel(&nulls, 0.01, 0.1).unwrap();
        assert!((voxel.z_threshold / CURVE_STEP - (voxel.z_threshold / CURVE_STEP).round()).abs() < 1e-9);
        assert!(
            voxel.achieved_rate > 0.005 && voxel.achieved_rate < 0.02,
            "voxel rate {}",
            voxel.achieved_rate
        );
        assert!(cluster.nominal_reachable && cluster.mass_threshold > 0.0);
        assert!(cluster.achieved_rate <= 0.2, "cluster rate {}", cluster.achieved_rate);
        assert_eq!(cluster.max_mass_per_subject.len(), 24);
        // Stored parts round trip; wrong lengths are refused.
        let back = NullSummary::from_parts(
            AbsZHistogram::from_counts(nulls[0].histogram.counts().to_vec()).unwrap(),
            nulls[0].max_cluster_size.clone(),
            nulls[0].max_cluster_mass.clone(),
        )
        .unwrap();
        assert_eq!(back, nulls[0]);
        assert!(AbsZHistogram::from_counts(vec![0; 3]).is_err());
        assert!(NullSummary::from_parts(AbsZHistogram::new(), vec![0; 5], vec![0.0; CURVE_POINTS]).is_err());
    }

    #[test]
    fn too_few_normals_for_the_family_rate_are_named() {
        let said = shortfall("cluster mass (intensity)", 13, 0.05).expect("13 < 19");
        assert!(said.contains("13 calibration normals") && said.contains("at least 19"), "{said}");
        assert!(said.contains("7.1 %"), "{said}");
        assert_eq!(shortfall("x", 19, 0.05), None);
        assert_eq!(shortfall("x", 9, 0.1), None);
        assert!(shortfall("x", 8, 0.1).is_some());
    }
}
