//! One DICOM object → the facts series assembly needs: identity of its series, per-frame
//! geometry (classic single-frame, classic multi-frame, enhanced multi-frame functional
//! groups) and acquisition metadata for the sidecar.

use super::DicomError;
use super::sidecar::{Sidecar, age_from_dates, age_from_patient_age, parse_dicom_date};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use std::path::Path;

/// Geometry and value transform of one frame (one 2-D slice).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// Frame index inside its object (0 for single-frame objects).
    pub frame: u32,
    /// ImagePositionPatient (LPS mm) of the first transmitted pixel.
    pub position: Option<[f64; 3]>,
    /// ImageOrientationPatient: row direction then column direction (LPS).
    pub orientation: Option<[f64; 6]>,
    /// PixelSpacing: between rows, then between columns (mm).
    pub pixel_spacing: Option<[f64; 2]>,
    /// RescaleSlope, RescaleIntercept (1, 0 when absent).
    pub rescale: (f64, f64),
    /// Echo time in ms (EchoTime or EffectiveEchoTime).
    pub echo_time: Option<f64>,
    /// EchoNumbers.
    pub echo_number: Option<i64>,
    /// TemporalPositionIndex / TemporalPositionIdentifier.
    pub temporal: Option<i64>,
    /// InstanceNumber (tie-break only: slices are sorted by position).
    pub instance_number: Option<i64>,
}

/// What one object contributes to series assembly.
#[derive(Debug, Clone)]
pub(crate) struct ObjectHeader {
    pub series_uid: String,
    pub study_uid: String,
    pub transfer_syntax: String,
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub photometric: String,
    pub gantry_tilt: Option<f64>,
    pub slice_thickness: Option<f64>,
    pub spacing_between_slices: Option<f64>,
    pub frames: Vec<Frame>,
    /// Metadata of this object (series-level values are taken from the first slice).
    pub sidecar: Sidecar,
}

fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

fn floats(object: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let element = object.get(tag)?;
    let values = element.to_multi_float64().ok()?;
    (!values.is_empty() && values.iter().all(|v| v.is_finite())).then_some(values)
}

fn float(object: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats(object, tag).map(|v| v[0])
}

fn int(object: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let element = object.get(tag)?;
    element
        .to_int::<i64>()
        .ok()
        .or_else(|| element.to_float64().ok().filter(|v| v.is_finite()).map(|v| v as i64))
}

fn items(object: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    object.get(tag).and_then(|e| e.items()).unwrap_or(&[])
}

/// A value of a functional group macro: the per-frame item first, then the shared one.
fn group_value<T>(
    per_frame: Option<&InMemDicomObject>,
    shared: Option<&InMemDicomObject>,
    sequence: Tag,
    get: impl Fn(&InMemDicomObject) -> Option<T>,
) -> Option<T> {
    [per_frame, shared].into_iter().flatten().find_map(|group| items(group, sequence).first().and_then(&get))
}

/// A metadata value at top level, else inside any functional group macro (enhanced objects).
fn anywhere<T>(object: &InMemDicomObject, get: impl Fn(&InMemDicomObject) -> Option<T>) -> Option<T> {
    if let Some(value) = get(object) {
        return Some(value);
    }
    let shared = items(object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let first = items(object, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).first();
    [shared, first].into_iter().flatten().find_map(|group| {
        group
            .iter()
            .find_map(|element| element.items().and_then(|macro_items| macro_items.first()).and_then(&get))
    })
}

fn checked_array<const N: usize>(
    values: Option<Vec<f64>>,
    file: &Path,
    field: &'static str,
) -> Result<Option<[f64; N]>, DicomError> {
    match values {
        None => Ok(None),
        Some(values) => <[f64; N]>::try_from(&values[..]).map(Some).map_err(|_| DicomError::InvalidField {
            file: file.to_owned(),
            field,
            rule: format!("must have {N} numeric values, found {}", values.len()),
        }),
    }
}

/// Parses one object. `Ok(None)` for objects that are not images (DICOMDIR, reports, ...).
pub(crate) fn read_object_header(bytes: &[u8], file: &Path) -> Result<Option<ObjectHeader>, DicomError> {
    let parse_error = |message: String| DicomError::Parse { file: file.to_owned(), message };
    let object =
        super::guard(file, || OpenFileOptions::new().read_until(tags::PIXEL_DATA).from_reader(bytes))?
            .map_err(|e| parse_error(e.to_string()))?;
    let transfer_syntax = object.meta().transfer_syntax().trim_end_matches('\0').to_owned();
    if object.get(tags::ROWS).is_none() && object.get(tags::COLUMNS).is_none() {
        return Ok(None);
    }
    let missing = |field, purpose| DicomError::MissingField { file: file.to_owned(), field, purpose };
    let series_uid =
        text(&object, tags::SERIES_INSTANCE_UID).ok_or(missing("SeriesInstanceUID", "group slices"))?;
    let study_uid = text(&object, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let rows = int(&object, tags::ROWS).ok_or(missing("Rows", "size the image"))?;
    let columns = int(&object, tags::COLUMNS).ok_or(missing("Columns", "size the image"))?;
    if rows < 1 || columns < 1 || rows > 65535 || columns > 65535 {
        return Err(DicomError::InvalidField {
            file: file.to_owned(),
            field: "Rows/Columns",
            rule: format!("must be 1..=65535, found {rows}×{columns}"),
        });
    }
    let image_type = object.get(tags::IMAGE_TYPE).and_then(|e| e.to_multi_str().ok()).unwrap_or_default();
    if image_type.iter().any(|value| value.trim().eq_ignore_ascii_case("MOSAIC")) {
        return Err(DicomError::InvalidField {
            file: file.to_owned(),
            field: "ImageType",
            rule: "Siemens MOSAIC images (slices tiled in one frame) are not supported".into(),
        });
    }
    let number_of_frames = int(&object, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if !(1..=65535).contains(&number_of_frames) {
        return Err(DicomError::InvalidField {
            file: file.to_owned(),
            field: "NumberOfFrames",
            rule: format!("must be 1..=65535, found {number_of_frames}"),
        });
    }
    let slice_thickness = float(&object, tags::SLICE_THICKNESS)
        .or_else(|| anywhere(&object, |g| float(g, tags::SLICE_THICKNESS)));
    let spacing_between_slices = float(&object, tags::SPACING_BETWEEN_SLICES)
        .or_else(|| anywhere(&object, |g| float(g, tags::SPACING_BETWEEN_SLICES)));

    let top_position =
        checked_array::<3>(floats(&object, tags::IMAGE_POSITION_PATIENT), file, "ImagePositionPatient")?;
    let top_orientation = checked_array::<6>(
        floats(&object, tags::IMAGE_ORIENTATION_PATIENT),
        file,
        "ImageOrientationPatient",
    )?;
    let top_spacing = checked_array::<2>(floats(&object, tags::PIXEL_SPACING), file, "PixelSpacing")?;
    let top_rescale = (
        float(&object, tags::RESCALE_SLOPE).unwrap_or(1.0),
        float(&object, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
    );
    let top_echo_time = float(&object, tags::ECHO_TIME);
    let echo_number = int(&object, tags::ECHO_NUMBERS);
    let instance_number = int(&object, tags::INSTANCE_NUMBER);
    let temporal = int(&object, tags::TEMPORAL_POSITION_IDENTIFIER);

    let per_frame = items(&object, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let shared = items(&object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let mut frames = Vec::with_capacity(number_of_frames as usize);
    if !per_frame.is_empty() || shared.is_some() {
        // Enhanced multi-frame: geometry and value transforms per frame, from functional groups.
        if !per_frame.is_empty() && per_frame.len() != number_of_frames as usize {
            return Err(DicomError::InvalidField {
                file: file.to_owned(),
                field: "PerFrameFunctionalGroupsSequence",
                rule: format!("has {} items for NumberOfFrames {number_of_frames}", per_frame.len()),
            });
        }
        for index in 0..number_of_frames as usize {
            let own = per_frame.get(index);
            let position = group_value(own, shared, tags::PLANE_POSITION_SEQUENCE, |g| {
                floats(g, tags::IMAGE_POSITION_PATIENT)
            });
            let orientation = group_value(own, shared, tags::PLANE_ORIENTATION_SEQUENCE, |g| {
                floats(g, tags::IMAGE_ORIENTATION_PATIENT)
            });
            let spacing =
                group_value(own, shared, tags::PIXEL_MEASURES_SEQUENCE, |g| floats(g, tags::PIXEL_SPACING));
            let slope = group_value(own, shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |g| {
                float(g, tags::RESCALE_SLOPE)
            });
            let intercept = group_value(own, shared, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |g| {
                float(g, tags::RESCALE_INTERCEPT)
            });
            let echo =
                group_value(own, shared, tags::MR_ECHO_SEQUENCE, |g| float(g, tags::EFFECTIVE_ECHO_TIME));
            let temporal_index = group_value(own, shared, tags::FRAME_CONTENT_SEQUENCE, |g| {
                int(g, tags::TEMPORAL_POSITION_INDEX)
            });
            frames.push(Frame {
                frame: index as u32,
                position: checked_array::<3>(position, file, "PlanePositionSequence/ImagePositionPatient")?
                    .or(top_position),
                orientation: checked_array::<6>(
                    orientation,
                    file,
                    "PlaneOrientationSequence/ImageOrientationPatient",
                )?
                .or(top_orientation),
                pixel_spacing: checked_array::<2>(spacing, file, "PixelMeasuresSequence/PixelSpacing")?
                    .or(top_spacing),
                rescale: (slope.unwrap_or(top_rescale.0), intercept.unwrap_or(top_rescale.1)),
                echo_time: echo.or(top_echo_time),
                echo_number,
                temporal: temporal_index.or(temporal),
                instance_number: Some(index as i64 + 1),
            });
        }
    } else {
        // Classic objects: one frame, or frames stacked along the normal by the slice spacing.
        for index in 0..number_of_frames as u32 {
            let position = match (index, top_position, top_orientation) {
                (0, position, _) => position,
                (_, Some(p), Some(o)) => {
                    let step = spacing_between_slices.or(slice_thickness).ok_or(missing(
                        "SpacingBetweenSlices",
                        "stack the frames of a classic multi-frame object",
                    ))?;
                    let normal = cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
                    Some(std::array::from_fn(|a| p[a] + normal[a] * step * index as f64))
                }
                _ => None,
            };
            frames.push(Frame {
                frame: index,
                position,
                orientation: top_orientation,
                pixel_spacing: top_spacing,
                rescale: top_rescale,
                echo_time: top_echo_time,
                echo_number,
                temporal,
                instance_number: instance_number.map(|n| n * 100_000 + index as i64),
            });
        }
    }

    let sidecar = metadata(&object, slice_thickness, spacing_between_slices, &transfer_syntax);
    Ok(Some(ObjectHeader {
        series_uid,
        study_uid,
        transfer_syntax,
        rows: rows as u32,
        columns: columns as u32,
        samples_per_pixel: int(&object, tags::SAMPLES_PER_PIXEL).unwrap_or(1).clamp(0, 16) as u16,
        photometric: text(&object, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into()),
        gantry_tilt: float(&object, tags::GANTRY_DETECTOR_TILT),
        slice_thickness,
        spacing_between_slices,
        frames,
        sidecar,
    }))
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

/// Sidecar metadata of one object. Identity fields are read only to derive the age.
fn metadata(
    object: &InMemDicomObject,
    thickness: Option<f64>,
    spacing: Option<f64>,
    syntax: &str,
) -> Sidecar {
    let seconds = |tag: Tag| anywhere(object, |g| float(g, tag)).map(|ms| ms / 1000.0);
    let echo_time =
        anywhere(object, |g| float(g, tags::ECHO_TIME).or_else(|| float(g, tags::EFFECTIVE_ECHO_TIME)));
    let inversion =
        anywhere(object, |g| float(g, tags::INVERSION_TIME).or_else(|| float(g, tags::INVERSION_TIMES)));
    let birth = text(object, tags::PATIENT_BIRTH_DATE).and_then(|d| parse_dicom_date(&d));
    let study = [tags::STUDY_DATE, tags::SERIES_DATE, tags::ACQUISITION_DATE, tags::CONTENT_DATE]
        .into_iter()
        .find_map(|tag| text(object, tag).and_then(|d| parse_dicom_date(&d)));
    let (age_years, age_source) = match (
        birth.zip(study).and_then(|(b, s)| age_from_dates(b, s)),
        text(object, tags::PATIENT_AGE).and_then(|a| age_from_patient_age(&a)),
    ) {
        (Some(age), _) => (Some(age), Some("dates".to_owned())),
        (None, Some(age)) => (Some(age), Some("PatientAge".to_owned())),
        (None, None) => (None, None),
    };
    Sidecar {
        modality: text(object, tags::MODALITY),
        magnetic_field_strength: float(object, tags::MAGNETIC_FIELD_STRENGTH),
        manufacturer: text(object, tags::MANUFACTURER),
        manufacturers_model_name: text(object, tags::MANUFACTURER_MODEL_NAME),
        series_description: text(object, tags::SERIES_DESCRIPTION),
        protocol_name: text(object, tags::PROTOCOL_NAME),
        series_number: int(object, tags::SERIES_NUMBER),
        image_type: object
            .get(tags::IMAGE_TYPE)
            .and_then(|e| e.to_multi_str().ok())
            .map(|values| values.iter().map(|v| v.trim().to_owned()).collect()),
        scanning_sequence: text(object, tags::SCANNING_SEQUENCE),
        sequence_variant: text(object, tags::SEQUENCE_VARIANT),
        mr_acquisition_type: text(object, tags::MR_ACQUISITION_TYPE),
        repetition_time: seconds(tags::REPETITION_TIME),
        echo_time: echo_time.map(|ms| ms / 1000.0),
        echo_number: int(object, tags::ECHO_NUMBERS),
        inversion_time: inversion.map(|ms| ms / 1000.0),
        flip_angle: anywhere(object, |g| float(g, tags::FLIP_ANGLE)),
        slice_thickness: thickness,
        spacing_between_slices: spacing,
        voxel_size: None,
        dimensions: None,
        body_part_examined: text(object, tags::BODY_PART_EXAMINED),
        patient_sex: text(object, tags::PATIENT_SEX),
        age_years,
        age_source,
        pseudonym: None,
        transfer_syntax_uid: (!syntax.is_empty()).then(|| syntax.to_owned()),
        conversion_software: Some("pedinorm".into()),
        conversion_software_version: Some(env!("CARGO_PKG_VERSION").into()),
    }
}
