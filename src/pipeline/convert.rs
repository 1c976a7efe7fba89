//! DICOM series written as NIfTI volumes with JSON sidecars (`pedinorm convert`).

use crate::atomic::write_bytes;
use crate::formats::dicom::SeriesVolume;
use crate::formats::nifti::{NiftiIoError, VoxelType, write_image};
use pedinorm_registration::Image;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why the volumes could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An output exists and replacing it was not asked for.
    #[error("{path}: already exists (use --overwrite to replace it)")]
    Exists {
        /// The existing output.
        path: PathBuf,
    },
    /// A NIfTI file could not be written.
    #[error(transparent)]
    Nifti(#[from] NiftiIoError),
    /// The output folder or a sidecar could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The folder or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// 16-bit integers when every value is an integer in range (most MR data: half the size and
/// time of float32, exactly the same values), else float32.
pub fn lossless_voxel_type(image: &Image<f32>) -> VoxelType {
    let integral = image
        .as_slice()
        .iter()
        .all(|&v| v.fract() == 0.0 && (i16::MIN as f32..=i16::MAX as f32).contains(&v));
    if integral { VoxelType::I16 } else { VoxelType::F32 }
}

/// Writes each volume as `STEM.nii.gz` + `STEM.json` in `out_dir`; returns the NIfTI paths.
/// Stems that collide get `_2`, `_3`, ... so that no series overwrites another; an existing
/// output is an error unless `overwrite`. `on_written` is called after each volume with the
/// number written and the total.
pub fn write_volumes(
    volumes: &[SeriesVolume],
    out_dir: &Path,
    overwrite: bool,
    on_written: &dyn Fn(usize, usize),
) -> Result<Vec<PathBuf>, ConvertError> {
    let unwritable = |path: &Path, message: String| ConvertError::Write { path: path.to_owned(), message };
    std::fs::create_dir_all(out_dir)
        .map_err(|e| unwritable(out_dir, format!("cannot create output folder: {e}")))?;
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
            return Err(ConvertError::Exists { path: nifti });
        }
        stems.push(stem);
    }
    let mut written = Vec::new();
    for (volume, stem) in volumes.iter().zip(stems) {
        let nifti = out_dir.join(format!("{stem}.nii.gz"));
        write_image(&nifti, &volume.image, lossless_voxel_type(&volume.image))?;
        let sidecar = out_dir.join(format!("{stem}.json"));
        let json = serde_json::to_vec_pretty(&volume.sidecar)
            .map_err(|e| unwritable(&sidecar, format!("serializing sidecar: {e}")))?;
        write_bytes(&sidecar, &json)
            .map_err(|e| unwritable(&sidecar, format!("cannot write sidecar: {e}")))?;
        written.push(nifti);
        on_written(written.len(), volumes.len());
    }
    Ok(written)
}
