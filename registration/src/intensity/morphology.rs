//! Binary morphology on voxel grids: exact Euclidean distance transforms (in millimetres),
//! erosion and dilation by a radius, connected components and hole filling.
//!
//! Masks are `Vec<bool>` in the C order of a grid with `dims`. Distances use the voxel spacing,
//! so radii mean the same on anisotropic grids.

use ndarray::{Array3, Axis, Zip};
use std::collections::VecDeque;

/// Squared Euclidean distance (mm²) from every voxel to the nearest voxel where `feature` is
/// true (Felzenszwalb & Huttenlocher's separable lower-envelope algorithm; exact). Voxels have
/// infinite distance when there is no feature voxel.
pub fn squared_distance(feature: &[bool], dims: [usize; 3], spacing: [f64; 3]) -> Vec<f64> {
    let mut d = Array3::from_shape_vec(
        (dims[0], dims[1], dims[2]),
        feature.iter().map(|&f| if f { 0.0 } else { f64::INFINITY }).collect(),
    )
    .expect("mask matches dims");
    for (axis, &step) in spacing.iter().enumerate() {
        let w2 = step * step;
        Zip::from(d.lanes_mut(Axis(axis))).par_for_each(|mut lane| {
            let line: Vec<f64> = lane.iter().copied().collect();
            let out = lower_envelope(&line, w2);
            lane.iter_mut().zip(out).for_each(|(o, v)| *o = v);
        });
    }
    d.into_raw_vec_and_offset().0
}

/// 1-D squared distance transform of sampled function `f` with squared sample spacing `w2`.
fn lower_envelope(f: &[f64], w2: f64) -> Vec<f64> {
    let n = f.len();
    let mut out = vec![f64::INFINITY; n];
    // Parabola apexes (indices) and boundaries between them.
    let mut v: Vec<usize> = Vec::with_capacity(n);
    let mut z: Vec<f64> = Vec::with_capacity(n + 1);
    for q in 0..n {
        if !f[q].is_finite() {
            continue;
        }
        loop {
            match v.last() {
                None => {
                    v.push(q);
                    z.clear();
                    z.push(f64::NEG_INFINITY);
                    break;
                }
                Some(&p) => {
                    // Intersection of parabolas from p and q (in index units scaled by w2).
                    let s = ((f[q] + w2 * (q * q) as f64) - (f[p] + w2 * (p * p) as f64))
                        / (2.0 * w2 * (q - p) as f64);
                    if s <= *z.last().expect("z tracks v") {
                        v.pop();
                        z.pop();
                        if v.is_empty() {
                            continue;
                        }
                    } else {
                        v.push(q);
                        z.push(s);
                        break;
                    }
                }
            }
        }
    }
    if v.is_empty() {
        return out;
    }
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while k + 1 < v.len() && z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        let dq = q as f64 - p as f64;
        *o = w2 * dq * dq + f[p];
    }
    out
}

/// Voxels of `mask` farther than `radius_mm` from any voxel outside it (the grid border counts
/// as outside, so erosion also trims masks touching it).
pub fn erode(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let outside: Vec<bool> = mask.iter().map(|&m| !m).collect();
    if !outside.iter().any(|&o| o) {
        return mask.to_vec();
    }
    let d = squared_distance(&outside, dims, spacing);
    let r2 = radius_mm * radius_mm;
    d.iter().map(|&v| v > r2).collect()
}

/// Voxels within `radius_mm` of `mask`.
pub fn dilate(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let d = squared_distance(mask, dims, spacing);
    let r2 = radius_mm * radius_mm;
    d.iter().map(|&v| v <= r2).collect()
}

/// Morphological closing (dilation then erosion) by `radius_mm`. The erosion does not treat the
/// grid border as background, so closing never removes voxels of the input.
pub fn close(mask: &[bool], dims: [usize; 3], spacing: [f64; 3], radius_mm: f64) -> Vec<bool> {
    let dilated = dilate(mask, dims, spacing, radius_mm);
    let outside: Vec<bool> = dilated.iter().map(|&m| !m).collect();
    if !outside.iter().any(|&o| o) {
        return dilated;
    }
    let d = squared_distance(&outside, dims, spacing);
    let r2 = radius_mm * radius_mm;
    d.iter().zip(mask).map(|(&v, &m)| m || v > r2).collect()
}

/// Labels of 6-connected components of `mask` (0 = background, 1.. in scan order) and the size
/// of each (index 0 unused).
pub fn connected_components(mask: &[bool], dims: [usize; 3]) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = vec![0usize];
    let mut queue = VecDeque::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32;
        labels[start] = label;
        let mut size = 0;
        queue.push_back(start);
        while let Some(index) = queue.pop_front() {
            size += 1;
            for neighbour in neighbours(index, dims) {
                if mask[neighbour] && labels[neighbour] == 0 {
                    labels[neighbour] = label;
                    queue.push_back(neighbour);
                }
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// The largest 6-connected component (the first in scan order on ties); empty if none.
pub fn largest_component(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let (labels, sizes) = connected_components(mask, dims);
    let best =
        (1..sizes.len()).fold(0usize, |best, l| if best == 0 || sizes[l] > sizes[best] { l } else { best });
    labels.iter().map(|&l| best != 0 && l as usize == best).collect()
}

/// `mask` with every background region not 6-connected to the grid border filled in.
pub fn fill_holes(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let mut outside = vec![false; mask.len()];
    let mut queue = VecDeque::new();
    for i in 0..dims[0] {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let border =
                    i == 0 || j == 0 || k == 0 || i + 1 == dims[0] || j + 1 == dims[1] || k + 1 == dims[2];
                let index = (i * dims[1] + j) * dims[2] + k;
                if border && !mask[index] && !outside[index] {
                    outside[index] = true;
                    queue.push_back(index);
                }
            }
        }
    }
    while let Some(index) = queue.pop_front() {
        for neighbour in neighbours(index, dims) {
            if !mask[neighbour] && !outside[neighbour] {
                outside[neighbour] = true;
                queue.push_back(neighbour);
            }
        }
    }
    outside.iter().map(|&o| !o).collect()
}

/// The 6-neighbours of a flat index that lie inside the grid.
fn neighbours(index: usize, dims: [usize; 3]) -> impl Iterator<Item = usize> {
    let k = index % dims[2];
    let j = (index / dims[2]) % dims[1];
    let i = index / (dims[1] * dims[2]);
    let sj = dims[2];
    let si = dims[1] * dims[2];
    [
        (i > 0).then(|| index - si),
        (i + 1 < dims[0]).then(|| index + si),
        (j > 0).then(|| index - sj),
        (j + 1 < dims[1]).then(|| index + sj),
        (k > 0).then(|| index - 1),
        (k + 1 < dims[2]).then(|| index + 1),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ball(dims: [usize; 3], centre: [f64; 3], radius: f64) -> Vec<bool> {
        let mut m = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let d2 = (i as f64 - centre[0]).powi(2)
                        + (j as f64 - centre[1]).powi(2)
                        + (k as f64 - centre[2]).powi(2);
                    m.push(d2 <= radius * radius);
                }
            }
        }
        m
    }

    #[test]
    fn distance_transform_is_exact_for_a_point() {
        let dims = [7, 8, 9];
        let mut f = vec![false; 7 * 8 * 9];
        f[(3 * 8 + 2) * 9 + 4] = true;
        let d = squared_distance(&f, dims, [1.0, 2.0, 0.5]);
        let at = |i: usize, j: usize, k: usize| d[(i * 8 + j) * 9 + k];
        assert_eq!(at(3, 2, 4), 0.0);
        assert!((at(0, 5, 8) - (9.0 + 36.0 + 4.0)).abs() < 1e-9);
        assert!(squared_distance(&[false; 8], [2, 2, 2], [1.0; 3]).iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn erosion_dilation_components_and_holes() {
        let dims = [21, 21, 21];
        let big = ball(dims, [10.0; 3], 7.0);
        let eroded = erode(&big, dims, [1.0; 3], 2.0);
        let expected = ball(dims, [10.0; 3], 5.0);
        let diff = eroded.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert!(diff < 60, "{diff} voxels differ after erosion");
        let mut point = vec![false; big.len()];
        point[(10 * 21 + 10) * 21 + 10] = true;
        assert_eq!(dilate(&point, dims, [1.0; 3], 7.0), big);

        let mut two = ball(dims, [5.0; 3], 3.0);
        let other = ball(dims, [15.0; 3], 4.0);
        two.iter_mut().zip(&other).for_each(|(a, b)| *a |= b);
        let (_, sizes) = connected_components(&two, dims);
        assert_eq!(sizes.len(), 3);
        assert_eq!(largest_component(&two, dims), other);

        let mut hollow = big.clone();
        let inner = ball(dims, [10.0; 3], 3.0);
        hollow.iter_mut().zip(&inner).for_each(|(a, b)| *a &= !b);
        assert_eq!(fill_holes(&hollow, dims), big);
        let closed = close(&hollow, dims, [1.0; 3], 1.0);
        assert!(hollow.iter().zip(&closed).all(|(h, c)| !h || *c));
    }
}
