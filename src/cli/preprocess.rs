//! `pedinorm preprocess`: bias-field correction, brain mask and intensity normalization.

use crate::cli::progress;
use anyhow::{Context, bail};
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::pipeline::preprocess::{
    Normalization, PreprocessOptions, Steps, TemplateRef, preprocess_with_progress,
};
use pedinorm_registration::intensity::{BiasFieldParams, BrainMaskParams};
use std::path::PathBuf;

/// Arguments of `pedinorm preprocess`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input image (NIfTI).
    pub input: PathBuf,
    /// Output: the corrected and normalized image (float32 NIfTI).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Also write the brain mask (uint8 NIfTI).
    #[arg(long)]
    pub mask_output: Option<PathBuf>,
    /// Also write the multiplicative bias field (float32 NIfTI).
    #[arg(long)]
    pub field_output: Option<PathBuf>,
    /// Age-appropriate template for mask propagation and template-based normalization.
    #[arg(long, requires = "template_mask")]
    pub template: Option<PathBuf>,
    /// Brain mask of the template (same grid as the template).
    #[arg(long, requires = "template")]
    pub template_mask: Option<PathBuf>,
    /// Use this brain mask (same grid as the input) instead of computing one.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Steps to run, comma-separated: bias, mask, normalize (or all).
    #[arg(long, default_value = "bias,mask,normalize")]
    pub steps: Steps,
    /// Normalization: auto, wm-peak, tissue-peaks, nyul, histogram-match.
    #[arg(long, default_value = "auto")]
    pub normalization: Normalization,
    /// Shrink factor of the bias-field estimation.
    #[arg(long, default_value_t = 4)]
    pub shrink_factor: usize,
    /// Bias-field iterations per fitting level, e.g. 50x50x50x50 (one number per level).
    #[arg(long, default_value = "50x50x50x50")]
    pub bias_iterations: String,
    /// Bias-field convergence threshold (coefficient of variation of the field update).
    #[arg(long, default_value_t = 0.001)]
    pub convergence: f64,
}

/// Runs `pedinorm preprocess`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let iterations: Vec<usize> = args
        .bias_iterations
        .split('x')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("--bias-iterations `{}`: expected numbers separated by `x`", args.bias_iterations)
        })?;
    let image = read_image(&args.input)?;
    let template = match (&args.template, &args.template_mask) {
        (Some(t), Some(m)) => Some((read_image(t)?, read_image(m)?)),
        _ => None,
    };
    let given_mask = match &args.mask {
        Some(path) => {
            let mask = read_image(path)?;
            if mask.grid().dims() != image.grid().dims() {
                bail!(
                    "{}: mask grid {:?} does not match the input grid {:?} of {}",
                    path.display(),
                    mask.grid().dims(),
                    image.grid().dims(),
                    args.input.display()
                );
            }
            Some(mask)
        }
        None => None,
    };
    let options = PreprocessOptions {
        steps: args.steps,
        bias: BiasFieldParams {
            shrink_factor: args.shrink_factor,
            iterations,
            convergence_threshold: args.convergence,
            ..BiasFieldParams::default()
        },
        // Real inputs are often whole heads (skull, scalp, neck).
        mask: BrainMaskParams { whole_head: true, ..BrainMaskParams::default() },
        normalization: args.normalization,
        template: template.as_ref().map(|(image, mask)| TemplateRef { image, mask }),
        given_mask: given_mask.as_ref(),
        ..PreprocessOptions::default()
    };
    let bar = progress::bar(1, "preprocess");
    let result = preprocess_with_progress(&image, &options, &mut |step, done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(step.to_owned());
        tracing::info!(step, done, total, "preprocess step finished");
    })
    .with_context(|| format!("{}: preprocessing failed", args.input.display()))?;
    bar.finish_and_clear();
    write_image(&args.output, &result.image, VoxelType::F32)?;
    if let Some(path) = &args.mask_output {
        write_image(path, &result.mask, VoxelType::U8)?;
    }
    if let Some(path) = &args.field_output {
        match &result.field {
            Some(field) => write_image(path, field, VoxelType::F32)?,
            None => bail!("--field-output {}: the bias step did not run (see --steps)", path.display()),
        }
    }
    if let Some(report) = &result.normalization {
        if let Some(peaks) = report.peaks {
            tracing::info!(
                white_matter = peaks.white_matter,
                grey_matter = peaks.grey_matter,
                inverted = peaks.inverted,
                "tissue peaks"
            );
        }
    }
    tracing::info!(mask = result.mask_source, "preprocess done");
    Ok(())
}
