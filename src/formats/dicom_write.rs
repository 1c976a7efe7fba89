//! Derived DICOM series: a z-map on the case's own grid written as an MR series
//! (`DERIVED\SECONDARY`) that joins the original study in the PACS, so radiologists open it
//! in their viewer next to the images it was computed from.
//!
//! Patient and study attributes are copied from the PACS's own QIDO-RS answer for the study
//! and go straight back to that PACS: they are held in memory only, never stored or logged.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use pedinorm_registration::Image;
use serde_json::Value;

/// MR Image Storage.
const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Explicit VR Little Endian.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Stored value = z / slope.
const Z_SLOPE: f64 = 0.01;

/// Errors while building the series.
#[derive(Debug, thiserror::Error)]
pub enum DerivedError {
    /// The study attributes from the PACS lack a required field.
    #[error("the PACS answer for the study lacks {0}")]
    MissingAttribute(&'static str),
    /// Encoding failed.
    #[error("cannot encode the derived series: {0}")]
    Encode(String),
}

/// A fresh UID under the `2.25` (UUID-derived) root.
pub fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>() >> 1)
}

fn json_string(study: &Value, tag: &str) -> Option<String> {
    let value = study.get(tag)?.get("Value")?.get(0)?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("Alphabetic").and_then(Value::as_str).map(str::to_string),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text(tag: Tag, vr: VR, value: impl Into<String>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value.into()))
}

fn format_ds(value: f64) -> String {
    // DS is at most 16 characters.
    let text = format!("{value:.6}");
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    let out = if trimmed.is_empty() || trimmed == "-" { "0" } else { trimmed };
    out.chars().take(16).collect()
}

/// Builds one DICOM object per slice of `image` (RAS+ grid) as Part 10 bytes.
pub fn derived_series(
    image: &Image<f32>,
    study: &Value,
    description: &str,
) -> Result<Vec<Vec<u8>>, DerivedError> {
    let study_uid =
        json_string(study, "0020000D").ok_or(DerivedError::MissingAttribute("StudyInstanceUID"))?;
    let grid = image.grid();
    let [ni, nj, nk] = grid.dims();
    let affine = grid.affine();
    let spacing = grid.spacing();
    // RAS → LPS: negate x and y.
    let lps = |v: [f64; 3]| [-v[0], -v[1], v[2]];
    let axis = |column: usize| {
        let v = [affine[(0, column)], affine[(1, column)], affine[(2, column)]];
        let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(f64::MIN_POSITIVE);
        lps([v[0] / norm, v[1] / norm, v[2] / norm])
    };
    let (row_direction, column_direction) = (axis(0), axis(1));
    let orientation = [row_direction, column_direction]
        .iter()
        .flat_map(|v| v.iter().map(|x| format_ds(*x)))
        .collect::<Vec<_>>()
        .join("\\");
    let series_uid = new_uid();
    let frame_uid = new_uid();
    let data = image.data();
    let mut objects = Vec::with_capacity(nk);
    for k in 0..nk {
        let mut object = InMemDicomObject::new_empty();
        let sop_uid = new_uid();
        object.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
        object.put(text(tags::SOP_CLASS_UID, VR::UI, MR_IMAGE_STORAGE));
        object.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()));
        object.put(text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY\\ZMAP"));
        object.put(text(tags::MODALITY, VR::CS, "MR"));
        object.put(text(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.clone()));
        object.put(text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()));
        object.put(text(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_uid.clone()));
        object.put(text(tags::SERIES_DESCRIPTION, VR::LO, description.chars().take(64).collect::<String>()));
        object.put(text(tags::SERIES_NUMBER, VR::IS, "9901"));
        object.put(text(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string()));
        object.put(text(tags::MANUFACTURER, VR::LO, "pedinorm"));
        object.put(text(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            "voxelwise z-score against the paediatric normative database",
        ));
        for (tag, vr, json_tag) in [
            (tags::PATIENT_NAME, VR::PN, "00100010"),
            (tags::PATIENT_ID, VR::LO, "00100020"),
            (tags::PATIENT_BIRTH_DATE, VR::DA, "00100030"),
            (tags::PATIENT_SEX, VR::CS, "00100040"),
            (tags::STUDY_DATE, VR::DA, "00080020"),
            (tags::STUDY_TIME, VR::TM, "00080030"),
            (tags::ACCESSION_NUMBER, VR::SH, "00080050"),
            (tags::STUDY_ID, VR::SH, "00200010"),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "00080090"),
        ] {
            object.put(text(tag, vr, json_string(study, json_tag).unwrap_or_default()));
        }
        let origin = grid.voxel_to_world([0.0, 0.0, k as f64]);
        let position = lps(origin).iter().map(|x| format_ds(*x)).collect::<Vec<_>>().join("\\");
        object.put(text(tags::IMAGE_POSITION_PATIENT, VR::DS, position));
        object.put(text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, orientation.clone()));
        // PixelSpacing is (between rows, between columns) = (j spacing, i spacing).
        object.put(text(
            tags::PIXEL_SPACING,
            VR::DS,
            format!("{}\\{}", format_ds(spacing[1]), format_ds(spacing[0])),
        ));
        object.put(text(tags::SLICE_THICKNESS, VR::DS, format_ds(spacing[2])));
        object.put(text(tags::SPACING_BETWEEN_SLICES, VR::DS, format_ds(spacing[2])));
        object.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)));
        object.put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
        object.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(nj as u16)));
        object.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(ni as u16)));
        object.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)));
        object.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16)));
        object.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16)));
        object.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(1_u16)));
        object.put(text(tags::RESCALE_SLOPE, VR::DS, format_ds(Z_SLOPE)));
        object.put(text(tags::RESCALE_INTERCEPT, VR::DS, "0"));
        object.put(text(tags::WINDOW_CENTER, VR::DS, "0"));
        object.put(text(tags::WINDOW_WIDTH, VR::DS, "1000"));
        let mut pixels = Vec::with_capacity(ni * nj * 2);
        for j in 0..nj {
            for i in 0..ni {
                let z = data[[i, j, k]];
                let stored = if z.is_finite() {
                    (z as f64 / Z_SLOPE).round().clamp(-32768.0, 32767.0) as i16
                } else {
                    0
                };
                pixels.extend_from_slice(&stored.to_le_bytes());
            }
        }
        object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));
        let file = object
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(EXPLICIT_VR_LE)
                    .media_storage_sop_class_uid(MR_IMAGE_STORAGE),
            )
            .map_err(|e| DerivedError::Encode(e.to_string()))?;
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).map_err(|e| DerivedError::Encode(e.to_string()))?;
        objects.push(bytes);
    }
    Ok(objects)
}

/// SeriesInstanceUID of an encoded object.
pub fn series_uid_of(bytes: &[u8]) -> Option<String> {
    let object = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(std::io::Cursor::new(bytes))
        .ok()?;
    object
        .element(tags::SERIES_INSTANCE_UID)
        .ok()?
        .to_str()
        .ok()
        .map(|s| s.trim_end_matches('\0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;
    use pedinorm_registration::Grid;

    #[test]
    fn derived_series_round_trips_through_the_dicom_loader() {
        let grid = Grid::axis_aligned([4, 3, 2], [1.0, 2.0, 3.0], [10.0, -5.0, 7.0]).unwrap();
        let data =
            Array3::from_shape_fn((4, 3, 2), |(i, j, k)| (i as f32) - (j as f32) * 0.5 + k as f32 * 2.0);
        let image = Image::new(data, grid).unwrap();
        let study = serde_json::json!({
            "0020000D": { "vr": "UI", "Value": ["1.2.3.4"] },
            "00100010": { "vr": "PN", "Value": [{ "Alphabetic": "Test^Patient" }] },
        });
        let objects = derived_series(&image, &study, "z").unwrap();
        assert_eq!(objects.len(), 2);
        let series = series_uid_of(&objects[0]).unwrap();
        assert_eq!(series_uid_of(&objects[1]).unwrap(), series);
        let loaded = crate::formats::dicom::load_series_from_memory(
            objects
                .iter()
                .enumerate()
                .map(|(i, o)| (std::path::PathBuf::from(format!("{i}.dcm")), o.clone()))
                .collect(),
        )
        .unwrap();
        assert_eq!(loaded.len(), 1);
        let volume = &loaded[0].image;
        assert_eq!(volume.grid().dims(), [4, 3, 2]);
        for (a, b) in volume.grid().affine().iter().zip(image.grid().affine().iter()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        for ((i, j, k), value) in image.data().indexed_iter() {
            assert!((volume.data()[[i, j, k]] - value).abs() < 0.006, "{i} {j} {k}");
        }
    }
}
