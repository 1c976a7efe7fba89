//! The first target of a build: the subjects' centres of mass aligned and averaged, on the
//! template grid.

use super::TemplateError;
use nalgebra::Matrix4;
use ndarray::Array3;
use pedinorm_registration::{AffineTransform, Grid, Image, Interpolation, resample::resample};
use rayon::prelude::*;

/// Intensity centre of mass (world mm) of the positive voxels; the grid centre when none.
pub fn centre_of_mass(image: &Image<f32>) -> [f64; 3] {
    let dims = image.grid().dims();
    let data = image.as_slice();
    // Per-slab sums in slab order: deterministic at any thread count.
    let partial: Vec<[f64; 4]> = (0..dims[0])
        .into_par_iter()
        .map(|i| {
            let mut s = [0.0f64; 4];
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let v = data[(i * dims[1] + j) * dims[2] + k];
                    if v > 0.0 {
                        let v = v as f64;
                        s[0] += v * i as f64;
                        s[1] += v * j as f64;
                        s[2] += v * k as f64;
                        s[3] += v;
                    }
                }
            }
            s
        })
        .collect();
    let mut total = [0.0f64; 4];
    for s in &partial {
        for a in 0..4 {
            total[a] += s[a];
        }
    }
    if total[3] <= 0.0 {
        return image.grid().center_world();
    }
    image.grid().voxel_to_world([total[0] / total[3], total[1] / total[3], total[2] / total[3]])
}

/// The template grid: the reference image's grid, resampled to `spacing_mm` (isotropic)
/// over the same field of view when given.
pub fn template_grid(reference: &Grid, spacing_mm: Option<f64>) -> Grid {
    let Some(spacing) = spacing_mm else { return reference.clone() };
    let current = reference.spacing();
    let mut dims = [0usize; 3];
    let mut affine = *reference.affine();
    let old_dims = reference.dims();
    // Keep the field of view: the outer voxel edges stay where they were.
    let mut offset = nalgebra::Vector4::new(0.0, 0.0, 0.0, 1.0);
    for a in 0..3 {
        let extent = old_dims[a] as f64 * current[a];
        dims[a] = ((extent / spacing).round() as usize).max(1);
        let scale = extent / dims[a] as f64 / current[a];
        offset[a] = 0.5 * scale - 0.5;
        for r in 0..3 {
            affine[(r, a)] = reference.affine()[(r, a)] * scale;
        }
    }
    let shifted = reference.affine() * offset;
    for r in 0..3 {
        affine[(r, 3)] = shifted[r];
    }
    Grid::new(dims, affine).expect("a rescaled valid grid is valid")
}

/// A running weighted mean of images on one grid, accumulated in call order (deterministic).
#[derive(Debug, Clone)]
pub struct WeightedMean {
    sum: Vec<f64>,
    grid: Grid,
    weight: f64,
}

impl WeightedMean {
    /// An empty mean on `grid`.
    pub fn new(grid: &Grid) -> Self {
        Self { sum: vec![0.0; grid.len()], grid: grid.clone(), weight: 0.0 }
    }

    /// Adds `scale × image` with weight `weight` (image must be on the mean's grid).
    pub fn add(&mut self, image: &Image<f32>, weight: f64, scale: f64) -> Result<(), TemplateError> {
        if !image.grid().same_as(&self.grid, 1e-6) {
            return Err(TemplateError::InvalidInput("image grid differs from the template grid".into()));
        }
        let factor = weight * scale;
        self.sum.par_iter_mut().zip(image.as_slice().par_iter()).for_each(|(s, &v)| *s += factor * v as f64);
        self.weight += weight;
        Ok(())
    }

    /// Total weight added.
    pub fn total_weight(&self) -> f64 {
        self.weight
    }

    /// The mean image, `None` when no weight was added.
    pub fn finish(&self) -> Option<Image<f32>> {
        if self.weight <= 0.0 {
            return None;
        }
        let d = self.grid.dims();
        let data: Vec<f32> = self.sum.par_iter().map(|s| (s / self.weight) as f32).collect();
        Some(
            Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("size"), self.grid.clone())
                .expect("grid"),
        )
    }
}

/// Mean of the positive voxels (the scale used for intensity normalization); 1 when none.
pub fn positive_mean(image: &Image<f32>) -> f64 {
    let (sum, count) = image
        .as_slice()
        .iter()
        .filter(|v| **v > 0.0)
        .fold((0.0f64, 0usize), |(s, c), &v| (s + v as f64, c + 1));
    if count == 0 || sum <= 0.0 { 1.0 } else { sum / count as f64 }
}

/// The starting target: weighted average of the subjects on `grid`, each translated so its
/// centre of mass lands on the weighted mean centre of mass (placed at the grid's own centre
/// of mass of the first subject's frame). `subjects` yields `(image, weight)` in a fixed
/// order; images are visited twice (centres first), so it is a closure producing them.
pub fn init_target(
    grid: &Grid,
    count: usize,
    mut subject: impl FnMut(usize) -> Result<(Image<f32>, f64), TemplateError>,
    normalize_intensity: bool,
) -> Result<Image<f32>, TemplateError> {
    let mut centres = Vec::with_capacity(count);
    let mut mean_centre = [0.0f64; 3];
    let mut total = 0.0;
    let mut images = Vec::new();
    for index in 0..count {
        let (image, weight) = subject(index)?;
        let centre = centre_of_mass(&image);
        for a in 0..3 {
            mean_centre[a] += weight * centre[a];
        }
        total += weight;
        centres.push(centre);
        // Keep images only for small counts; otherwise they are read again below.
        if count <= 64 {
            images.push(Some((image, weight)));
        } else {
            images.push(None);
        }
    }
    if total <= 0.0 {
        return Err(TemplateError::InvalidInput("subject weights sum to zero".into()));
    }
    for c in &mut mean_centre {
        *c /= total;
    }
    let mut mean = WeightedMean::new(grid);
    let mut scale_sum = 0.0;
    for index in 0..count {
        let (image, weight) = match images[index].take() {
            Some(pair) => pair,
            None => subject(index)?,
        };
        if weight <= 0.0 {
            continue;
        }
        let mut matrix = Matrix4::identity();
        for a in 0..3 {
            matrix[(a, 3)] = centres[index][a] - mean_centre[a];
        }
        let translated =
            resample(&image, grid, &AffineTransform::from_matrix(matrix), Interpolation::Linear, 0.0);
        let scale = if normalize_intensity { positive_mean(&translated) } else { 1.0 };
        mean.add(&translated, weight, 1.0 / scale)?;
        scale_sum += weight * scale;
    }
    let mut template = mean.finish().expect("weights positive");
    let restore = (scale_sum / mean.total_weight()) as f32;
    template.as_mut_slice().par_iter_mut().for_each(|v| *v *= restore);
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::registration_grid;
    use crate::template::testing::{ellipsoid, grid};

    #[test]
    fn centre_of_mass_finds_the_blob() {
        let image = ellipsoid(&grid(), [4.0, -2.0, 3.0], [10.0, 8.0, 6.0]);
        let c = centre_of_mass(&image);
        assert!((c[0] - 4.0).abs() < 0.2 && (c[1] + 2.0).abs() < 0.2 && (c[2] - 3.0).abs() < 0.2, "{c:?}");
    }

    #[test]
    fn init_target_aligns_centres() {
        let g = grid();
        let subjects = [
            ellipsoid(&g, [-4.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
            ellipsoid(&g, [4.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
        ];
        let target = init_target(&g, 2, |i| Ok((subjects[i].clone(), 1.0)), true).unwrap();
        // Both blobs land at x = 0: the average is as sharp as one centred blob.
        let centred = ellipsoid(&g, [0.0, 0.0, 0.0], [10.0, 8.0, 6.0]);
        let correlation = crate::qc::foreground_correlation(&centred, &target);
        assert!(correlation > 0.99, "{correlation}");
    }

    #[test]
    fn template_grid_keeps_field_of_view() {
        let reference = Grid::axis_aligned([40, 40, 40], [1.0; 3], [-19.5, -19.5, -19.5]).unwrap();
        let coarse = template_grid(&reference, Some(2.0));
        assert_eq!(coarse.dims(), [20, 20, 20]);
        assert!((coarse.spacing()[0] - 2.0).abs() < 1e-12);
        let c0 = reference.center_world();
        let c1 = coarse.center_world();
        assert!((c0[0] - c1[0]).abs() < 1e-9);
        assert_eq!(template_grid(&reference, None), reference);
        assert_eq!(registration_grid(&reference, 2.0).dims(), [20, 20, 20]);
    }
}
