//! `pedinorm register`: register a moving image to a fixed image (rigid, affine or diffeomorphic).

use anyhow::Context;
use pedinorm::formats::nifti::read_image;
use pedinorm::pipeline::register::{MetricChoice, TransformModel, pairwise_plan, write_registration};
use pedinorm_registration::{Image, Interpolation, Progress, register_with_progress};
use std::path::{Path, PathBuf};

/// Arguments of `pedinorm register`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Register a moving image to a fixed image.\n\n\
Writes PREFIXaffine.txt (ITK text affine, LPS, fixed → moving), PREFIXwarped.nii.gz (the moving \
image resampled on the fixed grid) and, for --transform syn, PREFIXwarp.nii.gz and \
PREFIXinverse_warp.nii.gz (ANTs displacement fields on the fixed grid). To apply the result as \
antsApplyTransforms would: `pedinorm apply -r fixed -i moving -t PREFIXwarp.nii.gz -t \
PREFIXaffine.txt`; the inverse: `-t [PREFIXaffine.txt,1] -t PREFIXinverse_warp.nii.gz`.\n\n\
--metric selects the affine metric for rigid/affine (mi, ncc, meansquares; default mi) and the \
deformable metric for syn (squared-cc, cc, mi; default squared-cc; the affine stage of syn uses mi).")]
pub struct Args {
    /// Fixed (reference, template) image.
    #[arg(long)]
    pub fixed: PathBuf,
    /// Moving (subject) image.
    #[arg(long)]
    pub moving: PathBuf,
    /// Transform model: rigid (rotation + translation), affine (12 parameters, after a
    /// similarity stage) or syn (affine, then greedy diffeomorphic with forward and inverse
    /// fields).
    #[arg(long, default_value = "syn")]
    pub transform: TransformModel,
    /// Output prefix (a folder must end with `/`).
    #[arg(long)]
    pub output: String,
    /// Mask on the fixed grid restricting the metric.
    #[arg(long)]
    pub fixed_mask: Option<PathBuf>,
    /// Mask on the moving grid restricting the metric.
    #[arg(long)]
    pub moving_mask: Option<PathBuf>,
    /// Similarity metric (see above): mi, ncc, meansquares, cc or squared-cc.
    #[arg(long)]
    pub metric: Option<MetricChoice>,
    /// Worker threads (default: all cores). Results are identical for any count.
    #[arg(long)]
    pub threads: Option<usize>,
}

fn read_mask(path: &Option<PathBuf>, image: &Image<f32>, which: &str) -> anyhow::Result<Option<Image<f32>>> {
    let Some(path) = path else { return Ok(None) };
    let mask = read_image(path)?;
    anyhow::ensure!(
        mask.grid().same_as(image.grid(), 1e-3),
        "{}: {which} mask must have the {which} image's dimensions and affine",
        path.display()
    );
    Ok(Some(mask))
}

/// Runs `pedinorm register`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let threads = args.threads.unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start worker threads")?;
    pool.install(|| run_inner(&args))
}

fn run_inner(args: &Args) -> anyhow::Result<()> {
    let fixed = read_image(&args.fixed)?;
    let moving = read_image(&args.moving)?;
    let fixed_mask = read_mask(&args.fixed_mask, &fixed, "fixed")?;
    let moving_mask = read_mask(&args.moving_mask, &moving, "moving")?;
    let plan = pairwise_plan(args.transform, args.metric, fixed_mask, moving_mask)
        .map_err(|rule| anyhow::anyhow!("--{rule}"))?;
    let bar = super::progress::bar(0, "affine");
    let mut tracker = ProgressTracker::default();
    let mut report = |p: &Progress| {
        let position = tracker.position(p);
        bar.set_length(position.1);
        bar.set_position(position.0);
        bar.set_message(format!("{} level {}/{} cost {:.5}", p.stage, p.level + 1, p.levels, p.metric));
    };
    let registration = register_with_progress(&fixed, &moving, &plan, &mut report)
        .with_context(|| format!("registration of {} to {}", args.moving.display(), args.fixed.display()))?;
    let warped = registration.warp(&moving, fixed.grid(), Interpolation::Linear);
    let fields = registration.deformable.as_ref().map(|d| (&d.forward, &d.inverse));
    write_registration(&args.output, &registration.affine, fields, Some(&warped))?;
    bar.finish_and_clear();
    tracing::info!(
        output = %Path::new(&args.output).display(),
        cost = registration.affine_metric_value,
        "registration written"
    );
    Ok(())
}

/// Turns per-level progress events into a monotone position over the whole run.
#[derive(Default)]
struct ProgressTracker {
    key: Option<(String, usize)>,
    finished: u64,
    current_budget: u64,
}

impl ProgressTracker {
    fn position(&mut self, p: &Progress) -> (u64, u64) {
        let key = (p.stage.clone(), p.level);
        if self.key.as_ref() != Some(&key) {
            self.finished += self.current_budget;
            self.key = Some(key);
        }
        self.current_budget = p.iterations as u64;
        (self.finished + p.iteration as u64, self.finished + self.current_budget)
    }
}
