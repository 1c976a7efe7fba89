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
//! of its normals' summaries.

use ndarray::Array3;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

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
fn curve_index(t: f64) -> usize {
    ((t / CURVE_STEP + 1e-6).floor().max(0.0) as usize).min(CURVE_POINTS - 1)
}

/// `Φ⁻¹(1 − α/2)`.
pub fn gaussian_two_sided(rate: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - rate / 2.0)
}

/// The cluster-level calibration of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterCalibration {
    /// Nominal per-image rate of a false significant cluster (family-wise).
    pub nominal_rate: f64,
    /// A cluster is significant when its mass `Σ (|z| − t)` is *larger* than this.
    pub mass_threshold: f64,
    /// The largest null cluster size at the same conformal rank (voxels; reported, not used
    /// for significance).
    pub size_threshold_voxels: usize,
    /// Whether the number of normals allows the nominal rate (else the threshold is the largest
    /// null cluster and the achieved rate is what it is).
    pub nominal_reachable: bool,
    /// Fraction of held-out normals with a significant cluster at thresholds computed without them.
    pub achieved_rate: f64,
    /// Largest null cluster per held-out normal at the voxel threshold, in voxels.
    pub max_cluster_per_subject: Vec<usize>,
    /// Largest null cluster mass per held-out normal at the voxel threshold.
    pub max_mass_per_subject: Vec<f64>,
}

/// What one held-out normal's null z-map contributes to the calibration, in a form that can be
/// pooled with other normals' without any image: the `|z|` histogram, and at every threshold
/// `t = k · CURVE_STEP` (`k < CURVE_POINTS`) the size and mass `Σ (|z| − t)` of its largest
/// cluster (26-connected voxels with `|z| > t`, one sign).
#[derive(Debug, Clone, PartialEq)]
pub struct NullSummary {
    /// The `|z|` histogram.
    pub histogram: AbsZHistogram,
    /// Largest cluster size (voxels) per threshold of the grid.
    pub max_cluster_size: Vec<u32>,
    /// Largest cluster mass per threshold of the grid.
    pub max_cluster_mass: Vec<f32>,
}

impl NullSummary {
    /// The summary of a null z-map (voxels outside `mask`, when given, are ignored).
    pub fn from_map(z: &Array3<f32>, mask: Option<&Array3<bool>>) -> Self {
        let zs = z.as_standard_layout();
        let zs = zs.as_slice().expect("standard layout");
        let mask_std = mask.map(|m| m.as_standard_layout().into_owned());
        let inside = |i: usize| mask_std.as_ref().is_none_or(|m| m.as_slice().expect("standard layout")[i]);
        let values: Vec<f32> = zs.iter().enumerate().filter(|&(i, _)| inside(i)).map(|(_, &v)| v).collect();
        let histogram = AbsZHistogram::from_z(&values);
        let dims = z.dim();
        let dims = [dims.0, dims.1, dims.2];
        let signed = |sign: f32| -> Vec<f32> {
            zs.iter()
                .enumerate()
                .map(|(i, &v)| if inside(i) && v.is_finite() { sign * v } else { 0.0 })
                .collect()
        };
        let (size_above, mass_above) = largest_cluster_curves(&signed(1.0), dims);
        let (size_below, mass_below) = largest_cluster_curves(&signed(-1.0), dims);
        Self {
            histogram,
            max_cluster_size: size_above.iter().zip(&size_below).map(|(a, b)| *a.max(b)).collect(),
            max_cluster_mass: mass_above.iter().zip(&mass_below).map(|(a, b)| a.max(*b)).collect(),
        }
    }

    /// A summary from stored parts, checking their lengths.
    pub fn from_parts(
        histogram: AbsZHistogram,
        max_cluster_size: Vec<u32>,
        max_cluster_mass: Vec<f32>,
    ) -> Result<Self, CalibrationError> {
        for (what, found) in [
            ("largest cluster sizes", max_cluster_size.len()),
            ("largest cluster masses", max_cluster_mass.len()),
        ] {
            if found != CURVE_POINTS {
                return Err(CalibrationError::Layout { what, expected: CURVE_POINTS, found });
            }
        }
        Ok(Self { histogram, max_cluster_size, max_cluster_mass })
    }

    /// Largest cluster size at threshold `t` (the recorded threshold at or below `t`).
    pub fn max_size_at(&self, t: f64) -> usize {
        self.max_cluster_size[curve_index(t)] as usize
    }

    /// Largest cluster mass at threshold `t` (the recorded threshold at or below `t`).
    pub fn max_mass_at(&self, t: f64) -> f64 {
        self.max_cluster_mass[curve_index(t)] as f64
    }
}

/// Calls `visit` with the flat (C-order) index of every voxel of the 3×3×3 block centred on
/// `flat` that lies inside `dims`, the centre included, in a fixed order (deterministic).
fn for_each_neighbour_26(flat: usize, dims: [usize; 3], mut visit: impl FnMut(usize)) {
    let stride = [dims[1] * dims[2], dims[2]];
    let idx = [flat / stride[0], (flat / stride[1]) % dims[1], flat % dims[2]];
    for di in -1i64..=1 {
        for dj in -1i64..=1 {
            for dk in -1i64..=1 {
                let n = [idx[0] as i64 + di, idx[1] as i64 + dj, idx[2] as i64 + dk];
                if (0..3).any(|a| n[a] < 0 || n[a] >= dims[a] as i64) {
                    continue;
                }
                visit(n[0] as usize * stride[0] + n[1] as usize * stride[1] + n[2] as usize);
            }
        }
    }
}

/// For values `v` (voxels with `v ≤ 0` never belong to a cluster), the size and mass of the
/// largest 26-connected cluster of `v > t` at every grid threshold, by one sweep over the
/// voxels in decreasing order with a union–find (clusters only grow and merge as `t` falls).
fn largest_cluster_curves(values: &[f32], dims: [usize; 3]) -> (Vec<u32>, Vec<f32>) {
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| values[i] > 0.0).collect();
    // Decreasing value, ties by index: deterministic.
    order.sort_unstable_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let mut parent: Vec<u32> = vec![u32::MAX; values.len()];
    let mut size: Vec<u32> = vec![0; values.len()];
    let mut sum: Vec<f64> = vec![0.0; values.len()];
    let mut roots: Vec<usize> = Vec::new();
    let mut sizes = vec![0u32; CURVE_POINTS];
    let mut masses = vec![0f32; CURVE_POINTS];
    fn find(parent: &mut [u32], mut i: usize) -> usize {
        while parent[i] as usize != i {
            let grand = parent[parent[i] as usize];
            parent[i] = grand;
            i = grand as usize;
        }
        i
    }
    let mut largest = 0u32;
    let mut next = 0usize;
    for k in (0..CURVE_POINTS).rev() {
        let t = k as f64 * CURVE_STEP;
        while next < order.len() && values[order[next]] as f64 > t {
            let v = order[next];
            next += 1;
            parent[v] = v as u32;
            size[v] = 1;
            sum[v] = values[v] as f64;
            roots.push(v);
            for_each_neighbour_26(v, dims, |nf| {
                if parent[nf] == u32::MAX {
                    return;
                }
                let (a, b) = (find(&mut parent, v), find(&mut parent, nf));
                if a != b {
                    // The larger cluster absorbs the smaller (ties: lower index).
                    let (big, small) = if (size[a], b) > (size[b], a) { (a, b) } else { (b, a) };
                    parent[small] = big as u32;
                    size[big] += size[small];
                    sum[big] += sum[small];
                }
            });
            largest = largest.max(size[find(&mut parent, v)]);
        }
        roots.retain(|&r| parent[r] as usize == r);
        sizes[k] = largest;
        masses[k] = roots.iter().map(|&r| sum[r] - t * size[r] as f64).fold(0.0, f64::max) as f32;
    }
    (sizes, masses)
}

/// Mass and size thresholds of clusters at the voxel threshold `z_threshold`, from the
/// leave-one-out null summaries.
pub fn calibrate_clusters(
    nulls: &[NullSummary],
    z_threshold: f64,
    nominal_rate: f64,
) -> Result<ClusterCalibration, CalibrationError> {
    check_rate("nominal cluster rate", nominal_rate)?;
    if nulls.len() < 3 {
        return Err(CalibrationError::TooFewSubjects { needed: 3, found: nulls.len() });
    }
    let masses: Vec<f64> = nulls.iter().map(|n| n.max_mass_at(z_threshold)).collect();
    let sizes: Vec<usize> = nulls.iter().map(|n| n.max_size_at(z_threshold)).collect();
    let (mass_threshold, nominal_reachable) = order_statistic_threshold(&masses, nominal_rate);
    let (size_threshold_voxels, _) = order_statistic_threshold(&sizes, nominal_rate);
    Ok(ClusterCalibration {
        nominal_rate,
        mass_threshold,
        size_threshold_voxels,
        nominal_reachable,
        achieved_rate: 0.0,
        max_cluster_per_subject: sizes,
        max_mass_per_subject: masses,
    })
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

/// The `k`-th largest value with `k = ⌊α (n + 1)⌋`: a new exchangeable value exceeds it with
/// probability at most `α`. With `k = 0` the largest value is used (`false`: not reachable).
fn order_statistic_threshold<T: Copy + PartialOrd>(values: &[T], rate: f64) -> (T, bool) {
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
    /// Cluster mass `Σ (|z| − threshold)` over its voxels.
    pub mass: f64,
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
        let mut mass = 0f64;
        let mut centroid = [0f64; 3];
        let mut peak = (0f32, start);
        while let Some(flat) = stack.pop() {
            let idx = [flat / stride[0], (flat / stride[1]) % dims[1], flat % dims[2]];
            size += 1;
            sum_z += zs[flat] as f64;
            mass += zs[flat].abs() as f64 - threshold as f64;
            for a in 0..3 {
                centroid[a] += idx[a] as f64;
            }
            if zs[flat].abs() > peak.0.abs() || (zs[flat].abs() == peak.0.abs() && flat < peak.1) {
                peak = (zs[flat], flat);
            }
            for_each_neighbour_26(flat, dims, |nf| {
                if provisional[nf] == 0 && sign_of(nf) == sign {
                    provisional[nf] = id;
                    stack.push(nf);
                }
            });
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
            mass,
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
