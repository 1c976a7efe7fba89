//! Intensity normalization inside a brain mask, so intensities mean the same in every image.
//!
//! Three methods:
//! - [`NormalizationMethod::WhiteMatterPeak`]: scale so the white-matter peak is 1. The two
//!   brighter tissue classes are found by a three-class Gaussian mixture of the histogram
//!   (tissues often form shoulders, not separate peaks); which one is white
//!   matter is decided by *depth* (mean distance from the mask surface: white matter lies under
//!   the cortex), not by brightness, so the infant contrast (white matter darker than grey
//!   matter) is handled. Needs no template and keeps the image's own tissue contrast.
//! - [`NormalizationMethod::TissuePeaks`]: piecewise-linear map of 0, the grey- and the
//!   white-matter peaks onto target values (typically a template's own peaks).
//! - [`NormalizationMethod::Landmarks`]: Nyúl–Udupa standardization: percentile landmarks
//!   mapped piecewise-linearly onto a standard scale; with many landmarks taken from a template
//!   this is histogram matching ([`landmarks`] computes either).

use super::histogram::{Histogram, fit_gaussian_mixture, quantile_sorted};
use super::morphology::squared_distance;
use super::{IntensityError, check_image, check_same_grid};
use crate::image::Image;

/// The percentiles of Nyúl & Udupa's landmark set: 1, 10, 20, …, 90, 99.
pub const NYUL_PERCENTILES: [f64; 11] = [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99];

/// Percentiles for histogram matching: 0.5 % to 99.5 % in 99 steps plus the two ends.
pub fn matching_percentiles() -> Vec<f64> {
    let mut p = vec![0.005];
    p.extend((1..100).map(|i| i as f64 / 100.0));
    p.push(0.995);
    p
}

/// How to normalize; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub enum NormalizationMethod {
    /// Divide by the white-matter peak.
    WhiteMatterPeak,
    /// Map 0 → 0 and the tissue peaks onto `white_matter` and `grey_matter`.
    TissuePeaks {
        /// Target value of the white-matter peak.
        white_matter: f64,
        /// Target value of the grey-matter peak.
        grey_matter: f64,
    },
    /// Map the image's values at `percentiles` (ascending, in `[0, 1]`) onto `standard`.
    Landmarks {
        /// Percentiles of the landmarks.
        percentiles: Vec<f64>,
        /// Standard-scale value of each landmark (non-decreasing).
        standard: Vec<f64>,
    },
}

/// Tissue peaks of an image inside a mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TissuePeaks {
    /// Intensity of the white-matter peak.
    pub white_matter: f64,
    /// Intensity of the grey-matter peak (equal to white matter when only one tissue peak
    /// exists, as in isointense infant images).
    pub grey_matter: f64,
    /// Whether white matter is darker than grey matter (infant T1 contrast).
    pub inverted: bool,
    /// Whether two distinct tissue peaks were found.
    pub two_peaks: bool,
}

/// What [`normalize_intensity`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizationReport {
    /// Tissue peaks before normalization, when the method used them.
    pub peaks: Option<TissuePeaks>,
    /// The piecewise-linear map applied: (input, output) knots, ascending.
    pub knots: Vec<(f64, f64)>,
}

/// Values inside the mask (> 0.5), or every voxel without one; errors on an empty mask or a
/// constant region.
fn masked_values(image: &Image<f32>, mask: Option<&Image<f32>>) -> Result<Vec<f32>, IntensityError> {
    check_image(image)?;
    let values: Vec<f32> = match mask {
        Some(m) => {
            check_same_grid(image, m, "mask")?;
            image.as_slice().iter().zip(m.as_slice()).filter(|(_, m)| **m > 0.5).map(|(v, _)| *v).collect()
        }
        None => image.as_slice().to_vec(),
    };
    if values.is_empty() {
        return Err(IntensityError::EmptyMask { reason: "no voxel above 0.5".into() });
    }
    let (lo, hi) =
        values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo == hi {
        return Err(IntensityError::Constant { value: lo, region: "inside the mask" });
    }
    Ok(values)
}

/// The image's values at `percentiles` inside the mask: Nyúl–Udupa landmarks, or a template's
/// standard scale for [`NormalizationMethod::Landmarks`].
pub fn landmarks(
    image: &Image<f32>,
    mask: Option<&Image<f32>>,
    percentiles: &[f64],
) -> Result<Vec<f64>, IntensityError> {
    let mut values = masked_values(image, mask)?;
    values.sort_unstable_by(|a, b| a.total_cmp(b));
    Ok(percentiles.iter().map(|&p| quantile_sorted(&values, p)).collect())
}

/// Finds the grey- and white-matter peaks inside the mask (see the module documentation).
pub fn tissue_peaks(image: &Image<f32>, mask: &Image<f32>) -> Result<TissuePeaks, IntensityError> {
    let mut values = masked_values(image, Some(mask))?;
    values.sort_unstable_by(|a, b| a.total_cmp(b));
    let lo = quantile_sorted(&values, 0.005);
    let hi = quantile_sorted(&values, 0.995);
    if hi <= lo {
        return Err(IntensityError::Constant { value: lo as f32, region: "inside the mask" });
    }
    // Tissue classes: a three-component mixture (CSF or partial volume, grey, white matter);
    // the two brighter components are the tissues, since CSF is darkest in T1 at every age.
    let histogram = Histogram::new(&values, lo, hi, 256);
    let components = fit_gaussian_mixture(&histogram, 3, 200);
    let (dark_component, bright_component) = (components[1], components[2]);
    let (bright, dark) = (bright_component.mean, dark_component.mean);
    // Isointense images: the two components overlap too much to tell the tissues apart.
    let separation = (bright - dark) / (0.5 * (bright_component.sd + dark_component.sd));
    if separation < 1.0 {
        let pooled = (bright_component.weight * bright + dark_component.weight * dark)
            / (bright_component.weight + dark_component.weight);
        return Ok(TissuePeaks {
            white_matter: pooled,
            grey_matter: pooled,
            inverted: false,
            two_peaks: false,
        });
    }
    // Depth of voxels near each peak: mean distance (mm) from outside the mask.
    let dims = image.grid().dims();
    let outside: Vec<bool> = mask.as_slice().iter().map(|&m| m <= 0.5).collect();
    let depth = squared_distance(&outside, dims, image.grid().spacing());
    let half = 0.25 * (bright - dark);
    let mut sums = [(0.0f64, 0usize); 2];
    for ((&v, &d), &o) in image.as_slice().iter().zip(&depth).zip(&outside) {
        if o || !d.is_finite() {
            continue;
        }
        let v = v as f64;
        for (slot, centre) in [(0, bright), (1, dark)] {
            if (v - centre).abs() < half {
                sums[slot].0 += d.sqrt();
                sums[slot].1 += 1;
            }
        }
    }
    let mean = |s: (f64, usize)| if s.1 == 0 { 0.0 } else { s.0 / s.1 as f64 };
    let bright_is_deeper = mean(sums[0]) >= mean(sums[1]);
    Ok(if bright_is_deeper {
        TissuePeaks { white_matter: bright, grey_matter: dark, inverted: false, two_peaks: true }
    } else {
        TissuePeaks { white_matter: dark, grey_matter: bright, inverted: true, two_peaks: true }
    })
}

/// Normalizes intensities with `method`, estimating the map inside `mask` and applying it to
/// every voxel. Errors on non-finite or constant images, an empty mask, a mask on another grid
/// and malformed landmark lists.
pub fn normalize_intensity(
    image: &Image<f32>,
    mask: &Image<f32>,
    method: &NormalizationMethod,
) -> Result<(Image<f32>, NormalizationReport), IntensityError> {
    let (knots, peaks) = match method {
        NormalizationMethod::WhiteMatterPeak => {
            let peaks = tissue_peaks(image, mask)?;
            if peaks.white_matter <= 0.0 {
                return Err(IntensityError::Parameter {
                    name: "white-matter peak",
                    rule: format!("must be positive, found {}", peaks.white_matter),
                });
            }
            (vec![(0.0, 0.0), (peaks.white_matter, 1.0)], Some(peaks))
        }
        NormalizationMethod::TissuePeaks { white_matter, grey_matter } => {
            let peaks = tissue_peaks(image, mask)?;
            let mut knots = vec![(0.0, 0.0)];
            if peaks.two_peaks {
                let mut pairs = [(peaks.grey_matter, *grey_matter), (peaks.white_matter, *white_matter)];
                pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
                // A map must stay monotone: if the contrast order differs from the target's,
                // fall back to the white-matter peak alone.
                if pairs[1].1 > pairs[0].1 && pairs[0].0 > 0.0 {
                    knots.extend(pairs);
                } else {
                    knots.push((peaks.white_matter, *white_matter));
                }
            } else {
                knots.push((peaks.white_matter, *white_matter));
            }
            (knots, Some(peaks))
        }
        NormalizationMethod::Landmarks { percentiles, standard } => {
            if percentiles.len() != standard.len() || percentiles.len() < 2 {
                return Err(IntensityError::Parameter {
                    name: "landmarks",
                    rule: "need as many standard values as percentiles, at least two".into(),
                });
            }
            if standard.windows(2).any(|w| w[1] < w[0]) || percentiles.windows(2).any(|w| w[1] <= w[0]) {
                return Err(IntensityError::Parameter {
                    name: "landmarks",
                    rule: "percentiles must increase and standard values must not decrease".into(),
                });
            }
            let found = landmarks(image, Some(mask), percentiles)?;
            let mut knots: Vec<(f64, f64)> = Vec::new();
            if found[0] > 0.0 && standard[0] > 0.0 {
                knots.push((0.0, 0.0));
            }
            for (&x, &y) in found.iter().zip(standard) {
                // Ties in the image's quantiles (large uniform regions) keep the first knot.
                if knots.last().is_none_or(|&(px, _)| x > px) {
                    knots.push((x, y));
                }
            }
            (knots, None)
        }
    };
    if knots.len() < 2 {
        return Err(IntensityError::Constant {
            value: knots[0].0 as f32,
            region: "inside the mask (landmarks coincide)",
        });
    }
    let data = image.data().mapv(|v| apply_knots(&knots, v as f64) as f32);
    Ok((image.with_data(data).expect("same grid"), NormalizationReport { peaks, knots }))
}

/// Piecewise-linear interpolation through ascending knots, extended linearly beyond both ends.
fn apply_knots(knots: &[(f64, f64)], x: f64) -> f64 {
    let n = knots.len();
    let segment = match knots.iter().position(|&(kx, _)| kx > x) {
        Some(0) => 0,
        Some(i) => i - 1,
        None => n - 2,
    }
    .min(n - 2);
    let (x0, y0) = knots[segment];
    let (x1, y1) = knots[segment + 1];
    y0 + (y1 - y0) * (x - x0) / (x1 - x0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intensity::brain_mask::tests::head;

    fn skull_stripped(inverted: bool, seed: u64) -> (Image<f32>, Image<f32>) {
        let (image, truth) = head([40, 44, 38], inverted, seed);
        let stripped = image
            .with_data(ndarray::Zip::from(image.data()).and(truth.data()).map_collect(|v, t| v * t))
            .unwrap();
        (stripped, truth)
    }

    fn mean_abs_difference(a: &Image<f32>, b: &Image<f32>, mask: &Image<f32>) -> f64 {
        let mut sum = 0.0;
        let mut n = 0;
        for ((x, y), m) in a.as_slice().iter().zip(b.as_slice()).zip(mask.as_slice()) {
            if *m > 0.5 {
                sum += (x - y).abs() as f64;
                n += 1;
            }
        }
        sum / n as f64
    }

    #[test]
    fn white_matter_is_found_by_depth_at_both_contrasts() {
        for inverted in [false, true] {
            let (image, mask) = skull_stripped(inverted, 1);
            let peaks = tissue_peaks(&image, &mask).unwrap();
            assert!(peaks.two_peaks);
            assert_eq!(peaks.inverted, inverted);
            let expected_wm = if inverted { 45.0 } else { 100.0 };
            assert!((peaks.white_matter - expected_wm).abs() < 3.0, "{peaks:?}");
        }
    }

    #[test]
    fn differently_scaled_and_contrasted_copies_agree() {
        let (a, mask) = skull_stripped(false, 2);
        // Another scanner: different gain and a non-linear (gamma) contrast change.
        let b = a.map(|v| 2.7 * v.powf(1.15));
        // White-matter-peak scaling removes the gain exactly.
        let scaled = a.map(|v| 3.1 * v);
        let (na, _) = normalize_intensity(&a, &mask, &NormalizationMethod::WhiteMatterPeak).unwrap();
        let (ns, _) = normalize_intensity(&scaled, &mask, &NormalizationMethod::WhiteMatterPeak).unwrap();
        assert!(mean_abs_difference(&na, &ns, &mask) < 0.02);
        // Tissue peaks and histogram matching also undo the contrast change.
        let peaks = tissue_peaks(&a, &mask).unwrap();
        let method = NormalizationMethod::TissuePeaks {
            white_matter: peaks.white_matter,
            grey_matter: peaks.grey_matter,
        };
        let (nb, _) = normalize_intensity(&b, &mask, &method).unwrap();
        let before = mean_abs_difference(&a, &b, &mask);
        let after = mean_abs_difference(&a, &nb, &mask);
        assert!(after < 0.05 * before, "tissue peaks: before {before}, after {after}");
        let percentiles = matching_percentiles();
        let standard = landmarks(&a, Some(&mask), &percentiles).unwrap();
        let (nb, _) =
            normalize_intensity(&b, &mask, &NormalizationMethod::Landmarks { percentiles, standard })
                .unwrap();
        let after = mean_abs_difference(&a, &nb, &mask);
        assert!(after < 0.05 * before, "histogram matching: before {before}, after {after}");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (a, mask) = skull_stripped(false, 3);
        let empty = mask.map(|_| 0.0f32);
        assert!(matches!(
            normalize_intensity(&a, &empty, &NormalizationMethod::WhiteMatterPeak),
            Err(IntensityError::EmptyMask { .. })
        ));
        let bad = NormalizationMethod::Landmarks { percentiles: vec![0.1, 0.5], standard: vec![1.0, 0.5] };
        assert!(matches!(normalize_intensity(&a, &mask, &bad), Err(IntensityError::Parameter { .. })));
        let constant = a.map(|_| 3.0f32);
        assert!(matches!(
            normalize_intensity(&constant, &mask, &NormalizationMethod::WhiteMatterPeak),
            Err(IntensityError::Constant { .. })
        ));
    }
}
