//! The brain inside a whole head (skull, scalp and its fat, orbits, neck), without a template.
//!
//! The intensity foreground of a head is the whole head: scalp, muscle, fat and the neck are
//! as bright as brain in T1, and touch it through the skull base, the orbits and thin temporal
//! bone. Like FSL's BET and mri_watershed, this works from the geometry of the head:
//! 1. the head is the largest foreground component with its holes filled; its deep core
//!    (far from the head's surface, under skull and scalp) is almost all brain;
//! 2. the brain window: voxels brighter than the cut between the core's darkest class (CSF,
//!    bone, air in sinuses) and its tissue (three-class Otsu over the core), so the dark
//!    skull and CSF separate brain from scalp, muscle and fat whatever the grey/white order;
//! 3. the window eroded by 8 mm loses every bridge thinner than 16 mm (temporal muscle
//!    through thin bone, optic nerves, the spinal cord); its largest component is the brain's
//!    core, grown back a little further than it was eroded but only into the window, then
//!    holes filled (ventricles) and closed by 6 mm (sulcal CSF).
//!
//! All radii are in millimetres on a near-isotropic working grid.

use super::BrainMaskParams;
use super::brain_mask::HEAD_TO_BRAIN_MIN;
use super::histogram::{Histogram, otsu_thresholds, quantile_sorted};
use super::morphology::{close, dilate, erode, fill_holes, largest_component, squared_distance};

/// Distance (mm) from the head's surface beyond which voxels are taken as brain to learn the
/// brain window: thicker than scalp and skull (about 10–15 mm in adults).
const CORE_DEPTH_MM: f64 = 25.0;
/// Closing of the brain window (mm) that fills single dark voxels (noise, small vessels) so
/// the erosion does not fragment white matter.
const WINDOW_CLOSING_MM: f64 = 2.0;
/// A brain occupying more than this fraction of the filled head means there is no scalp
/// (a skull-stripped image); with skull, scalp and face the brain is about 30–60 %.
const STRIPPED_BRAIN_FRACTION: f64 = 0.75;

/// The brain found inside a head on one grid (C order), and the filled head it came from.
pub(crate) struct HeadBrain {
    /// Brain voxels.
    pub brain: Vec<bool>,
    /// Head voxels (largest foreground component, holes filled).
    pub head: Vec<bool>,
}

impl HeadBrain {
    /// Whether the head carries tissue outside the brain (skull, scalp, face), i.e. the
    /// image is not skull-stripped.
    pub fn has_scalp(&self) -> bool {
        has_scalp(&self.brain, &self.head)
    }
}

/// Whether a `brain` mask leaves a sizeable part of the filled `head` outside it.
pub(crate) fn has_scalp(brain: &[bool], head: &[bool]) -> bool {
    let head_voxels = head.iter().filter(|&&h| h).count();
    let brain_in_head = brain.iter().zip(head).filter(|&(&b, &h)| b && h).count();
    head_voxels > 0 && (brain_in_head as f64) < STRIPPED_BRAIN_FRACTION * head_voxels as f64
}

/// The head: largest component of voxels above `threshold`, holes filled.
pub(crate) fn filled_head(values: &[f32], dims: [usize; 3], threshold: f32) -> Vec<bool> {
    let foreground: Vec<bool> = values.iter().map(|&v| v > threshold).collect();
    fill_holes(&largest_component(&foreground, dims), dims)
}

/// The brain inside the head (see the module documentation); `None` when the head is too
/// small or too thin for the radii, or smaller than [`HEAD_TO_BRAIN_MIN`] times the expected
/// brain volume when one is given (the caller then uses the skull-stripped method).
pub(crate) fn brain_inside_head(
    values: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    foreground: f32,
    params: &BrainMaskParams,
) -> Option<HeadBrain> {
    let head = filled_head(values, dims, foreground);
    if let Some(expected_ml) = params.expected_brain_ml {
        let head_voxels = head.iter().filter(|&&h| h).count() as f64;
        let head_ml = head_voxels * spacing[0] * spacing[1] * spacing[2] / 1000.0;
        if head_ml < HEAD_TO_BRAIN_MIN * expected_ml {
            return None;
        }
    }
    let depth2 = squared_distance(&head.iter().map(|&h| !h).collect::<Vec<_>>(), dims, spacing);
    let deepest2 = depth2.iter().zip(&head).filter(|&(_, &h)| h).map(|(&d, _)| d).fold(0.0, f64::max);
    // Small heads (infants, phantoms): the deeper half of the head.
    let core_depth2 = (CORE_DEPTH_MM * CORE_DEPTH_MM).min(deepest2 / 4.0);
    let mut core: Vec<f32> = values
        .iter()
        .zip(&depth2)
        .zip(&head)
        .filter(|&((_, &d), &h)| h && d >= core_depth2)
        .map(|((&v, _), _)| v)
        .collect();
    if core.len() < 27 {
        return None;
    }
    core.sort_unstable_by(|a, b| a.total_cmp(b));
    let (lo, hi) = (core[0] as f64, quantile_sorted(&core, 0.999));
    if hi <= lo {
        return None;
    }
    let tissue_cut = otsu_thresholds(&Histogram::new(&core, lo, hi, 128), 3)[0] as f32;
    let window: Vec<bool> = values.iter().zip(&head).map(|(&v, &h)| h && v > tissue_cut).collect();
    let window: Vec<bool> =
        close(&window, dims, spacing, WINDOW_CLOSING_MM).iter().zip(&head).map(|(&w, &h)| w && h).collect();
    let seed = largest_component(&erode(&window, dims, spacing, params.head_erosion_mm), dims);
    if !seed.iter().any(|&s| s) {
        return None;
    }
    let grown = dilate(&seed, dims, spacing, params.head_erosion_mm + params.regrow_margin_mm);
    let brain: Vec<bool> = grown.iter().zip(&window).map(|(&g, &w)| g && w).collect();
    let brain = fill_holes(&largest_component(&brain, dims), dims);
    let brain = close(&brain, dims, spacing, params.head_closing_mm);
    let brain = fill_holes(&brain, dims);
    Some(HeadBrain { brain, head })
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::grid::Grid;
    use crate::image::Image;
    use crate::intensity::brain_mask::{BrainMaskParams, brain_extraction, dice, has_scalp, mask_on_grid};
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Semi-axes (mm) of the brain ellipsoid (left-right, back-front, down-up).
    const BRAIN: [f64; 3] = [70.0, 85.0, 60.0];

    /// Inside the brain ellipsoid grown by `delta` mm along every semi-axis.
    fn inside(p: [f64; 3], delta: f64) -> bool {
        (0..3).map(|a| (p[a] / (BRAIN[a] + delta)).powi(2)).sum::<f64>() < 1.0
    }

    fn in_disc(x: f64, y: f64, cx: f64, cy: f64, rx: f64, ry: f64) -> bool {
        ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) < 1.0
    }

    /// A whole head built from geometric layers, not from a brain template: brain (cortex with
    /// sulci, white matter, ventricles), CSF, dark skull (thin over the temples), scalp with a
    /// bright fat layer, temporal muscles, orbits (dark eyes in bright fat, optic nerves), a
    /// face and neck of muscle and fat, and the brainstem continuing through the foramen
    /// magnum into the spinal cord. The bridges that defeat a foreground-and-erosion mask are
    /// all there. `infant`: white matter darker than grey matter. 2 mm voxels; returns the
    /// image and the true brain (brainstem down to 15 mm below the cerebrum).
    pub(crate) fn synthetic_head(infant: bool, seed: u64) -> (Image<f32>, Image<f32>) {
        let dims = [96, 106, 112];
        // Brain centre at voxel (48, 50, 74): the neck hangs 148 mm below it.
        let centre = [48.0, 50.0, 74.0];
        let grid = Grid::axis_aligned(dims, [2.0; 3], [0.0; 3]).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (wm, gm): (f64, f64) = if infant { (55.0, 80.0) } else { (100.0, 68.0) };
        let (csf, bone, marrow, fat, skin, muscle, eye) = (35.0, 12.0, 120.0, 150.0, 85.0, 62.0, 14.0);
        let mut image = Vec::with_capacity(dims.iter().product());
        let mut truth = Vec::with_capacity(image.capacity());
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let p = [
                        (i as f64 - centre[0]) * 2.0,
                        (j as f64 - centre[1]) * 2.0,
                        (k as f64 - centre[2]) * 2.0,
                    ];
                    let [x, y, z] = p;
                    let temple = x.abs() > 40.0 && (-25.0..30.0).contains(&z) && (-30.0..45.0).contains(&y);
                    // Brainstem (12 mm radius) down to 75 mm below the centre, then the cord.
                    let brainstem = z < -10.0
                        && (in_disc(x, y, 0.0, -20.0, 12.0, 12.0) && z >= -75.0
                            || in_disc(x, y, 0.0, -20.0, 5.0, 5.0));
                    let vertebra = in_disc(x, y, 0.0, -20.0, 27.0, 27.0) && z < -70.0;
                    let spinal_canal = in_disc(x, y, 0.0, -20.0, 17.0, 17.0) && z < -40.0;
                    let mut value = 0.0;
                    let mut brain = false;
                    if inside(p, 0.0) {
                        brain = true;
                        let sulcus = (0.3 * x).cos() * (0.3 * y).cos() * (0.3 * z).cos() > 0.75;
                        value = if inside(p, -5.0) {
                            wm
                        } else if sulcus {
                            csf
                        } else {
                            gm
                        };
                        let ventricle = in_disc(x, y, 0.0, 5.0, 14.0, 28.0) && (-5.0..12.0).contains(&z);
                        if ventricle {
                            value = csf;
                        }
                    } else if inside(p, 3.0) {
                        value = csf;
                    } else if temple && inside(p, 5.0) {
                        value = bone; // thin temporal bone
                    } else if temple && inside(p, 17.0) {
                        value = muscle; // temporalis
                    } else if temple && inside(p, 21.0) {
                        value = fat;
                    } else if inside(p, 5.0) || (inside(p, 10.0) && !inside(p, 8.0)) {
                        value = bone; // inner and outer tables
                    } else if inside(p, 8.0) {
                        value = marrow; // diploë
                    } else if inside(p, 13.0) {
                        value = fat;
                    } else if inside(p, 16.0) {
                        value = skin;
                    }
                    // Face and neck below the skull.
                    if z < -35.0 && !inside(p, 10.0) {
                        if in_disc(x, y, 0.0, 20.0, 10.0, 12.0) {
                            value = 0.0; // pharynx
                        } else if in_disc(x, y, 0.0, -5.0, 55.0, 68.0) {
                            value = muscle;
                        } else if in_disc(x, y, 0.0, -5.0, 61.0, 74.0) {
                            value = fat;
                        }
                    }
                    // Orbits: eyes in fat, optic nerves running back to the brain.
                    for side in [-1.0, 1.0] {
                        let eye_centre = [32.0 * side, 74.0, -36.0];
                        let r = ((x - eye_centre[0]).powi(2)
                            + (y - eye_centre[1]).powi(2)
                            + (z - eye_centre[2]).powi(2))
                        .sqrt();
                        if r < 17.0 && !inside(p, 3.0) {
                            value = if r < 11.0 { eye } else { fat };
                        }
                        let t = (eye_centre[1] - y) / 30.0;
                        let nerve_axis = [eye_centre[0] * (1.0 - 0.6 * t), eye_centre[2] + 8.0 * t];
                        if (0.0..1.0).contains(&t)
                            && (x - nerve_axis[0]).powi(2) + (z - nerve_axis[1]).powi(2) < 2.5f64.powi(2)
                            && !inside(p, 0.0)
                        {
                            value = wm.max(gm) * 0.9;
                        }
                    }
                    if vertebra {
                        value = marrow;
                    }
                    if spinal_canal && !brainstem && !inside(p, 0.0) {
                        value = csf;
                    }
                    if brainstem {
                        value = wm;
                        brain = z >= -75.0;
                    }
                    let bias = 1.0 + 0.1 * x / 100.0 + 0.08 * z / 100.0;
                    let noise = (rng.random::<f64>() - 0.5) * 8.0;
                    image.push((value * bias + noise).abs() as f32);
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
    fn brain_of_a_whole_head_with_orbits_temples_and_neck() {
        for infant in [false, true] {
            let (image, truth) = synthetic_head(infant, 21);
            let params = BrainMaskParams { whole_head: true, ..BrainMaskParams::default() };
            // The bridges are real: in adult contrast the skull-stripped method takes in the
            // neck through the spinal canal and the vertebrae.
            let stripped_method = mask_on_grid(&image, &params).unwrap();
            let before = dice(&stripped_method, &truth);
            assert!(infant || before < 0.8, "foreground-and-erosion Dice {before}");
            let found = brain_extraction(&image, &params).unwrap();
            assert!(found.scalp, "a whole head has a scalp (infant: {infant})");
            let d = dice(&found.mask, &truth);
            assert!(d >= 0.95, "Dice {d} (infant: {infant})");
            assert!(has_scalp(&image, &truth));
        }
    }

    #[test]
    fn skull_stripped_head_is_recognized() {
        let (image, truth) = synthetic_head(false, 5);
        let stripped = image
            .with_data(ndarray::Zip::from(image.data()).and(truth.data()).map_collect(|v, t| v * t))
            .unwrap();
        let params = BrainMaskParams { whole_head: true, ..BrainMaskParams::default() };
        let found = brain_extraction(&stripped, &params).unwrap();
        assert!(!found.scalp);
        assert!(!has_scalp(&stripped, &truth));
        let d = dice(&found.mask, &truth);
        assert!(d > 0.95, "Dice {d}");
    }

    /// With the brain volume expected (a template's), a foreground that is not much larger
    /// is an already stripped brain; a whole head still is one.
    #[test]
    fn expected_brain_volume_tells_a_head_from_a_stripped_brain() {
        let (image, truth) = synthetic_head(false, 9);
        let brain_ml = truth.as_slice().iter().filter(|&&t| t > 0.5).count() as f64 * 8.0 / 1000.0;
        let params = |expected: f64| BrainMaskParams {
            whole_head: true,
            expected_brain_ml: Some(expected),
            ..BrainMaskParams::default()
        };
        // An individual brain up to 30 % smaller than the template's is still found in its head.
        let found = brain_extraction(&image, &params(1.3 * brain_ml)).unwrap();
        assert!(found.scalp && dice(&found.mask, &truth) >= 0.95);
        // A foreground within 1.5× of the expected brain is taken as a brain, however the
        // whole-head method would split it.
        let found = brain_extraction(&image, &params(10.0 * brain_ml)).unwrap();
        assert!(!found.scalp);
        let stripped = image
            .with_data(ndarray::Zip::from(image.data()).and(truth.data()).map_collect(|v, t| v * t))
            .unwrap();
        let found = brain_extraction(&stripped, &params(0.8 * brain_ml)).unwrap();
        assert!(!found.scalp && dice(&found.mask, &truth) > 0.95);
    }
}
