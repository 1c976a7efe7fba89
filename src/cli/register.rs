//! `pedinorm register`: register a moving image to a fixed image (rigid, affine or diffeomorphic).

use anyhow::Context;
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::formats::transform::{write_affine, write_field};
use pedinorm_registration::affine_registration::AffineKind;
use pedinorm_registration::metrics::{LocalCc, MattesMi, MeanSquares, Metric, Ncc, SquaredLocalCc};
use pedinorm_registration::{Image, Interpolation, Progress, RegistrationPlan, register_with_progress};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The transform model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransformKind {
    /// Rotation + translation.
    Rigid,
    /// 12-parameter affine (after a similarity stage).
    Affine,
    /// Affine, then greedy diffeomorphic with forward and inverse fields.
    Syn,
}

/// The similarity metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricChoice {
    /// Mattes mutual information (any contrast; default of rigid/affine).
    Mi,
    /// Global normalized cross-correlation (rigid/affine, same contrast).
    Ncc,
    /// Mean squares (rigid/affine, same contrast and scaling).
    Meansquares,
    /// Signed local cross-correlation, radius 2 (syn, same contrast polarity).
    Cc,
    /// Squared local cross-correlation, radius 2 (syn default; tolerates inverted contrast).
    SquaredCc,
}

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
    /// Transform model.
    #[arg(long, value_enum, default_value = "syn")]
    pub transform: TransformKind,
    /// Output prefix (a folder must end with `/`).
    #[arg(long)]
    pub output: String,
    /// Mask on the fixed grid restricting the metric.
    #[arg(long)]
    pub fixed_mask: Option<PathBuf>,
    /// Mask on the moving grid restricting the metric.
    #[arg(long)]
    pub moving_mask: Option<PathBuf>,
    /// Similarity metric (see above).
    #[arg(long, value_enum)]
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

fn output_path(prefix: &str, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{prefix}{suffix}"))
}

fn run_inner(args: &Args) -> anyhow::Result<()> {
    let fixed = read_image(&args.fixed)?;
    let moving = read_image(&args.moving)?;
    let fixed_mask = read_mask(&args.fixed_mask, &fixed, "fixed")?;
    let moving_mask = read_mask(&args.moving_mask, &moving, "moving")?;
    let mutual_information = || Arc::new(MattesMi { bins: 32, sampling_fraction: 0.25, seed: 1 });
    let affine_metric: Arc<dyn Metric> = match (args.transform, args.metric) {
        (TransformKind::Syn, _) | (_, None | Some(MetricChoice::Mi)) => mutual_information(),
        (_, Some(MetricChoice::Ncc)) => Arc::new(Ncc),
        (_, Some(MetricChoice::Meansquares)) => Arc::new(MeanSquares),
        (_, Some(other)) => {
            anyhow::bail!("--metric {other:?} is a deformable metric: use it with --transform syn")
        }
    };
    let mut plan = RegistrationPlan { fixed_mask, moving_mask, ..RegistrationPlan::default() };
    if let Some(stage) = plan.affine.as_mut() {
        stage.kind =
            if args.transform == TransformKind::Rigid { AffineKind::Rigid } else { AffineKind::Affine };
        stage.metric = affine_metric;
    }
    if args.transform == TransformKind::Syn {
        let deformable_metric: Arc<dyn Metric> = match args.metric {
            None | Some(MetricChoice::SquaredCc) => Arc::new(SquaredLocalCc { radius: 2 }),
            Some(MetricChoice::Cc) => Arc::new(LocalCc { radius: 2 }),
            Some(MetricChoice::Mi) => mutual_information(),
            Some(other) => {
                anyhow::bail!(
                    "--metric {other:?} is an affine metric: use squared-cc, cc or mi with --transform syn"
                )
            }
        };
        if let Some(stage) = plan.deformable.as_mut() {
            stage.metric = deformable_metric;
        }
    } else {
        plan.deformable = None;
    }
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
    write_affine(&output_path(&args.output, "affine.txt"), &registration.affine)?;
    if let Some(deformable) = &registration.deformable {
        write_field(&output_path(&args.output, "warp.nii.gz"), &deformable.forward)?;
        write_field(&output_path(&args.output, "inverse_warp.nii.gz"), &deformable.inverse)?;
    }
    let warped = registration.warp(&moving, fixed.grid(), Interpolation::Linear);
    write_image(&output_path(&args.output, "warped.nii.gz"), &warped, VoxelType::F32)?;
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
