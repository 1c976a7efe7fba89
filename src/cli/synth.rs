//! `pedinorm synth`: generate a synthetic paediatric cohort with known ground truth (see
//! [`pedinorm::pipeline::synth`]).

use anyhow::Context;
use pedinorm::pipeline::synth::{SynthBase, SynthCohortOptions, write_synthetic_cohort};
use pedinorm::synth_io::WriteOptions;
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
    /// A further base brain (a folder like --base-dir, aligned to it: skull stripped, grey and
    /// white matter probabilities). Repeat it to draw the subjects from several individuals in
    /// turn: pairs of consecutive subjects share a base.
    #[arg(long = "extra-base", value_name = "DIR")]
    pub extra_bases: Vec<PathBuf>,
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

/// Runs `pedinorm synth`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let options = SynthCohortOptions {
        normals: args.n,
        age_range: parse_ages(&args.ages)?,
        cases: args.cases,
        seed: args.seed,
        resolution_mm: args.resolution,
        base: if args.phantom { SynthBase::Phantom } else { SynthBase::Files(args.base_dir.clone()) },
        extra_bases: args.extra_bases.clone(),
        sites: args.sites,
        snr: args.snr,
        smooth_only: args.smooth_only,
        write: WriteOptions { warps: !args.no_warps, dicom: args.dicom, national_id: args.national_id },
        out_dir: args.out_dir.clone(),
    };
    let bar = crate::cli::progress::bar(0, "generating subjects");
    let written = write_synthetic_cohort(&options, &|member, done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("{} ({:.1} y)", member.id, member.spec.age_years));
    })
    .with_context(|| format!("synthetic cohort in {}", args.out_dir.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {} synthetic subjects ({} normals, {} cases) to {}; index: {}",
        written.subjects,
        args.n,
        args.cases,
        args.out_dir.display(),
        written.csv.display()
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
