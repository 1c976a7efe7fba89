//! Clusters of a z-map: 26-connected supra-threshold voxels of one sign, with their size,
//! peak, centroid and mass.

use ndarray::Array3;
use serde::{Deserialize, Serialize};

/// Calls `visit` with the flat (C-order) index of every voxel of the 3×3×3 block centred on
/// `flat` that lies inside `dims`, the centre included, in a fixed order (deterministic).
pub(super) fn for_each_neighbour_26(flat: usize, dims: [usize; 3], mut visit: impl FnMut(usize)) {
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
