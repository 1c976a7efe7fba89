//! A template space: the template, its mask, the voxel order of the statistics and the
//! intensity landmarks subjects are matched to; moving values between volumes and that order.

use super::ModelError;
use super::database::mask_indices;
use ndarray::Array3;
use pedinorm_registration::Image;
use pedinorm_registration::intensity::{BrainMaskParams, brain_mask_from_intensity};

/// A template with its mask and the intensity scale subjects are matched to.
#[derive(Debug, Clone)]
pub struct TemplateSpace {
    /// Template image.
    pub template: Image<f32>,
    /// Brain mask of the template.
    pub mask: Image<f32>,
    /// Flat indices of the mask voxels (the statistics' voxel order).
    pub indices: Vec<usize>,
    /// Template intensities at [`MATCH_PERCENTILES`] inside the mask.
    pub landmarks: Vec<f64>,
}

/// Percentiles at which subject intensities are matched to the template (piecewise linear).
pub const MATCH_PERCENTILES: [f64; 11] = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99];

impl TemplateSpace {
    /// Volume of the template's brain mask (ml).
    pub fn brain_volume_ml(&self) -> f64 {
        let s = self.mask.grid().spacing();
        self.indices.len() as f64 * s[0] * s[1] * s[2] / 1000.0
    }

    /// A template space; the mask is computed from the template when not given.
    pub fn new(template: Image<f32>, mask: Option<Image<f32>>) -> Result<Self, ModelError> {
        let mask = match mask {
            Some(m) => m,
            None => template_mask(&template)?,
        };
        if !mask.grid().same_as(template.grid(), 1e-3) {
            return Err(ModelError::Config("template mask is on another grid than the template".into()));
        }
        let indices = mask_indices(&mask);
        if indices.len() < 27 {
            return Err(ModelError::Config(format!("template mask has only {} voxels", indices.len())));
        }
        let landmarks = percentiles_in_mask(&template, &indices, &MATCH_PERCENTILES);
        Ok(Self { template, mask, indices, landmarks })
    }
}

/// Brain mask of a template: intensity-based, without requiring a skull.
pub fn template_mask(template: &Image<f32>) -> Result<Image<f32>, ModelError> {
    brain_mask_from_intensity(template, &BrainMaskParams::default()).map_err(|e| ModelError::Subject {
        subject: "template".into(),
        stage: "brain mask",
        message: e.to_string(),
    })
}

fn percentiles_in_mask(image: &Image<f32>, indices: &[usize], percentiles: &[f64]) -> Vec<f64> {
    let data = image.as_slice();
    let mut values: Vec<f32> = indices.iter().map(|&i| data[i]).collect();
    values.sort_unstable_by(|a, b| a.total_cmp(b));
    percentiles
        .iter()
        .map(|&p| {
            let position = p * (values.len() - 1) as f64;
            let lo = position.floor() as usize;
            let hi = position.ceil() as usize;
            let t = position - lo as f64;
            values[lo] as f64 * (1.0 - t) + values[hi] as f64 * t
        })
        .collect()
}

/// Pearson correlation of two images over the given voxels.
pub fn masked_correlation(a: &Image<f32>, b: &Image<f32>, indices: &[usize]) -> f64 {
    let (da, db) = (a.as_slice(), b.as_slice());
    let n = indices.len() as f64;
    let (mut sa, mut sb) = (0.0, 0.0);
    for &i in indices {
        sa += da[i] as f64;
        sb += db[i] as f64;
    }
    let (ma, mb) = (sa / n, sb / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for &i in indices {
        let (x, y) = (da[i] as f64 - ma, db[i] as f64 - mb);
        cov += x * y;
        va += x * x;
        vb += y * y;
    }
    if va > 0.0 && vb > 0.0 { cov / (va * vb).sqrt() } else { 0.0 }
}

/// The template a member of it would have had without it: `(members · T − W) / (members − 1)`
/// for one of the `members` normals the template was averaged from, `W` its warped image
/// (approximately: the template is the members' sharpened average, and `W` is this mapping's
/// warped image, not the build's last one). Mask, voxel order and intensity landmarks stay the
/// template's, so maps made against it are on the statistics' scale. `None` for fewer than two
/// members.
pub fn without_member(space: &TemplateSpace, warped: &Image<f32>, members: usize) -> Option<TemplateSpace> {
    if members < 2 {
        return None;
    }
    let n = members as f32;
    let mut template = space.template.clone();
    for (t, &w) in template.as_mut_slice().iter_mut().zip(warped.as_slice()) {
        *t = (n * *t - w) / (n - 1.0);
    }
    Some(TemplateSpace { template, ..space.clone() })
}

/// The similarity of a normal as recorded in the database: [`masked_correlation`] of its warped
/// image with the template, or, for one of the `members` normals the template was averaged
/// from, with the template without it ([`without_member`]).
/// A member is part of the average it is compared with, so its plain similarity is optimistic
/// (13 real adult brains: members 0.70, held-out brains of the same scanner 0.67), and the
/// out-of-distribution reference built from these values must describe new cases.
pub fn recorded_similarity(space: &TemplateSpace, warped: &Image<f32>, members: Option<usize>) -> f64 {
    match members.and_then(|n| without_member(space, warped, n)) {
        Some(without) => masked_correlation(&without.template, warped, &space.indices),
        None => masked_correlation(&space.template, warped, &space.indices),
    }
}

/// Values of `image` at `indices`.
pub fn gather(image: &Image<f32>, indices: &[usize]) -> Vec<f32> {
    let data = image.as_slice();
    indices.iter().map(|&i| data[i]).collect()
}

/// A volume on `grid` holding `values` at `indices` and `fill` elsewhere.
pub fn scatter(
    grid: &pedinorm_registration::Grid,
    indices: &[usize],
    values: &[f32],
    fill: f32,
) -> Image<f32> {
    let mut data = vec![fill; grid.len()];
    for (&i, &v) in indices.iter().zip(values) {
        data[i] = v;
    }
    let d = grid.dims();
    Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("grid size"), grid.clone())
        .expect("shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_gather_round_trip() {
        let grid = pedinorm_registration::Grid::axis_aligned([3, 4, 5], [1.0; 3], [0.0; 3]).unwrap();
        let indices = vec![1, 7, 30, 59];
        let volume = scatter(&grid, &indices, &[1.0, 2.0, 3.0, 4.0], -1.0);
        assert_eq!(gather(&volume, &indices), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(volume.as_slice()[0], -1.0);
    }

    #[test]
    fn a_member_is_compared_with_the_template_of_the_other_members() {
        let grid = pedinorm_registration::Grid::axis_aligned([6, 6, 6], [1.0; 3], [0.0; 3]).unwrap();
        let shape: Vec<f32> = (0..grid.len()).map(|i| 100.0 + (i % 17) as f32 * 3.0).collect();
        // Four members: a shared shape and each its own deterministic texture.
        let members: Vec<Vec<f32>> = (0..4u64)
            .map(|m| {
                shape
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let h = (i as u64 + 1)
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(m * 1442695040888963407);
                        v + ((h >> 40) % 1000) as f32 / 40.0
                    })
                    .collect()
            })
            .collect();
        let mean = |set: &[&Vec<f32>]| -> Vec<f32> {
            (0..grid.len()).map(|i| set.iter().map(|m| m[i]).sum::<f32>() / set.len() as f32).collect()
        };
        let all: Vec<&Vec<f32>> = members.iter().collect();
        let template = scatter(&grid, &(0..grid.len()).collect::<Vec<_>>(), &mean(&all), 0.0);
        let mask = template.map(|_| 1.0f32);
        let space = TemplateSpace::new(template, Some(mask)).unwrap();
        let indices: Vec<usize> = (0..grid.len()).collect();
        let first = scatter(&grid, &indices, &members[0], 0.0);
        let others = scatter(&grid, &indices, &mean(&all[1..]), 0.0);

        let plain = recorded_similarity(&space, &first, None);
        let as_member = recorded_similarity(&space, &first, Some(4));
        assert!((plain - masked_correlation(&space.template, &first, &indices)).abs() < 1e-12);
        assert!((as_member - masked_correlation(&others, &first, &indices)).abs() < 1e-4, "{as_member}");
        assert!(as_member < plain - 0.01, "a member's own similarity is optimistic: {as_member} vs {plain}");
        assert_eq!(recorded_similarity(&space, &first, Some(1)), plain);
    }
}
