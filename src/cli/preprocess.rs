//! `pedinorm preprocess`: bias-field correction, brain mask and intensity normalization.

use crate::cli::progress;
use anyhow::{Context, bail};
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::pipeline::preprocess::{
    Normalization, ScanPreprocessing, Steps, TemplateRef, preprocess_with_progress,
};
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
    let bias_iterations = ScanPreprocessing::parse_iterations(&args.bias_iterations)
        .map_err(|rule| anyhow::anyhow!("--{rule}"))?;
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
    let settings = ScanPreprocessing {
        steps: args.steps,
        normalization: args.normalization,
        shrink_factor: args.shrink_factor,
        bias_iterations,
        convergence: args.convergence,
    };
    let options = settings
        .options(template.as_ref().map(|(image, mask)| TemplateRef { image, mask }), given_mask.as_ref());
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
