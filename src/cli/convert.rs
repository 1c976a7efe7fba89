//! `pedinorm convert`: convert DICOM series (folder, zip or files) to NIfTI volumes with JSON sidecars.

use crate::atomic::write_bytes;
use crate::formats::dicom::{SeriesVolume, load_series_with_progress};
use crate::formats::nifti::{VoxelType, write_image};
use anyhow::Context;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Arguments of `pedinorm convert`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Convert DICOM series to NIfTI.\n\n\
Reads every DICOM image in the inputs (files, folders searched recursively, zip archives), \
groups them by series (split further by orientation, echo, image size or time point), sorts \
slices along the slice normal and writes, per series, DIR/NNNN_DESCRIPTION.nii.gz (int16 when that is lossless, else float32, \
RAS+ affine, oblique geometry kept) and DIR/NNNN_DESCRIPTION.json (acquisition metadata with \
dcm2niix/BIDS key names, age in years, no names, identifiers or dates). File names come from \
the series number and description only. A series with missing slices, uneven spacing or \
gantry tilt is refused with an error naming the file, the field and the rule.")]
pub struct Args {
    /// DICOM files, folders or zip archives.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Replace existing outputs of the same name instead of refusing.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `pedinorm convert`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bar = super::progress::bar(0, "reading DICOM");
    let progress = |stage: &str, done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(stage.to_owned());
    };
    let volumes = load_series_with_progress(&args.inputs, &progress)?;
    bar.finish_and_clear();
    let written = write_volumes(&volumes, &args.out_dir, args.overwrite)?;
    for (volume, path) in volumes.iter().zip(&written) {
        let dims = volume.image.grid().dims();
        println!("{} ({}×{}×{}, {} files)", path.display(), dims[0], dims[1], dims[2], volume.files.len());
    }
    Ok(())
}

/// 16-bit integers when every value is an integer in range (most MR data: half the size and
/// time of float32, exactly the same values), else float32.
pub fn lossless_voxel_type(image: &pedinorm_registration::Image<f32>) -> VoxelType {
    let integral = image
        .as_slice()
        .iter()
        .all(|&v| v.fract() == 0.0 && (i16::MIN as f32..=i16::MAX as f32).contains(&v));
    if integral { VoxelType::I16 } else { VoxelType::F32 }
}

/// Writes each volume as `STEM.nii.gz` + `STEM.json` in `out_dir`; returns the NIfTI paths.
/// Stems that collide get `_2`, `_3`, ... so that no series overwrites another.
pub fn write_volumes(
    volumes: &[SeriesVolume],
    out_dir: &Path,
    overwrite: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create output folder", out_dir.display()))?;
    let mut used = BTreeSet::new();
    let mut stems = Vec::new();
    for volume in volumes {
        let base = volume.file_stem();
        let mut stem = base.clone();
        let mut counter = 2;
        while !used.insert(stem.clone()) {
            stem = format!("{base}_{counter}");
            counter += 1;
        }
        let nifti = out_dir.join(format!("{stem}.nii.gz"));
        if nifti.exists() && !overwrite {
            anyhow::bail!("{}: already exists (use --overwrite to replace it)", nifti.display());
        }
        stems.push(stem);
    }
    let bar = super::progress::bar(volumes.len() as u64, "writing NIfTI");
    let mut written = Vec::new();
    for (volume, stem) in volumes.iter().zip(stems) {
        let nifti = out_dir.join(format!("{stem}.nii.gz"));
        write_image(&nifti, &volume.image, lossless_voxel_type(&volume.image))?;
        let json = serde_json::to_vec_pretty(&volume.sidecar).context("serializing sidecar")?;
        let sidecar = out_dir.join(format!("{stem}.json"));
        write_bytes(&sidecar, &json)
            .with_context(|| format!("{}: cannot write sidecar", sidecar.display()))?;
        written.push(nifti);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(written)
}
