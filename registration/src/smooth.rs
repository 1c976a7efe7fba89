//! Separable Gaussian smoothing and multi-resolution pyramids.

use crate::image::Image;
use ndarray::Array3;
use rayon::prelude::*;

/// A normalized 1-D Gaussian kernel of standard deviation `sigma_voxels`, truncated at 3σ.
pub fn gaussian_kernel(sigma_voxels: f64) -> Vec<f32> {
    if sigma_voxels <= 1e-6 {
        return vec![1.0];
    }
    let radius = (3.0 * sigma_voxels).ceil() as i64;
    let mut kernel: Vec<f64> =
        (-radius..=radius).map(|x| (-(x * x) as f64 / (2.0 * sigma_voxels * sigma_voxels)).exp()).collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|v| *v /= sum);
    kernel.into_iter().map(|v| v as f32).collect()
}

/// Convolves `data` along one axis with `kernel`, replicating edge values.
///
/// Works on whole contiguous rows (axes 0 and 1 accumulate shifted rows; axis 2 runs along
/// each row through a small padded buffer) so memory is read in order; parallel over the
/// first axis, every output voxel computed independently (bit-identical at any thread count).
pub fn convolve_axis(data: &Array3<f32>, axis: usize, kernel: &[f32]) -> Array3<f32> {
    if kernel.len() == 1 {
        return data.clone();
    }
    let (n0, n1, n2) = data.dim();
    let input = data.as_standard_layout();
    let input = input.as_slice().expect("standard layout");
    let mut out = vec![0f32; n0 * n1 * n2];
    convolve_axis_slice(input, &mut out, [n0, n1, n2], axis, kernel);
    Array3::from_shape_vec((n0, n1, n2), out).expect("shape preserved")
}

/// [`convolve_axis`] on flat C-order buffers of shape `dims` (`output` fully overwritten).
pub fn convolve_axis_slice(input: &[f32], output: &mut [f32], dims: [usize; 3], axis: usize, kernel: &[f32]) {
    let [n0, n1, n2] = dims;
    let radius = (kernel.len() / 2) as isize;
    let slab = n1 * n2;
    if kernel.len() == 1 {
        output.copy_from_slice(input);
        return;
    }
    output.par_chunks_mut(slab).enumerate().for_each(|(i, out_slab)| match axis {
        0 => {
            out_slab.iter_mut().for_each(|v| *v = 0.0);
            for (t, &w) in kernel.iter().enumerate() {
                let s = (i as isize + t as isize - radius).clamp(0, n0 as isize - 1) as usize;
                let src = &input[s * slab..(s + 1) * slab];
                out_slab.iter_mut().zip(src).for_each(|(o, &x)| *o += w * x);
            }
        }
        1 => {
            for j in 0..n1 {
                let row = &mut out_slab[j * n2..(j + 1) * n2];
                row.iter_mut().for_each(|v| *v = 0.0);
                for (t, &w) in kernel.iter().enumerate() {
                    let s = (j as isize + t as isize - radius).clamp(0, n1 as isize - 1) as usize;
                    let src = &input[i * slab + s * n2..i * slab + (s + 1) * n2];
                    row.iter_mut().zip(src).for_each(|(o, &x)| *o += w * x);
                }
            }
        }
        _ => {
            // Along the contiguous axis: accumulate shifted copies of a padded row, which
            // vectorizes (a per-output dot product would not, for floating-point order).
            let r = radius as usize;
            let mut padded = vec![0f32; n2 + 2 * r];
            for j in 0..n1 {
                let src = &input[i * slab + j * n2..i * slab + (j + 1) * n2];
                padded[..r].iter_mut().for_each(|v| *v = src[0]);
                padded[r..r + n2].copy_from_slice(src);
                padded[r + n2..].iter_mut().for_each(|v| *v = src[n2 - 1]);
                let row = &mut out_slab[j * n2..(j + 1) * n2];
                row.iter_mut().for_each(|v| *v = 0.0);
                for (t, &w) in kernel.iter().enumerate() {
                    row.iter_mut().zip(&padded[t..t + n2]).for_each(|(o, &x)| *o += w * x);
                }
            }
        }
    });
}

/// Gaussian smoothing of a flat C-order buffer of shape `dims` in place (σ in voxels per axis).
pub fn smooth_slice_in_place(data: &mut [f32], dims: [usize; 3], sigma_voxels: [f64; 3]) {
    let mut scratch = vec![0f32; data.len()];
    for (axis, &sigma) in sigma_voxels.iter().enumerate() {
        if sigma > 1e-6 {
            convolve_axis_slice(data, &mut scratch, dims, axis, &gaussian_kernel(sigma));
            data.copy_from_slice(&scratch);
        }
    }
}

/// Gaussian smoothing with standard deviation given in voxels per axis.
pub fn smooth_voxels(image: &Image<f32>, sigma_voxels: [f64; 3]) -> Image<f32> {
    let mut out = image.clone();
    let dims = image.grid().dims();
    smooth_slice_in_place(out.as_mut_slice(), dims, sigma_voxels);
    out
}

/// Gaussian smoothing with standard deviation in millimetres (isotropic in world space).
pub fn smooth_mm(image: &Image<f32>, sigma_mm: f64) -> Image<f32> {
    let spacing = image.grid().spacing();
    smooth_voxels(image, [sigma_mm / spacing[0], sigma_mm / spacing[1], sigma_mm / spacing[2]])
}

/// Full width at half maximum (mm) → Gaussian standard deviation (mm).
pub fn fwhm_to_sigma(fwhm_mm: f64) -> f64 {
    fwhm_mm / (8.0 * std::f64::consts::LN_2).sqrt()
}

/// Downsamples by an integer factor after anti-alias smoothing (σ = factor/2 voxels), onto
/// the grid [`crate::Grid::shrink`] gives. Factor 1 returns a copy.
pub fn shrink(image: &Image<f32>, factor: usize) -> Image<f32> {
    if factor <= 1 {
        return image.clone();
    }
    shrink_axes(image, [factor; 3])
}

/// [`shrink`] with its own factor per axis (anisotropic voxels to a near-isotropic grid);
/// axes with factor 1 are neither smoothed nor subsampled.
pub fn shrink_axes(image: &Image<f32>, factors: [usize; 3]) -> Image<f32> {
    let sigma = factors.map(|f| if f > 1 { f as f64 / 2.0 } else { 0.0 });
    let smoothed = smooth_voxels(image, sigma);
    let target = image.grid().shrink_axes(factors);
    crate::resample::resample(
        &smoothed,
        &target,
        &crate::transform::Identity,
        crate::interpolate::Interpolation::Linear,
        0.0,
    )
}

/// One pyramid level: `image` shrunk by `factor` after Gaussian smoothing of `sigma_voxels`
/// (in voxels of the full-resolution image; at least `factor / 2` when shrinking, to avoid
/// aliasing). Power-of-two factors are reached by repeated halving, which costs a fraction
/// of smoothing the full-resolution image with a wide kernel.
pub fn pyramid_level(image: &Image<f32>, factor: usize, sigma_voxels: f64) -> Image<f32> {
    let factor = factor.max(1);
    let mut current = image.clone();
    let mut reached = 1usize;
    while factor % (reached * 2) == 0 {
        current = shrink(&current, 2);
        reached *= 2;
    }
    if factor / reached > 1 {
        current = shrink(&current, factor / reached);
    }
    // Smoothing already applied, in full-resolution voxels: about factor/2 when shrunk.
    let applied = if factor > 1 { factor as f64 / 2.0 } else { 0.0 };
    let extra = (sigma_voxels * sigma_voxels - applied * applied).max(0.0).sqrt() / factor as f64;
    if extra > 1e-3 { smooth_voxels(&current, [extra; 3]) } else { current }
}

/// One pyramid level with anti-aliasing smoothing only (σ = half the level's voxel size,
/// [`crate::plan::Smoothing::AntiAliasing`]); factor 1 returns a copy.
pub fn anti_aliased_level(image: &Image<f32>, factor: usize) -> Image<f32> {
    pyramid_level(image, factor, anti_aliasing_sigma_voxels(factor))
}

/// The anti-aliasing σ of shrinking by `factor`, in full-resolution voxels: half the shrunken
/// voxel size, none without shrinking.
pub fn anti_aliasing_sigma_voxels(factor: usize) -> f64 {
    if factor > 1 { factor as f64 / 2.0 } else { 0.0 }
}

/// Shrink factors adapted to an image: each requested factor is capped so the shrunken image
/// keeps at least `min_voxels` voxels along its shortest axis.
pub fn adapt_shrink_factors(dims: [usize; 3], requested: &[usize], min_voxels: usize) -> Vec<usize> {
    let shortest = *dims.iter().min().expect("three dims");
    let cap = (shortest / min_voxels.max(1)).max(1);
    requested.iter().map(|&f| f.clamp(1, cap)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;

    #[test]
    fn kernel_sums_to_one() {
        let k = gaussian_kernel(2.0);
        assert_eq!(k.len(), 13);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn smoothing_preserves_constant_and_mass() {
        let grid = Grid::axis_aligned([9, 10, 11], [1.0; 3], [0.0; 3]).unwrap();
        let constant = Image::filled(grid.clone(), 3.0f32);
        let s = smooth_voxels(&constant, [1.5, 1.0, 2.0]);
        assert!(s.as_slice().iter().all(|v| (v - 3.0).abs() < 1e-5));
        let mut spike = Image::filled(grid, 0.0f32);
        spike.data_mut()[[4, 5, 5]] = 1.0;
        let s = smooth_voxels(&spike, [1.0; 3]);
        assert!((s.as_slice().iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(s.data()[[4, 5, 5]] > s.data()[[5, 5, 5]]);
    }

    #[test]
    fn shrink_halves_dims() {
        let grid = Grid::axis_aligned([16, 16, 16], [1.0; 3], [0.0; 3]).unwrap();
        let img = Image::filled(grid, 2.0f32);
        let s = shrink(&img, 2);
        assert_eq!(s.grid().dims(), [8, 8, 8]);
        assert!(s.as_slice().iter().all(|v| (v - 2.0).abs() < 1e-5));
    }
}
