//! `pedinorm volumes`: regional volumes of one subject against a normative database.

use crate::cli::scan::{ScanArgs, parse_sex};
use pedinorm::pipeline::volumes::{VolumesRequest, run_volumes};
use std::path::PathBuf;

/// Arguments of `pedinorm volumes`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Regional volumes of one subject: the image is mapped to the template of the \
database's bracket for its age (exactly as the database's normals were), the bracket's atlas labels \
(nearest neighbour) and tissue priors (linear) are pulled onto the subject's own grid through the \
inverse mapping, the bias-corrected image is segmented there with those priors (EM + MRF), and \
volumes are measured partial-volume aware (tissue probability × region × voxel volume).\n\n\
Measures, in ml: gm, wm, csf, total_brain (GM + WM), icv (GM + WM + CSF), then <region>_csf, \
<region>_gm, <region>_wm for every atlas region.\n\n\
Writes OUT_DIR/volumes.tsv (a one-row measures table: subject, age, sex, site, one column per \
measure — what `pedinorm centiles score` reads), volumes.json, csf.nii.gz, gm.nii.gz, wm.nii.gz \
and labels.nii.gz (with an atlas) on the image's grid; the folder appears whole.")]
pub struct Args {
    /// The normative database (built with tissue priors), the image, and the age, sex and site
    /// written to the table for the centile models.
    #[command(flatten)]
    pub scan: ScanArgs,
    /// The subject's name (pseudonym) in the table; default: the image's file name.
    #[arg(long)]
    pub subject: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Runs `pedinorm volumes`: prints the whole-brain volumes.
pub fn run(args: Args) -> anyhow::Result<()> {
    let ScanArgs { normdb, image, age, sex, site } = args.scan;
    let request = VolumesRequest {
        normdb,
        image,
        age_years: age,
        sex: parse_sex(sex.as_deref())?,
        site,
        subject: args.subject,
    };
    let summary = run_volumes(&request, &args.out_dir)?;
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    for measure in summary.measures.iter().take(5) {
        println!("{}\t{:.1} ml", measure.name, measure.volume_ml);
    }
    println!(
        "{} measures of bracket {} written to {}",
        summary.measures.len(),
        summary.bracket,
        args.out_dir.join("volumes.tsv").display()
    );
    Ok(())
}
