//! The central-difference stencil shared by image gradients and Jacobians.

/// Neighbours of index `i` along an axis of length `n` and the factor turning their difference
/// into a derivative: central in the interior, one-sided at the borders, zero on an axis of
/// length one.
#[inline]
fn neighbours(i: usize, n: usize) -> (usize, usize, f32) {
    if n == 1 {
        (0, 0, 0.0)
    } else if i == 0 {
        (0, 1, 1.0)
    } else if i == n - 1 {
        (n - 2, n - 1, 1.0)
    } else {
        (i - 1, i + 1, 0.5)
    }
}

/// Derivatives of a C-order buffer of shape `dims` along the three voxel axes at voxel
/// `[i, j, k]` (per voxel, not per millimetre).
#[inline]
pub(crate) fn voxel_derivatives(data: &[f32], dims: [usize; 3], [i, j, k]: [usize; 3]) -> [f32; 3] {
    let (ia, ib, fi) = neighbours(i, dims[0]);
    let (ja, jb, fj) = neighbours(j, dims[1]);
    let (ka, kb, fk) = neighbours(k, dims[2]);
    let at = |a: usize, b: usize, c: usize| (a * dims[1] + b) * dims[2] + c;
    [
        (data[at(ib, j, k)] - data[at(ia, j, k)]) * fi,
        (data[at(i, jb, k)] - data[at(i, ja, k)]) * fj,
        (data[at(i, j, kb)] - data[at(i, j, ka)]) * fk,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_inside_one_sided_at_borders_flat_on_single_voxel_axes() {
        // f = i² + 3j on a 4×3×1 grid.
        let dims = [4, 3, 1];
        let data: Vec<f32> = (0..4).flat_map(|i| (0..3).map(move |j| (i * i + 3 * j) as f32)).collect();
        assert_eq!(voxel_derivatives(&data, dims, [1, 1, 0]), [2.0, 3.0, 0.0]);
        assert_eq!(voxel_derivatives(&data, dims, [0, 0, 0]), [1.0, 3.0, 0.0]);
        assert_eq!(voxel_derivatives(&data, dims, [3, 2, 0]), [5.0, 3.0, 0.0]);
    }
}
