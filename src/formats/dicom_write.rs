//! DICOM series writing: a volume as a classic single-frame MR series (one object per slice,
//! explicit VR little endian), for the synthetic cohort's series and for the derived z-map
//! series sent back to the PACS.
//!
//! Geometry: voxel axis i runs along each row (Columns = ni) and axis j down the columns
//! (Rows = nj); slice k is one object. ImageOrientationPatient holds the directions of axes i
//! and j and ImagePositionPatient the centre of voxel (0, 0, k), both converted from RAS+ to
//! LPS. The pixel order is the voxel order, never flipped: the series reader
//! (`formats::dicom`) keeps the stored order too, so a written series reads back with the same
//! affine (for a right-handed grid; a left-handed one reads back with the slice order reversed,
//! the same world geometry), and a derived series lies voxel for voxel on the series it came from.

use crate::atomic::write_bytes;
use crate::formats::dicom_common::encode_part10;
use crate::formats::lps::ras_to_lps;
use dicom_core::smallvec::SmallVec;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pedinorm_registration::Image;
use pedinorm_validation::rng::derive_seed;
use std::path::{Path, PathBuf};

/// Why a series could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum DicomWriteError {
    /// An object could not be encoded.
    #[error("cannot encode slice {slice} of the DICOM series: {message}")]
    Encode {
        /// Zero-based slice index.
        slice: usize,
        /// What went wrong.
        message: String,
    },
    /// A file could not be written.
    #[error("{path}: cannot write DICOM: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The image does not fit a DICOM image (at most 65535 rows and columns).
    #[error("an image of {dims:?} voxels does not fit DICOM Rows/Columns (at most 65535)")]
    TooLarge {
        /// The grid dimensions.
        dims: [usize; 3],
    },
}

/// How stored 16-bit values map to real values: `real = slope × stored + intercept`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelScaling {
    /// Unsigned 16-bit (PixelRepresentation 0).
    Unsigned {
        /// RescaleSlope.
        slope: f64,
        /// RescaleIntercept.
        intercept: f64,
    },
    /// Signed 16-bit (PixelRepresentation 1), intercept 0; values that are not finite are
    /// stored as 0.
    Signed {
        /// RescaleSlope.
        slope: f64,
    },
}

impl PixelScaling {
    /// Unsigned 16-bit spanning the finite values of `image` (from `min(0, lowest)` to the
    /// highest), so that no finite value is clipped.
    pub fn unsigned_full_range(image: &Image<f32>) -> Self {
        let (low, high) = image.finite_range().unwrap_or((0.0, 0.0));
        let intercept = f64::from(low.min(0.0));
        let slope = if f64::from(high) > intercept { (f64::from(high) - intercept) / 65535.0 } else { 1.0 };
        PixelScaling::Unsigned { slope, intercept }
    }

    fn slope_intercept(self) -> (f64, f64) {
        match self {
            PixelScaling::Unsigned { slope, intercept } => (slope, intercept),
            PixelScaling::Signed { slope } => (slope, 0.0),
        }
    }

    fn stored_bytes(self, value: f32) -> [u8; 2] {
        let (slope, intercept) = self.slope_intercept();
        let scaled = (f64::from(value) - intercept) / slope;
        match self {
            PixelScaling::Unsigned { .. } => (scaled.round().clamp(0.0, 65535.0) as u16).to_le_bytes(),
            PixelScaling::Signed { .. } if value.is_finite() => {
                (scaled.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes()
            }
            PixelScaling::Signed { .. } => [0, 0],
        }
    }
}

/// Where the UIDs of a series come from (all under the `2.25` root: a decimal 128-bit number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidSource {
    /// Derived from a seed and a purpose number: the same seed gives the same UIDs.
    Seeded(u64),
    /// Fresh random UIDs.
    Random,
}

/// Purpose numbers of the seeded UIDs.
const SERIES_PURPOSE: u64 = 11;
const FRAME_OF_REFERENCE_PURPOSE: u64 = 12;
const FIRST_INSTANCE_PURPOSE: u64 = 1000;

impl UidSource {
    /// An independent source for a part of a larger output (seeded: a seed derived from this
    /// one and `part`), so that two series built from one source never share a UID.
    pub fn child(self, part: u64) -> UidSource {
        match self {
            UidSource::Seeded(seed) => UidSource::Seeded(derive_seed(seed, part.wrapping_add(1 << 32))),
            UidSource::Random => UidSource::Random,
        }
    }

    /// The UID for `purpose` (seeded), or a fresh one (random).
    pub fn uid(self, purpose: u64) -> String {
        let value = match self {
            UidSource::Seeded(seed) => {
                let high = derive_seed(seed, purpose.wrapping_mul(2));
                let low = derive_seed(seed, purpose.wrapping_mul(2) + 1);
                (u128::from(high) << 64) | u128::from(low)
            }
            UidSource::Random => rand::random::<u128>(),
        };
        // Below 2^127 so the decimal has at most 39 digits (the UID at most 44 characters).
        format!("2.25.{}", value >> 1)
    }
}

/// What a series carries besides the image.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    /// StudyInstanceUID of the study the series joins.
    pub study_uid: String,
    /// Source of the series, frame-of-reference and instance UIDs.
    pub uids: UidSource,
    /// How voxel values are stored.
    pub scaling: PixelScaling,
    /// Attributes copied into every object: patient, study, series description and number,
    /// acquisition. The writer sets the identification, geometry and pixel attributes itself.
    pub attributes: InMemDicomObject,
}

/// A series encoded as Part 10 files, one per slice.
#[derive(Debug, Clone)]
pub struct EncodedSeries {
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: String,
    /// SOPInstanceUID of each object, slice 0 first.
    pub instance_uids: Vec<String>,
    /// The objects, slice 0 first.
    pub objects: Vec<Vec<u8>>,
}

/// A DS (decimal string) value: six decimals at most, trailing zeros dropped, at most 16
/// characters.
pub fn decimal_string(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.chars().take(16).collect() }
}

/// A DS value that keeps the full precision a rescale slope needs: the plain decimal when it
/// is exact, else scientific notation in 16 characters.
fn exact_decimal_string(value: f64) -> String {
    let plain = decimal_string(value);
    if plain.parse::<f64>().is_ok_and(|parsed| parsed == value) {
        return plain;
    }
    format!("{value:.10e}").chars().take(16).collect()
}

fn multi(values: impl IntoIterator<Item = String>) -> PrimitiveValue {
    PrimitiveValue::Strs(values.into_iter().collect())
}

/// Attributes the MR Image IOD requires that a series may not carry (a derived series has no
/// acquisition): type 2 ones empty, the type 1 ScanningSequence as research mode (`RM`) and
/// SequenceVariant `NONE`. Put only where the caller's attributes lack them.
const MR_DEFAULTS: [(dicom_core::Tag, VR, &str); 11] = [
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
    (tags::ACCESSION_NUMBER, VR::SH, ""),
    (tags::PATIENT_POSITION, VR::CS, ""),
    (tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
    (tags::SCANNING_SEQUENCE, VR::CS, "RM"),
    (tags::SEQUENCE_VARIANT, VR::CS, "NONE"),
    (tags::SCAN_OPTIONS, VR::CS, ""),
    (tags::MR_ACQUISITION_TYPE, VR::CS, ""),
    (tags::REPETITION_TIME, VR::DS, ""),
    (tags::ECHO_TIME, VR::DS, ""),
    (tags::ECHO_TRAIN_LENGTH, VR::IS, ""),
];

/// Encodes `image` (RAS+ grid) as an MR series, one Part 10 object per slice along the third
/// voxel axis.
pub fn encode_series(image: &Image<f32>, spec: &SeriesSpec) -> Result<EncodedSeries, DicomWriteError> {
    let grid = image.grid();
    let dims = grid.dims();
    let (Ok(columns), Ok(rows)) = (u16::try_from(dims[0]), u16::try_from(dims[1])) else {
        return Err(DicomWriteError::TooLarge { dims });
    };
    let spacing = grid.spacing();
    let direction = grid.direction();
    let orientation: Vec<String> = [0, 1]
        .iter()
        .flat_map(|&axis| {
            let d = direction.column(axis);
            ras_to_lps([d[0], d[1], d[2]])
        })
        .map(decimal_string)
        .collect();
    let (slope, intercept) = spec.scaling.slope_intercept();
    let pixel_representation = match spec.scaling {
        PixelScaling::Unsigned { .. } => 0u16,
        PixelScaling::Signed { .. } => 1u16,
    };
    let series_uid = spec.uids.uid(SERIES_PURPOSE);
    let frame_uid = spec.uids.uid(FRAME_OF_REFERENCE_PURPOSE);
    let data = image.data();
    let mut objects = Vec::with_capacity(dims[2]);
    let mut instance_uids = Vec::with_capacity(dims[2]);
    for k in 0..dims[2] {
        let instance_uid = spec.uids.uid(FIRST_INSTANCE_PURPOSE + k as u64);
        let mut object = spec.attributes.clone();
        for (tag, vr, value) in MR_DEFAULTS {
            if object.get(tag).is_none() {
                object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
            }
        }
        let mut put = |tag, vr, value: PrimitiveValue| {
            object.put(DataElement::new(tag, vr, value));
        };
        let position = ras_to_lps(grid.voxel_to_world([0.0, 0.0, k as f64]));
        put(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, instance_uid.as_str().into());
        put(tags::MODALITY, VR::CS, "MR".into());
        put(tags::STUDY_INSTANCE_UID, VR::UI, spec.study_uid.as_str().into());
        put(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str().into());
        put(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_uid.as_str().into());
        put(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string().into());
        put(tags::IMAGE_POSITION_PATIENT, VR::DS, multi(position.map(decimal_string)));
        put(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, multi(orientation.iter().cloned()));
        // PixelSpacing is (between rows, between columns): rows step along voxel axis j.
        put(tags::PIXEL_SPACING, VR::DS, multi([decimal_string(spacing[1]), decimal_string(spacing[0])]));
        put(tags::SLICE_THICKNESS, VR::DS, decimal_string(spacing[2]).into());
        put(tags::SPACING_BETWEEN_SLICES, VR::DS, decimal_string(spacing[2]).into());
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
        put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".into());
        put(tags::ROWS, VR::US, PrimitiveValue::from(rows));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(columns));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
        put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16));
        put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
        put(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(pixel_representation));
        put(tags::RESCALE_SLOPE, VR::DS, exact_decimal_string(slope).into());
        put(tags::RESCALE_INTERCEPT, VR::DS, exact_decimal_string(intercept).into());
        let mut pixels = Vec::with_capacity(dims[0] * dims[1] * 2);
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                pixels.extend_from_slice(&spec.scaling.stored_bytes(data[[i, j, k]]));
            }
        }
        put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U8(SmallVec::from_vec(pixels)));
        let bytes = encode_part10(object, uids::MR_IMAGE_STORAGE, "MR slice")
            .map_err(|e| DicomWriteError::Encode { slice: k, message: e.message })?;
        objects.push(bytes);
        instance_uids.push(instance_uid);
    }
    Ok(EncodedSeries { series_uid, frame_of_reference_uid: frame_uid, instance_uids, objects })
}

/// Writes `image` as an MR series into `dir` (`IM0001.dcm`, … one file per slice, each
/// written atomically) and returns the files.
pub fn write_series(
    dir: &Path,
    image: &Image<f32>,
    spec: &SeriesSpec,
) -> Result<Vec<PathBuf>, DicomWriteError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DicomWriteError::Write { path: dir.to_owned(), message: e.to_string() })?;
    let series = encode_series(image, spec)?;
    let mut written = Vec::with_capacity(series.objects.len());
    for (k, bytes) in series.objects.iter().enumerate() {
        let path = dir.join(format!("IM{:04}.dcm", k + 1));
        write_bytes(&path, bytes)
            .map_err(|e| DicomWriteError::Write { path: path.clone(), message: e.to_string() })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_distinct() {
        let a = UidSource::Seeded(1).uid(10);
        assert!(a.len() <= 64 && a.starts_with("2.25.") && a[5..].chars().all(|c| c.is_ascii_digit()));
        assert_eq!(a, UidSource::Seeded(1).uid(10));
        assert_ne!(a, UidSource::Seeded(1).uid(11));
        assert_ne!(a, UidSource::Seeded(2).uid(10));
        assert_ne!(UidSource::Random.uid(10), UidSource::Random.uid(10));
    }

    #[test]
    fn decimal_strings_fit_the_ds_rule() {
        assert_eq!(decimal_string(-0.0000001), "0");
        assert_eq!(decimal_string(12.5), "12.5");
        assert_eq!(decimal_string(-90.0), "-90");
        assert_eq!(exact_decimal_string(0.01), "0.01");
        let slope = 1000.0 / 65535.0;
        let text = exact_decimal_string(slope);
        assert!(text.len() <= 16, "{text}");
        assert!((text.parse::<f64>().unwrap() / slope - 1.0).abs() < 1e-9, "{text}");
    }
}
