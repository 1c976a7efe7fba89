//! One DICOM object → the facts series assembly needs: identity of its series, per-frame
//! geometry (classic single-frame, classic multi-frame, enhanced multi-frame functional
//! groups) and acquisition metadata for the sidecar.

use super::DicomError;
use super::csa::CsaHeader;
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
    /// Tile of a Siemens MOSAIC frame this slice is cut from (row-major tile order).
    pub tile: Option<u32>,
}

/// How the slices of a Siemens MOSAIC image are tiled in its single stored frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MosaicLayout {
    /// Tiles per row and per column of the mosaic (`ceil(sqrt(NumberOfImagesInMosaic))`).
    pub across: usize,
    /// Rows of the stored frame.
    pub full_rows: usize,
    /// Columns of the stored frame.
    pub full_columns: usize,
}

impl MosaicLayout {
    /// Rows of one tile (the stored rows divided by the tiles across, rounded down as dcm2niix
    /// does).
    pub(crate) fn tile_rows(&self) -> usize {
        self.full_rows / self.across
    }

    /// Columns of one tile.
    pub(crate) fn tile_columns(&self) -> usize {
        self.full_columns / self.across
    }

    /// Cuts tile `tile` (row-major tile order) out of the row-major stored frame; `None` when
    /// the frame is smaller than the layout says.
    ///
    /// A band of tiles starts every `floor(rows × columns / across)` pixels of the stored
    /// frame, as in dcm2niix's `nii_demosaic`. When the stored rows are a multiple of `across`
    /// (every scanner-written mosaic) that is exactly `tile rows × columns`, i.e. tiles on a
    /// regular grid; for other sizes the layout is not defined by the format (nibabel refuses
    /// such frames) and dcm2niix's addressing is followed so that both agree.
    pub(crate) fn cut(&self, full: &[f32], tile: u32) -> Option<Vec<f32>> {
        let (rows, columns) = (self.tile_rows(), self.tile_columns());
        let tile = tile as usize;
        if tile >= self.across * self.across || full.len() < self.full_rows * self.full_columns {
            return None;
        }
        let band = self.full_rows * self.full_columns / self.across;
        let first = (tile / self.across) * band + (tile % self.across) * columns;
        let mut out = Vec::with_capacity(rows * columns);
        for row in 0..rows {
            let start = first + row * self.full_columns;
            out.extend_from_slice(full.get(start..start + columns)?);
        }
        Some(out)
    }
}

/// What one object contributes to series assembly.
#[derive(Debug, Clone)]
pub(crate) struct ObjectHeader {
    /// SeriesInstanceUID, or the fallback grouping key when it is missing (see [`series_key`]).
    pub series_uid: String,
    /// Whether `series_uid` is the fallback key (no SeriesInstanceUID in the object).
    pub series_uid_missing: bool,
    pub study_uid: String,
    /// SOPClassUID, SOPInstanceUID and FrameOfReferenceUID (empty when absent): what objects
    /// derived from the series reference.
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub transfer_syntax: String,
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub photometric: String,
    pub gantry_tilt: Option<f64>,
    pub slice_thickness: Option<f64>,
    pub spacing_between_slices: Option<f64>,
    /// InstanceNumber of the object.
    pub instance_number: Option<i64>,
    /// Set for Siemens MOSAIC objects: `rows`/`columns` are then those of one tile.
    pub mosaic: Option<MosaicLayout>,
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
pub(crate) fn anywhere<T>(
    object: &InMemDicomObject,
    get: impl Fn(&InMemDicomObject) -> Option<T>,
) -> Option<T> {
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
    super::lengths::check_declared_lengths(bytes).map_err(parse_error)?;
    let object =
        super::guard(file, || OpenFileOptions::new().read_until(tags::PIXEL_DATA).from_reader(bytes))?
            .map_err(|e| parse_error(e.to_string()))?;
    let transfer_syntax = object.meta().transfer_syntax().trim_end_matches('\0').to_owned();
    if object.get(tags::ROWS).is_none() && object.get(tags::COLUMNS).is_none() {
        return Ok(None);
    }
    let missing = |field, purpose| DicomError::MissingField { file: file.to_owned(), field, purpose };
    let (series_uid, series_uid_missing) = series_key(&object, file)?;
    let study_uid = text(&object, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let sop_class_uid = text(&object, tags::SOP_CLASS_UID).unwrap_or_default();
    let sop_instance_uid = text(&object, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let frame_of_reference_uid = text(&object, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default();
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
    let is_mosaic = image_type.iter().any(|value| value.trim().eq_ignore_ascii_case("MOSAIC"));
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

    // What the top level says of every frame; the branches below override it per frame.
    let top = Frame {
        frame: 0,
        position: top_position,
        orientation: top_orientation,
        pixel_spacing: top_spacing,
        rescale: top_rescale,
        echo_time: top_echo_time,
        echo_number,
        temporal,
        instance_number,
        tile: None,
    };
    let per_frame = items(&object, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let shared = items(&object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let mut frames = Vec::with_capacity(number_of_frames as usize);
    let mut mosaic = None;
    if is_mosaic {
        if !per_frame.is_empty() || shared.is_some() || number_of_frames != 1 {
            return Err(DicomError::InvalidField {
                file: file.to_owned(),
                field: "ImageType",
                rule: format!(
                    "a Siemens MOSAIC image must be a classic single-frame object, found {number_of_frames} \
                     frame(s){}",
                    if per_frame.is_empty() && shared.is_none() { "" } else { " with functional groups" }
                ),
            });
        }
        let step = spacing_between_slices.or(slice_thickness);
        let (layout, tiles) = mosaic_frames(&object, file, rows as usize, columns as usize, step, &top)?;
        mosaic = Some(layout);
        frames = tiles;
    } else if !per_frame.is_empty() || shared.is_some() {
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
            let floats_in = |sequence, tag| group_value(own, shared, sequence, |g| floats(g, tag));
            let float_in = |sequence, tag| group_value(own, shared, sequence, |g| float(g, tag));
            let position = floats_in(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT);
            let orientation = floats_in(tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT);
            let spacing = floats_in(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING);
            let slope = float_in(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tags::RESCALE_SLOPE);
            let intercept = float_in(tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tags::RESCALE_INTERCEPT);
            let echo = float_in(tags::MR_ECHO_SEQUENCE, tags::EFFECTIVE_ECHO_TIME);
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
                temporal: temporal_index.or(temporal),
                instance_number: Some(index as i64 + 1),
                ..top.clone()
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
                instance_number: instance_number.map(|n| n * 100_000 + index as i64),
                ..top.clone()
            });
        }
    }

    let sidecar = metadata(&object, slice_thickness, spacing_between_slices, &transfer_syntax);
    let (rows, columns) = match mosaic {
        Some(layout) => (layout.tile_rows() as u32, layout.tile_columns() as u32),
        None => (rows as u32, columns as u32),
    };
    Ok(Some(ObjectHeader {
        series_uid,
        series_uid_missing,
        study_uid,
        sop_class_uid,
        sop_instance_uid,
        frame_of_reference_uid,
        transfer_syntax,
        rows,
        columns,
        samples_per_pixel: int(&object, tags::SAMPLES_PER_PIXEL).unwrap_or(1).clamp(0, 16) as u16,
        photometric: text(&object, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into()),
        gantry_tilt: float(&object, tags::GANTRY_DETECTOR_TILT),
        slice_thickness,
        spacing_between_slices,
        instance_number,
        mosaic,
        frames,
        sidecar,
    }))
}

/// The key that groups objects into series: SeriesInstanceUID, and `true` in the second
/// element when it is missing and a fallback key was built instead.
///
/// Fallback (objects without SeriesInstanceUID, as some exports and test files are): the
/// StudyInstanceUID, SeriesNumber, SeriesDescription (else ProtocolName), Modality and the
/// acquisition geometry (Rows, Columns, ImageOrientationPatient and PixelSpacing rounded to
/// 1e-4) together. An object that has neither SeriesNumber nor SeriesDescription nor
/// ProtocolName cannot be told apart from other series and is refused.
pub(crate) fn series_key(object: &InMemDicomObject, file: &Path) -> Result<(String, bool), DicomError> {
    if let Some(uid) = text(object, tags::SERIES_INSTANCE_UID) {
        return Ok((uid, false));
    }
    let number = text(object, tags::SERIES_NUMBER);
    let description = text(object, tags::SERIES_DESCRIPTION).or_else(|| text(object, tags::PROTOCOL_NAME));
    if number.is_none() && description.is_none() {
        return Err(DicomError::MissingField {
            file: file.to_owned(),
            field: "SeriesInstanceUID",
            purpose: "group slices into series; SeriesNumber, SeriesDescription and ProtocolName are missing \
                      too, so no fallback key can tell this series from others",
        });
    }
    let rounded = |values: Option<Vec<f64>>| {
        values
            .map(|v| v.iter().map(|x| format!("{:.4}", x + 0.0)).collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| "-".into())
    };
    let key = [
        text(object, tags::STUDY_INSTANCE_UID).unwrap_or_else(|| "-".into()),
        number.unwrap_or_else(|| "-".into()),
        description.unwrap_or_else(|| "-".into()),
        text(object, tags::MODALITY).unwrap_or_else(|| "-".into()),
        format!(
            "{}x{}",
            int(object, tags::ROWS).unwrap_or_default(),
            int(object, tags::COLUMNS).unwrap_or_default()
        ),
        rounded(floats(object, tags::IMAGE_ORIENTATION_PATIENT)),
        rounded(floats(object, tags::PIXEL_SPACING)),
    ]
    .join("|");
    Ok((format!("no-series-uid|{key}"), true))
}

/// The value of a private element: `element` (low byte) of the block reserved by `creator` in
/// `group`. Private creators are looked up rather than assumed at block 0x10.
fn private_element<'a>(
    object: &'a InMemDicomObject,
    group: u16,
    creator: &str,
    element: u8,
) -> Option<&'a dicom_object::mem::InMemElement> {
    (0x10u16..=0xFF).find_map(|block| {
        let reserved = object.get(Tag(group, block))?.to_bytes().ok()?;
        let name = String::from_utf8_lossy(&reserved);
        if name.trim_matches(|c: char| c == '\0' || c.is_whitespace()) == creator {
            object.get(Tag(group, (block << 8) | element as u16))
        } else {
            None
        }
    })
}

/// The Siemens CSA image header of an object, when it has one that parses.
fn csa_image_header(object: &InMemDicomObject) -> Option<CsaHeader> {
    let element = private_element(object, 0x0029, "SIEMENS CSA HEADER", 0x10)?;
    CsaHeader::parse(&element.to_bytes().ok()?)
}

/// NumberOfImagesInMosaic from the Siemens MR private header `(0019,xx0A)`, used when the CSA
/// header is absent: US, or raw little-endian bytes when read with implicit VR (UN).
fn siemens_mosaic_count(object: &InMemDicomObject) -> Option<i64> {
    let element = private_element(object, 0x0019, "SIEMENS MR HEADER", 0x0A)?;
    if element.vr() == dicom_core::VR::US {
        return element.to_int::<i64>().ok();
    }
    let bytes = element.to_bytes().ok()?;
    (bytes.len() == 2).then(|| u16::from_le_bytes([bytes[0], bytes[1]]) as i64)
}

/// Un-tiles a Siemens MOSAIC object: the layout and one frame per tile, each placed in space.
///
/// - Slice count: CSA image header `NumberOfImagesInMosaic`, else the Siemens MR header's
///   `(0019,xx0A)`; tiles are laid out row-major in `ceil(sqrt(n))` columns and rows.
/// - Position: ImagePositionPatient of a mosaic is that of the whole stored frame as if it were
///   one slice; the first tile's centre coincides with the frame's, so the first tile's first
///   pixel is shifted by `(stored - stored / across) / 2` pixels along rows and columns (real
///   division, as nibabel's `MosaicWrapper.image_position` and dcm2niix).
/// - Slice direction: the cross product of the ImageOrientationPatient directions, with the
///   sign of the CSA `SliceNormalVector` (Siemens stores slices in acquisition order, which may
///   run against the cross product); tile `k` lies `k` slice spacings (SpacingBetweenSlices,
///   else SliceThickness) from the first along it. Without a SliceNormalVector the cross
///   product is taken as is.
fn mosaic_frames(
    object: &InMemDicomObject,
    file: &Path,
    full_rows: usize,
    full_columns: usize,
    step: Option<f64>,
    template: &Frame,
) -> Result<(MosaicLayout, Vec<Frame>), DicomError> {
    let invalid =
        |field: &'static str, rule: String| DicomError::InvalidField { file: file.to_owned(), field, rule };
    let missing = |field, purpose| DicomError::MissingField { file: file.to_owned(), field, purpose };
    let csa = csa_image_header(object);
    let count = csa
        .as_ref()
        .and_then(|h| h.int("NumberOfImagesInMosaic"))
        .or_else(|| siemens_mosaic_count(object))
        .ok_or(missing("NumberOfImagesInMosaic", "un-tile a Siemens MOSAIC image (CSA image header)"))?;
    if !(1..=4096).contains(&count) {
        return Err(invalid("NumberOfImagesInMosaic", format!("must be 1..=4096, found {count}")));
    }
    let count = count as usize;
    let across = (1..=count).find(|a| a * a >= count).unwrap_or(count);
    let layout = MosaicLayout { across, full_rows, full_columns };
    if layout.tile_rows() == 0 || layout.tile_columns() == 0 {
        return Err(invalid(
            "Rows/Columns",
            format!("a {full_rows}×{full_columns} frame cannot hold {across}×{across} MOSAIC tiles"),
        ));
    }
    let purpose = "place the slices of a Siemens MOSAIC image";
    let position = template.position.ok_or(missing("ImagePositionPatient", purpose))?;
    let orientation = template.orientation.ok_or(missing("ImageOrientationPatient", purpose))?;
    let spacing = template.pixel_spacing.ok_or(missing("PixelSpacing", purpose))?;
    let row = [orientation[0], orientation[1], orientation[2]];
    let column = [orientation[3], orientation[4], orientation[5]];
    let cross_product = cross(row, column);
    let length = cross_product.iter().map(|v| v * v).sum::<f64>().sqrt();
    if length.is_nan() || length <= 0.5 {
        return Err(invalid(
            "ImageOrientationPatient",
            format!("row and column directions must be orthogonal unit vectors, found {orientation:?}"),
        ));
    }
    let mut normal = cross_product.map(|v| v / length);
    if let Some(stored) = csa.as_ref().and_then(|h| h.floats::<3>("SliceNormalVector")) {
        let stored_length = stored.iter().map(|v| v * v).sum::<f64>().sqrt();
        let cosine = stored.iter().zip(&normal).map(|(a, b)| a * b).sum::<f64>() / stored_length.max(1e-12);
        if cosine.is_nan() || cosine.abs() <= 0.99 {
            return Err(invalid(
                "SliceNormalVector",
                format!(
                    "the CSA slice normal {stored:?} is not parallel to the normal {normal:?} of \
                     ImageOrientationPatient: the slice direction is ambiguous"
                ),
            ));
        }
        if cosine < 0.0 {
            normal = normal.map(|v| -v);
        }
    }
    let step = match (count, step) {
        (1, step) => step.unwrap_or(1.0),
        (_, Some(step)) if step > 0.0 && step < 1e4 => step,
        (_, Some(step)) => {
            return Err(invalid("SpacingBetweenSlices", format!("must be positive, found {step}")));
        }
        (_, None) => return Err(missing("SpacingBetweenSlices", purpose)),
    };
    // Shift from the stored frame's first pixel to the first tile's (real division, see above).
    let shift_columns = (full_columns as f64 - full_columns as f64 / across as f64) / 2.0;
    let shift_rows = (full_rows as f64 - full_rows as f64 / across as f64) / 2.0;
    let first: [f64; 3] = std::array::from_fn(|a| {
        position[a] + row[a] * spacing[1] * shift_columns + column[a] * spacing[0] * shift_rows
    });
    let frames = (0..count)
        .map(|tile| Frame {
            position: Some(std::array::from_fn(|a| first[a] + normal[a] * step * tile as f64)),
            instance_number: template.instance_number.map(|n| n * 100_000 + tile as i64),
            tile: Some(tile as u32),
            ..template.clone()
        })
        .collect();
    Ok((layout, frames))
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
        deidentification_method: None,
        series_class: None,
        series_class_rule: None,
        series_class_reason: None,
        transfer_syntax_uid: (!syntax.is_empty()).then(|| syntax.to_owned()),
        conversion_software: Some("pedinorm".into()),
        conversion_software_version: Some(env!("CARGO_PKG_VERSION").into()),
    }
}
