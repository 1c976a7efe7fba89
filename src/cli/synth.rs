//! `pedinorm synth`: generate a synthetic paediatric cohort with known ground truth.

use crate::synth_io::{
    WriteOptions, csv_row, load_base, write_base_reference, write_cohort_csv, write_subject,
};
use anyhow::Context;
use pedinorm_registration::Grid;
use pedinorm_validation::{BaseBrain, CohortSpec, Generator, GeneratorOptions, Site, cohort_plan};
use std::path::PathBuf;

/// Arguments of `pedinorm synth`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Generate a synthetic paediatric cohort with known ground truth.\n\n\
Every image is SYNTHETIC: an adult base brain (MNI152 2009 T1 with GM/WM maps, from \
--base-dir) is shrunk along a brain-growth curve, given an age-dependent T1 grey/white \
contrast, an individual anatomy (smooth and fine-scale folding warps, cortical boundary and \
thickness, CSF, ventricle size and asymmetry), a head pose, and the contrast, blur, bias field and \
Rician noise of its synthetic scanner site; cases also get a lesion, focal atrophy or enlarged ventricles. Writes DIR/sub-XXXX.nii.gz, \
_mask, _labels, _lesion (cases), truth warps, DIR/base_t1.nii.gz and DIR/cohort.csv; with \
--dicom also one DICOM series per subject (synthetic names such as SYNTHETIC^0001). \
See docs/synthetic-cohort.md.")]
pub struct Args {
    /// Number of normal subjects.
    #[arg(long = "n", default_value_t = 20)]
    pub n: usize,
    /// Age range of the cohort in years, `MIN-MAX` (e.g. `0-17`, `0.5-2`).
    #[arg(long, default_value = "0-17")]
    pub ages: String,
    /// Number of cases with abnormalities (lesions, atrophy, enlarged ventricles in turn).
    #[arg(long, default_value_t = 0)]
    pub cases: usize,
    /// Cohort seed: the same seed gives bit-identical output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output voxel size (mm).
    #[arg(long, default_value_t = 2.0)]
    pub resolution: f64,
    /// Folder with the base brain (t1.nii.gz, gm.nii.gz, wm.nii.gz).
    #[arg(long, default_value = ".data/mni")]
    pub base_dir: PathBuf,
    /// Use the built-in procedural phantom instead of the base brain files.
    #[arg(long)]
    pub phantom: bool,
    /// Synthetic scanner sites S1…SN (contrast, blur, noise, bias drawn per site; subjects
    /// cycle through them). 0: the reference site S0 only.
    #[arg(long, default_value_t = 0)]
    pub sites: usize,
    /// Signal-to-noise ratio (mean brain intensity / noise σ) of every site; default: each
    /// site's own (25 for the reference site).
    #[arg(long)]
    pub snr: Option<f64>,
    /// The population of one brain under smooth warps only (no folding, boundary, CSF,
    /// ventricle or asymmetry variation), as generated before.
    #[arg(long)]
    pub smooth_only: bool,
    /// Also write each subject as a DICOM series (MR, explicit VR little endian).
    #[arg(long)]
    pub dicom: bool,
    /// With --dicom: add a synthetic Italian codice fiscale (valid check character) in
    /// OtherPatientIDsSequence, to exercise ingest's national-identifier handling.
    #[arg(long, requires = "dicom")]
    pub national_id: bool,
    /// Do not write the truth deformation fields.
    #[arg(long)]
    pub no_warps: bool,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Parses `MIN-MAX` (years).
fn parse_ages(text: &str) -> anyhow::Result<(f64, f64)> {
    let (low, high) = text
        .split_once('-')
        .with_context(|| format!("--ages {text:?}: expected MIN-MAX in years, e.g. 0-17"))?;
    let parse = |s: &str| {
        s.trim().parse::<f64>().with_context(|| format!("--ages {text:?}: {s:?} is not a number of years"))
    };
    let (low, high) = (parse(low)?, parse(high)?);
    if !(0.0..=18.0).contains(&low) || !(0.0..=18.0).contains(&high) || low > high {
        anyhow::bail!("--ages {text:?}: need 0 ≤ MIN ≤ MAX ≤ 18 years");
    }
    Ok((low, high))
}

/// A phantom on an MNI-like field of view at half the output resolution (at least 1 mm).
fn phantom_base(resolution_mm: f64) -> anyhow::Result<BaseBrain> {
    let spacing = (resolution_mm / 2.0).max(1.0);
    let extent = [196.0, 232.0, 188.0];
    let dims = extent.map(|e: f64| (e / spacing).round() as usize);
    let origin = [-98.0, -134.0, -72.0];
    let grid = Grid::axis_aligned(dims, [spacing; 3], origin).context("phantom grid")?;
    Ok(BaseBrain::phantom(&grid))
}

/// Runs `pedinorm synth`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (min_age, max_age) = parse_ages(&args.ages)?;
    let base = if args.phantom { phantom_base(args.resolution)? } else { load_base(&args.base_dir)? };
    let mut spec = CohortSpec::new(args.n, min_age, max_age, args.cases, args.seed);
    spec.resolution_mm = args.resolution;
    spec.sites =
        if args.sites == 0 { vec![Site::reference()] } else { Site::numbered(1, args.sites, args.seed) };
    if let Some(snr) = args.snr {
        spec.sites.iter_mut().for_each(|site| site.snr = snr);
    }
    if args.smooth_only {
        spec.options = GeneratorOptions::smooth_only();
    }
    let plan = cohort_plan(&spec)?;
    let generator = Generator::new(&base, args.resolution)?;
    drop(base);
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("{}: cannot create the output folder", args.out_dir.display()))?;
    write_base_reference(&args.out_dir, &generator.base_on_grid())?;
    let options = WriteOptions { warps: !args.no_warps, dicom: args.dicom, national_id: args.national_id };
    let bar = super::progress::bar(plan.len() as u64, "generating subjects");
    let mut rows = Vec::with_capacity(plan.len());
    for (index, member) in plan.iter().enumerate() {
        bar.set_message(format!("{} ({:.1} y)", member.id, member.spec.age_years));
        let mut subject =
            generator.subject(&member.spec).with_context(|| format!("generating {}", member.id))?;
        subject.id = member.id.clone();
        let files = write_subject(&args.out_dir, &subject, index + 1, member.spec.seed, options)?;
        rows.push(csv_row(&subject, &files));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let csv = args.out_dir.join("cohort.csv");
    write_cohort_csv(&csv, &rows)?;
    println!(
        "wrote {} synthetic subjects ({} normals, {} cases) to {}; index: {}",
        plan.len(),
        args.n,
        args.cases,
        args.out_dir.display(),
        csv.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_are_checked() {
        assert_eq!(parse_ages("0-17").unwrap(), (0.0, 17.0));
        assert_eq!(parse_ages("0.5-2").unwrap(), (0.5, 2.0));
        assert!(parse_ages("5").is_err());
        assert!(parse_ages("5-2").is_err());
        assert!(parse_ages("0-30").unwrap_err().to_string().contains("--ages"));
    }
}
