//! DICOM series → volume: grouping, slice sorting, geometry (LPS → RAS), pixel decoding,
//! metadata sidecar.
//!
//! Inputs are files, folders (walked recursively) and zip archives. Objects are grouped by
//! SeriesInstanceUID and split further when orientation, echo, image size or time point differ
//! inside a series; slices are sorted along the slice normal by ImagePositionPatient (never by
//! InstanceNumber). A series that does not form one regular volume (missing slices, uneven
//! spacing, gantry tilt, mixed pixel spacing, duplicates) is refused with an error naming the
//! file, the field and the rule. Classic single-frame, classic multi-frame, enhanced
//! multi-frame (per-frame functional groups) and Siemens MOSAIC objects (slices tiled in one
//! frame, un-tiled with the CSA header; one volume per mosaic file) are supported. Objects
//! without SeriesInstanceUID are grouped by a documented fallback key (with a warning naming
//! the file).

mod assemble;
mod codestream;
mod csa;
mod error;
mod frames;
mod lengths;
mod pixels;
pub mod sidecar;
mod source;

pub use assemble::{ORIENTATION_TOLERANCE, SPACING_TOLERANCE_FRACTION, SPACING_TOLERANCE_MM, TILT_TOLERANCE};
pub use error::DicomError;
pub(crate) use frames::{anywhere, series_key};
pub use sidecar::Sidecar;
pub(crate) use source::has_dicom_prefix;

use ndarray::Array3;
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
    /// FrameOfReferenceUID of the series (empty when the objects lack it).
    pub frame_of_reference_uid: String,
    /// The object (and frame) each slice comes from, slice 0 first: what objects derived from
    /// the volume reference, slice by slice.
    pub slices: Vec<SliceSource>,
}

/// Where one slice of a volume was stored in the source series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSource {
    /// SOPClassUID of the object holding the slice.
    pub sop_class_uid: String,
    /// SOPInstanceUID of the object holding the slice.
    pub sop_instance_uid: String,
    /// 1-based frame number inside a multi-frame object (`None` for single-frame objects and
    /// for the tiles of a Siemens MOSAIC, which are one stored frame).
    pub frame_number: Option<u32>,
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

/// One object found in the inputs: a file, or an entry of a zip archive.
#[derive(Clone)]
pub struct InputObject {
    source: Source,
    explicit: bool,
}

impl std::fmt::Debug for InputObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputObject").field("label", &self.label()).field("explicit", &self.explicit).finish()
    }
}

impl InputObject {
    /// The object's name in messages: its path, or `archive.zip/entry` for a zip entry.
    pub fn label(&self) -> PathBuf {
        self.source.label()
    }

    /// Whether the object was named explicitly (not found inside a folder or an archive): a
    /// file named explicitly must be DICOM, one found inside a folder or archive may be skipped.
    pub fn is_explicit(&self) -> bool {
        self.explicit
    }

    /// The object's bytes (at most 2 GiB are read).
    pub fn read(&self) -> Result<Arc<Vec<u8>>, DicomError> {
        self.source.read()
    }
}

/// The objects of the inputs, as [`load_series`] sees them: files as given, folders walked
/// recursively in sorted order (hidden files skipped), zip archives entry by entry in sorted
/// order; a zip entry whose name escapes the archive (absolute or `..`) is an error.
pub fn enumerate_inputs(inputs: &[PathBuf]) -> Result<Vec<InputObject>, DicomError> {
    Ok(source::enumerate(inputs)?
        .into_iter()
        .map(|(source, explicit)| InputObject { source, explicit })
        .collect())
}

/// Loads the series made by some of the objects of [`enumerate_inputs`].
pub fn load_series_from_objects(objects: &[InputObject]) -> Result<Vec<SeriesVolume>, DicomError> {
    let names = match objects {
        [] => "no input".to_owned(),
        [only] => only.label().display().to_string(),
        [first, ..] => format!("{} and {} other object(s)", first.label().display(), objects.len() - 1),
    };
    let sources = objects.iter().map(|o| (o.source.clone(), o.explicit)).collect();
    assemble_sources(sources, &names, &|_, _, _| {}, MAX_VOLUME_VOXELS)
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
    let mut wanted: BTreeMap<usize, Vec<Use>> = BTreeMap::new();
    for (plan_index, plan) in plans.iter().enumerate() {
        for (slice, located) in plan.frames.iter().enumerate() {
            wanted.entry(located.object).or_default().push(Use {
                plan: plan_index,
                slice,
                frame: located.frame.frame,
                rescale: located.frame.rescale,
                tile: located.frame.tile,
            });
        }
    }
    let decode_total = wanted.len();
    let decoded_count = std::sync::atomic::AtomicUsize::new(0);
    #[allow(clippy::type_complexity)] // (plan, slot, pixels) per decoded frame
    let decoded: Vec<Result<Vec<(usize, usize, Vec<f32>)>, DicomError>> = wanted
        .into_par_iter()
        .map(|(object, uses)| {
            let bytes = kept_sources[object].read()?;
            let header = &headers[object];
            let values = match header.mosaic {
                // A mosaic is one stored frame: decode it once, then cut every tile out of it.
                Some(layout) => {
                    let rescale = uses.first().map_or((1.0, 0.0), |u| u.rescale);
                    let full = pixels::decode_frames(
                        &bytes,
                        &labels[object],
                        &header.transfer_syntax,
                        &[(0, rescale)],
                    )?
                    .pop()
                    .unwrap_or_default();
                    uses.iter()
                        .map(|u| {
                            layout.cut(&full, u.tile.unwrap_or(0)).ok_or_else(|| DicomError::InvalidField {
                                file: labels[object].clone(),
                                field: "Rows/Columns",
                                rule: format!(
                                    "decoded MOSAIC frame holds {} pixels, fewer than {}×{}",
                                    full.len(),
                                    layout.full_rows,
                                    layout.full_columns
                                ),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let requests: Vec<(u32, (f64, f64))> =
                        uses.iter().map(|u| (u.frame, u.rescale)).collect();
                    pixels::decode_frames(&bytes, &labels[object], &header.transfer_syntax, &requests)?
                }
            };
            let count = decoded_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress("decoding pixels", count, decode_total);
            Ok(uses.iter().zip(values).map(|(u, v)| (u.plan, u.slice, v)).collect())
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
        let shape = (plan.columns, plan.rows, plan.frames.len());
        let buffer = fortran_to_c_order(&buffer, plan.columns, plan.rows, plan.frames.len());
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
            let slices = plan
                .frames
                .iter()
                .map(|f| {
                    let header = &headers[f.object];
                    SliceSource {
                        sop_class_uid: header.sop_class_uid.clone(),
                        sop_instance_uid: header.sop_instance_uid.clone(),
                        frame_number: (header.frames.len() > 1 && header.mosaic.is_none())
                            .then_some(f.frame.frame + 1),
                    }
                })
                .collect();
            Ok(SeriesVolume {
                frame_of_reference_uid: headers[plan.first_object].frame_of_reference_uid.clone(),
                slices,
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

/// The C-order (`[i][j][k]`, k fastest) copy of a Fortran-order (i fastest) buffer of shape
/// `(ni, nj, nk)`. `Image` keeps C order; letting ndarray convert reads one value per cache
/// line on large volumes. Here blocks of [`TRANSPOSE_BLOCK`] consecutive `i` are read as one
/// contiguous run and written to as many sequential streams, in parallel over blocks (a pure
/// copy: the result does not depend on the thread count).
fn fortran_to_c_order(fortran: &[f32], ni: usize, nj: usize, nk: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; ni * nj * nk];
    let plane = nj * nk;
    if plane == 0 {
        return c;
    }
    c.par_chunks_mut(TRANSPOSE_BLOCK * plane).enumerate().for_each(|(block, out)| {
        let i0 = block * TRANSPOSE_BLOCK;
        let width = out.len() / plane;
        for j in 0..nj {
            for k in 0..nk {
                let start = i0 + ni * (j + nj * k);
                for (d, &value) in fortran[start..start + width].iter().enumerate() {
                    out[d * plane + j * nk + k] = value;
                }
            }
        }
    });
    c
}

/// Columns handled together by [`fortran_to_c_order`] (16 floats: one cache line).
const TRANSPOSE_BLOCK: usize = 16;

/// One use of a decoded frame: which plan and slice it fills, from which frame (and mosaic
/// tile) of its object, with which rescale.
struct Use {
    plan: usize,
    slice: usize,
    frame: u32,
    rescale: (f64, f64),
    tile: Option<u32>,
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
mod mosaic_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_to_c_order_matches_ndarray() {
        use ndarray::ShapeBuilder;
        for (ni, nj, nk) in [(1, 1, 1), (17, 3, 5), (40, 7, 2), (16, 2, 33)] {
            let fortran: Vec<f32> = (0..ni * nj * nk).map(|v| v as f32).collect();
            let expected = Array3::from_shape_vec((ni, nj, nk).f(), fortran.clone()).unwrap();
            let got = Array3::from_shape_vec((ni, nj, nk), fortran_to_c_order(&fortran, ni, nj, nk)).unwrap();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn sanitize_keeps_safe_characters() {
        assert_eq!(sanitize("T1 MPRAGE (sag) / 1mm"), "T1_MPRAGE_sag_1mm");
        assert_eq!(sanitize("../../etc"), "etc");
        assert_eq!(sanitize("ÄÖÜ"), "");
    }
}
