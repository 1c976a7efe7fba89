//! Scanner effects: a smooth multiplicative bias field and Rician noise.

use crate::rng::{standard_normal, stream, streams};
use crate::warp::image_from_fn;
use pedinorm_registration::{Grid, Image};
use rand::Rng;
use rayon::prelude::*;

/// A smooth multiplicative bias field: `exp` of a random quadratic polynomial of the world
/// coordinates (relative to the grid centre, in units of 80 mm), scaled so that its largest
/// over smallest value within `mask` is `1 + strength`, and centred so their geometric mean
/// is 1. Low-order polynomials are what N4-style correctors model, and what receive-coil
/// sensitivity looks like at brain scale.
pub fn bias_field(grid: &Grid, mask: &Image<f32>, strength: f64, rng: &mut impl Rng) -> Image<f32> {
    let coefficients: Vec<f64> = (0..9).map(|_| standard_normal(rng)).collect();
    let centre = grid.center_world();
    let polynomial = |[i, j, k]: [usize; 3]| -> f64 {
        let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
        let (x, y, z) = ((p[0] - centre[0]) / 80.0, (p[1] - centre[1]) / 80.0, (p[2] - centre[2]) / 80.0);
        let terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z];
        terms.iter().zip(&coefficients).map(|(t, c)| t * c).sum()
    };
    let values = image_from_fn(grid, |v| polynomial(v) as f32);
    let (low, high) = values
        .as_slice()
        .iter()
        .zip(mask.as_slice())
        .filter(|(_, m)| **m > 0.5)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (v, _)| (lo.min(*v), hi.max(*v)));
    if high <= low || !high.is_finite() || strength <= 0.0 {
        return Image::filled(grid.clone(), 1.0);
    }
    let middle = 0.5 * (f64::from(low) + f64::from(high));
    let gain = (1.0 + strength).ln() / (f64::from(high) - f64::from(low));
    values.map(|&v| ((f64::from(v) - middle) * gain).exp() as f32)
}

/// Rician noise of standard deviation `sigma`: the magnitude of the signal plus complex
/// Gaussian noise, `sqrt((s + σ n₁)² + (σ n₂)²)`, as in magnitude MR images. Each `i` slab
/// draws from its own seeded stream, so the result is independent of the thread count.
pub fn rician_noise(signal: &Image<f32>, sigma: f64, seed: u64) -> Image<f32> {
    if sigma <= 0.0 {
        return signal.clone();
    }
    let dims = signal.grid().dims();
    let slab = dims[1] * dims[2];
    let mut out = signal.clone();
    out.as_mut_slice().par_chunks_mut(slab).enumerate().for_each(|(i, chunk)| {
        let mut rng = stream(seed, (streams::NOISE << 32) + i as u64);
        for value in chunk.iter_mut() {
            let real = f64::from(*value) + sigma * standard_normal(&mut rng);
            let imaginary = sigma * standard_normal(&mut rng);
            *value = (real * real + imaginary * imaginary).sqrt() as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_has_the_requested_range() {
        let grid = Grid::axis_aligned([20, 20, 20], [5.0; 3], [-50.0; 3]).unwrap();
        let mask = Image::filled(grid.clone(), 1.0f32);
        let field = bias_field(&grid, &mask, 0.2, &mut stream(3, 0));
        let (lo, hi) = field.finite_range().unwrap();
        assert!(((hi / lo) as f64 - 1.2).abs() < 1e-3, "{lo} {hi}");
        assert!(lo < 1.0 && hi > 1.0);
    }

    #[test]
    fn rician_noise_statistics() {
        let grid = Grid::axis_aligned([30, 30, 30], [1.0; 3], [0.0; 3]).unwrap();
        let background = Image::filled(grid.clone(), 0.0f32);
        let noisy = rician_noise(&background, 2.0, 9);
        // Rayleigh mean is σ √(π/2).
        let mean = noisy.as_slice().iter().map(|&v| f64::from(v)).sum::<f64>() / grid.len() as f64;
        assert!((mean - 2.0 * (std::f64::consts::PI / 2.0).sqrt()).abs() < 0.05, "{mean}");
        let bright = Image::filled(grid.clone(), 100.0f32);
        let noisy = rician_noise(&bright, 2.0, 9);
        let values: Vec<f64> = noisy.as_slice().iter().map(|&v| f64::from(v)).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        assert!((mean - 100.0).abs() < 0.1 && (sd - 2.0).abs() < 0.05, "{mean} {sd}");
    }
}
