//! `pedinorm deviation`: deviation maps of one case against the normative database.

use crate::cli::progress;
use crate::nifti_io::read_image;
use crate::normdb::NormDb;
use crate::pipeline::deviation::{DeviationOptions, DeviationResult, compute_deviation, write_outputs};
use crate::pipeline::normative::MappingParams;
use anyhow::{Context, bail};
use pedinorm_registration::Image;
use pedinorm_templates::stats::Sex;
use std::path::{Path, PathBuf};

/// Arguments of `pedinorm deviation`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The normative database (HDF5).
    #[arg(long)]
    pub normdb: PathBuf,
    /// The case: a NIfTI file or a DICOM series (folder, zip or files of one series).
    #[arg(long)]
    pub case: PathBuf,
    /// Age at scan in years (default: from the DICOM PatientAge or dates).
    #[arg(long)]
    pub age: Option<f64>,
    /// Sex (F or M; default: from DICOM PatientSex; unknown pools both sexes).
    #[arg(long)]
    pub sex: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Regions listed in the report.
    #[arg(long, default_value_t = 15)]
    pub max_regions: usize,
}

/// A case image with what its files say about age and sex.
pub struct CaseInput {
    /// The image.
    pub image: Image<f32>,
    /// Age from the files, if any.
    pub age_years: Option<f64>,
    /// Sex from the files, if any.
    pub sex: Option<Sex>,
}

/// Reads a case from a NIfTI file or a DICOM series.
pub fn read_case(path: &Path) -> anyhow::Result<CaseInput> {
    if crate::dicom::is_nifti_path(path) {
        return Ok(CaseInput { image: read_image(path)?, age_years: None, sex: None });
    }
    let volumes = crate::dicom::load_series(&[path.to_owned()])
        .with_context(|| format!("{}: cannot read as a DICOM series", path.display()))?;
    match volumes.len() {
        0 => bail!("{}: no image volume found", path.display()),
        1 => {}
        n => bail!("{}: {n} volumes found; give one series", path.display()),
    }
    let volume = volumes.into_iter().next().expect("one volume");
    Ok(CaseInput {
        age_years: volume.sidecar.age_years,
        sex: volume.sidecar.patient_sex.as_deref().and_then(Sex::parse),
        image: volume.image,
    })
}

/// Runs one deviation computation and writes its outputs; shared by `deviation` and `demo`.
#[allow(clippy::too_many_arguments)] // one flat call shared by the CLI and the service
pub fn run_case(
    db: &NormDb,
    normdb_path: &Path,
    case_path: &Path,
    case: &CaseInput,
    age: f64,
    sex: Option<Sex>,
    out_dir: &Path,
    max_regions: usize,
) -> anyhow::Result<DeviationResult> {
    let options = DeviationOptions { age_years: age, sex, mapping: MappingParams::standard(), max_regions };
    let result = compute_deviation(db, &case.image, &options)
        .with_context(|| format!("case {}", case_path.display()))?;
    write_outputs(
        &result,
        &case.image,
        &case_path.display().to_string(),
        &normdb_path.display().to_string(),
        out_dir,
    )?;
    Ok(result)
}

/// Runs `pedinorm deviation`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bar = progress::bar(3, "deviation");
    bar.set_message("reading");
    let db = NormDb::read(&args.normdb)?;
    let case = read_case(&args.case)?;
    let age = match (args.age, case.age_years) {
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => bail!("{}: the age is unknown: give --age YEARS", args.case.display()),
    };
    let sex = match &args.sex {
        Some(text) => Some(Sex::parse(text).with_context(|| format!("--sex {text:?}: must be F or M"))?),
        None => case.sex,
    };
    bar.inc(1);
    bar.set_message("registering and scoring");
    let result = run_case(&db, &args.normdb, &args.case, &case, age, sex, &args.out_dir, args.max_regions)?;
    bar.inc(2);
    bar.finish_and_clear();
    let significant: Vec<_> = result.clusters.iter().filter(|c| c.significant).collect();
    println!("{}", args.out_dir.display());
    eprintln!(
        "bracket {}, age {:.2} y, {} significant cluster(s) ({} beyond the voxel threshold only)",
        result.bracket,
        age,
        significant.len(),
        result.clusters.len() - significant.len()
    );
    for c in significant.iter().take(10) {
        eprintln!(
            "  #{:<3} {:9} {:5} {:6.0} mm³ peak z {:6.2} at native ({:.0}, {:.0}, {:.0}) mm{}",
            c.label,
            c.channel,
            c.direction,
            c.volume_mm3,
            c.peak_z,
            c.peak_native_mm[0],
            c.peak_native_mm[1],
            c.peak_native_mm[2],
            c.region.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default()
        );
    }
    for w in &result.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
