//! `pedinorm normdb`: build, extend, merge and inspect the HDF5 normative database.

use crate::cli::executor::{BatchProgress, ExecutorArgs};
use crate::cli::scan::{ScanArgs, parse_sex};
use anyhow::Context;
use pedinorm::formats::nifti::read_image;
use pedinorm::normdb::{NormDbFile, now_utc, summary};
use pedinorm::pipeline::cohort::read_cohort;
use pedinorm::pipeline::normdb_build::{
    AtlasFiles, NormdbParameters, bracket_templates, build_normdb, normals_of_cohort, prepare_normdb_build,
    run_normal_map, run_normdb_reduce, run_partial, run_space,
};
use pedinorm::pipeline::steps::default_program;
use pedinorm_templates::model::{NormalSubject, NormativeDb, add_subject};
use std::path::PathBuf;

/// Arguments of `pedinorm normdb`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Build a database from a normal cohort and one template per age bracket.
    Build(BuildArgs),
    /// Add one normal subject to a database (statistics and calibration updated).
    Add(AddArgs),
    /// Merge two databases built on the same templates: equals the database built from the union.
    Merge(MergeArgs),
    /// Print a database's metadata, brackets, subjects and calibration.
    Info(InfoArgs),
    /// Build step: the template space (mask, carried atlas) of one bracket of a build directory.
    Space(SpaceArgs),
    /// Build step: map one normal of a build directory to its bracket's template.
    Map(MapArgs),
    /// Build step: the partial statistics of one chunk of subjects of a build directory.
    Partial(PartialArgs),
    /// Build step: merge statistics, calibrate and write the database of a build directory.
    Reduce(StepArgs),
}

/// Arguments of `pedinorm normdb reduce`.
#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// The build directory (with normdb.json).
    #[arg(long)]
    pub build_dir: PathBuf,
}

/// Arguments of `pedinorm normdb space`.
#[derive(Debug, clap::Args)]
pub struct SpaceArgs {
    /// The build directory (with normdb.json).
    #[arg(long)]
    pub build_dir: PathBuf,
    /// Bracket name.
    #[arg(long)]
    pub bracket: String,
}

/// Arguments of `pedinorm normdb map`.
#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// The build directory (with normdb.json).
    #[arg(long)]
    pub build_dir: PathBuf,
    /// Subject identifier.
    #[arg(long)]
    pub subject: String,
}

/// Arguments of `pedinorm normdb partial`.
#[derive(Debug, clap::Args)]
pub struct PartialArgs {
    /// The build directory (with normdb.json).
    #[arg(long)]
    pub build_dir: PathBuf,
    /// Chunk index (0-based).
    #[arg(long)]
    pub chunk: usize,
}

/// Arguments of `pedinorm normdb build`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Build a normative database from a normal cohort and one template per age \
bracket.\n\n\
Every step runs as a `pedinorm normdb space|map|partial|reduce` process with its state in a build \
directory (default OUTPUT.build): one `space` per bracket, one `map` per subject (registration, \
normalized intensity and log-Jacobian maps), optionally one `partial` per chunk of subjects, then \
`reduce` (statistics, leave-one-out calibration, the HDF5 written atomically). Tasks run locally \
(--executor local --jobs N) or as Slurm job arrays (--executor slurm); the results are \
bit-identical. Re-running the same command resumes an interrupted build.")]
pub struct BuildArgs {
    /// Normal cohort: CSV (path, age, sex, site) or BIDS folder.
    #[arg(long)]
    pub cohort: PathBuf,
    /// A finished `pedinorm template build` directory of one age bracket (repeatable).
    #[arg(long = "template-build")]
    pub template_builds: Vec<PathBuf>,
    /// A template given directly as `NAME:MIN:MAX:PATH` (years; repeatable).
    #[arg(long = "template")]
    pub templates: Vec<String>,
    /// Output database.
    #[arg(long)]
    pub output: PathBuf,
    /// Smoothing FWHM (mm) of the intensity and log-Jacobian maps.
    #[arg(long, default_value_t = 4.0)]
    pub fwhm: f64,
    /// Age nodes per bracket.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Nominal voxelwise false-positive rate of the calibration.
    #[arg(long, default_value_t = 0.001)]
    pub voxel_rate: f64,
    /// Nominal per-image false-cluster rate of the calibration.
    #[arg(long, default_value_t = 0.05)]
    pub cluster_rate: f64,
    /// Atlas labels in the atlas reference's space (e.g. JHU white matter in MNI space).
    #[arg(long, requires_all = ["atlas_names", "atlas_reference"])]
    pub atlas_labels: Option<PathBuf>,
    /// Label names (`VALUE NAME` per line).
    #[arg(long)]
    pub atlas_names: Option<PathBuf>,
    /// T1 image of the atlas's space (e.g. the MNI152 T1), registered to each template.
    #[arg(long)]
    pub atlas_reference: Option<PathBuf>,
    /// Build directory holding every step's outputs (default: OUTPUT.build).
    #[arg(long)]
    pub build_dir: Option<PathBuf>,
    /// Compute statistics in parallel `partial` tasks of this many subjects each, merged in a
    /// fixed order by `reduce` (default: `reduce` adds every subject itself).
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Only write the build directory (normdb.json, subjects.txt, brackets.txt) for submission
    /// by hand with scripts/slurm/submit_normdb.sh, then stop.
    #[arg(long)]
    pub prepare_only: bool,
    /// Where and how tasks run.
    #[command(flatten)]
    pub batch: ExecutorArgs,
}

/// Arguments of `pedinorm normdb add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The database (rewritten atomically unless `--output` is given), the subject's image,
    /// age, sex (required) and scanner or site label (default: none).
    #[command(flatten)]
    pub scan: ScanArgs,
    /// Pseudonym (no identities).
    #[arg(long)]
    pub pseudonym: String,
    /// Write the result here instead of replacing the database.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Arguments of `pedinorm normdb merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// First database.
    pub first: PathBuf,
    /// Second database.
    pub second: PathBuf,
    /// Output database.
    #[arg(long)]
    pub output: PathBuf,
}

/// Arguments of `pedinorm normdb info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// The database.
    pub normdb: PathBuf,
    /// Also list every subject.
    #[arg(long)]
    pub subjects: bool,
}

/// Runs `pedinorm normdb`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Build(a) => build(a),
        Command::Add(a) => add(a),
        Command::Merge(a) => merge(a),
        Command::Info(a) => info(a),
        Command::Space(a) => Ok(run_space(&a.build_dir, &a.bracket)?),
        Command::Map(a) => {
            run_normal_map(&a.build_dir, &a.subject)?;
            Ok(())
        }
        Command::Partial(a) => Ok(run_partial(&a.build_dir, a.chunk)?),
        Command::Reduce(a) => {
            run_normdb_reduce(&a.build_dir)?;
            Ok(())
        }
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let cohort = read_cohort(&args.cohort)?;
    let (brackets, template_members) = bracket_templates(&args.template_builds, &args.templates)?;
    let normals = normals_of_cohort(&cohort, &brackets, &args.cohort)?;
    let atlas = match (&args.atlas_labels, &args.atlas_names, &args.atlas_reference) {
        (Some(labels), Some(names), Some(reference)) => {
            Some(AtlasFiles { labels: labels.clone(), names: names.clone(), reference: reference.clone() })
        }
        _ => None,
    };
    let parameters = NormdbParameters {
        smoothing_fwhm_mm: args.fwhm,
        nodes_per_bracket: args.nodes,
        voxel_rate: args.voxel_rate,
        cluster_rate: args.cluster_rate,
        chunk_size: args.chunk_size,
        template_members,
    };
    let build_dir =
        args.build_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.build", args.output.display())));
    let build_dir = std::env::current_dir()?.join(build_dir);
    let manifest =
        prepare_normdb_build(&normals, &brackets, atlas.as_ref(), &parameters, &args.output, &build_dir)?;
    if args.prepare_only {
        println!(
            "{}\t{} bracket(s)\t{} subject(s)\t{} chunk(s)",
            build_dir.display(),
            manifest.brackets.len(),
            manifest.subjects.len(),
            manifest.chunks().len()
        );
        return Ok(());
    }
    let (_, threads) = args.batch.jobs_and_threads();
    let executor = args.batch.executor(&default_program(), build_dir.join("slurm"), "pedinorm-normdb")?;
    let progress = BatchProgress::new("normative database");
    let db =
        build_normdb(&manifest, &build_dir, executor.as_ref(), threads, &|event| progress.on_event(event))
            .with_context(|| format!("normative database build in {}", build_dir.display()))?;
    progress.finish();
    println!("{}", args.output.display());
    eprint!("{}", summary(&db));
    Ok(())
}

fn add(args: AddArgs) -> anyhow::Result<()> {
    let ScanArgs { normdb, image, age, sex, site } = args.scan;
    let sex = parse_sex(sex.as_deref())?.context("--sex is required (F or M)")?;
    let mut db = NormativeDb::read(&normdb)?;
    let subject = NormalSubject {
        pseudonym: args.pseudonym.clone(),
        age_years: age,
        sex,
        scanner: site.unwrap_or_default(),
        image: read_image(&image)?,
    };
    let record = add_subject(&mut db, &subject, &now_utc())?;
    let output = args.output.unwrap_or(normdb);
    db.write(&output)?;
    println!(
        "added {} to bracket {} (similarity {:.3}, QC {})",
        record.pseudonym,
        record.bracket,
        record.qc_similarity,
        if record.qc_passed { "passed" } else { "failed: recorded, not accumulated" }
    );
    Ok(())
}

fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let first = NormativeDb::read(&args.first)?;
    let second = NormativeDb::read(&args.second)?;
    let merged = first
        .merged(&second, &now_utc())
        .with_context(|| format!("merging {} and {}", args.first.display(), args.second.display()))?;
    merged.write(&args.output)?;
    println!("{}", args.output.display());
    Ok(())
}

fn info(args: InfoArgs) -> anyhow::Result<()> {
    let db = NormativeDb::read(&args.normdb)?;
    print!("{}", summary(&db));
    if args.subjects {
        println!("pseudonym\tage_years\tsex\tscanner\tbracket\tqc_similarity\tqc_passed");
        for s in &db.subjects {
            println!(
                "{}\t{:.3}\t{}\t{}\t{}\t{:.3}\t{}",
                s.pseudonym,
                s.age_years,
                s.sex.code(),
                s.scanner,
                s.bracket,
                s.qc_similarity,
                s.qc_passed
            );
        }
    }
    Ok(())
}
