//! `pedinorm plan`: compute per-task resources for batch builds.

use anyhow::Context;
use pedinorm::batch::plan::plan_build;
use pedinorm::formats::nifti::read_info;
use std::path::PathBuf;

/// Arguments of `pedinorm plan`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Compute per-task resources (memory, wall time, CPUs) of a template build \
from the image size and threads per task, and the totals of a whole build: tasks, core-hours \
and wall time on a given number of concurrent task slots. Use the printed sbatch options in \
your own scripts, or rely on `pedinorm template build --executor slurm`, which requests the \
same. See docs/hpc.md.")]
pub struct Args {
    /// A representative (largest) image of the cohort; its dimensions and spacing are used.
    #[arg(long, conflicts_with = "dims")]
    image: Option<PathBuf>,
    /// Image dimensions instead of --image, e.g. 182x218x182.
    #[arg(long)]
    dims: Option<String>,
    /// Voxel spacing (mm) with --dims.
    #[arg(long, default_value_t = 1.0)]
    spacing: f64,
    /// Registration grid spacing (mm).
    #[arg(long, default_value_t = 2.0)]
    registration_spacing: f64,
    /// Threads per map task.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Subjects in the build.
    #[arg(long, default_value_t = 100)]
    subjects: usize,
    /// Deformable iterations (the affine one is added).
    #[arg(long, default_value_t = 4)]
    iterations: usize,
    /// Concurrent task slots (cores / threads per task on the cluster share you get).
    #[arg(long, default_value_t = 64)]
    slots: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `pedinorm plan`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (voxels, spacing) = if let Some(image) = &args.image {
        let info =
            read_info(image).with_context(|| format!("{}: cannot read NIfTI header", image.display()))?;
        let voxels: usize = info.dims.iter().take(3).map(|&d| d.max(1)).product();
        let spacing = info.pixdim.iter().take(3).map(|p| p.abs()).fold(f64::INFINITY, f64::min);
        (voxels, if spacing.is_finite() && spacing > 0.0 { spacing } else { 1.0 })
    } else if let Some(dims) = &args.dims {
        let parts: Result<Vec<usize>, _> = dims.split('x').map(|p| p.trim().parse::<usize>()).collect();
        match parts {
            Ok(p) if p.len() == 3 && p.iter().all(|&d| d > 0) => (p.iter().product(), args.spacing),
            _ => anyhow::bail!("--dims {dims:?}: expected three positive sizes such as 182x218x182"),
        }
    } else {
        anyhow::bail!("give --image or --dims");
    };
    if !(args.spacing > 0.0 && args.registration_spacing > 0.0) {
        anyhow::bail!("--spacing and --registration-spacing must be > 0");
    }
    let plan = plan_build(
        voxels,
        spacing,
        args.registration_spacing,
        args.threads,
        args.subjects,
        args.iterations,
        args.slots,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let t = &plan.task;
    println!("image: {voxels} voxels at {spacing} mm; registration grid {} voxels", t.registration_voxels);
    println!(
        "map task:    expect {:.0} MiB, {:.0} s on {} thread(s)  → request --cpus-per-task={} --mem={}M --time={}",
        t.map_memory_mb, t.map_seconds, args.threads, t.map.cpus, t.map.memory_mb, t.map.time_minutes
    );
    println!(
        "reduce task: expect {:.0} MiB, {:.1} s per subject  → request --cpus-per-task={} --mem={}M --time={}",
        t.reduce_memory_mb,
        t.reduce_seconds_per_subject,
        t.reduce.cpus,
        t.reduce.memory_mb,
        t.reduce.time_minutes
    );
    println!(
        "build of {} subjects, {} iterations + affine: {} map tasks, {:.1} core-hours of maps, {:.2} h of reduces, \
         ≈ {:.1} h wall time on {} concurrent tasks",
        plan.subjects,
        args.iterations,
        plan.map_tasks,
        plan.map_core_hours,
        plan.reduce_hours,
        plan.wall_hours,
        plan.slots
    );
    Ok(())
}
