//! Tissue prior maps of a template: the mean CSF, grey- and white-matter probabilities of the
//! normals mapped to it. Each normal's warped image is segmented in template space with the
//! template's own segmentation as its priors; the bracket's priors are the mean of those
//! probabilities over its QC-passed normals, summed in a fixed order. Priors combine like the
//! statistics: by their member counts (merge, one more normal).

use super::ModelError;
use super::space::{TemplateSpace, gather, scatter};
use pedinorm_registration::Image;
use pedinorm_registration::segmentation::{SegmentationOptions, segment};
use pedinorm_registration::smooth::smooth_mm;

/// The tissues of the priors, in storage order.
pub const TISSUES: [&str; 3] = ["csf", "gm", "wm"];

/// Gaussian σ (mm) of the smoothed mask whose value tells how deep inside the brain a voxel is.
const DEPTH_SIGMA_MM: f64 = 8.0;

/// Tissue probabilities of a template, averaged over its members.
#[derive(Debug, Clone, PartialEq)]
pub struct TissuePriors {
    /// Normals averaged.
    pub members: u64,
    /// Mean probability per tissue ([`TISSUES`] order) on the template grid, 0 outside the mask.
    pub maps: [Image<f32>; 3],
}

impl TissuePriors {
    /// The mean of the members' tissue probabilities (masked values in the space's voxel order,
    /// [`TISSUES`] order), summed in the given order; `None` without members.
    pub fn from_members(space: &TemplateSpace, members: &[&[Vec<f32>; 3]]) -> Option<TissuePriors> {
        if members.is_empty() {
            return None;
        }
        let n = space.indices.len();
        let maps = std::array::from_fn(|t| {
            let mut sums = vec![0f64; n];
            for member in members {
                sums.iter_mut().zip(&member[t]).for_each(|(s, &v)| *s += v as f64);
            }
            let mean: Vec<f32> = sums.iter().map(|s| (s / members.len() as f64) as f32).collect();
            scatter(space.template.grid(), &space.indices, &mean, 0.0)
        });
        Some(TissuePriors { members: members.len() as u64, maps })
    }

    /// The priors of both members' normals together (weighted by their member counts).
    pub fn merged(&self, other: &TissuePriors) -> TissuePriors {
        let (a, b) = (self.members as f64, other.members as f64);
        let maps = std::array::from_fn(|t| {
            let mut map = self.maps[t].clone();
            map.as_mut_slice().iter_mut().zip(other.maps[t].as_slice()).for_each(|(x, &y)| {
                *x = ((*x as f64 * a + y as f64 * b) / (a + b)) as f32;
            });
            map
        });
        TissuePriors { members: self.members + other.members, maps }
    }

    /// The priors with one more normal's probabilities (masked values, [`TISSUES`] order).
    pub fn with_member(&self, space: &TemplateSpace, tissues: &[Vec<f32>; 3]) -> TissuePriors {
        let one = TissuePriors::from_members(space, &[tissues]).expect("one member");
        self.merged(&one)
    }
}

/// The template's own tissue probabilities: a three-class mixture started by k-means inside the
/// mask. The darkest class is CSF (as on T1-weighted images at every age); of the other two,
/// white matter is the one deeper inside the brain, so inverted infant contrast is named right.
pub fn template_tissues(space: &TemplateSpace) -> Result<[Image<f32>; 3], ModelError> {
    let options = SegmentationOptions { classes: 3, ..SegmentationOptions::default() };
    let result =
        segment(&[&space.template], &space.mask, None, &options).map_err(|e| ModelError::Subject {
            subject: "template".into(),
            stage: "tissue segmentation",
            message: e.to_string(),
        })?;
    let depth = smooth_mm(&space.mask, DEPTH_SIGMA_MM);
    let mean_depth = |p: &Image<f32>| {
        let (mut weighted, mut total) = (0.0, 0.0);
        for (&probability, &d) in p.as_slice().iter().zip(depth.as_slice()) {
            weighted += probability as f64 * d as f64;
            total += probability as f64;
        }
        weighted / total.max(f64::MIN_POSITIVE)
    };
    let [csf, a, b]: [Image<f32>; 3] = result.posteriors.try_into().expect("three classes");
    Ok(if mean_depth(&a) > mean_depth(&b) { [csf, b, a] } else { [csf, a, b] })
}

/// One normal's tissue probabilities in template space: its warped image segmented with the
/// template's tissues (see [`template_tissues`]) as priors; masked values, [`TISSUES`] order.
pub fn member_tissues(
    warped: &Image<f32>,
    space: &TemplateSpace,
    template_tissues: &[Image<f32>; 3],
    name: &str,
) -> Result<[Vec<f32>; 3], ModelError> {
    let result = segment(&[warped], &space.mask, Some(template_tissues), &SegmentationOptions::default())
        .map_err(|e| ModelError::Subject {
            subject: name.to_owned(),
            stage: "tissue segmentation",
            message: e.to_string(),
        })?;
    Ok(std::array::from_fn(|t| gather(&result.posteriors[t], &space.indices)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_registration::Grid;

    /// A ball of white matter inside a shell of grey matter inside a shell of CSF, with the
    /// given intensities.
    fn layered(intensities: [f32; 3]) -> TemplateSpace {
        let grid = Grid::axis_aligned([24, 24, 24], [2.0; 3], [-24.0; 3]).unwrap();
        let mut image = Image::filled(grid.clone(), 0.0f32);
        let mut mask = Image::filled(grid, 0.0f32);
        for ((i, j, k), v) in image.data_mut().indexed_iter_mut() {
            let r = (((i as f64 - 11.5).powi(2) + (j as f64 - 11.5).powi(2) + (k as f64 - 11.5).powi(2))
                .sqrt()) as f32;
            *v = if r < 5.0 {
                intensities[2]
            } else if r < 8.0 {
                intensities[1]
            } else if r < 10.0 {
                intensities[0]
            } else {
                0.0
            };
            *v += ((i * 7 + j * 3 + k * 5) % 11) as f32 * 0.5;
            if r < 10.0 {
                mask.data_mut()[[i, j, k]] = 1.0;
            }
        }
        TemplateSpace::new(image, Some(mask)).unwrap()
    }

    fn dominant(maps: &[Image<f32>; 3], voxel: [usize; 3]) -> usize {
        (0..3).max_by(|&a, &b| maps[a].data()[voxel].total_cmp(&maps[b].data()[voxel])).unwrap()
    }

    #[test]
    fn tissues_are_named_by_darkness_and_depth_whatever_the_contrast() {
        // Child T1 (white matter brightest) and infant T1 (grey matter brighter than white).
        for intensities in [[30.0, 60.0, 90.0], [30.0, 90.0, 60.0]] {
            let space = layered(intensities);
            let tissues = template_tissues(&space).unwrap();
            assert_eq!(dominant(&tissues, [12, 12, 12]), 2, "{intensities:?}: centre is WM");
            assert_eq!(dominant(&tissues, [12, 12, 18]), 1, "{intensities:?}: shell is GM");
            assert_eq!(dominant(&tissues, [12, 12, 21]), 0, "{intensities:?}: rim is CSF");
        }
    }

    #[test]
    fn priors_are_member_means_and_combine_by_counts() {
        let space = layered([30.0, 60.0, 90.0]);
        let tissues = template_tissues(&space).unwrap();
        let n = space.indices.len();
        let member = |v: f32| [vec![v; n], vec![0.5 * v; n], vec![1.0 - 1.5 * v; n]];
        let (a, b, c) = (member(0.1), member(0.2), member(0.6));
        let all = TissuePriors::from_members(&space, &[&a, &b, &c]).unwrap();
        assert_eq!(all.members, 3);
        let inside = space.indices[0];
        assert!((all.maps[0].as_slice()[inside] - 0.3).abs() < 1e-6);
        let two = TissuePriors::from_members(&space, &[&a, &b]).unwrap();
        let grown = two.with_member(&space, &c);
        let merged = TissuePriors::from_members(&space, &[&c]).unwrap().merged(&two);
        for priors in [&grown, &merged] {
            assert_eq!(priors.members, 3);
            for t in 0..3 {
                for (x, y) in priors.maps[t].as_slice().iter().zip(all.maps[t].as_slice()) {
                    assert!((x - y).abs() < 1e-6);
                }
            }
        }
        assert!(TissuePriors::from_members(&space, &[]).is_none());
        // A member segmented with the template's tissues keeps the layers.
        let probabilities = member_tissues(&space.template, &space, &tissues, "t").unwrap();
        let centre = space.indices.iter().position(|&i| i == (12 * 24 + 12) * 24 + 12).unwrap();
        assert!(probabilities[2][centre] > 0.9);
    }
}
