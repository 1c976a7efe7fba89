//! `pedinorm deviation`: deviation maps of one case against the normative database.

use crate::cli::executor::{BatchProgress, ExecutorArgs};
use crate::cli::progress;
use crate::cli::scan::parse_sex;
use anyhow::{Context, bail};
use pedinorm::dicom_results::write_case_results;
use pedinorm::normdb::NormDbFile;
use pedinorm::pipeline::batch_deviation::{
    BatchOutputs, case_resources, read_cases, run_batch, run_case_task, write_case_table,
};
use pedinorm::pipeline::deviation::{CaseRequest, read_case, run_case};
use pedinorm::pipeline::steps::default_program;
use pedinorm_templates::model::NormativeDb;
use std::path::{Path, PathBuf};

/// Arguments of `pedinorm deviation`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Deviation maps of one case (--case) or of a list of cases (--cases) \
against the normative database.\n\n\
With --cases CSV (columns path, age, optional sex, site and id) every case is one `pedinorm deviation` \
task, run locally (--executor local --jobs N) or as a Slurm job array (--executor slurm); each \
case's outputs appear in OUT_DIR/ID/ at once (computed in a temporary folder, then renamed) with \
done.json last; re-running skips the cases done; failed cases are retried, then reported by id; \
OUT_DIR/summary.tsv lists every case.")]
pub struct Args {
    /// The normative database (HDF5).
    #[arg(long)]
    pub normdb: PathBuf,
    /// The case: a NIfTI file or a DICOM series (folder, zip or files of one series).
    #[arg(long, required_unless_present = "cases", conflicts_with = "cases")]
    pub case: Option<PathBuf>,
    /// A list of cases (CSV: path, age, sex, site, id) to map in a batch into OUT_DIR/ID/.
    #[arg(long)]
    pub cases: Option<PathBuf>,
    /// Age at scan in years (default: from the DICOM PatientAge or dates).
    #[arg(long)]
    pub age: Option<f64>,
    /// Sex (F or M; default: from DICOM PatientSex; unknown pools both sexes).
    #[arg(long)]
    pub sex: Option<String>,
    /// Scanner or site of the case, as recorded for the database's normals (default: the
    /// scanner a DICOM case names, "MANUFACTURER Model 3T"): a site with normals in the
    /// database is scored against its own offsets; any other (or none) against the pooled model
    /// with widened variance.
    #[arg(long)]
    pub site: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Regions listed in the report.
    #[arg(long, default_value_t = 15)]
    pub max_regions: usize,
    /// Also write the results as DICOM objects into this folder: the significant clusters as
    /// a Segmentation and the z-maps as derived MR series, on the case's own series and in its
    /// study. A NIfTI case has no series: the case image is written there too, as an MR series
    /// of a new study, and the results join that study. With --cases, case ID's objects go
    /// to DIR/ID/ (not with --prepare-only: the hand-submitted array script writes none).
    #[arg(long, value_name = "DIR", conflicts_with = "prepare_only")]
    pub dicom_out: Option<PathBuf>,
    /// Write OUT_DIR as a whole: compute in a temporary sibling folder, write done.json last,
    /// then rename (how batch tasks write each case).
    #[arg(long)]
    pub atomic: bool,
    /// With --cases: only check the list and write OUT_DIR/cases.tsv (id, path, age, sex, site; line
    /// i + 1 is array task i) for submission by hand with scripts/slurm/submit_deviation.sh.
    #[arg(long, requires = "cases")]
    pub prepare_only: bool,
    /// Where and how the tasks of --cases run.
    #[command(flatten)]
    pub batch: ExecutorArgs,
}

/// What the command line says of the case besides its image.
fn case_request(args: &Args) -> anyhow::Result<CaseRequest> {
    let sex = parse_sex(args.sex.as_deref())?;
    Ok(CaseRequest { age_years: args.age, sex, site: args.site.clone(), max_regions: args.max_regions })
}

/// Runs `pedinorm deviation`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let case_path = match (&args.case, &args.cases) {
        (_, Some(list)) => return run_batch_cli(&args, list),
        (Some(case), None) => case.clone(),
        (None, None) => bail!("give --case or --cases"),
    };
    let request = case_request(&args)?;
    if args.atomic {
        return Ok(run_case_task(
            &args.normdb,
            &case_path,
            &request,
            &args.out_dir,
            args.dicom_out.as_deref(),
        )?);
    }
    let bar = progress::bar(3, "deviation");
    bar.set_message("reading");
    let db = NormativeDb::read(&args.normdb)?;
    let case = read_case(&case_path)?;
    let options = request.options(&case, &case_path)?;
    bar.inc(1);
    bar.set_message("registering and scoring");
    let (case_name, normdb_name) = (case_path.display().to_string(), args.normdb.display().to_string());
    let result = run_case(&db, &case.image, &options, &case_name, &normdb_name, &args.out_dir)
        .with_context(|| format!("case {}", case_path.display()))?;
    bar.inc(2);
    bar.finish_and_clear();
    if let Some(dir) = &args.dicom_out {
        let written = write_case_results(&case_path, &case.image, &args.out_dir, dir)?;
        eprintln!("{} DICOM object(s) in {}", written.len(), dir.display());
    }
    let significant: Vec<_> = result.clusters.iter().filter(|c| c.significant).collect();
    println!("{}", args.out_dir.display());
    if !result.reliability.reliable {
        eprintln!("COMPARISON UNRELIABLE: the case lies outside what the database's normals represent;");
        eprintln!("no map or cluster below should be read as a finding. Why:");
        for reason in &result.reliability.reasons {
            eprintln!("  - {reason}");
        }
    }
    for note in &result.reliability.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "bracket {}, age {:.2} y, {} significant cluster(s) ({} beyond the voxel threshold only)",
        result.bracket,
        options.age_years,
        significant.len(),
        result.clusters.len() - significant.len()
    );
    for c in significant.iter().take(10) {
        eprintln!(
            "  #{:<3} {:9} {:5} {:6.0} mm³ peak z {:6.2} at native ({:.0}, {:.0}, {:.0}) mm{}{}",
            c.label,
            c.channel,
            c.direction,
            c.volume_mm3,
            c.peak_z,
            c.peak_native_mm[0],
            c.peak_native_mm[1],
            c.peak_native_mm[2],
            c.region.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default(),
            if c.caveat.is_some() { "  (unreliable comparison)" } else { "" }
        );
    }
    for w in result.warnings.iter().filter(|w| !w.starts_with("COMPARISON UNRELIABLE")) {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// `pedinorm deviation --cases LIST`: one task per case through the chosen executor.
fn run_batch_cli(args: &Args, list: &Path) -> anyhow::Result<()> {
    if args.age.is_some() || args.sex.is_some() {
        bail!("--age and --sex apply to --case; with --cases give them as columns of {}", list.display());
    }
    let cases = read_cases(list)?;
    if args.prepare_only {
        let path = write_case_table(&cases, &args.out_dir)?;
        println!("{}\t{} case(s)", path.display(), cases.len());
        return Ok(());
    }
    // Read once here: a broken database is reported before any task is submitted.
    let db = NormativeDb::read(&args.normdb)?;
    let normdb = args.normdb.canonicalize()?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("{}: cannot create", args.out_dir.display()))?;
    let out_dir = args.out_dir.canonicalize()?;
    let dicom_out = match &args.dicom_out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
            Some(dir.canonicalize()?)
        }
        None => None,
    };
    let outputs =
        BatchOutputs { out_dir: &out_dir, max_regions: args.max_regions, dicom_out: dicom_out.as_deref() };
    let (_, threads) = args.batch.jobs_and_threads();
    let resources = case_resources(&db, &cases, threads)?;
    let executor = args.batch.executor(&default_program(), out_dir.join(".slurm"), "pedinorm-deviation")?;
    let progress = BatchProgress::new("deviation maps");
    let outcome =
        run_batch(&normdb, &cases, outputs, executor.as_ref(), resources, &|event| progress.on_event(event));
    progress.finish();
    let summary = outcome?;
    println!("{}", out_dir.join("summary.tsv").display());
    let significant =
        summary.iter().filter(|s| s.done.as_ref().is_some_and(|d| d.significant_clusters > 0)).count();
    eprintln!("{} case(s) done, {significant} with significant clusters", summary.len());
    Ok(())
}
