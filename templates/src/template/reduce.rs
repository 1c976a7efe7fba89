//! The reduce step of an iteration: the weighted average of the warped subjects, the shape
//! update toward the population centre and the optional sharpening.

use super::{Sharpening, SubjectMapping, TemplateError, WeightedMean, positive_mean};
use nalgebra::Matrix4;
use ndarray::Array3;
use pedinorm_registration::{
    AffineTransform, DisplacementField, Grid, Image, Interpolation, SpatialTransform, TransformChain,
    resample::resample,
};
use rayon::prelude::*;

/// The streaming reduce step of one iteration.
#[derive(Debug, Clone)]
pub struct ReduceAccumulator {
    images: WeightedMean,
    warp_sum: Option<[Vec<f64>; 3]>,
    warp_grid: Option<Grid>,
    affine_sum: Matrix4<f64>,
    scale_sum: f64,
    normalize_intensity: bool,
}

impl ReduceAccumulator {
    /// An empty reduce on the template grid.
    pub fn new(template_grid: &Grid, normalize_intensity: bool) -> Self {
        Self {
            images: WeightedMean::new(template_grid),
            warp_sum: None,
            warp_grid: None,
            affine_sum: Matrix4::zeros(),
            scale_sum: 0.0,
            normalize_intensity,
        }
    }

    /// Adds one subject's map output (subjects must be added in a fixed order).
    pub fn add(
        &mut self,
        warped: &Image<f32>,
        mapping: &SubjectMapping,
        weight: f64,
    ) -> Result<(), TemplateError> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(TemplateError::InvalidInput(format!(
                "subject weight {weight} must be finite and ≥ 0"
            )));
        }
        if weight == 0.0 {
            return Ok(());
        }
        let scale = if self.normalize_intensity { positive_mean(warped) } else { 1.0 };
        self.images.add(warped, weight, 1.0 / scale)?;
        self.scale_sum += weight * scale;
        self.affine_sum += mapping.affine.matrix() * weight;
        if let Some(warp) = &mapping.warp {
            match &self.warp_grid {
                None => {
                    self.warp_grid = Some(warp.grid().clone());
                    self.warp_sum = Some(std::array::from_fn(|_| vec![0.0; warp.grid().len()]));
                }
                Some(grid) if !grid.same_as(warp.grid(), 1e-6) => {
                    return Err(TemplateError::InvalidInput(
                        "warps of one iteration lie on different grids".into(),
                    ));
                }
                Some(_) => {}
            }
            let sums = self.warp_sum.as_mut().expect("set with grid");
            for (sum, component) in sums.iter_mut().zip(warp.components()) {
                sum.par_iter_mut()
                    .zip(component.as_slice().par_iter())
                    .for_each(|(s, &v)| *s += weight * v as f64);
            }
        }
        Ok(())
    }

    /// The weighted mean affine (template → subject), `None` before any subject.
    pub fn mean_affine(&self) -> Option<AffineTransform> {
        let w = self.images.total_weight();
        (w > 0.0).then(|| AffineTransform::from_matrix(self.affine_sum / w))
    }

    /// The weighted mean warp, `None` for affine-only iterations.
    pub fn mean_warp(&self) -> Option<DisplacementField> {
        let (sums, grid) = (self.warp_sum.as_ref()?, self.warp_grid.as_ref()?);
        let w = self.images.total_weight();
        let d = grid.dims();
        let components = std::array::from_fn(|a| {
            let data: Vec<f32> = sums[a].iter().map(|s| (s / w) as f32).collect();
            Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("size"), grid.clone())
                .expect("grid")
        });
        Some(DisplacementField::from_components(components))
    }

    /// Finishes the reduce: average, shape update, sharpening.
    pub fn finish(&self, gradient_step: f64, sharpening: Sharpening) -> Result<Image<f32>, TemplateError> {
        let mut average = self
            .images
            .finish()
            .ok_or_else(|| TemplateError::InvalidInput("no subject with positive weight".into()))?;
        let restore = (self.scale_sum / self.images.total_weight()) as f32;
        average.as_mut_slice().par_iter_mut().for_each(|v| *v *= restore);
        let mean_affine = self.mean_affine().expect("weight positive");
        let updated = shape_update(&average, &mean_affine, self.mean_warp().as_ref(), gradient_step)?;
        Ok(match sharpening {
            Sharpening::None => updated,
            Sharpening::Laplacian => sharpen_laplacian(&updated),
        })
    }
}

/// The shape update of antsMultivariateTemplateConstruction2: with the mean affine `Ā`
/// (template → subjects) and mean warp `ū`, the update field is `w(p) = −step · ū(Ā⁻¹p)` and the
/// new template is `T(w(w(w(w(Ā⁻¹p)))))`.
pub fn shape_update(
    average: &Image<f32>,
    mean_affine: &AffineTransform,
    mean_warp: Option<&DisplacementField>,
    gradient_step: f64,
) -> Result<Image<f32>, TemplateError> {
    let inverse = mean_affine
        .inverse()
        .ok_or_else(|| TemplateError::InvalidInput("the mean affine transform is singular".into()))?;
    let Some(mean_warp) = mean_warp else {
        return Ok(resample(average, average.grid(), &inverse, Interpolation::Linear, 0.0));
    };
    let grid = mean_warp.grid().clone();
    let d = grid.dims();
    let slab = d[1] * d[2];
    let mut components: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0.0; grid.len()]);
    let [cx, cy, cz] = &mut components;
    cx.par_chunks_mut(slab).zip(cy.par_chunks_mut(slab)).zip(cz.par_chunks_mut(slab)).enumerate().for_each(
        |(i, ((x, y), z))| {
            for j in 0..d[1] {
                for k in 0..d[2] {
                    let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    let u = mean_warp.displacement_at(inverse.transform_point(p));
                    let n = j * d[2] + k;
                    x[n] = (-gradient_step * u[0]) as f32;
                    y[n] = (-gradient_step * u[1]) as f32;
                    z[n] = (-gradient_step * u[2]) as f32;
                }
            }
        },
    );
    let update = DisplacementField::from_components(components.map(|c| {
        Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), c).expect("size"), grid.clone()).expect("grid")
    }));
    let chain = TransformChain::new(vec![&inverse, &update, &update, &update, &update]);
    Ok(resample(average, average.grid(), &chain, Interpolation::Linear, 0.0))
}

/// Laplacian sharpening `T − ΔT` (6-neighbour Laplacian in voxel units, edges replicated),
/// then rescaled so the foreground (voxels > 0 in `T`) keeps its mean and standard deviation;
/// the background keeps its values.
pub fn sharpen_laplacian(image: &Image<f32>) -> Image<f32> {
    let d = image.grid().dims();
    let data = image.as_slice();
    let at = |i: isize, j: isize, k: isize| {
        let i = i.clamp(0, d[0] as isize - 1) as usize;
        let j = j.clamp(0, d[1] as isize - 1) as usize;
        let k = k.clamp(0, d[2] as isize - 1) as usize;
        data[(i * d[1] + j) * d[2] + k]
    };
    let slab = d[1] * d[2];
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(slab).enumerate().for_each(|(i, chunk)| {
        let i = i as isize;
        for j in 0..d[1] as isize {
            for k in 0..d[2] as isize {
                let c = at(i, j, k);
                let laplacian = at(i - 1, j, k)
                    + at(i + 1, j, k)
                    + at(i, j - 1, k)
                    + at(i, j + 1, k)
                    + at(i, j, k - 1)
                    + at(i, j, k + 1)
                    - 6.0 * c;
                chunk[j as usize * d[2] + k as usize] = c - laplacian;
            }
        }
    });
    let stats = |values: &mut dyn Iterator<Item = f64>| {
        let (mut n, mut s, mut ss) = (0.0, 0.0, 0.0);
        for v in values {
            n += 1.0;
            s += v;
            ss += v * v;
        }
        if n == 0.0 {
            return (0.0, 1.0);
        }
        let mean = s / n;
        (mean, ((ss / n - mean * mean).max(0.0)).sqrt())
    };
    let (mean0, sd0) = stats(&mut data.iter().filter(|v| **v > 0.0).map(|&v| v as f64));
    let (mean1, sd1) = stats(&mut data.iter().zip(&out).filter(|(v, _)| **v > 0.0).map(|(_, &s)| s as f64));
    let gain = if sd1 > 0.0 { sd0 / sd1 } else { 1.0 };
    // Values may undershoot below 0 next to edges, as with ANTs' sharpening; the background
    // (voxels ≤ 0 in the input) is kept as it was.
    out.par_iter_mut().zip(data.par_iter()).for_each(|(s, &v)| {
        *s = if v > 0.0 { ((*s as f64 - mean1) * gain + mean0) as f32 } else { v };
    });
    image.with_data(Array3::from_shape_vec((d[0], d[1], d[2]), out).expect("size")).expect("grid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::testing::{Translation, ellipsoid, grid};
    use crate::template::{MapStage, centre_of_mass, map_subject};

    #[test]
    fn reduce_averages_and_shape_update_moves_template_to_population_centre() {
        let g = grid();
        // Subjects are the template shifted by +3 and +5 mm: template → subject translation.
        let template = ellipsoid(&g, [0.0, 0.0, 0.0], [10.0, 8.0, 6.0]);
        let subjects = [
            ellipsoid(&g, [3.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
            ellipsoid(&g, [5.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
        ];
        let mut reduce = ReduceAccumulator::new(&g, true);
        for subject in &subjects {
            let out = map_subject(&template, subject, MapStage::Affine, &Translation).unwrap();
            assert!(out.similarity > 0.99, "{}", out.similarity);
            reduce.add(&out.warped, &out.mapping, 1.0).unwrap();
        }
        let mean = reduce.mean_affine().unwrap();
        assert!((mean.matrix()[(0, 3)] - 4.0).abs() < 0.3, "{}", mean.matrix());
        let updated = reduce.finish(0.25, Sharpening::None).unwrap();
        let c = centre_of_mass(&updated);
        assert!((c[0] - 4.0).abs() < 0.3, "{c:?}");
    }

    #[test]
    fn mean_warp_update_moves_against_the_warp() {
        let g = grid();
        let average = ellipsoid(&g, [0.0; 3], [10.0, 8.0, 6.0]);
        let mut warp = DisplacementField::zeros(&g);
        warp.components_mut()[0].as_mut_slice().iter_mut().for_each(|v| *v = 2.0);
        let updated = shape_update(&average, &AffineTransform::identity(), Some(&warp), 0.25).unwrap();
        // −0.25 × 2 mm applied four times: content moves by +2 mm.
        let c = centre_of_mass(&updated);
        assert!((c[0] - 2.0).abs() < 0.2, "{c:?}");
    }

    #[test]
    fn weights_decide_the_average() {
        let g = grid();
        let a = Image::filled(g.clone(), 1.0f32);
        let b = Image::filled(g.clone(), 3.0f32);
        let identity = SubjectMapping { affine: AffineTransform::identity(), warp: None };
        let mut reduce = ReduceAccumulator::new(&g, false);
        reduce.add(&a, &identity, 3.0).unwrap();
        reduce.add(&b, &identity, 1.0).unwrap();
        reduce.add(&b, &identity, 0.0).unwrap();
        let t = reduce.finish(0.25, Sharpening::None).unwrap();
        assert!((t.data()[[10, 10, 10]] - 1.5).abs() < 1e-6);
        assert!(ReduceAccumulator::new(&g, false).finish(0.25, Sharpening::None).is_err());
        assert!(reduce.add(&a, &identity, f64::NAN).is_err());
    }

    #[test]
    fn sharpening_increases_sharpness_and_keeps_mean() {
        let g = grid();
        let blurred =
            pedinorm_registration::smooth::smooth_mm(&ellipsoid(&g, [0.0; 3], [10.0, 8.0, 6.0]), 2.0);
        let sharpened = sharpen_laplacian(&blurred);
        assert!(crate::qc::sharpness(&sharpened) > crate::qc::sharpness(&blurred));
        // The foreground mean is kept.
        let mean = |im: &Image<f32>| {
            let values: Vec<f64> = blurred
                .as_slice()
                .iter()
                .zip(im.as_slice())
                .filter(|(b, _)| **b > 0.0)
                .map(|(_, &v)| v as f64)
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        };
        assert!((mean(&sharpened) - mean(&blurred)).abs() / mean(&blurred) < 1e-4);
    }

    #[test]
    fn reduce_is_deterministic_across_thread_counts() {
        let g = grid();
        let template = ellipsoid(&g, [0.0; 3], [10.0, 8.0, 6.0]);
        let subjects: Vec<_> = (0..3)
            .map(|i| ellipsoid(&g, [i as f64, -(i as f64), 0.5], [10.0 + i as f64, 8.0, 6.0]))
            .collect();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let mut reduce = ReduceAccumulator::new(&g, true);
                for s in &subjects {
                    let out = map_subject(&template, s, MapStage::AffineAndDeformable, &Translation).unwrap();
                    reduce.add(&out.warped, &out.mapping, 0.7).unwrap();
                }
                reduce.finish(0.25, Sharpening::Laplacian).unwrap()
            })
        };
        assert_eq!(run(1).as_slice(), run(2).as_slice());
    }
}
