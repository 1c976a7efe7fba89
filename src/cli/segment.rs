//! `pedinorm segment`: tissue probability maps, labels and volumes of one subject.

use pedinorm::pipeline::segment::{SegmentRequest, run_segment};
use pedinorm_registration::segmentation::SegmentationOptions;
use std::path::PathBuf;

/// Arguments of `pedinorm segment`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Tissue segmentation of one subject: a Gaussian mixture over its images \
(one per contrast) fitted by EM, with a Markov random field and optional prior probability maps \
(as ANTs Atropos).\n\n\
With --priors (one map per tissue on the image's grid, e.g. template tissue maps brought onto the \
subject with `pedinorm apply`) the tissues are the priors' and their names default to the priors' \
file names; this is the robust choice for infants, whose T1 contrast is inverted or isointense. \
Without priors, --classes classes start from k-means and are named by --tissues in ascending order \
of the first image's intensity (adult T1: csf,gm,wm; T2: wm,gm,csf).\n\n\
Writes OUT_DIR/<tissue>.nii.gz, labels.nii.gz (1-based index of --tissues), volumes.tsv and \
segmentation.json; the folder appears whole.")]
pub struct Args {
    /// Image to segment; repeat for more contrasts of the same subject (same grid).
    #[arg(long = "image", required = true)]
    pub images: Vec<PathBuf>,
    /// Brain mask (default: voxels of the first image above 0).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Prior probability maps, comma-separated, one per tissue.
    #[arg(long, value_delimiter = ',')]
    pub priors: Vec<PathBuf>,
    /// Tissue names, comma-separated (see above).
    #[arg(long, value_delimiter = ',')]
    pub tissues: Vec<String>,
    /// Classes without priors.
    #[arg(long, default_value_t = 3)]
    pub classes: usize,
    /// Markov random field weight (0 turns it off).
    #[arg(long, default_value_t = SegmentationOptions::default().mrf_weight)]
    pub mrf: f64,
    /// Weight of the priors against a uniform prior (0–1).
    #[arg(long, default_value_t = SegmentationOptions::default().prior_weight)]
    pub prior_weight: f64,
    /// Most EM iterations.
    #[arg(long, default_value_t = SegmentationOptions::default().max_iterations)]
    pub iterations: usize,
    /// Output folder.
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Runs `pedinorm segment`: prints the volumes table.
pub fn run(args: Args) -> anyhow::Result<()> {
    let request = SegmentRequest {
        images: args.images,
        mask: args.mask,
        priors: args.priors,
        tissues: args.tissues,
        options: SegmentationOptions {
            classes: args.classes,
            max_iterations: args.iterations,
            mrf_weight: args.mrf,
            prior_weight: args.prior_weight,
            ..SegmentationOptions::default()
        },
    };
    let summary = run_segment(&request, &args.out_dir)?;
    for tissue in &summary.tissues {
        println!("{}\t{:.1} ml", tissue.name, tissue.volume_ml);
    }
    if !summary.converged {
        eprintln!("warning: EM stopped after {} iterations without converging", summary.iterations);
    }
    Ok(())
}
