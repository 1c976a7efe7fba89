//! Smooth diffeomorphic warps: random stationary velocity fields integrated by scaling and
//! squaring (so the inverse is the exponential of the negated velocity), composition of
//! displacement fields, and the Jacobian determinant.

use crate::rng::{standard_normal, stream};
use ndarray::Array3;
use pedinorm_registration::smooth::smooth_mm;
use pedinorm_registration::{DisplacementField, Grid, Image};
use rayon::prelude::*;

/// Computes one value per voxel of `grid` in parallel over `i` slabs. Every voxel is computed
/// independently, so the result does not depend on the thread count.
pub(crate) fn map_voxels<T, F>(grid: &Grid, f: F) -> Vec<T>
where
    T: Send + Copy + Default,
    F: Fn([usize; 3]) -> T + Sync,
{
    let dims = grid.dims();
    let slab = dims[1] * dims[2];
    let mut out = vec![T::default(); grid.len()];
    out.par_chunks_mut(slab).enumerate().for_each(|(i, chunk)| {
        for j in 0..dims[1] {
            for k in 0..dims[2] {
                chunk[j * dims[2] + k] = f([i, j, k]);
            }
        }
    });
    out
}

/// An image on `grid` from a per-voxel function (parallel, deterministic).
pub(crate) fn image_from_fn(grid: &Grid, f: impl Fn([usize; 3]) -> f32 + Sync) -> Image<f32> {
    let d = grid.dims();
    let data = Array3::from_shape_vec((d[0], d[1], d[2]), map_voxels(grid, f)).expect("one value per voxel");
    Image::new(data, grid.clone()).expect("shape matches grid")
}

/// A displacement field on `grid` from a per-voxel function returning the world displacement.
pub(crate) fn field_from_fn(grid: &Grid, f: impl Fn([usize; 3]) -> [f64; 3] + Sync) -> DisplacementField {
    let values = map_voxels(grid, |v| {
        let u = f(v);
        [u[0] as f32, u[1] as f32, u[2] as f32]
    });
    let d = grid.dims();
    let component = |c: usize| {
        let data = Array3::from_shape_vec((d[0], d[1], d[2]), values.iter().map(|u| u[c]).collect())
            .expect("one value per voxel");
        Image::new(data, grid.clone()).expect("shape matches grid")
    };
    DisplacementField::from_components([component(0), component(1), component(2)])
}

/// Largest displacement length (mm) of a field.
pub fn max_displacement_mm(field: &DisplacementField) -> f64 {
    let [x, y, z] = field.components();
    x.as_slice()
        .iter()
        .zip(y.as_slice())
        .zip(z.as_slice())
        .map(|((a, b), c)| ((a * a + b * b + c * c) as f64).sqrt())
        .fold(0.0, f64::max)
}

/// Multiplies every displacement by `factor`.
pub fn scale_field(field: &DisplacementField, factor: f64) -> DisplacementField {
    let [x, y, z] = field.components();
    let f = factor as f32;
    DisplacementField::from_components([x.map(|v| v * f), y.map(|v| v * f), z.map(|v| v * f)])
}

/// A random smooth velocity field on `grid`: white Gaussian noise per component (seeded
/// stream `stream_id` of `seed`), smoothed with a Gaussian of `smoothness_mm`, scaled so the
/// largest velocity is `max_mm`.
pub fn random_velocity(
    grid: &Grid,
    smoothness_mm: f64,
    max_mm: f64,
    seed: u64,
    stream_id: u64,
) -> DisplacementField {
    let field = smoothed_noise(grid, smoothness_mm, seed, stream_id);
    let largest = max_displacement_mm(&field);
    if largest <= 0.0 { field } else { scale_field(&field, max_mm / largest) }
}

/// A band-limited random vector field on `grid`: white Gaussian noise per component smoothed
/// with a Gaussian of `smoothness_mm`, scaled so each component has root-mean-square `rms_mm`
/// over the grid. Unlike [`random_velocity`] its amplitude does not depend on the grid size.
pub fn random_field_rms(
    grid: &Grid,
    smoothness_mm: f64,
    rms_mm: f64,
    seed: u64,
    stream_id: u64,
) -> DisplacementField {
    let field = smoothed_noise(grid, smoothness_mm, seed, stream_id);
    let sum_sq: f64 =
        field.components().iter().flat_map(|c| c.as_slice()).map(|&v| f64::from(v).powi(2)).sum();
    let rms = (sum_sq / (3 * grid.len()) as f64).sqrt();
    if rms <= 0.0 { field } else { scale_field(&field, rms_mm / rms) }
}

fn smoothed_noise(grid: &Grid, smoothness_mm: f64, seed: u64, stream_id: u64) -> DisplacementField {
    let mut rng = stream(seed, stream_id);
    let d = grid.dims();
    let mut components: Vec<Image<f32>> = (0..3)
        .map(|_| {
            let noise: Vec<f32> = (0..grid.len()).map(|_| standard_normal(&mut rng) as f32).collect();
            let data = Array3::from_shape_vec((d[0], d[1], d[2]), noise).expect("one value per voxel");
            smooth_mm(&Image::new(data, grid.clone()).expect("shape matches grid"), smoothness_mm)
        })
        .collect();
    let z = components.pop().expect("three components");
    let y = components.pop().expect("three components");
    let x = components.pop().expect("three components");
    DisplacementField::from_components([x, y, z])
}

/// `outer ∘ inner` as a displacement field on `inner`'s grid: the point `p` maps to
/// `outer(inner(p))`.
pub fn compose(outer: &DisplacementField, inner: &DisplacementField) -> DisplacementField {
    let grid = inner.grid().clone();
    let dims = grid.dims();
    field_from_fn(&grid, |[i, j, k]| {
        let flat = (i * dims[1] + j) * dims[2] + k;
        let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
        let u = inner.displacement_at_voxel(flat);
        let q = [p[0] + u[0], p[1] + u[1], p[2] + u[2]];
        let w = outer.displacement_at(q);
        [u[0] + w[0], u[1] + w[1], u[2] + w[2]]
    })
}

/// The exponential of a stationary velocity field by scaling and squaring: the velocity is
/// divided by 2^N so each step moves less than a quarter voxel, then the small deformation is
/// composed with itself N times. The result is a diffeomorphism (positive Jacobian) whose
/// inverse is the exponential of the negated velocity.
pub fn exponential(velocity: &DisplacementField) -> DisplacementField {
    let spacing = velocity.grid().spacing();
    let finest = spacing.iter().cloned().fold(f64::INFINITY, f64::min);
    let largest = max_displacement_mm(velocity);
    let mut steps = 4u32;
    while largest / f64::from(1u32 << steps) > 0.25 * finest && steps < 20 {
        steps += 1;
    }
    let mut field = scale_field(velocity, 1.0 / f64::from(1u32 << steps));
    for _ in 0..steps {
        field = compose(&field, &field);
    }
    field
}

/// Jacobian determinant of the mapping `p ↦ p + u(p)` at every voxel (central differences in
/// voxel space, one-sided at the border, converted to world millimetres).
pub fn jacobian_determinant(field: &DisplacementField) -> Image<f32> {
    let grid = field.grid().clone();
    let dims = grid.dims();
    let inverse_linear = grid.linear().try_inverse().expect("a valid grid has an invertible affine");
    let components = field.components();
    image_from_fn(&grid, |[i, j, k]| {
        let index = [i, j, k];
        // gradient[c][a] = ∂u_c / ∂(voxel axis a)
        let mut gradient = nalgebra::Matrix3::<f64>::zeros();
        for a in 0..3 {
            if dims[a] < 2 {
                continue;
            }
            let mut lo = index;
            let mut hi = index;
            lo[a] = index[a].saturating_sub(1);
            hi[a] = (index[a] + 1).min(dims[a] - 1);
            let span = (hi[a] - lo[a]) as f64;
            for c in 0..3 {
                let data = components[c].data();
                gradient[(c, a)] = (f64::from(data[hi]) - f64::from(data[lo])) / span;
            }
        }
        let jacobian = nalgebra::Matrix3::identity() + gradient * inverse_linear;
        jacobian.determinant() as f32
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_registration::SpatialTransform;

    fn grid() -> Grid {
        Grid::axis_aligned([24, 22, 20], [3.0; 3], [-36.0, -33.0, -30.0]).unwrap()
    }

    #[test]
    fn exponential_is_invertible_with_positive_jacobian() {
        let grid = grid();
        let velocity = random_velocity(&grid, 9.0, 5.0, 7, 0);
        let forward = exponential(&velocity);
        let backward = exponential(&scale_field(&velocity, -1.0));
        let largest = max_displacement_mm(&forward);
        assert!(largest > 2.5 && largest < 10.0, "max displacement {largest}");
        let det = jacobian_determinant(&forward);
        assert!(det.as_slice().iter().all(|&v| v > 0.0));
        // forward(backward(p)) ≈ p inside the grid (away from the zero-outside border).
        let mut worst: f64 = 0.0;
        for &(i, j, k) in &[(12, 11, 10), (8, 9, 6), (15, 13, 12), (10, 14, 9)] {
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let q = forward.transform_point(backward.transform_point(p));
            worst = worst.max((0..3).map(|a| (q[a] - p[a]).abs()).fold(0.0, f64::max));
        }
        assert!(worst < 0.3, "inverse error {worst} mm");
    }

    #[test]
    fn jacobian_of_uniform_scaling() {
        let grid = grid();
        let centre = grid.center_world();
        let field = field_from_fn(&grid, |[i, j, k]| {
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            [0.1 * (p[0] - centre[0]), 0.1 * (p[1] - centre[1]), 0.1 * (p[2] - centre[2])]
        });
        let det = jacobian_determinant(&field);
        assert!(det.as_slice().iter().all(|&v| (v - 1.331).abs() < 1e-3));
    }
}
