//! Safeguards of a single-subject comparison: a floor under the voxelwise standard deviation,
//! and out-of-distribution (OOD) indices that say when a case lies outside what the normals of
//! the database represent.
//!
//! **SD floor.** A normative sample that is more homogeneous than real children (one scanner,
//! few subjects, a synthetic population) gives a voxelwise SD far below the real inter-subject
//! variability, and the z of any real difference explodes. The SD of each channel never falls
//! below a floor stated as a prior on real variability ([`SdFloor`], figures and sources in
//! `docs/deviation.md`): it binds only where the sample's own SD is implausibly small.
//!
//! **OOD indices.** Global figures of a deviation result ([`GlobalIndices`]: fraction of the
//! brain beyond the voxel threshold and median `|z|` per channel, registration similarity,
//! intensity-histogram distance to the template, brain-mask agreement) are compared with their
//! distribution over the calibration normals ([`OodReference`], each normal scored
//! leave-one-out, exactly like a new case). An index is flagged when it is worse than **every**
//! calibration normal **and** its robust z (median and scaled MAD of the normals, the MAD
//! bounded below by a per-index minimum spread) exceeds [`ROBUST_Z_LIMIT`]. One flagged index
//! makes the comparison unreliable.

use crate::calibration::{AbsZHistogram, BIN_WIDTH};
use crate::normative::{NormativeError, NormativeModel, NormativeParams};
use crate::stats::{NormativeAccumulator, Sex};
use serde::{Deserialize, Serialize};

/// A floor under the voxelwise standard deviation of each channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SdFloor {
    /// Intensity-channel floor as a fraction of the template's median intensity inside its
    /// mask (intensities are matched to the template, so this is their scale).
    pub intensity_fraction_of_median: f64,
    /// Log-Jacobian floor (natural-log units of local volume).
    pub logjac: f64,
}

impl SdFloor {
    /// The standard floors: 2 % of the median brain intensity and 0.04 log-Jacobian units,
    /// about a third of the real between-subject variability reported for normalized T1
    /// intensity and regional volume in healthy children (see `docs/deviation.md`), so that
    /// a real database's own SD governs wherever it is plausible.
    pub const STANDARD: SdFloor = SdFloor { intensity_fraction_of_median: 0.02, logjac: 0.04 };

    /// The floors in the channels' units (`[intensity, logjac]`) for a template whose
    /// in-mask intensities are `template_in_mask`.
    pub fn floors(&self, template_in_mask: &[f32]) -> [f64; 2] {
        let mut values: Vec<f32> = template_in_mask.iter().copied().filter(|v| v.is_finite()).collect();
        let median = if values.is_empty() {
            0.0
        } else {
            let mid = values.len() / 2;
            *values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1 as f64
        };
        [self.intensity_fraction_of_median * median.abs(), self.logjac]
    }
}

/// Raises every voxel's SD of `model` to at least `floor`; returns the fraction of voxels
/// where the floor binds.
pub fn apply_sd_floor(model: &mut NormativeModel, floor: f64) -> f64 {
    if floor.is_nan() || floor <= 0.0 || model.sd.is_empty() {
        return 0.0;
    }
    let floor = floor as f32;
    let mut bound = 0usize;
    for sd in &mut model.sd {
        if *sd < floor {
            *sd = floor;
            bound += 1;
        }
    }
    bound as f64 / model.sd.len() as f64
}

/// The SD floors of a template's channels (`[intensity, logjac]`, zero when `params` has no
/// floor, as in databases written before it).
pub fn channel_floors(params: &NormativeParams, template_in_mask: &[f32]) -> [f64; 2] {
    params.sd_floor.map(|f| f.floors(template_in_mask)).unwrap_or([0.0; 2])
}

/// The normative model at an age with its SD floored at `floor`, and the fraction of voxels
/// where the floor binds.
pub fn floored_model(
    accumulator: &NormativeAccumulator,
    age_years: f64,
    sex: Option<Sex>,
    params: &NormativeParams,
    floor: f64,
) -> Result<(NormativeModel, f64), NormativeError> {
    let mut model = NormativeModel::at_age(accumulator, age_years, sex, params)?;
    let bound = apply_sd_floor(&mut model, floor);
    Ok((model, bound))
}

/// Robust z beyond which an index worse than every calibration normal is flagged.
pub const ROBUST_Z_LIMIT: f64 = 4.0;

/// The fewest calibration normals with a finite index for that index to be assessed.
pub const MIN_REFERENCE_NORMALS: usize = 5;

/// Which way an index gets worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Worse {
    /// Larger values are worse.
    Higher,
    /// Smaller values are worse.
    Lower,
}

/// One global index: its name, which way it gets worse, the smallest spread its robust z
/// assumes, and what it means when flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexSpec {
    /// Name (also the HDF5 dataset name).
    pub name: &'static str,
    /// Direction of worse.
    pub worse: Worse,
    /// Lower bound of the robust spread (the index's own units).
    pub min_spread: f64,
    /// Lower bound of the robust spread as a fraction of the normals' median (a rate of
    /// false positives varies in proportion to its size).
    pub relative_min_spread: f64,
    /// Plain-language reason when flagged.
    pub reason: &'static str,
    /// True when the index measures how much of the brain deviates rather than whether the
    /// comparison is valid (a diffusely abnormal brain raises it too).
    pub extent: bool,
}

/// The global indices, in [`GlobalIndices::values`] order.
pub const INDEX_SPECS: [IndexSpec; 7] = [
    IndexSpec {
        name: "intensity_fraction_beyond",
        worse: Worse::Higher,
        min_spread: 0.001,
        relative_min_spread: 1.0,
        reason: "far more of the brain is beyond the intensity threshold than in any normal",
        extent: true,
    },
    IndexSpec {
        name: "logjac_fraction_beyond",
        worse: Worse::Higher,
        min_spread: 0.001,
        relative_min_spread: 1.0,
        reason: "far more of the brain is beyond the log-Jacobian threshold than in any normal",
        extent: true,
    },
    IndexSpec {
        name: "intensity_median_abs_z",
        worse: Worse::Higher,
        min_spread: 0.05,
        relative_min_spread: 0.1,
        reason: "the typical intensity |z| over the brain is higher than in any normal",
        extent: true,
    },
    IndexSpec {
        name: "logjac_median_abs_z",
        worse: Worse::Higher,
        min_spread: 0.05,
        relative_min_spread: 0.1,
        reason: "the typical log-Jacobian |z| over the brain is higher than in any normal",
        extent: true,
    },
    IndexSpec {
        name: "registration_similarity",
        worse: Worse::Lower,
        min_spread: 0.01,
        relative_min_spread: 0.0,
        reason: "the registered case resembles the template less than any normal (registration failure, \
                 other contrast or sequence, motion)",
        extent: false,
    },
    IndexSpec {
        name: "histogram_distance",
        worse: Worse::Higher,
        min_spread: 0.01,
        relative_min_spread: 0.0,
        reason: "the intensity histogram differs from the template's more than any normal's (other \
                 contrast, sequence, scanner or blur)",
        extent: false,
    },
    IndexSpec {
        name: "mask_dice",
        worse: Worse::Lower,
        min_spread: 0.01,
        relative_min_spread: 0.0,
        reason: "the case's brain mask agrees with the template's less than any normal's (skull or \
                 tissue left in, missing brain, field of view)",
        extent: false,
    },
];

/// Global indices of one z-mapped subject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GlobalIndices {
    /// Fraction of mask voxels beyond the voxel threshold, `[intensity, logjac]`.
    pub fraction_beyond: [f64; 2],
    /// Median `|z|` over the mask, `[intensity, logjac]`.
    pub median_abs_z: [f64; 2],
    /// Correlation of the warped subject with the template inside the mask.
    pub similarity: f64,
    /// [`histogram_distance`] of the warped subject to the template (NaN: unknown).
    pub histogram_distance: f64,
    /// [`dice`] of the subject's brain mask carried to the template with the template mask
    /// (NaN: unknown).
    pub mask_dice: f64,
}

impl GlobalIndices {
    /// The indices from the `|z|` histograms of a z-map (`[intensity, logjac]`), the voxel
    /// thresholds, and the mapping's figures.
    pub fn from_histograms(
        histograms: [&AbsZHistogram; 2],
        thresholds: [f64; 2],
        similarity: f64,
        histogram_distance: f64,
        mask_dice: f64,
    ) -> Self {
        Self {
            fraction_beyond: [
                histograms[0].exceedance(thresholds[0]),
                histograms[1].exceedance(thresholds[1]),
            ],
            median_abs_z: [median_abs_z(histograms[0]), median_abs_z(histograms[1])],
            similarity,
            histogram_distance,
            mask_dice,
        }
    }

    /// The values in [`INDEX_SPECS`] order.
    pub fn values(&self) -> [f64; 7] {
        [
            self.fraction_beyond[0],
            self.fraction_beyond[1],
            self.median_abs_z[0],
            self.median_abs_z[1],
            self.similarity,
            self.histogram_distance,
            self.mask_dice,
        ]
    }
}

/// Median `|z|` of a histogram (linear inside the bin; 0 when empty).
pub fn median_abs_z(histogram: &AbsZHistogram) -> f64 {
    let total = histogram.total() as f64;
    if total <= 0.0 {
        return 0.0;
    }
    let half = total / 2.0;
    let mut below = 0.0;
    for (bin, &count) in histogram.counts().iter().enumerate() {
        let c = count as f64;
        if below + c >= half && c > 0.0 {
            return (bin as f64 + (half - below) / c) * BIN_WIDTH;
        }
        below += c;
    }
    (histogram.counts().len() as f64) * BIN_WIDTH
}

/// Distance between the intensity distributions of a subject and of the template, each scaled
/// by its own median: the mean absolute difference of their quantile functions at the
/// percentiles 1…99 (a 1-Wasserstein distance in units of the median). Contrast, sequence and
/// blur change the shape of the histogram, which this sees; a global gain does not.
pub fn histogram_distance(subject_in_mask: &[f32], template_in_mask: &[f32]) -> f64 {
    let quantiles = |values: &[f32]| -> Option<Vec<f64>> {
        let mut v: Vec<f32> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.len() < 2 {
            return None;
        }
        v.sort_unstable_by(|a, b| a.total_cmp(b));
        let at = |p: f64| {
            let position = p * (v.len() - 1) as f64;
            let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
            let t = position - lo as f64;
            v[lo] as f64 * (1.0 - t) + v[hi] as f64 * t
        };
        let median = at(0.5);
        if median.abs() <= f64::EPSILON {
            return None;
        }
        Some((1..100).map(|p| at(p as f64 / 100.0) / median.abs()).collect())
    };
    match (quantiles(subject_in_mask), quantiles(template_in_mask)) {
        (Some(s), Some(t)) => s.iter().zip(&t).map(|(a, b)| (a - b).abs()).sum::<f64>() / s.len() as f64,
        _ => f64::NAN,
    }
}

/// Dice overlap `2|A∩B| / (|A| + |B|)` of two masks on one grid (NaN when both are empty).
pub fn dice(a: &[bool], b: &[bool]) -> f64 {
    let (mut both, mut total) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        both += usize::from(x && y);
        total += usize::from(x) + usize::from(y);
    }
    if total == 0 { f64::NAN } else { 2.0 * both as f64 / total as f64 }
}

/// The distribution of one index over the calibration normals and the limit derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexReference {
    /// Index name (see [`INDEX_SPECS`]).
    pub name: String,
    /// Which way the index gets worse.
    pub worse: Worse,
    /// Values over the calibration normals (finite ones only, ascending).
    pub values: Vec<f64>,
    /// Median of the values.
    pub median: f64,
    /// Robust spread: `max(1.4826 · MAD, min_spread, relative_min_spread · |median|)`.
    pub spread: f64,
    /// Values beyond this are flagged: the most extreme normal or `median ± ROBUST_Z_LIMIT ·
    /// spread`, whichever is further out.
    pub limit: f64,
}

/// The reference distributions of every index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodReference {
    /// One per index with enough normals, in [`INDEX_SPECS`] order.
    pub indices: Vec<IndexReference>,
}

fn median_of(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) }
}

impl IndexReference {
    /// The reference of `spec` over `values` (non-finite ones ignored); `None` with fewer than
    /// [`MIN_REFERENCE_NORMALS`] finite values.
    pub fn new(spec: &IndexSpec, values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.len() < MIN_REFERENCE_NORMALS {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let median = median_of(&sorted);
        let mut deviations: Vec<f64> = sorted.iter().map(|v| (v - median).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let spread = (1.4826 * median_of(&deviations))
            .max(spec.min_spread)
            .max(spec.relative_min_spread * median.abs());
        let limit = match spec.worse {
            Worse::Higher => sorted[sorted.len() - 1].max(median + ROBUST_Z_LIMIT * spread),
            Worse::Lower => sorted[0].min(median - ROBUST_Z_LIMIT * spread),
        };
        Some(Self { name: spec.name.to_owned(), worse: spec.worse, values: sorted, median, spread, limit })
    }
}

impl OodReference {
    /// The reference from the calibration normals' indices.
    pub fn from_normals(normals: &[GlobalIndices]) -> Self {
        let indices = INDEX_SPECS
            .iter()
            .enumerate()
            .filter_map(|(k, spec)| {
                let values: Vec<f64> = normals.iter().map(|g| g.values()[k]).collect();
                IndexReference::new(spec, &values)
            })
            .collect();
        Self { indices }
    }

    /// Each index of `case` against its reference (indices without a reference, or with an
    /// unknown value, are not assessed).
    pub fn assess(&self, case: &GlobalIndices) -> Vec<IndexAssessment> {
        let values = case.values();
        INDEX_SPECS
            .iter()
            .zip(values)
            .filter_map(|(spec, value)| {
                let reference = self.indices.iter().find(|r| r.name == spec.name)?;
                if !value.is_finite() {
                    return None;
                }
                let signed = (value - reference.median) / reference.spread;
                let (robust_z, flagged) = match spec.worse {
                    Worse::Higher => (signed, value > reference.limit),
                    Worse::Lower => (-signed, value < reference.limit),
                };
                Some(IndexAssessment {
                    name: spec.name.to_owned(),
                    value,
                    normal_median: reference.median,
                    limit: reference.limit,
                    robust_z,
                    flagged,
                    reason: flagged.then(|| {
                        format!(
                            "{} ({} = {value:.4}; normals: median {:.4}, limit {:.4})",
                            spec.reason, spec.name, reference.median, reference.limit
                        )
                    }),
                })
            })
            .collect()
    }
}

/// One index of a case against the calibration normals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexAssessment {
    /// Index name.
    pub name: String,
    /// The case's value.
    pub value: f64,
    /// Median over the calibration normals.
    pub normal_median: f64,
    /// The limit beyond which the index is flagged.
    pub limit: f64,
    /// Robust z in the direction of worse (positive = worse than the median normal).
    pub robust_z: f64,
    /// Beyond the limit.
    pub flagged: bool,
    /// Why it matters, when flagged.
    pub reason: Option<String>,
}

/// Whether the case's age is represented by normals: `None` when it lies inside the span of
/// `normal_ages` widened by `margin_years` on each side, else the reason.
pub fn age_outside_normals(age_years: f64, normal_ages: &[f64], margin_years: f64) -> Option<String> {
    let lo = normal_ages.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = normal_ages.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return Some("the database has no normals for this age".into());
    }
    (age_years < lo - margin_years || age_years > hi + margin_years).then(|| {
        format!(
            "age {age_years:.2} y is outside the ages of the database's normals ({lo:.2}–{hi:.2} y): the model is \
             extrapolated"
        )
    })
}

/// The verdict on one comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// False when any index is flagged or the age is not represented.
    pub reliable: bool,
    /// Plain-language reasons (empty when reliable).
    pub reasons: Vec<String>,
    /// Every index assessed.
    pub indices: Vec<IndexAssessment>,
    /// Notes that do not decide the verdict (e.g. an index the database cannot check).
    pub notes: Vec<String>,
    /// The rule applied.
    pub rule: String,
}

impl Reliability {
    /// The verdict from the index assessments and the age check (`age_problem`), with
    /// `notes` that do not decide it (e.g. no reference in the database).
    pub fn new(indices: Vec<IndexAssessment>, age_problem: Option<String>, mut notes: Vec<String>) -> Self {
        let mut reasons: Vec<String> = age_problem.into_iter().collect();
        reasons.extend(indices.iter().filter_map(|a| a.reason.clone()));
        if let Some(note) = extent_only_note(&indices) {
            notes.push(note);
        }
        Self {
            reliable: reasons.is_empty(),
            reasons,
            indices,
            notes,
            rule: format!(
                "an index is flagged when it is worse than every calibration normal and its robust z (median, \
                 1.4826·MAD) exceeds {ROBUST_Z_LIMIT}; any flagged index, or an age outside the normals' ages, \
                 makes the comparison unreliable"
            ),
        }
    }
}

/// When only the extent indices are flagged, the reader must know the two readings apart: a
/// diffusely abnormal brain (a white-matter disease) and a brain the normals do not represent
/// look the same to them; the validity indices (registration, contrast, mask) are in range.
fn extent_only_note(indices: &[IndexAssessment]) -> Option<String> {
    let extent = |a: &IndexAssessment| INDEX_SPECS.iter().any(|s| s.extent && s.name == a.name);
    let flagged: Vec<&IndexAssessment> = indices.iter().filter(|a| a.flagged).collect();
    let validity_assessed = indices.iter().any(|a| !extent(a));
    (!flagged.is_empty() && validity_assessed && flagged.iter().all(|a| extent(a)))
        .then(|| {
            "only the extent of deviation is flagged (registration, contrast and brain-mask indices are within the \
             normals' range): either the brain is diffusely abnormal, or its anatomy or sequence is one the \
             database's normals do not represent; read the maps as a whole before any single cluster"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(sd: Vec<f32>) -> NormativeModel {
        NormativeModel {
            age_years: 5.0,
            sex: None,
            mean: vec![0.0; sd.len()],
            sd,
            effective_n: 10.0,
            median_variance: 1.0,
        }
    }

    #[test]
    fn floor_raises_only_the_small_sds_and_bounds_z() {
        let mut m = model(vec![1e-6, 0.5, 2.0, 0.01]);
        let bound = apply_sd_floor(&mut m, 0.04);
        assert_eq!(m.sd, vec![0.04, 0.5, 2.0, 0.04]);
        assert!((bound - 0.5).abs() < 1e-12);
        // A homogeneous sample cannot make z explode: a 0.1 difference scores at most 2.5.
        let z = m.z_scores(&[0.1, 0.1, 0.1, 0.1]).unwrap();
        assert!(z.iter().all(|z| z.abs() <= 2.5 + 1e-6), "{z:?}");
        assert_eq!(apply_sd_floor(&mut m, 0.0), 0.0);
    }

    #[test]
    fn floors_scale_with_the_template_intensity() {
        let template: Vec<f32> = (1..=101).map(|v| v as f32).collect();
        let [intensity, logjac] = SdFloor::STANDARD.floors(&template);
        assert!((intensity - 0.02 * 51.0).abs() < 1e-9);
        assert_eq!(logjac, 0.04);
        let doubled: Vec<f32> = template.iter().map(|v| 2.0 * v).collect();
        assert!((SdFloor::STANDARD.floors(&doubled)[0] - 2.0 * intensity).abs() < 1e-9);
    }

    #[test]
    fn median_abs_z_of_a_histogram() {
        let z: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0 * 2.0 - 1.0).collect();
        let m = median_abs_z(&AbsZHistogram::from_z(&z));
        assert!((m - 0.5).abs() < 0.01, "{m}");
        assert_eq!(median_abs_z(&AbsZHistogram::new()), 0.0);
    }

    #[test]
    fn histogram_distance_sees_inversion_and_blur_but_not_gain() {
        // Two tissue classes, 30 % and 70 % of the voxels.
        let template: Vec<f32> =
            (0..1000).map(|i| if i % 10 < 3 { 60.0 } else { 100.0 } + (i % 7) as f32).collect();
        assert!(histogram_distance(&template, &template) < 1e-12);
        let gain: Vec<f32> = template.iter().map(|v| 1.7 * v).collect();
        assert!(histogram_distance(&gain, &template) < 1e-6);
        let inverted: Vec<f32> = template.iter().map(|v| 170.0 - v).collect();
        assert!(
            histogram_distance(&inverted, &template) > 0.2,
            "{}",
            histogram_distance(&inverted, &template)
        );
        let blurred: Vec<f32> = template.iter().map(|v| 0.2 * v + 0.8 * 88.0).collect();
        assert!(
            histogram_distance(&blurred, &template) > 0.05,
            "{}",
            histogram_distance(&blurred, &template)
        );
        assert!(histogram_distance(&[], &template).is_nan());
    }

    #[test]
    fn dice_of_masks() {
        assert_eq!(dice(&[true, true, false, false], &[true, false, true, false]), 0.5);
        assert!(dice(&[false], &[false]).is_nan());
    }

    fn normals(n: usize) -> Vec<GlobalIndices> {
        (0..n)
            .map(|i| {
                let e = (i as f64 / n as f64) - 0.5;
                GlobalIndices {
                    fraction_beyond: [0.001 + 0.0004 * e, 0.001 + 0.0003 * e],
                    median_abs_z: [0.65 + 0.05 * e, 0.66 + 0.04 * e],
                    similarity: 0.95 + 0.01 * e,
                    histogram_distance: 0.03 + 0.01 * e,
                    mask_dice: 0.93 + 0.01 * e,
                }
            })
            .collect()
    }

    #[test]
    fn an_in_distribution_case_is_reliable_and_a_mismatch_is_flagged_with_its_reason() {
        let reference = OodReference::from_normals(&normals(20));
        assert_eq!(reference.indices.len(), 7);
        let typical = normals(20)[7];
        let verdict = Reliability::new(reference.assess(&typical), None, vec![]);
        assert!(verdict.reliable, "{verdict:?}");
        assert!(verdict.reasons.is_empty());

        let mut inverted = typical;
        inverted.similarity = -0.6;
        inverted.fraction_beyond = [0.3, 0.05];
        inverted.histogram_distance = 0.5;
        let verdict = Reliability::new(reference.assess(&inverted), None, vec![]);
        assert!(!verdict.reliable);
        let flagged: Vec<&str> =
            verdict.indices.iter().filter(|a| a.flagged).map(|a| a.name.as_str()).collect();
        assert_eq!(
            flagged,
            [
                "intensity_fraction_beyond",
                "logjac_fraction_beyond",
                "registration_similarity",
                "histogram_distance"
            ]
        );
        assert!(verdict.reasons.iter().any(|r| r.contains("resembles the template less")));
        // Registration and contrast flagged too: no note about a diffusely abnormal brain.
        assert!(verdict.notes.is_empty(), "{:?}", verdict.notes);

        // Only the extent flagged (a real brain unlike the normals, or a diffuse disease).
        let mut diffuse = typical;
        diffuse.fraction_beyond = [0.2, 0.1];
        diffuse.median_abs_z = [2.0, 1.5];
        let verdict = Reliability::new(reference.assess(&diffuse), None, vec![]);
        assert!(!verdict.reliable);
        assert!(verdict.notes.iter().any(|n| n.contains("diffusely abnormal")), "{:?}", verdict.notes);
    }

    #[test]
    fn a_value_just_beyond_the_most_extreme_normal_is_not_flagged_without_a_large_robust_z() {
        let reference = OodReference::from_normals(&normals(20));
        let mut case = normals(20)[19];
        case.median_abs_z[0] += 0.01; // beyond every normal, robust z small
        assert!(reference.assess(&case).iter().all(|a| !a.flagged));
    }

    #[test]
    fn too_few_or_unknown_values_are_not_assessed() {
        let mut few = normals(4);
        assert!(OodReference::from_normals(&few).indices.is_empty());
        few = normals(10);
        for n in &mut few {
            n.mask_dice = f64::NAN;
        }
        let reference = OodReference::from_normals(&few);
        assert!(reference.indices.iter().all(|r| r.name != "mask_dice"));
        let mut case = few[0];
        case.histogram_distance = f64::NAN;
        let names: Vec<String> = reference.assess(&case).into_iter().map(|a| a.name).collect();
        assert!(!names.iter().any(|n| n == "mask_dice" || n == "histogram_distance"));
    }

    #[test]
    fn age_outside_the_normals_is_a_reason() {
        let ages = [6.0, 7.5, 9.9];
        assert!(age_outside_normals(8.0, &ages, 0.5).is_none());
        assert!(age_outside_normals(10.3, &ages, 0.5).is_none());
        assert!(age_outside_normals(17.0, &ages, 0.5).unwrap().contains("outside the ages"));
        assert!(age_outside_normals(5.0, &[], 0.5).is_some());
        let verdict = Reliability::new(vec![], age_outside_normals(17.0, &ages, 0.5), vec![]);
        assert!(!verdict.reliable);
    }
}
