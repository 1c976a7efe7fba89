//! A brain mask without a template: intensity threshold plus morphology.
//!
//! Heads with skull and scalp go through [`super::head_mask`] (brain window learnt in the
//! head's deep core, 8 mm erosion). When that finds no scalp (the brain is most of the
//! head), the image is skull-stripped and the method below runs:
//! 1. Foreground: voxels above the lowest of the three-class Otsu thresholds of the image.
//!    Three classes (background / darker tissue / brighter tissue or skull) keep the cut between
//!    background and tissue whichever tissue is darker, so infant contrast (white matter darker
//!    than grey matter) and a bright scalp do not move it into the brain.
//! 2. Erosion by a few millimetres cuts the thin bridges between brain and scalp; the largest
//!    connected component is the brain.
//! 3. The component is grown back (a little further than it was eroded, but only into
//!    foreground), closed, and its holes (ventricles, dark white matter) filled.

use super::head_mask::{self, brain_inside_head, filled_head};
use super::histogram::{Histogram, otsu_thresholds, quantile_sorted};
use super::morphology::{close, dilate, erode, fill_holes, largest_component};
use super::{IntensityError, check_image};
use crate::image::Image;
use ndarray::Array3;

/// Parameters of [`brain_mask_from_intensity`].
#[derive(Debug, Clone, PartialEq)]
pub struct BrainMaskParams {
    /// Erosion radius (mm) that separates brain from scalp before picking the largest component.
    pub erosion_mm: f64,
    /// How much further than the erosion radius (mm) the component is grown back into foreground.
    pub regrow_margin_mm: f64,
    /// Closing radius (mm) that bridges sulci and small gaps at the brain's surface.
    pub closing_mm: f64,
    /// Erosion radius (mm) that separates the brain from scalp, muscle, orbits and neck in a
    /// whole head (bridges through the skull base and thin temporal bone are thicker than
    /// those left by skull stripping).
    pub head_erosion_mm: f64,
    /// Look for a whole head (skull, scalp) first and use the whole-head method when one is
    /// found. Off by default: the template and deviation pipelines get skull-stripped brains,
    /// whose masks stay exactly as before; `pedinorm preprocess` turns it on.
    pub whole_head: bool,
    /// Closing radius (mm) of the brain found in a whole head (takes in sulcal CSF, which
    /// the brain window excludes).
    pub head_closing_mm: f64,
    /// The brain volume expected (ml), when known (e.g. a template's at the subject's age):
    /// with `whole_head`, a foreground smaller than [`HEAD_TO_BRAIN_MIN`] times it is an
    /// already skull-stripped brain, whatever the whole-head method finds inside it (on a
    /// small or coarse brain its erosion can split the brain and mistake a part for all).
    pub expected_brain_ml: Option<f64>,
    /// The mask is computed on a grid subsampled to about this voxel size (mm) and its
    /// boundary interpolated back: the radii above are several millimetres, so finer grids
    /// only cost time (a 1 mm head has 8× the voxels of a 2 mm one).
    pub working_spacing_mm: f64,
}

impl Default for BrainMaskParams {
    fn default() -> Self {
        Self {
            erosion_mm: 4.0,
            regrow_margin_mm: 2.0,
            closing_mm: 3.0,
            whole_head: false,
            head_erosion_mm: 8.0,
            head_closing_mm: 6.0,
            expected_brain_ml: None,
            working_spacing_mm: 2.0,
        }
    }
}

/// Smallest ratio of a whole head's filled foreground to its brain: skull, scalp and face
/// make the brain 30–60 % of a head, while an individual's skull-stripped brain stays within
/// about ±30 % of a template's.
pub const HEAD_TO_BRAIN_MIN: f64 = 1.5;

/// The intensity above which a voxel is foreground (head or brain rather than air): the lowest
/// three-class Otsu threshold over the image's histogram up to its 99.9th percentile.
pub fn foreground_threshold(image: &Image<f32>) -> f32 {
    let mut sorted: Vec<f32> = image.as_slice().iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_unstable_by(|a, b| a.total_cmp(b));
    let lo = sorted[0] as f64;
    // A few very bright voxels (vessels, fat) must not squeeze the histogram.
    let hi = quantile_sorted(&sorted, 0.999);
    if hi <= lo {
        return lo as f32;
    }
    let histogram = Histogram::new(&sorted, lo, hi, 128);
    otsu_thresholds(&histogram, 3)[0] as f32
}

/// A binary brain mask (1 inside, 0 outside) on the image's grid, from intensities and
/// morphology only. Works on whole heads (skull, scalp, fat, orbits, neck) and on
/// skull-stripped images, in adult and infant contrast.
///
/// Errors when the image is constant or has non-finite values, or when nothing survives the
/// erosion (an image too small or too noisy for the radii).
pub fn brain_mask_from_intensity(
    image: &Image<f32>,
    params: &BrainMaskParams,
) -> Result<Image<f32>, IntensityError> {
    Ok(brain_extraction(image, params)?.mask)
}

/// A template-free brain mask and what kind of image it came from.
#[derive(Debug, Clone)]
pub struct BrainExtraction {
    /// 1 inside the brain, 0 outside, on the image's grid.
    pub mask: Image<f32>,
    /// Whether the image shows a whole head (skull, scalp) rather than a skull-stripped brain.
    pub scalp: bool,
}

/// [`brain_mask_from_intensity`], also saying whether the image had a scalp.
pub fn brain_extraction(
    image: &Image<f32>,
    params: &BrainMaskParams,
) -> Result<BrainExtraction, IntensityError> {
    check_image(image)?;
    if params.whole_head
        && let Some(mask) = head_brain_mask(image, params)?
    {
        return Ok(BrainExtraction { mask, scalp: true });
    }
    let finest = image.grid().spacing().into_iter().fold(f64::INFINITY, f64::min);
    let factor = (params.working_spacing_mm / finest).floor().max(1.0) as usize;
    if factor == 1 {
        return Ok(BrainExtraction { mask: mask_on_grid(image, params)?, scalp: false });
    }
    let small = crate::smooth::shrink(image, factor);
    let small_mask = mask_on_grid(&small, params)?;
    Ok(BrainExtraction { mask: upsample_mask(&small_mask, image)?, scalp: false })
}

/// Whether `image` shows tissue outside its brain `mask` (skull, scalp, face): more than a
/// quarter of the filled head lies outside the mask. A skull-stripped template has none.
pub fn has_scalp(image: &Image<f32>, mask: &Image<f32>) -> bool {
    let head = filled_head(image.as_slice(), image.grid().dims(), foreground_threshold(image));
    let brain: Vec<bool> = mask.as_slice().iter().map(|&m| m > 0.5).collect();
    head_mask::has_scalp(&brain, &head)
}

/// The brain of a whole head on a near-isotropic working grid, brought back to full
/// resolution; `None` when the image has no scalp (or is too small for the radii).
fn head_brain_mask(
    image: &Image<f32>,
    params: &BrainMaskParams,
) -> Result<Option<Image<f32>>, IntensityError> {
    let spacing = image.grid().spacing();
    let factors = spacing.map(|s| (params.working_spacing_mm / s).floor().max(1.0) as usize);
    let small = if factors == [1, 1, 1] { image.clone() } else { crate::smooth::shrink_axes(image, factors) };
    let dims = small.grid().dims();
    let threshold = foreground_threshold(&small);
    let Some(found) = brain_inside_head(small.as_slice(), dims, small.grid().spacing(), threshold, params)
    else {
        return Ok(None);
    };
    if !found.has_scalp() {
        return Ok(None);
    }
    let data = Array3::from_shape_vec(
        (dims[0], dims[1], dims[2]),
        found.brain.iter().map(|&b| if b { 1.0f32 } else { 0.0 }).collect(),
    )
    .expect("mask matches grid");
    let small_mask = small.with_data(data).expect("same grid");
    if factors == [1, 1, 1] {
        return Ok(Some(small_mask));
    }
    upsample_mask(&small_mask, image).map(Some)
}

/// A working-grid mask on `image`'s grid: linear interpolation of the binary mask gives a
/// smooth boundary at full resolution.
fn upsample_mask(small_mask: &Image<f32>, image: &Image<f32>) -> Result<Image<f32>, IntensityError> {
    let mask = crate::resample::resample(
        small_mask,
        image.grid(),
        &crate::transform::Identity,
        crate::interpolate::Interpolation::Linear,
        0.0,
    );
    let mask = mask.map(|&m| if m >= 0.5 { 1.0f32 } else { 0.0 });
    if !mask.as_slice().iter().any(|&m| m > 0.5) {
        return Err(IntensityError::EmptyMask { reason: "no brain voxel at full resolution".into() });
    }
    Ok(mask)
}

pub(super) fn mask_on_grid(
    image: &Image<f32>,
    params: &BrainMaskParams,
) -> Result<Image<f32>, IntensityError> {
    let dims = image.grid().dims();
    let spacing = image.grid().spacing();
    let threshold = foreground_threshold(image);
    let foreground: Vec<bool> = image.as_slice().iter().map(|&v| v > threshold).collect();
    let mut eroded = erode(&foreground, dims, spacing, params.erosion_mm);
    if !eroded.iter().any(|&m| m) {
        // Too thin to erode (tiny images): fall back to the foreground itself.
        eroded = foreground.clone();
    }
    let core = largest_component(&eroded, dims);
    if !core.iter().any(|&m| m) {
        return Err(IntensityError::EmptyMask {
            reason: "no foreground voxel above the intensity threshold".into(),
        });
    }
    let grown = dilate(&core, dims, spacing, params.erosion_mm + params.regrow_margin_mm);
    let brain: Vec<bool> = grown.iter().zip(&foreground).map(|(&g, &f)| g && f).collect();
    // Re-select the component: growing may touch foreground islands.
    let brain = largest_component(&brain, dims);
    let brain = fill_holes(&brain, dims);
    let brain = if params.closing_mm > 0.0 { close(&brain, dims, spacing, params.closing_mm) } else { brain };
    let brain = fill_holes(&brain, dims);
    let data = Array3::from_shape_vec(
        (dims[0], dims[1], dims[2]),
        brain.iter().map(|&b| if b { 1.0f32 } else { 0.0 }).collect(),
    )
    .expect("mask matches grid");
    Ok(image.with_data(data).expect("same grid"))
}

/// Dice overlap of two binary masks (voxels > 0.5); 1 when both are empty.
pub fn dice(a: &Image<f32>, b: &Image<f32>) -> f64 {
    let (mut both, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (&x, &y) in a.as_slice().iter().zip(b.as_slice()) {
        let (x, y) = (x > 0.5, y > 0.5);
        both += (x && y) as usize;
        na += x as usize;
        nb += y as usize;
    }
    if na + nb == 0 { 1.0 } else { 2.0 * both as f64 / (na + nb) as f64 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::grid::Grid;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A head phantom: brain ellipsoid (ventricles, white matter, grey matter; contrast adult or
    /// inverted), dark CSF and bone, a bright scalp shell, noisy background. Returns the image
    /// and the true brain mask.
    pub(crate) fn head(dims: [usize; 3], inverted: bool, seed: u64) -> (Image<f32>, Image<f32>) {
        let grid = Grid::axis_aligned(dims, [2.0; 3], [0.0; 3]).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = dims.map(|d| (d as f64 - 1.0) / 2.0);
        let (wm, gm) = if inverted { (45.0, 80.0) } else { (100.0, 65.0) };
        let mut image = Vec::new();
        let mut truth = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let p = [(i as f64 - c[0]) / c[0], (j as f64 - c[1]) / c[1], (k as f64 - c[2]) / c[2]];
                    let r = (p[0] * p[0] + p[1] * p[1] + 1.2 * p[2] * p[2]).sqrt();
                    let (value, brain) = if r < 0.15 {
                        (12.0, true) // ventricles
                    } else if r < 0.45 {
                        (wm, true)
                    } else if r < 0.62 {
                        (gm, true)
                    } else if r < 0.68 {
                        (12.0, false) // CSF
                    } else if r < 0.74 {
                        (6.0, false) // bone
                    } else if r < 0.86 {
                        (140.0, false) // scalp and fat
                    } else {
                        (0.0, false)
                    };
                    let noise = (rng.random::<f64>() - 0.5) * 8.0;
                    image.push((value + noise).abs() as f32);
                    truth.push(if brain { 1.0f32 } else { 0.0 });
                }
            }
        }
        let shape = (dims[0], dims[1], dims[2]);
        (
            Image::new(Array3::from_shape_vec(shape, image).unwrap(), grid.clone()).unwrap(),
            Image::new(Array3::from_shape_vec(shape, truth).unwrap(), grid).unwrap(),
        )
    }

    #[test]
    fn mask_of_a_head_with_bright_scalp() {
        for inverted in [false, true] {
            let (image, truth) = head([56, 60, 52], inverted, 4);
            let mask = brain_mask_from_intensity(&image, &BrainMaskParams::default()).unwrap();
            let d = dice(&mask, &truth);
            assert!(d > 0.9, "Dice {d} (inverted contrast: {inverted})");
        }
    }

    /// The head with everything outside the true brain set to zero.
    fn skull_stripped(image: &Image<f32>, truth: &Image<f32>) -> Image<f32> {
        image.with_data(ndarray::Zip::from(image.data()).and(truth.data()).map_collect(|v, t| v * t)).unwrap()
    }

    #[test]
    fn mask_on_a_subsampled_working_grid() {
        // Skull stripped: at 4 mm the phantom's 3 mm CSF gap to the scalp would not resolve.
        let (image, truth) = head([56, 60, 52], true, 6);
        let stripped = skull_stripped(&image, &truth);
        let params = BrainMaskParams { working_spacing_mm: 4.0, ..BrainMaskParams::default() };
        let mask = brain_mask_from_intensity(&stripped, &params).unwrap();
        assert_eq!(mask.grid(), image.grid());
        let d = dice(&mask, &truth);
        assert!(d > 0.9, "Dice {d}");
    }

    #[test]
    fn mask_of_a_skull_stripped_brain() {
        let (image, truth) = head([48, 50, 46], true, 9);
        let stripped = skull_stripped(&image, &truth);
        let mask = brain_mask_from_intensity(&stripped, &BrainMaskParams::default()).unwrap();
        let d = dice(&mask, &truth);
        assert!(d > 0.95, "Dice {d}");
    }

    #[test]
    fn constant_image_is_refused() {
        let grid = Grid::axis_aligned([6, 6, 6], [1.0; 3], [0.0; 3]).unwrap();
        assert!(matches!(
            brain_mask_from_intensity(&Image::filled(grid, 1.0), &BrainMaskParams::default()),
            Err(IntensityError::Constant { .. })
        ));
    }
}
