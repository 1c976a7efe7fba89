//! What a null map contributes to the cluster calibration (its largest cluster's size and mass
//! at every threshold of the grid) and the cluster thresholds read from those summaries.

use super::clusters::for_each_neighbour_26;
use super::voxel::curve_index;
use super::{
    AbsZHistogram, CURVE_POINTS, CURVE_STEP, CalibrationError, check_rate, order_statistic_threshold,
};
use ndarray::Array3;
use serde::{Deserialize, Serialize};

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

impl ClusterCalibration {
    /// Why the cluster threshold cannot promise the nominal rate (too few normals), for
    /// reports; `None` when it can. `channel` names the channel.
    pub fn shortfall(&self, channel: &str) -> Option<String> {
        super::shortfall(
            &format!("cluster threshold of {channel}"),
            self.max_mass_per_subject.len(),
            self.nominal_rate,
        )
    }
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
