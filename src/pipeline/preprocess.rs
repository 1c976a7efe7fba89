//! Preprocessing of one image: bias-field correction, brain mask and intensity normalization.
//!
//! Order of the steps:
//! 1. a first brain mask from intensities and morphology (or the mask given by the caller);
//! 2. N4-style bias-field correction inside that mask;
//! 3. with a template: the template's mask propagated through an affine + deformable
//!    registration of the template to the corrected image; without one, the intensity mask is
//!    recomputed on the corrected image (a bias field can push a threshold into tissue);
//! 4. intensity normalization inside the final mask.
//!
//! Pure in-memory work; the CLI and the template and deviation pipelines call [`preprocess`].

use pedinorm_registration::intensity::normalize::{
    NYUL_PERCENTILES, landmarks, matching_percentiles, tissue_peaks,
};
use pedinorm_registration::intensity::{
    BiasFieldParams, BrainMaskParams, IntensityError, NormalizationMethod, NormalizationReport,
    brain_mask::foreground_threshold, brain_mask_from_intensity, check_image, check_same_grid,
    correct_bias_field, normalize_intensity,
};
use pedinorm_registration::{Image, Interpolation};
use pedinorm_registration::{RegistrationError, RegistrationPlan, register};

/// Which steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// Bias-field correction.
    pub bias: bool,
    /// Brain mask (without it, statistics use the intensity foreground).
    pub mask: bool,
    /// Intensity normalization.
    pub normalize: bool,
}

impl Default for Steps {
    fn default() -> Self {
        Self { bias: true, mask: true, normalize: true }
    }
}

impl std::str::FromStr for Steps {
    type Err = String;

    /// Parses a comma-separated list of `bias`, `mask`, `normalize` (or `all`).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut steps = Steps { bias: false, mask: false, normalize: false };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "bias" => steps.bias = true,
                "mask" => steps.mask = true,
                "normalize" => steps.normalize = true,
                "all" => steps = Steps::default(),
                other => {
                    return Err(format!("unknown step `{other}` (expected bias, mask, normalize or all)"));
                }
            }
        }
        if !(steps.bias || steps.mask || steps.normalize) {
            return Err("no step selected".into());
        }
        Ok(steps)
    }
}

/// How intensities are normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// White-matter-peak scaling without a template; Nyúl–Udupa landmarks onto the template's
    /// with one (see `docs/preprocess.md` for the measurements behind this choice).
    Auto,
    /// Divide by the white-matter peak (white matter found by depth, any contrast).
    WhiteMatterPeak,
    /// Map the grey- and white-matter peaks onto the template's (needs a template).
    TissuePeaks,
    /// Nyúl–Udupa: 11 percentile landmarks onto the template's (needs a template).
    Nyul,
    /// Histogram matching to the template: 101 quantiles (needs a template).
    HistogramMatch,
}

impl std::str::FromStr for Normalization {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "wm-peak" => Ok(Self::WhiteMatterPeak),
            "tissue-peaks" => Ok(Self::TissuePeaks),
            "nyul" => Ok(Self::Nyul),
            "histogram-match" => Ok(Self::HistogramMatch),
            other => Err(format!(
                "unknown normalization `{other}` (auto, wm-peak, tissue-peaks, nyul, histogram-match)"
            )),
        }
    }
}

/// An age-appropriate template and its brain mask (same grid).
#[derive(Debug, Clone, Copy)]
pub struct TemplateRef<'a> {
    /// Template intensities.
    pub image: &'a Image<f32>,
    /// Template brain mask (> 0.5 inside).
    pub mask: &'a Image<f32>,
}

/// Options of [`preprocess`].
#[derive(Debug, Clone)]
pub struct PreprocessOptions<'a> {
    /// Steps to run.
    pub steps: Steps,
    /// Bias-field parameters.
    pub bias: BiasFieldParams,
    /// Template-free mask parameters.
    pub mask: BrainMaskParams,
    /// Normalization method.
    pub normalization: Normalization,
    /// Template for mask propagation and template-based normalization.
    pub template: Option<TemplateRef<'a>>,
    /// A brain mask given by the caller (same grid as the image); replaces the mask step.
    pub given_mask: Option<&'a Image<f32>>,
    /// Coarsest-first shrink factors of the mask-propagation registration (the mask needs
    /// neither the finest level nor sub-millimetre accuracy).
    pub registration_shrink_factors: Vec<usize>,
}

impl Default for PreprocessOptions<'_> {
    fn default() -> Self {
        Self {
            steps: Steps::default(),
            bias: BiasFieldParams::default(),
            mask: BrainMaskParams::default(),
            normalization: Normalization::Auto,
            template: None,
            given_mask: None,
            registration_shrink_factors: vec![8, 4, 2],
        }
    }
}

/// What a caller chooses of a scan's preprocessing (`pedinorm preprocess` and the Python
/// package); everything else keeps its default. Scans are often whole heads (skull, scalp,
/// neck), so the intensity mask looks for the brain among them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPreprocessing {
    /// Steps to run.
    pub steps: Steps,
    /// Normalization method.
    pub normalization: Normalization,
    /// Shrink factor of the bias-field estimation.
    pub shrink_factor: usize,
    /// Bias-field iterations per fitting level.
    pub bias_iterations: Vec<usize>,
    /// Bias-field convergence threshold (coefficient of variation of the field update).
    pub convergence: f64,
}

impl Default for ScanPreprocessing {
    fn default() -> Self {
        Self {
            steps: Steps::default(),
            normalization: Normalization::Auto,
            shrink_factor: 4,
            bias_iterations: vec![50; 4],
            convergence: 0.001,
        }
    }
}

impl ScanPreprocessing {
    /// Parses bias-field iterations written `50x50x50x50` (one number per level).
    pub fn parse_iterations(text: &str) -> Result<Vec<usize>, String> {
        text.split('x')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bias iterations `{text}`: expected numbers separated by `x`"))
    }

    /// The options of [`preprocess`] with `template` (and its mask) and a mask given by the
    /// caller, when any.
    pub fn options<'a>(
        &self,
        template: Option<TemplateRef<'a>>,
        given_mask: Option<&'a Image<f32>>,
    ) -> PreprocessOptions<'a> {
        PreprocessOptions {
            steps: self.steps,
            bias: BiasFieldParams {
                shrink_factor: self.shrink_factor,
                iterations: self.bias_iterations.clone(),
                convergence_threshold: self.convergence,
                ..BiasFieldParams::default()
            },
            mask: BrainMaskParams { whole_head: true, ..BrainMaskParams::default() },
            normalization: self.normalization,
            template,
            given_mask,
            ..PreprocessOptions::default()
        }
    }
}

/// What [`preprocess`] produced.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// The corrected and normalized image.
    pub image: Image<f32>,
    /// The brain mask used (1 inside, 0 outside); the intensity foreground when the mask step
    /// did not run.
    pub mask: Image<f32>,
    /// The multiplicative bias field, when that step ran.
    pub field: Option<Image<f32>>,
    /// The normalization applied, when that step ran.
    pub normalization: Option<NormalizationReport>,
    /// Where the mask came from: `given`, `template`, `intensity` or `foreground`.
    pub mask_source: &'static str,
}

/// Why preprocessing failed.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// An intensity step refused its input.
    #[error("{step}: {source}")]
    Intensity {
        /// The step (`input`, `bias`, `mask`, `normalize`).
        step: &'static str,
        /// Why.
        source: IntensityError,
    },
    /// Mask propagation could not register the template.
    #[error("mask propagation: {0}")]
    Registration(#[from] RegistrationError),
    /// An option needs something that was not given.
    #[error("option {option}: {rule}")]
    Option {
        /// The option.
        option: &'static str,
        /// The rule.
        rule: String,
    },
}

fn step(step: &'static str) -> impl Fn(IntensityError) -> PreprocessError {
    move |source| PreprocessError::Intensity { step, source }
}

/// Runs the selected steps on `image` (see the module documentation).
pub fn preprocess(image: &Image<f32>, options: &PreprocessOptions) -> Result<Preprocessed, PreprocessError> {
    preprocess_with_progress(image, options, &mut |_, _, _| {})
}

/// [`preprocess`] reporting each step as `(name, steps done, steps total)`.
pub fn preprocess_with_progress(
    image: &Image<f32>,
    options: &PreprocessOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Preprocessed, PreprocessError> {
    check_image(image).map_err(step("input"))?;
    let needs_template = matches!(
        options.normalization,
        Normalization::TissuePeaks | Normalization::Nyul | Normalization::HistogramMatch
    );
    if needs_template && options.template.is_none() && options.steps.normalize {
        return Err(PreprocessError::Option {
            option: "normalization",
            rule: "this method needs a template and its mask".into(),
        });
    }
    if let Some(template) = &options.template {
        check_image(template.image).map_err(step("template"))?;
        check_same_grid(template.image, template.mask, "template mask").map_err(step("template"))?;
    }
    if let Some(mask) = options.given_mask {
        check_same_grid(image, mask, "given mask").map_err(step("mask"))?;
        if !mask.as_slice().iter().any(|&m| m > 0.5) {
            return Err(step("mask")(IntensityError::EmptyMask {
                reason: "the given mask has no voxel above 0.5".into(),
            }));
        }
    }
    let propagate = options.steps.mask && options.given_mask.is_none() && options.template.is_some();
    let total = 1
        + options.steps.bias as usize
        + options.steps.mask as usize
        + propagate as usize
        + options.steps.normalize as usize;
    let mut done = 0;
    let mut report = |name: &str, done: &mut usize| {
        *done += 1;
        progress(name, *done, total);
    };

    // 1. First mask.
    let (mut mask, mut mask_source) = if let Some(given) = options.given_mask {
        (given.map(|&m| if m > 0.5 { 1.0f32 } else { 0.0 }), "given")
    } else if options.steps.mask {
        (brain_mask_from_intensity(image, &options.mask).map_err(step("mask"))?, "intensity")
    } else {
        let threshold = foreground_threshold(image);
        (image.map(|&v| if v > threshold { 1.0f32 } else { 0.0 }), "foreground")
    };
    report("mask", &mut done);

    // 2. Bias field inside the first mask.
    let (mut current, field) = if options.steps.bias {
        let correction = correct_bias_field(image, Some(&mask), &options.bias).map_err(step("bias"))?;
        tracing::info!(iterations = ?correction.iterations, convergence = ?correction.final_convergence, "bias field");
        report("bias field", &mut done);
        (correction.corrected, Some(correction.field))
    } else {
        (image.clone(), None)
    };

    // 3. Final mask.
    if options.given_mask.is_none() && options.steps.mask {
        if let Some(template) = &options.template {
            mask = propagate_mask(&current, template, &options.registration_shrink_factors)?;
            mask_source = "template";
            report("mask propagation", &mut done);
        } else if options.steps.bias {
            mask = brain_mask_from_intensity(&current, &options.mask).map_err(step("mask"))?;
        }
        report("brain mask", &mut done);
    }
    if !mask.as_slice().iter().any(|&m| m > 0.5) {
        return Err(step("mask")(IntensityError::EmptyMask {
            reason: format!("the {mask_source} mask selects no voxel"),
        }));
    }

    // 4. Normalization.
    let mut normalization = None;
    if options.steps.normalize {
        let method = normalization_method(options)?;
        let (normalized, applied) =
            normalize_intensity(&current, &mask, &method).map_err(step("normalize"))?;
        current = normalized;
        normalization = Some(applied);
        report("normalize", &mut done);
    }
    Ok(Preprocessed { image: current, mask, field, normalization, mask_source })
}

fn normalization_method(options: &PreprocessOptions) -> Result<NormalizationMethod, PreprocessError> {
    let template = options.template;
    let method = match (options.normalization, template) {
        (Normalization::WhiteMatterPeak, _) | (Normalization::Auto, None) => {
            NormalizationMethod::WhiteMatterPeak
        }
        (Normalization::TissuePeaks, Some(t)) => {
            let peaks = tissue_peaks(t.image, t.mask).map_err(step("template"))?;
            NormalizationMethod::TissuePeaks {
                white_matter: peaks.white_matter,
                grey_matter: peaks.grey_matter,
            }
        }
        (Normalization::Nyul, Some(t)) | (Normalization::Auto, Some(t)) => NormalizationMethod::Landmarks {
            percentiles: NYUL_PERCENTILES.to_vec(),
            standard: landmarks(t.image, Some(t.mask), &NYUL_PERCENTILES).map_err(step("template"))?,
        },
        (Normalization::HistogramMatch, Some(t)) => {
            let percentiles = matching_percentiles();
            let standard = landmarks(t.image, Some(t.mask), &percentiles).map_err(step("template"))?;
            NormalizationMethod::Landmarks { percentiles, standard }
        }
        (_, None) => {
            return Err(PreprocessError::Option {
                option: "normalization",
                rule: "this method needs a template and its mask".into(),
            });
        }
    };
    Ok(method)
}

/// The template's mask carried into the subject's space: the template is registered to the
/// subject (affine by mutual information, then deformable by squared local correlation, which
/// tolerates contrast differences), and its mask pulled through the result.
pub fn propagate_mask(
    subject: &Image<f32>,
    template: &TemplateRef,
    shrink_factors: &[usize],
) -> Result<Image<f32>, PreprocessError> {
    if shrink_factors.is_empty() {
        return Err(PreprocessError::Option {
            option: "registration_shrink_factors",
            rule: "needs at least one level".into(),
        });
    }
    let registration = register(subject, template.image, &RegistrationPlan::fast(shrink_factors))?;
    let warped = registration.warp(template.mask, subject.grid(), Interpolation::Linear);
    Ok(warped.map(|&m| if m >= 0.5 { 1.0f32 } else { 0.0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse() {
        assert_eq!("bias,mask".parse::<Steps>().unwrap(), Steps { bias: true, mask: true, normalize: false });
        assert_eq!("all".parse::<Steps>().unwrap(), Steps::default());
        assert!("bias,skull".parse::<Steps>().is_err());
        assert!("".parse::<Steps>().is_err());
    }
}
