//! Image geometry: voxel dimensions and the voxel → world (RAS+ millimetre) affine.

use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};

/// Why a grid cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GridError {
    /// A dimension is zero.
    #[error("grid dimensions {0:?} must all be positive")]
    EmptyDimension([usize; 3]),
    /// The affine has a non-finite entry or its linear part is singular.
    #[error("voxel-to-world affine is singular or not finite")]
    SingularAffine,
}

/// Dimensions of a 3-D voxel grid and its voxel → world affine (RAS+ mm, NIfTI convention).
///
/// Voxel index `(i, j, k)` addresses `data[[i, j, k]]` of an [`crate::Image`]; the world point
/// of that voxel centre is `affine * (i, j, k, 1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    dims: [usize; 3],
    affine: Matrix4<f64>,
    inverse: Matrix4<f64>,
}

impl Grid {
    /// A grid with the given dimensions and voxel → world affine.
    pub fn new(dims: [usize; 3], affine: Matrix4<f64>) -> Result<Self, GridError> {
        if dims.contains(&0) {
            return Err(GridError::EmptyDimension(dims));
        }
        if affine.iter().any(|v| !v.is_finite()) {
            return Err(GridError::SingularAffine);
        }
        let linear: Matrix3<f64> = affine.fixed_view::<3, 3>(0, 0).into_owned();
        let det = linear.determinant();
        if !det.is_finite() || det.abs() < 1e-12 {
            return Err(GridError::SingularAffine);
        }
        let inverse = affine.try_inverse().ok_or(GridError::SingularAffine)?;
        Ok(Self { dims, affine, inverse })
    }

    /// An axis-aligned grid (identity direction) with the given spacing and world origin of voxel 0.
    pub fn axis_aligned(dims: [usize; 3], spacing: [f64; 3], origin: [f64; 3]) -> Result<Self, GridError> {
        let mut affine = Matrix4::identity();
        for axis in 0..3 {
            affine[(axis, axis)] = spacing[axis];
            affine[(axis, 3)] = origin[axis];
        }
        Self::new(dims, affine)
    }

    /// Number of voxels along each axis.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// Total voxel count.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Always false: a grid has at least one voxel.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Voxel → world affine.
    pub fn affine(&self) -> &Matrix4<f64> {
        &self.affine
    }

    /// World → voxel affine.
    pub fn inverse_affine(&self) -> &Matrix4<f64> {
        &self.inverse
    }

    /// Linear 3×3 part of the affine (direction scaled by spacing).
    pub fn linear(&self) -> Matrix3<f64> {
        self.affine.fixed_view::<3, 3>(0, 0).into_owned()
    }

    /// Voxel spacing in mm: the length of each affine column.
    pub fn spacing(&self) -> [f64; 3] {
        let l = self.linear();
        [l.column(0).norm(), l.column(1).norm(), l.column(2).norm()]
    }

    /// Unit direction cosines (columns) of the voxel axes in world space.
    pub fn direction(&self) -> Matrix3<f64> {
        let mut l = self.linear();
        for c in 0..3 {
            let n = l.column(c).norm();
            l.column_mut(c).unscale_mut(n);
        }
        l
    }

    /// World position of voxel (0, 0, 0).
    pub fn origin(&self) -> Vector3<f64> {
        Vector3::new(self.affine[(0, 3)], self.affine[(1, 3)], self.affine[(2, 3)])
    }

    /// World point (mm) of a continuous voxel index.
    #[inline]
    pub fn voxel_to_world(&self, voxel: [f64; 3]) -> [f64; 3] {
        let p = self.affine * Vector4::new(voxel[0], voxel[1], voxel[2], 1.0);
        [p.x, p.y, p.z]
    }

    /// Continuous voxel index of a world point (mm).
    #[inline]
    pub fn world_to_voxel(&self, world: [f64; 3]) -> [f64; 3] {
        let p = self.inverse * Vector4::new(world[0], world[1], world[2], 1.0);
        [p.x, p.y, p.z]
    }

    /// World point of the grid's centre.
    pub fn center_world(&self) -> [f64; 3] {
        self.voxel_to_world([
            (self.dims[0] as f64 - 1.0) / 2.0,
            (self.dims[1] as f64 - 1.0) / 2.0,
            (self.dims[2] as f64 - 1.0) / 2.0,
        ])
    }

    /// A coarser grid covering the same field of view, `factor` times fewer voxels per axis
    /// (at least one). Voxel centres are placed so the physical extent is preserved, as ITK's
    /// shrink filter does.
    pub fn shrink(&self, factor: usize) -> Grid {
        let factor = factor.max(1);
        self.shrink_axes([factor; 3])
    }

    /// The grid subsampled by its own factor along each axis (anisotropic voxels reach a
    /// near-isotropic working grid); same centring rule as [`Grid::shrink`].
    pub fn shrink_axes(&self, factors: [usize; 3]) -> Grid {
        let mut dims = [0usize; 3];
        let mut scale = [0f64; 3];
        for a in 0..3 {
            dims[a] = self.dims[a].div_ceil(factors[a].max(1)).max(1);
            scale[a] = self.dims[a] as f64 / dims[a] as f64;
        }
        let mut affine = self.affine;
        // New voxel index u maps to old continuous index (u + 0.5) * scale - 0.5.
        let mut offset = Vector4::new(0.0, 0.0, 0.0, 1.0);
        for a in 0..3 {
            offset[a] = 0.5 * scale[a] - 0.5;
        }
        let shifted = self.affine * offset;
        for a in 0..3 {
            for r in 0..3 {
                affine[(r, a)] = self.affine[(r, a)] * scale[a];
            }
        }
        for r in 0..3 {
            affine[(r, 3)] = shifted[r];
        }
        Grid::new(dims, affine).expect("a shrunken valid grid is valid")
    }

    /// Whether two grids have the same dimensions and an affine equal within `tolerance_mm`.
    pub fn same_as(&self, other: &Grid, tolerance_mm: f64) -> bool {
        self.dims == other.dims
            && self.affine.iter().zip(other.affine.iter()).all(|(a, b)| (a - b).abs() <= tolerance_mm)
    }

    /// Flat index of voxel (i, j, k) in C order (k fastest), the layout of [`crate::Image`] data.
    #[inline]
    pub fn flat_index(&self, i: usize, j: usize, k: usize) -> usize {
        (i * self.dims[1] + j) * self.dims[2] + k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_voxel_round_trip_on_oblique_grid() {
        let rotation = nalgebra::Rotation3::from_euler_angles(0.1, -0.2, 0.3);
        let mut affine = Matrix4::identity();
        let linear = rotation.matrix() * Matrix3::from_diagonal(&Vector3::new(1.0, 1.2, 2.5));
        affine.fixed_view_mut::<3, 3>(0, 0).copy_from(&linear);
        affine[(0, 3)] = -90.0;
        affine[(1, 3)] = 10.0;
        affine[(2, 3)] = 33.0;
        let grid = Grid::new([10, 11, 12], affine).unwrap();
        let voxel = [3.25, 7.5, 1.0];
        let back = grid.world_to_voxel(grid.voxel_to_world(voxel));
        for a in 0..3 {
            assert!((back[a] - voxel[a]).abs() < 1e-9);
        }
        let spacing = grid.spacing();
        assert!((spacing[1] - 1.2).abs() < 1e-12 && (spacing[2] - 2.5).abs() < 1e-12);
        assert!((grid.direction().determinant() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn singular_and_empty_grids_are_refused() {
        let mut affine = Matrix4::identity();
        affine[(2, 2)] = 0.0;
        assert_eq!(Grid::new([2, 2, 2], affine), Err(GridError::SingularAffine));
        assert!(matches!(Grid::new([0, 2, 2], Matrix4::identity()), Err(GridError::EmptyDimension(_))));
    }

    #[test]
    fn shrink_preserves_extent() {
        let grid = Grid::axis_aligned([8, 9, 10], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]).unwrap();
        let small = grid.shrink(2);
        assert_eq!(small.dims(), [4, 5, 5]);
        // First voxel's left edge stays at -0.5 mm.
        let first = small.voxel_to_world([0.0, 0.0, 0.0]);
        assert!((first[0] - 0.5).abs() < 1e-12);
        assert!((small.spacing()[0] - 2.0).abs() < 1e-12);
        assert!((small.spacing()[1] - 1.8).abs() < 1e-12);
    }
}
