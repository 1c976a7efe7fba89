//! Resampling an image onto another grid through a spatial transform (pull).

use crate::grid::Grid;
use crate::image::Image;
use crate::interpolate::{Interpolation, sample};
use crate::transform::SpatialTransform;
use ndarray::Array3;
use rayon::prelude::*;

/// Resamples `moving` onto `target`: each target voxel takes the moving value at
/// `transform(world(voxel))`. Points outside the moving grid get `outside`.
///
/// Runs in parallel over slabs; every voxel is computed independently, so the result is
/// bit-identical at any thread count.
pub fn resample(
    moving: &Image<f32>,
    target: &Grid,
    transform: &dyn SpatialTransform,
    interpolation: Interpolation,
    outside: f32,
) -> Image<f32> {
    let dims = target.dims();
    let slab = dims[1] * dims[2];
    let mut out = vec![0f32; target.len()];
    let moving_grid = moving.grid();
    out.par_chunks_mut(slab).enumerate().for_each(|(i, chunk)| {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                let world = target.voxel_to_world([i as f64, j as f64, k as f64]);
                let moved = transform.transform_point(world);
                let voxel = moving_grid.world_to_voxel(moved);
                chunk[j * dims[2] + k] = sample(moving, voxel, interpolation, outside);
            }
        }
    });
    let data = Array3::from_shape_vec((dims[0], dims[1], dims[2]), out).expect("buffer matches grid");
    Image::new(data, target.clone()).expect("shape matches grid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{AffineTransform, Identity};
    use nalgebra::Matrix4;

    fn blob(grid: &Grid) -> Image<f32> {
        let d = grid.dims();
        let data = Array3::from_shape_fn((d[0], d[1], d[2]), |(i, j, k)| {
            let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            (-(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]) / 50.0).exp() as f32
        });
        Image::new(data, grid.clone()).unwrap()
    }

    #[test]
    fn identity_on_same_grid_is_exact() {
        let grid = Grid::axis_aligned([12, 10, 9], [1.5, 1.0, 2.0], [-8.0, -5.0, -8.0]).unwrap();
        let image = blob(&grid);
        let out = resample(&image, &grid, &Identity, Interpolation::Linear, 0.0);
        assert_eq!(out.as_slice(), image.as_slice());
    }

    #[test]
    fn translation_moves_content() {
        let grid = Grid::axis_aligned([20, 20, 20], [1.0; 3], [-10.0; 3]).unwrap();
        let image = blob(&grid);
        let mut m = Matrix4::identity();
        m[(0, 3)] = 2.0; // fixed point x maps to moving x + 2
        let out = resample(&image, &grid, &AffineTransform::from_matrix(m), Interpolation::Linear, 0.0);
        // Fixed voxel at world x = -2 samples moving at x = 0 (the peak).
        let peak = out.data()[[8, 10, 10]];
        assert!((peak - 1.0).abs() < 1e-6, "peak {peak}");
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let grid = Grid::axis_aligned([16, 15, 14], [1.0; 3], [-8.0; 3]).unwrap();
        let image = blob(&grid);
        let rot = nalgebra::Rotation3::from_euler_angles(0.2, 0.1, -0.3).to_homogeneous();
        let t = AffineTransform::from_matrix(rot);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| resample(&image, &grid, &t, Interpolation::Linear, 0.0))
        };
        assert_eq!(run(1).as_slice(), run(2).as_slice());
    }
}
