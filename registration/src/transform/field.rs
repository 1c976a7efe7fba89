//! Dense displacement fields.

use super::SpatialTransform;
use crate::grid::Grid;
use crate::image::Image;
use crate::interpolate::{sample_clamped3, sample_linear};
use ndarray::Array3;
use rayon::prelude::*;

/// A dense displacement field on a (fixed-space) grid: the transform maps a world point `p`
/// to `p + u(p)`, with `u` in world RAS+ millimetres, interpolated trilinearly between voxel
/// centres and zero outside the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacementField {
    components: [Image<f32>; 3],
}

impl DisplacementField {
    /// The zero field on a grid.
    pub fn zeros(grid: &Grid) -> Self {
        let zero = Image::filled(grid.clone(), 0.0f32);
        Self { components: [zero.clone(), zero.clone(), zero] }
    }

    /// A field from its x, y and z world components (all on the same grid).
    ///
    /// # Panics
    /// When the components' grids differ.
    pub fn from_components(components: [Image<f32>; 3]) -> Self {
        assert!(
            components[1].grid() == components[0].grid() && components[2].grid() == components[0].grid(),
            "displacement components must share one grid"
        );
        Self { components }
    }

    /// The grid the field is sampled on.
    pub fn grid(&self) -> &Grid {
        self.components[0].grid()
    }

    /// The x, y, z components (world mm).
    pub fn components(&self) -> &[Image<f32>; 3] {
        &self.components
    }

    /// Mutable components.
    pub fn components_mut(&mut self) -> &mut [Image<f32>; 3] {
        &mut self.components
    }

    /// Splits into components.
    pub fn into_components(self) -> [Image<f32>; 3] {
        self.components
    }

    /// The displacement (mm) at a world point.
    #[inline]
    pub fn displacement_at(&self, world: [f64; 3]) -> [f64; 3] {
        let voxel = self.grid().world_to_voxel(world);
        [
            sample_linear(&self.components[0], voxel, 0.0) as f64,
            sample_linear(&self.components[1], voxel, 0.0) as f64,
            sample_linear(&self.components[2], voxel, 0.0) as f64,
        ]
    }

    /// The displacement at voxel `flat` (C order) of the field's own grid.
    #[inline]
    pub fn displacement_at_voxel(&self, flat: usize) -> [f64; 3] {
        [
            self.components[0].as_slice()[flat] as f64,
            self.components[1].as_slice()[flat] as f64,
            self.components[2].as_slice()[flat] as f64,
        ]
    }
}

impl SpatialTransform for DisplacementField {
    #[inline]
    fn transform_point(&self, p: [f64; 3]) -> [f64; 3] {
        let u = self.displacement_at(p);
        [p[0] + u[0], p[1] + u[1], p[2] + u[2]]
    }
}

impl DisplacementField {
    /// A field from three flat C-order component buffers on `grid`.
    ///
    /// # Panics
    /// When a buffer's length differs from the grid's voxel count.
    pub fn from_flat(grid: &Grid, components: [Vec<f32>; 3]) -> Self {
        let d = grid.dims();
        let [x, y, z] = components;
        let make = |v: Vec<f32>| {
            Image::new(
                Array3::from_shape_vec((d[0], d[1], d[2]), v).expect("buffer matches grid"),
                grid.clone(),
            )
            .expect("shape matches grid")
        };
        Self { components: [make(x), make(y), make(z)] }
    }

    /// The components as flat C-order slices.
    pub fn slices(&self) -> [&[f32]; 3] {
        [self.components[0].as_slice(), self.components[1].as_slice(), self.components[2].as_slice()]
    }

    /// Largest displacement length (mm).
    pub fn max_norm(&self) -> f64 {
        let [x, y, z] = self.slices();
        x.iter().zip(y).zip(z).map(|((a, b), c)| ((a * a + b * b + c * c) as f64).sqrt()).fold(0.0, f64::max)
    }

    /// The same field sampled on another grid (trilinear, edge values extended), e.g. to move
    /// a field between pyramid levels. Displacements are world mm, so no rescaling is needed.
    pub fn resampled(&self, grid: &Grid) -> DisplacementField {
        let source = self.grid();
        let sd = source.dims();
        let map = source.inverse_affine() * grid.affine();
        let parts = map_voxels(grid, |voxel| {
            let v = apply3(&map, voxel);
            sample_clamped3(self.slices(), sd, v)
        });
        DisplacementField::from_flat(grid, parts)
    }

    /// `self ∘ inner` as a field on `inner`'s grid: `p ↦ self(inner(p))`, i.e.
    /// `u(p) = u_inner(p) + u_self(p + u_inner(p))` (`self` is zero outside its grid).
    pub fn compose(&self, inner: &DisplacementField) -> DisplacementField {
        let grid = inner.grid();
        let dims = grid.dims();
        let inner_slices = inner.slices();
        let parts = map_voxels(grid, |voxel| {
            let flat = (voxel[0] as usize * dims[1] + voxel[1] as usize) * dims[2] + voxel[2] as usize;
            let ui = [inner_slices[0][flat], inner_slices[1][flat], inner_slices[2][flat]];
            let p = grid.voxel_to_world(voxel);
            let q = [p[0] + ui[0] as f64, p[1] + ui[1] as f64, p[2] + ui[2] as f64];
            let uo = self.displacement_at(q);
            [ui[0] + uo[0] as f32, ui[1] + uo[1] as f32, ui[2] + uo[2] as f32]
        });
        DisplacementField::from_flat(grid, parts)
    }

    /// The inverse mapping as a displacement field on `grid`, by fixed-point iteration
    /// `w(p) ← −u(p + w(p))` (converges when the field is a smooth diffeomorphism with
    /// displacement gradients below one). Stops after `iterations` or when the largest update
    /// is below `tolerance_mm`.
    pub fn invert(&self, grid: &Grid, iterations: usize, tolerance_mm: f64) -> DisplacementField {
        let dims = grid.dims();
        let same_grid = grid.same_as(self.grid(), 1e-9);
        // On the field's own grid, sample in voxel space with edge extension (fast path, and
        // no artificial jump to zero displacement at the border).
        let to_voxel = grid.linear().try_inverse().expect("valid grid");
        let own = self.slices();
        let sample = |voxel: [f64; 3], w: [f64; 3]| -> [f64; 3] {
            if same_grid {
                let o = to_voxel * nalgebra::Vector3::from(w);
                let u = sample_clamped3(own, dims, [voxel[0] + o.x, voxel[1] + o.y, voxel[2] + o.z]);
                [u[0] as f64, u[1] as f64, u[2] as f64]
            } else {
                let p = grid.voxel_to_world(voxel);
                self.displacement_at([p[0] + w[0], p[1] + w[1], p[2] + w[2]])
            }
        };
        // Start from −u(p), the first-order inverse.
        let mut inverse = map_voxels(grid, |voxel| {
            let u = sample(voxel, [0.0; 3]);
            [-u[0] as f32, -u[1] as f32, -u[2] as f32]
        });
        for _ in 0..iterations {
            let current = &inverse;
            let next = map_voxels(grid, |voxel| {
                let flat = (voxel[0] as usize * dims[1] + voxel[1] as usize) * dims[2] + voxel[2] as usize;
                let w = [current[0][flat] as f64, current[1][flat] as f64, current[2][flat] as f64];
                let u = sample(voxel, w);
                [-u[0] as f32, -u[1] as f32, -u[2] as f32]
            });
            let change = (0..next[0].len())
                .into_par_iter()
                .with_min_len(4096)
                .map(|v| {
                    let dx = next[0][v] - current[0][v];
                    let dy = next[1][v] - current[1][v];
                    let dz = next[2][v] - current[2][v];
                    dx * dx + dy * dy + dz * dz
                })
                .reduce(|| 0f32, f32::max);
            inverse = next;
            if (change as f64).sqrt() < tolerance_mm {
                break;
            }
        }
        DisplacementField::from_flat(grid, inverse)
    }

    /// Multiplies every displacement by `factor`.
    pub fn scale(&mut self, factor: f32) {
        for c in self.components.iter_mut() {
            c.as_mut_slice().iter_mut().for_each(|v| *v *= factor);
        }
    }
}

#[inline]
fn apply3(m: &nalgebra::Matrix4<f64>, v: [f64; 3]) -> [f64; 3] {
    [
        m[(0, 0)] * v[0] + m[(0, 1)] * v[1] + m[(0, 2)] * v[2] + m[(0, 3)],
        m[(1, 0)] * v[0] + m[(1, 1)] * v[1] + m[(1, 2)] * v[2] + m[(1, 3)],
        m[(2, 0)] * v[0] + m[(2, 1)] * v[1] + m[(2, 2)] * v[2] + m[(2, 3)],
    ]
}

/// Evaluates `f` at every voxel index of `grid` (parallel over the first axis, each voxel
/// independent, so bit-identical at any thread count) into three flat buffers, e.g. to build
/// a [`DisplacementField`] with [`DisplacementField::from_flat`].
pub fn map_voxels(grid: &Grid, f: impl Fn([f64; 3]) -> [f32; 3] + Sync) -> [Vec<f32>; 3] {
    let d = grid.dims();
    let slab = d[1] * d[2];
    let mut out: [Vec<f32>; 3] = [vec![0f32; grid.len()], vec![0f32; grid.len()], vec![0f32; grid.len()]];
    let [x, y, z] = &mut out;
    x.par_chunks_mut(slab).zip(y.par_chunks_mut(slab)).zip(z.par_chunks_mut(slab)).enumerate().for_each(
        |(i, ((cx, cy), cz))| {
            for j in 0..d[1] {
                for k in 0..d[2] {
                    let v = f([i as f64, j as f64, k as f64]);
                    let o = j * d[2] + k;
                    cx[o] = v[0];
                    cy[o] = v[1];
                    cz[o] = v[2];
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::SpatialTransform;

    fn swirl(grid: &Grid, amplitude: f64) -> DisplacementField {
        let parts = map_voxels(grid, |v| {
            let p = grid.voxel_to_world(v);
            [
                (amplitude * (p[1] / 6.0).sin()) as f32,
                (amplitude * (p[2] / 7.0).cos()) as f32,
                (amplitude * (p[0] / 5.0).sin()) as f32,
            ]
        });
        DisplacementField::from_flat(grid, parts)
    }

    #[test]
    fn inverse_composes_to_identity() {
        let grid = Grid::axis_aligned([24, 22, 20], [1.0; 3], [-12.0, -11.0, -10.0]).unwrap();
        let field = swirl(&grid, 1.5);
        let inverse = field.invert(&grid, 30, 1e-4);
        // Inside (away from the border where the field is cut off) the round trip is identity.
        for p in [[0.5, 1.0, -2.0], [3.0, -4.0, 2.5], [-5.0, 5.0, 0.0]] {
            let q = field.transform_point(inverse.transform_point(p));
            let e = ((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2) + (q[2] - p[2]).powi(2)).sqrt();
            assert!(e < 0.05, "round trip error {e}");
        }
        let both = field.compose(&inverse);
        let [x, _, _] = both.slices();
        let centre = grid.flat_index(12, 11, 10);
        assert!(x[centre].abs() < 0.05);
    }

    #[test]
    fn resampling_keeps_world_displacements() {
        let grid = Grid::axis_aligned([24, 22, 20], [1.0; 3], [-12.0, -11.0, -10.0]).unwrap();
        let field = swirl(&grid, 1.0);
        let coarse = field.resampled(&grid.shrink(2));
        let back = coarse.resampled(&grid);
        let p = [1.0, 2.0, 3.0];
        let a = field.displacement_at(p);
        let b = back.displacement_at(p);
        assert!((a[0] - b[0]).abs() < 0.15 && (a[2] - b[2]).abs() < 0.15, "{a:?} {b:?}");
    }
}
