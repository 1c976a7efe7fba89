//! `pedinorm inspect`: show geometry and metadata of a NIfTI file or DICOM series (no identities).

use pedinorm::formats::dicom::{is_nifti_path, load_series};
use pedinorm::formats::nifti::read_info;
use pedinorm::formats::orientation::orientation_codes;
use std::path::PathBuf;

/// Arguments of `pedinorm inspect`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Show geometry and metadata of a NIfTI file, or of every DICOM series in a \
file, folder or zip archive: dimensions, voxel size, voxel → world affine (RAS+ mm), \
orientation codes and, for DICOM, the sidecar metadata. Never prints names, identifiers or dates.")]
pub struct Args {
    /// A `.nii`/`.nii.gz` file, or DICOM files, folders or zip archives.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn rows(affine: &nalgebra::Matrix4<f64>) -> [[f64; 4]; 4] {
    std::array::from_fn(|r| std::array::from_fn(|c| affine[(r, c)]))
}

/// Runs `pedinorm inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let nifti: Vec<&PathBuf> = args.inputs.iter().filter(|p| is_nifti_path(p)).collect();
    let dicom: Vec<PathBuf> = args.inputs.iter().filter(|p| !is_nifti_path(p)).cloned().collect();
    for path in nifti {
        let info = read_info(path)?;
        let mut value = serde_json::to_value(&info)?;
        value["file"] = serde_json::json!(path.display().to_string());
        value["orientation"] = serde_json::json!(orientation_codes(&info.affine));
        reports.push(value);
    }
    if !dicom.is_empty() {
        for volume in load_series(&dicom)? {
            let grid = volume.image.grid();
            let affine = rows(grid.affine());
            reports.push(serde_json::json!({
                "series": volume.file_stem(),
                "files": volume.files.len(),
                "dims": grid.dims(),
                "spacing": grid.spacing(),
                "affine": affine,
                "orientation": orientation_codes(&affine),
                "value_range": volume.image.finite_range(),
                "metadata": volume.sidecar,
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    for report in &reports {
        let title =
            report.get("file").or_else(|| report.get("series")).and_then(|v| v.as_str()).unwrap_or("?");
        println!("{title}");
        for key in
            ["datatype", "dims", "pixdim", "spacing", "orientation", "affine_source", "files", "value_range"]
        {
            if let Some(value) = report.get(key) {
                println!("  {key:14} {value}");
            }
        }
        if let Some(affine) = report.get("affine").and_then(|a| a.as_array()) {
            for (index, row) in affine.iter().enumerate() {
                let label = if index == 0 { "affine" } else { "" };
                let cells: Vec<String> = row
                    .as_array()
                    .map(|r| r.iter().map(|v| format!("{:10.4}", v.as_f64().unwrap_or(f64::NAN))).collect())
                    .unwrap_or_default();
                println!("  {label:14} {}", cells.join(" "));
            }
        }
        if let Some(metadata) = report.get("metadata").and_then(|m| m.as_object()) {
            for (key, value) in metadata {
                println!("  {key:30} {value}");
            }
        }
    }
    Ok(())
}
