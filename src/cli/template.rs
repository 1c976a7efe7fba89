//! `pedinorm template`: build age-specific templates.

use crate::cli::executor::{BatchProgress, ExecutorArgs};
use anyhow::Context;
use pedinorm::pipeline::cohort::read_cohort;
use pedinorm::pipeline::steps::default_program;
use pedinorm::pipeline::template_build::{
    SubjectInput, SubjectSource, build_template, finalize, prepare_build, run_init, run_map, run_reduce,
};
use pedinorm::pipeline::template_set::{
    BuiltTemplate, NamedTarget, SkippedTemplate, TemplateChoice, template_targets, write_set_summary,
};
use pedinorm_templates::age::AgeKernel;
use pedinorm_templates::template::{RegistrationSettings, Sharpening, TemplateConfig};
use std::path::PathBuf;

/// Arguments of `pedinorm template`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Build templates from a cohort: one per age bracket, or one at a given age.
    Build(BuildArgs),
    /// Run the init step of a build directory (centre-of-mass-aligned average).
    Init(InitArgs),
    /// Run the map step of one subject in one iteration of a build directory.
    Map(MapArgs),
    /// Run the reduce step (average + shape update) of one iteration of a build directory.
    Reduce(ReduceArgs),
    /// Write the final template, QC and montage of a finished build directory.
    Finalize(InitArgs),
}

/// Arguments of `pedinorm template build`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Build unbiased templates (affine average, then K iterations of \
register-all → average → shape update → sharpening).\n\n\
The cohort is a CSV (path, age, sex, optional site/id) or a BIDS folder (participants.tsv, \
sub-*/[ses-*/]anat/*_T1w.nii.gz). With --brackets (default) one template is built per age \
bracket in OUT/bracket-NAME/; with --age one continuous-age template (Gaussian age kernel with \
adaptive width) in OUT/age-YEARS/. Every step runs as a `pedinorm template init|map|reduce` \
process, locally (--executor local --jobs N) or as Slurm job arrays (--executor slurm); the \
results are bit-identical. Re-running the same command resumes an interrupted build.")]
pub struct BuildArgs {
    /// Cohort CSV file or BIDS folder.
    #[arg(long)]
    cohort: PathBuf,
    /// Age brackets: `default` (0–1, 1–2, 2–4, 4–7, 7–11, 11–14, 14–18 y), `all` (one
    /// template of every subject) or a JSON/TOML file listing {name, min_years, max_years}.
    #[arg(long, default_value = "default", conflicts_with = "age")]
    brackets: String,
    /// Build one template at this age (years) with age-kernel weights instead of brackets.
    #[arg(long)]
    age: Option<f64>,
    /// Minimum effective sample of the age kernel (with --age).
    #[arg(long, default_value_t = 8.0)]
    min_effective_sample: f64,
    /// Brackets with fewer subjects are skipped (reported).
    #[arg(long, default_value_t = 3)]
    min_subjects: usize,
    /// Deformable iterations after the affine one.
    #[arg(long, default_value_t = 4)]
    iterations: usize,
    /// Where and how tasks run.
    #[command(flatten)]
    batch: ExecutorArgs,
    /// Output folder.
    #[arg(long)]
    out_dir: PathBuf,
    /// Template voxel spacing (mm); default: the reference subject's grid.
    #[arg(long)]
    template_spacing: Option<f64>,
    /// Registration grid spacing (mm).
    #[arg(long, default_value_t = 2.0)]
    registration_spacing: f64,
    /// Affine iterations per level, coarse to fine (e.g. 100x50x25).
    #[arg(long, default_value = "100x50x25")]
    affine_iterations: String,
    /// Deformable iterations per level, coarse to fine (e.g. 40x20x10).
    #[arg(long, default_value = "40x20x10")]
    deformable_iterations: String,
    /// Shape-update gradient step.
    #[arg(long, default_value_t = 0.25)]
    gradient_step: f64,
    /// Do not sharpen templates (default: Laplacian sharpening as ANTs).
    #[arg(long)]
    no_sharpen: bool,
    /// Only write each template's build directory (build.json, subjects.txt) for submission by
    /// hand with scripts/slurm/submit_template.sh, then stop.
    #[arg(long)]
    prepare_only: bool,
}

/// Arguments of `pedinorm template init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The build directory (with build.json).
    #[arg(long)]
    build_dir: PathBuf,
}

/// Arguments of `pedinorm template map`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// The build directory (with build.json).
    #[arg(long)]
    build_dir: PathBuf,
    /// Iteration (0 = affine).
    #[arg(long)]
    iteration: usize,
    /// Subject identifier.
    #[arg(long)]
    subject: String,
}

/// Arguments of `pedinorm template reduce`.
#[derive(Debug, clap::Args)]
pub struct ReduceArgs {
    /// The build directory (with build.json).
    #[arg(long)]
    build_dir: PathBuf,
    /// Iteration (0 = affine).
    #[arg(long)]
    iteration: usize,
}

/// Runs `pedinorm template`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Build(args) => build(args),
        Command::Init(args) => Ok(run_init(&args.build_dir)?),
        Command::Map(args) => {
            run_map(&args.build_dir, args.iteration, &args.subject)?;
            Ok(())
        }
        Command::Reduce(args) => Ok(run_reduce(&args.build_dir, args.iteration)?),
        Command::Finalize(args) => {
            let result = finalize(&args.build_dir)?;
            println!(
                "template {} (QC {})",
                result.template_path.display(),
                args.build_dir.join("qc.json").display()
            );
            Ok(())
        }
    }
}

fn parse_schedule(text: &str, what: &str) -> anyhow::Result<Vec<usize>> {
    let levels: Result<Vec<usize>, _> = text.split('x').map(|p| p.trim().parse::<usize>()).collect();
    match levels {
        Ok(levels) if !levels.is_empty() && levels.iter().all(|&n| n > 0) => Ok(levels),
        _ => anyhow::bail!(
            "--{what} {text:?}: expected positive counts per level separated by 'x' (e.g. 100x50x25)"
        ),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let cohort = read_cohort(&args.cohort)?;
    let registration = RegistrationSettings {
        spacing_mm: args.registration_spacing,
        affine_iterations: parse_schedule(&args.affine_iterations, "affine-iterations")?,
        deformable_iterations: parse_schedule(&args.deformable_iterations, "deformable-iterations")?,
    };
    let base = TemplateConfig {
        iterations: args.iterations,
        gradient_step: args.gradient_step,
        sharpening: if args.no_sharpen { Sharpening::None } else { Sharpening::Laplacian },
        template_spacing_mm: args.template_spacing,
        registration,
        ..TemplateConfig::default()
    };
    let choice = match args.age {
        Some(age_years) => TemplateChoice::Age {
            age_years,
            kernel: AgeKernel { minimum_effective_sample: args.min_effective_sample, ..AgeKernel::default() },
        },
        None => TemplateChoice::Brackets(args.brackets.clone()),
    };
    let targets = template_targets(&cohort, &choice)?;
    let (_, threads) = args.batch.jobs_and_threads();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("{}: cannot create", args.out_dir.display()))?;
    let out_dir = args.out_dir.canonicalize()?;
    let subjects: Vec<SubjectInput> = cohort
        .iter()
        .map(|s| SubjectInput {
            id: s.id.clone(),
            source: SubjectSource::Path(s.path.clone()),
            age_years: s.age_years,
        })
        .collect();
    let program = default_program();
    let mut built = Vec::new();
    let mut skipped = Vec::new();
    let mut templates = Vec::new();
    for NamedTarget { name, target, subjects: count } in targets {
        if count < args.min_subjects {
            eprintln!(
                "{name}: skipped, {count} subject(s) (fewer than --min-subjects {})",
                args.min_subjects
            );
            skipped.push(SkippedTemplate {
                name,
                subjects: count,
                reason: format!("fewer than {} subjects", args.min_subjects),
            });
            continue;
        }
        let config = TemplateConfig { target, ..base.clone() };
        let build_dir = out_dir.join(&name);
        if args.prepare_only {
            let manifest =
                prepare_build(&subjects, &config, &build_dir).with_context(|| format!("template {name}"))?;
            println!(
                "{}\t{} subject(s)\t{} iteration(s)",
                build_dir.display(),
                manifest.subjects.len(),
                config.iterations
            );
            continue;
        }
        let executor = args.batch.executor(&program, build_dir.join("slurm"), &format!("pedinorm-{name}"))?;
        let progress = BatchProgress::new(&name);
        let on_progress = |event: &pedinorm::batch::ProgressEvent| progress.on_event(event);
        let result = build_template(&subjects, &config, &build_dir, executor.as_ref(), threads, &on_progress)
            .with_context(|| format!("template {name}"))?;
        progress.finish();
        let last = result.qc.iterations.last();
        built.push(BuiltTemplate::new(&name, &build_dir, &result));
        println!(
            "{name}: {} subject(s), template {}, mean similarity {:.3}, outliers: {}",
            result.manifest.subjects.len(),
            result.template_path.display(),
            last.map(|q| q.mean_similarity).unwrap_or(0.0),
            if result.qc.outliers.is_empty() { "none".to_string() } else { result.qc.outliers.join(", ") }
        );
        templates.push(result.template);
    }
    if args.prepare_only {
        return Ok(());
    }
    if templates.is_empty() {
        anyhow::bail!("no template was built: every bracket has fewer than {} subjects", args.min_subjects);
    }
    let images: Vec<_> = templates.iter().collect();
    write_set_summary(&out_dir, &images, &built, &skipped, args.batch.executor.name())?;
    println!(
        "templates: {} (summary {}, montage {})",
        built.len(),
        out_dir.join("templates.json").display(),
        out_dir.join("montage.png").display()
    );
    Ok(())
}
