//! Point sampling of images at continuous voxel positions.

use crate::image::Image;

/// How to sample between voxel centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Value of the nearest voxel (labels and masks).
    Nearest,
    /// Trilinear interpolation.
    Linear,
}

/// Trilinear sample at a continuous voxel index; `outside` when the point is beyond the grid
/// by more than half a voxel. Inside that half-voxel border the edge value is extended, as
/// ITK's linear interpolator does at the buffer boundary.
#[inline]
pub fn sample_linear(image: &Image<f32>, voxel: [f64; 3], outside: f32) -> f32 {
    let dims = image.grid().dims();
    if (0..3).any(|a| !(voxel[a] >= -0.5 && voxel[a] <= dims[a] as f64 - 0.5)) {
        return outside;
    }
    sample_clamped(image.as_slice(), dims, voxel)
}

/// Nearest-voxel sample at a continuous voxel index; `outside` beyond the grid.
#[inline]
pub fn sample_nearest<T: Copy>(image: &Image<T>, voxel: [f64; 3], outside: T) -> T {
    let dims = image.grid().dims();
    let mut index = [0usize; 3];
    for a in 0..3 {
        let r = voxel[a].round();
        if !(r >= 0.0 && r <= (dims[a] - 1) as f64) {
            return outside;
        }
        index[a] = r as usize;
    }
    image.as_slice()[(index[0] * dims[1] + index[1]) * dims[2] + index[2]]
}

/// Samples with the chosen interpolation.
#[inline]
pub fn sample(image: &Image<f32>, voxel: [f64; 3], interpolation: Interpolation, outside: f32) -> f32 {
    match interpolation {
        Interpolation::Nearest => sample_nearest(image, voxel, outside),
        Interpolation::Linear => sample_linear(image, voxel, outside),
    }
}

/// Trilinear weights of a continuous voxel index with the edge clamped (points beyond the
/// grid take the nearest edge value): base flat index, the three neighbour strides and the
/// fractional offsets.
#[inline]
pub fn clamped_corner(dims: [usize; 3], voxel: [f64; 3]) -> (usize, [usize; 3], [f32; 3]) {
    let mut base = [0usize; 3];
    let mut frac = [0f32; 3];
    let mut next = [0usize; 3];
    let step = [dims[1] * dims[2], dims[2], 1];
    for a in 0..3 {
        let n = dims[a];
        if n == 1 {
            continue;
        }
        // Clamped to [0, n − 1], so truncation is the floor (and much cheaper than a libm
        // call); NaN clamps to NaN and casts to 0.
        let x = voxel[a].clamp(0.0, (n - 1) as f64);
        let b = (x as usize).min(n - 2);
        base[a] = b;
        frac[a] = (x - b as f64) as f32;
        next[a] = step[a];
    }
    (base[0] * step[0] + base[1] * step[1] + base[2], next, frac)
}

/// Trilinear sample of a flat C-order buffer with the edge value extended beyond the grid.
#[inline]
pub fn sample_clamped(data: &[f32], dims: [usize; 3], voxel: [f64; 3]) -> f32 {
    let (i0, [di, dj, dk], [tx, ty, tz]) = clamped_corner(dims, voxel);
    let c00 = data[i0] * (1.0 - tz) + data[i0 + dk] * tz;
    let c01 = data[i0 + dj] * (1.0 - tz) + data[i0 + dj + dk] * tz;
    let c10 = data[i0 + di] * (1.0 - tz) + data[i0 + di + dk] * tz;
    let c11 = data[i0 + di + dj] * (1.0 - tz) + data[i0 + di + dj + dk] * tz;
    let c0 = c00 * (1.0 - ty) + c01 * ty;
    let c1 = c10 * (1.0 - ty) + c11 * ty;
    c0 * (1.0 - tx) + c1 * tx
}

/// Trilinear sample of three flat buffers sharing one grid (a vector field), edge extended.
#[inline]
pub fn sample_clamped3(data: [&[f32]; 3], dims: [usize; 3], voxel: [f64; 3]) -> [f32; 3] {
    let (i0, [di, dj, dk], [tx, ty, tz]) = clamped_corner(dims, voxel);
    let w = [
        (1.0 - tx) * (1.0 - ty) * (1.0 - tz),
        (1.0 - tx) * (1.0 - ty) * tz,
        (1.0 - tx) * ty * (1.0 - tz),
        (1.0 - tx) * ty * tz,
        tx * (1.0 - ty) * (1.0 - tz),
        tx * (1.0 - ty) * tz,
        tx * ty * (1.0 - tz),
        tx * ty * tz,
    ];
    let idx = [i0, i0 + dk, i0 + dj, i0 + dj + dk, i0 + di, i0 + di + dk, i0 + di + dj, i0 + di + dj + dk];
    let mut out = [0f32; 3];
    for c in 0..3 {
        let d = data[c];
        out[c] = w[0] * d[idx[0]]
            + w[1] * d[idx[1]]
            + w[2] * d[idx[2]]
            + w[3] * d[idx[3]]
            + w[4] * d[idx[4]]
            + w[5] * d[idx[5]]
            + w[6] * d[idx[6]]
            + w[7] * d[idx[7]];
    }
    out
}

/// Trilinear value and its exact derivative with respect to the voxel index, `None` when the
/// point is beyond the grid by more than half a voxel (as [`sample_linear`]). The derivative is
/// that of the piecewise-trilinear interpolant, so it is consistent with the sampled value.
#[inline]
pub fn sample_linear_with_gradient(
    data: &[f32],
    dims: [usize; 3],
    voxel: [f64; 3],
) -> Option<(f32, [f32; 3])> {
    for a in 0..3 {
        let x = voxel[a];
        if !(x >= -0.5 && x <= dims[a] as f64 - 0.5) {
            return None;
        }
    }
    let (i0, [di, dj, dk], [tx, ty, tz]) = clamped_corner(dims, voxel);
    let v000 = data[i0];
    let v001 = data[i0 + dk];
    let v010 = data[i0 + dj];
    let v011 = data[i0 + dj + dk];
    let v100 = data[i0 + di];
    let v101 = data[i0 + di + dk];
    let v110 = data[i0 + di + dj];
    let v111 = data[i0 + di + dj + dk];
    let c00 = v000 + (v001 - v000) * tz;
    let c01 = v010 + (v011 - v010) * tz;
    let c10 = v100 + (v101 - v100) * tz;
    let c11 = v110 + (v111 - v110) * tz;
    let c0 = c00 + (c01 - c00) * ty;
    let c1 = c10 + (c11 - c10) * ty;
    let value = c0 + (c1 - c0) * tx;
    let gx = c1 - c0;
    let gy = (c01 - c00) * (1.0 - tx) + (c11 - c10) * tx;
    let d0 = (v001 - v000) * (1.0 - ty) + (v011 - v010) * ty;
    let d1 = (v101 - v100) * (1.0 - ty) + (v111 - v110) * ty;
    let gz = d0 * (1.0 - tx) + d1 * tx;
    // Along an axis of length one (or beyond the edge) the interpolant is flat.
    let flat = |a: usize| dims[a] == 1 || voxel[a] < 0.0 || voxel[a] > (dims[a] - 1) as f64;
    let g = [if flat(0) { 0.0 } else { gx }, if flat(1) { 0.0 } else { gy }, if flat(2) { 0.0 } else { gz }];
    Some((value, g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;
    use ndarray::Array3;

    fn ramp() -> Image<f32> {
        let grid = Grid::axis_aligned([4, 5, 6], [1.0; 3], [0.0; 3]).unwrap();
        let data = Array3::from_shape_fn((4, 5, 6), |(i, j, k)| (i + 2 * j + 3 * k) as f32);
        Image::new(data, grid).unwrap()
    }

    #[test]
    fn linear_reproduces_linear_functions() {
        let image = ramp();
        let v = sample_linear(&image, [1.5, 2.25, 4.75], -1.0);
        assert!((v - (1.5 + 4.5 + 14.25)).abs() < 1e-5);
        // Last voxel exactly.
        assert_eq!(sample_linear(&image, [3.0, 4.0, 5.0], -1.0), 3.0 + 8.0 + 15.0);
        assert_eq!(sample_linear(&image, [3.6, 0.0, 0.0], -1.0), -1.0);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let grid = Grid::axis_aligned([5, 6, 7], [1.0; 3], [0.0; 3]).unwrap();
        let data =
            Array3::from_shape_fn((5, 6, 7), |(i, j, k)| ((i * i) as f32 * 0.3 + (j * k) as f32 * 0.7).sin());
        let image = Image::new(data, grid).unwrap();
        let dims = [5, 6, 7];
        let p = [1.3, 2.6, 4.2];
        let (v, g) = sample_linear_with_gradient(image.as_slice(), dims, p).unwrap();
        assert!((v - sample_linear(&image, p, 0.0)).abs() < 1e-6);
        for a in 0..3 {
            let mut q = p;
            q[a] += 1e-3;
            let fd = (sample_linear(&image, q, 0.0) - v) / 1e-3;
            assert!((fd - g[a]).abs() < 1e-2, "axis {a}: {fd} vs {}", g[a]);
        }
        assert!(sample_linear_with_gradient(image.as_slice(), dims, [5.0, 0.0, 0.0]).is_none());
        let s = sample_clamped3([image.as_slice(); 3], dims, p);
        assert!((s[1] - v).abs() < 1e-5);
        assert_eq!(sample_clamped(image.as_slice(), dims, [-3.0, 0.0, 0.0]), image.as_slice()[0]);
    }

    #[test]
    fn nearest_rounds_and_rejects_outside() {
        let image = ramp();
        assert_eq!(sample_nearest(&image, [0.6, 0.4, 1.2], -1.0), 1.0 + 0.0 + 3.0);
        assert_eq!(sample_nearest(&image, [-0.6, 0.0, 0.0], -1.0), -1.0);
    }
}
