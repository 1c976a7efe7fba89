//! DICOM series → volume: grouping, slice sorting, geometry (LPS → RAS), pixel decoding,
//! metadata sidecar.
//!
//! Inputs are files, folders (walked recursively) and zip archives. Objects are grouped by
//! SeriesInstanceUID and split further when orientation, echo, image size or time point differ
//! inside a series; slices are sorted along the slice normal by ImagePositionPatient (never by
//! InstanceNumber). A series that does not form one regular volume (missing slices, uneven
//! spacing, gantry tilt, mixed pixel spacing, duplicates) is refused with an error naming the
//! file, the field and the rule. Classic single-frame, classic multi-frame and enhanced
//! multi-frame (per-frame functional groups) objects are supported.

mod assemble;
mod error;
mod frames;
mod pixels;
pub mod sidecar;
mod source;

pub use assemble::{ORIENTATION_TOLERANCE, SPACING_TOLERANCE_FRACTION, SPACING_TOLERANCE_MM, TILT_TOLERANCE};
pub use error::DicomError;
pub use sidecar::Sidecar;

use ndarray::{Array3, ShapeBuilder};
use pedinorm_registration::{Grid, Image};
use rayon::prelude::*;
use source::Source;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest volume assembled (voxels), so that a lying header cannot exhaust memory.
const MAX_VOLUME_VOXELS: usize = 1 << 30;

/// One volume made from a DICOM series.
#[derive(Debug, Clone)]
pub struct SeriesVolume {
    /// Real-valued voxels (rescale applied), indexed `[column, row, slice]`, RAS+ affine.
    pub image: Image<f32>,
    /// Acquisition metadata (no identities).
    pub sidecar: Sidecar,
    /// The objects the volume was made from, in slice order (zip entries as `archive.zip/entry`).
    pub files: Vec<PathBuf>,
    /// SeriesInstanceUID.
    pub series_instance_uid: String,
    /// StudyInstanceUID.
    pub study_instance_uid: String,
    /// Distinguishes volumes split out of one series (`""`, or `_1`, `_2`, ...).
    pub split_suffix: String,
}

impl SeriesVolume {
    /// A file-name stem from the series number and description (sanitized), plus the split
    /// suffix: never from patient data.
    pub fn file_stem(&self) -> String {
        let number = self.sidecar.series_number.map(|n| format!("{n:04}")).unwrap_or_else(|| "series".into());
        let description = self
            .sidecar
            .series_description
            .as_deref()
            .or(self.sidecar.protocol_name.as_deref())
            .map(sanitize)
            .filter(|d| !d.is_empty());
        match description {
            Some(description) => format!("{number}_{description}{}", self.split_suffix),
            None => format!("{number}{}", self.split_suffix),
        }
    }
}

/// Keeps ASCII letters, digits, `-` and `_`; other runs become one `_`; at most 64 characters.
pub fn sanitize(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').chars().take(64).collect()
}

/// Progress of a load: `(done, total)` objects, first while reading headers, then decoding.
pub type ProgressCallback<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

/// Loads every image series found in the inputs (files, folders, zip archives).
pub fn load_series(inputs: &[PathBuf]) -> Result<Vec<SeriesVolume>, DicomError> {
    load_series_with_progress(inputs, &|_, _, _| {})
}

/// [`load_series`] reporting progress (`stage`, done, total) to `progress`.
pub fn load_series_with_progress(
    inputs: &[PathBuf],
    progress: ProgressCallback<'_>,
) -> Result<Vec<SeriesVolume>, DicomError> {
    let sources = source::enumerate(inputs)?;
    let names = inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    assemble_sources(sources, &names, progress, MAX_VOLUME_VOXELS)
}

/// Loads the series in DICOM objects held in memory; `label` names each in messages.
pub fn load_series_from_memory(objects: Vec<(PathBuf, Vec<u8>)>) -> Result<Vec<SeriesVolume>, DicomError> {
    let sources = objects
        .into_iter()
        .map(|(label, bytes)| (Source::Memory { label, bytes: Arc::new(bytes) }, true))
        .collect();
    assemble_sources(sources, "memory", &|_, _, _| {}, MAX_VOLUME_VOXELS)
}

/// Fuzzing entry point: the first byte picks how many objects (1–4) the rest is cut into;
/// each piece gets a Part-10 preamble when it lacks one; then the pieces are assembled as
/// series with a small voxel budget (16 Mi voxels). Must return, never panic, on any input.
pub fn assemble_fuzz_input(data: &[u8]) -> Result<Vec<SeriesVolume>, DicomError> {
    let Some((&count, rest)) = data.split_first() else {
        return Err(DicomError::NothingFound { inputs: "empty fuzz input".into() });
    };
    let count = (count % 4 + 1) as usize;
    let chunk = rest.len().div_ceil(count).max(1);
    let sources = rest
        .chunks(chunk)
        .enumerate()
        .map(|(index, piece)| {
            let bytes = if source::has_dicom_prefix(piece) {
                piece.to_vec()
            } else {
                let mut bytes = vec![0u8; 128];
                bytes.extend_from_slice(b"DICM");
                bytes.extend_from_slice(piece);
                bytes
            };
            (
                Source::Memory { label: PathBuf::from(format!("fuzz-{index}.dcm")), bytes: Arc::new(bytes) },
                true,
            )
        })
        .collect();
    assemble_sources(sources, "fuzz input", &|_, _, _| {}, 1 << 24)
}

fn assemble_sources(
    sources: Vec<(Source, bool)>,
    input_names: &str,
    progress: ProgressCallback<'_>,
    max_voxels: usize,
) -> Result<Vec<SeriesVolume>, DicomError> {
    let total = sources.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    // Headers in parallel; results keep source order, so the outcome is deterministic.
    let parsed: Vec<Result<Option<(Source, frames::ObjectHeader)>, DicomError>> = sources
        .into_par_iter()
        .map(|(source, explicit)| {
            let label = source.label();
            let bytes = source.read()?;
            let result = if !source::has_dicom_prefix(&bytes) {
                if explicit {
                    Err(DicomError::Parse {
                        file: label,
                        message: "no DICM prefix at byte 128 (not a DICOM Part-10 file)".into(),
                    })
                } else {
                    Ok(None)
                }
            } else {
                frames::read_object_header(&bytes, &label).map(|h| h.map(|h| (source, h)))
            };
            let count = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress("reading headers", count, total);
            result
        })
        .collect();
    let mut kept_sources = Vec::new();
    let mut headers = Vec::new();
    for item in parsed {
        if let Some((source, header)) = item? {
            kept_sources.push(source);
            headers.push(header);
        }
    }
    if headers.is_empty() {
        return Err(DicomError::NothingFound { inputs: input_names.to_owned() });
    }
    let labels: Vec<PathBuf> = kept_sources.iter().map(Source::label).collect();
    let plans = assemble::plan_volumes(&headers, &labels)?;
    // Budget the voxels of all volumes together before decoding anything.
    let mut voxels = 0usize;
    for plan in &plans {
        voxels =
            voxels.saturating_add(plan.rows.saturating_mul(plan.columns).saturating_mul(plan.frames.len()));
        if voxels > max_voxels {
            return Err(DicomError::InvalidField {
                file: labels[plan.first_object].clone(),
                field: "Rows/Columns/NumberOfFrames",
                rule: format!("the series hold more than the supported {max_voxels} voxels"),
            });
        }
    }

    // Decode each object once, for every plan that uses it.
    #[allow(clippy::type_complexity)] // (plan, slot, frame, rescale) per object, local to this function
    let mut wanted: BTreeMap<usize, Vec<(usize, usize, u32, (f64, f64))>> = BTreeMap::new();
    for (plan_index, plan) in plans.iter().enumerate() {
        for (slice, located) in plan.frames.iter().enumerate() {
            wanted.entry(located.object).or_default().push((
                plan_index,
                slice,
                located.frame.frame,
                located.frame.rescale,
            ));
        }
    }
    let decode_total = wanted.len();
    let decoded_count = std::sync::atomic::AtomicUsize::new(0);
    #[allow(clippy::type_complexity)] // (plan, slot, pixels) per decoded frame
    let decoded: Vec<Result<Vec<(usize, usize, Vec<f32>)>, DicomError>> = wanted
        .into_par_iter()
        .map(|(object, uses)| {
            let bytes = kept_sources[object].read()?;
            let requests: Vec<(u32, (f64, f64))> = uses.iter().map(|u| (u.2, u.3)).collect();
            let values =
                pixels::decode_frames(&bytes, &labels[object], &headers[object].transfer_syntax, &requests)?;
            let count = decoded_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress("decoding pixels", count, decode_total);
            Ok(uses.iter().zip(values).map(|(u, v)| (u.0, u.1, v)).collect())
        })
        .collect();
    // Frames concatenated in slice order, each row-major, are the Fortran-order buffer of a
    // (columns, rows, slices) array: fill flat buffers, then view them with that layout.
    let mut buffers: Vec<Vec<f32>> =
        plans.iter().map(|p| vec![0.0; p.columns * p.rows * p.frames.len()]).collect();
    for result in decoded {
        for (plan_index, slice, values) in result? {
            let plan = &plans[plan_index];
            let size = plan.columns * plan.rows;
            if values.len() != size {
                return Err(DicomError::InvalidField {
                    file: labels[plan.frames[slice].object].clone(),
                    field: "Rows/Columns",
                    rule: format!("decoded frame holds {} pixels, the header says {size}", values.len()),
                });
            }
            buffers[plan_index][slice * size..(slice + 1) * size].copy_from_slice(&values);
        }
    }
    let mut volumes = Vec::with_capacity(plans.len());
    for (plan, buffer) in plans.iter().zip(buffers) {
        let shape = (plan.columns, plan.rows, plan.frames.len()).f();
        let array = Array3::from_shape_vec(shape, buffer).map_err(|e| DicomError::InvalidField {
            file: labels[plan.first_object].clone(),
            field: "Rows/Columns",
            rule: e.to_string(),
        })?;
        volumes.push(array);
    }

    plans
        .into_iter()
        .zip(volumes)
        .map(|(plan, data)| {
            let first_label = labels[plan.first_object].clone();
            let dims = [plan.columns, plan.rows, plan.frames.len()];
            let grid = Grid::new(dims, plan.affine).map_err(|e| DicomError::Geometry {
                series: plan.series_uid.clone(),
                file: first_label.clone(),
                field: "ImageOrientationPatient/PixelSpacing",
                rule: e.to_string(),
            })?;
            let spacing = grid.spacing();
            let image = Image::new(data, grid).map_err(|e| DicomError::InvalidField {
                file: first_label.clone(),
                field: "Rows/Columns",
                rule: e.to_string(),
            })?;
            let mut sidecar = headers[plan.first_object].sidecar.clone();
            sidecar.voxel_size = Some(spacing);
            sidecar.dimensions = Some(dims);
            if let Some(echo) = plan.frames[0].frame.echo_time {
                sidecar.echo_time = Some(echo / 1000.0);
            }
            let files = dedup_in_order(plan.frames.iter().map(|f| labels[f.object].clone()));
            Ok(SeriesVolume {
                image,
                sidecar,
                files,
                series_instance_uid: plan.series_uid,
                study_instance_uid: plan.study_uid,
                split_suffix: plan.split_suffix,
            })
        })
        .collect()
}

/// Runs third-party parsing or decoding, turning a panic on malformed input (a decoder bug)
/// into an error that names the file, so that no input can crash the caller.
pub(crate) fn guard<T>(file: &Path, work: impl FnOnce() -> T) -> Result<T, DicomError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        DicomError::Parse {
            file: file.to_owned(),
            message: format!("malformed data made the decoder fail: {message}"),
        }
    })
}

fn dedup_in_order(paths: impl Iterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::BTreeSet::new();
    paths.filter(|p| seen.insert(p.clone())).collect()
}

/// Whether a path names a NIfTI file (by extension).
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_safe_characters() {
        assert_eq!(sanitize("T1 MPRAGE (sag) / 1mm"), "T1_MPRAGE_sag_1mm");
        assert_eq!(sanitize("../../etc"), "etc");
        assert_eq!(sanitize("ÄÖÜ"), "");
    }
}
