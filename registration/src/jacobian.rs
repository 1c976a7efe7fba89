//! Jacobian determinant and log-Jacobian maps of displacement fields: the local volume change
//! of the map `p ↦ p + u(p)` (> 1 expansion, < 1 contraction, ≤ 0 folding).

use crate::finite_difference::voxel_derivatives;
use crate::image::Image;
use crate::transform::DisplacementField;
use ndarray::Array3;
use rayon::prelude::*;

/// Smallest determinant used by [`log_jacobian`] (folded voxels would have no logarithm).
pub const LOG_FLOOR: f32 = 1e-6;

/// `det(I + ∂u/∂x)` at every voxel of the field's grid, with world-space derivatives from
/// central differences (one-sided at the borders).
pub fn jacobian_determinant(field: &DisplacementField) -> Image<f32> {
    let grid = field.grid();
    let d = grid.dims();
    let slab = d[1] * d[2];
    // ∂u/∂world = ∂u/∂voxel · L⁻¹.
    let inverse = grid.linear().try_inverse().expect("valid grid");
    let [ux, uy, uz] = field.slices();
    let mut out = vec![0f32; grid.len()];
    out.par_chunks_mut(slab).enumerate().for_each(|(i, chunk)| {
        for j in 0..d[1] {
            for k in 0..d[2] {
                let mut voxel_jacobian = nalgebra::Matrix3::<f64>::zeros();
                for (row, u) in [ux, uy, uz].iter().enumerate() {
                    let derivatives = voxel_derivatives(u, d, [i, j, k]);
                    for (column, derivative) in derivatives.into_iter().enumerate() {
                        voxel_jacobian[(row, column)] = derivative as f64;
                    }
                }
                let full = nalgebra::Matrix3::identity() + voxel_jacobian * inverse;
                chunk[j * d[2] + k] = full.determinant() as f32;
            }
        }
    });
    let data = Array3::from_shape_vec((d[0], d[1], d[2]), out).expect("buffer matches grid");
    Image::new(data, grid.clone()).expect("shape matches grid")
}

/// Natural logarithm of [`jacobian_determinant`], with determinants below [`LOG_FLOOR`]
/// clamped to it (count folds with [`count_non_positive`] first).
pub fn log_jacobian(field: &DisplacementField) -> Image<f32> {
    jacobian_determinant(field).map(|&j| j.max(LOG_FLOOR).ln())
}

/// Number of voxels whose Jacobian determinant is ≤ 0 (folded).
pub fn count_non_positive(jacobian: &Image<f32>) -> usize {
    jacobian.as_slice().iter().filter(|&&j| j <= 0.0).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;
    use crate::transform::map_voxels;

    #[test]
    fn linear_field_has_exact_determinant() {
        // u(p) = (0.1 x, −0.2 y, 0.05 x): det = 1.1 · 0.8 · 1 = 0.88, on an anisotropic grid.
        let grid = Grid::axis_aligned([8, 9, 10], [1.5, 1.0, 2.0], [-5.0, -4.0, -9.0]).unwrap();
        let parts = map_voxels(&grid, |v| {
            let p = grid.voxel_to_world(v);
            [(0.1 * p[0]) as f32, (-0.2 * p[1]) as f32, (0.05 * p[0]) as f32]
        });
        let field = DisplacementField::from_flat(&grid, parts);
        let j = jacobian_determinant(&field);
        assert!(j.as_slice().iter().all(|&v| (v - 0.88).abs() < 1e-4), "{:?}", &j.as_slice()[..4]);
        let l = log_jacobian(&field);
        assert!((l.as_slice()[100] - 0.88f32.ln()).abs() < 1e-4);
        assert_eq!(count_non_positive(&j), 0);
    }

    #[test]
    fn folding_is_detected() {
        let grid = Grid::axis_aligned([10, 4, 4], [1.0; 3], [0.0; 3]).unwrap();
        let parts = map_voxels(&grid, |v| [if v[0] == 5.0 { -3.0 } else { 0.0 }, 0.0, 0.0]);
        let j = jacobian_determinant(&DisplacementField::from_flat(&grid, parts));
        assert!(count_non_positive(&j) > 0);
        assert!(
            log_jacobian(&DisplacementField::from_flat(&grid, map_voxels(&grid, |_| [0.0; 3])))
                .as_slice()
                .iter()
                .all(|&v| v == 0.0)
        );
    }
}
