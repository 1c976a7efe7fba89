//! Siemens MOSAIC un-tiling and the SeriesInstanceUID fallback, on synthetic objects written
//! in memory with known geometry.

use super::csa::encode_csa2;
use super::{DicomError, load_series_from_memory};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::PathBuf;

fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn us(tag: Tag, value: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(value))
}

/// Geometry of a synthetic mosaic: `count` tiles of `tile_rows × tile_columns`.
struct Spec {
    count: usize,
    tile_rows: usize,
    tile_columns: usize,
    /// Stored rows and columns beyond the tiles (a frame size not divisible by the tiles across).
    extra: usize,
    /// Row direction, then column direction (LPS).
    orientation: [f64; 6],
    /// ImagePositionPatient of the stored frame (LPS).
    position: [f64; 3],
    /// Between rows, between columns.
    spacing: [f64; 2],
    step: f64,
    /// Whether the CSA SliceNormalVector points against row × column.
    reversed: bool,
    csa: bool,
    /// A CSA SliceNormalVector other than ±(row × column).
    stored_normal: Option<[f64; 3]>,
    instance: i64,
    series_uid: Option<&'static str>,
}

impl Default for Spec {
    fn default() -> Self {
        // An oblique orientation: rows along (cos 20°, sin 20°, 0), columns tilted 15° out of plane.
        let (a, b) = (20f64.to_radians(), 15f64.to_radians());
        Spec {
            count: 5,
            tile_rows: 4,
            tile_columns: 6,
            extra: 0,
            orientation: [a.cos(), a.sin(), 0.0, -a.sin() * b.cos(), a.cos() * b.cos(), b.sin()],
            position: [-40.5, -60.25, 12.0],
            spacing: [2.5, 2.0],
            step: 3.0,
            reversed: false,
            csa: true,
            stored_normal: None,
            instance: 1,
            series_uid: Some("1.2.826.0.1.3680043.2.1125.77.1"),
        }
    }
}

fn across(count: usize) -> usize {
    (1..=count).find(|a| a * a >= count).unwrap()
}

fn normal(spec: &Spec) -> [f64; 3] {
    let o = spec.orientation;
    let n = super::frames::cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    if spec.reversed { n.map(|v| -v) } else { n }
}

/// The stored value of pixel (`row`, `column`) of tile `tile` in object `instance`.
fn value(instance: i64, tile: usize, row: usize, column: usize) -> u16 {
    (instance as usize * 1000 + tile * 100 + row * 10 + column) as u16
}

fn mosaic(spec: &Spec) -> Vec<u8> {
    let n = across(spec.count);
    let (rows, columns) = (spec.tile_rows * n + spec.extra, spec.tile_columns * n + spec.extra);
    let mut pixels = vec![0u16; rows * columns];
    for tile in 0..spec.count {
        for row in 0..spec.tile_rows {
            for column in 0..spec.tile_columns {
                // Bands of tiles every floor(rows × columns / n) pixels (dcm2niix's addressing;
                // a regular grid when there are no extra rows).
                let at = (tile / n) * (rows * columns / n)
                    + row * columns
                    + (tile % n) * spec.tile_columns
                    + column;
                pixels[at] = value(spec.instance, tile, row, column);
            }
        }
    }
    let join = |values: &[f64]| values.iter().map(|v| format!("{v:.10}")).collect::<Vec<_>>().join("\\");
    let sop = format!("1.2.826.0.1.3680043.2.1125.77.2.{}", spec.instance);
    let mut object = InMemDicomObject::from_element_iter([
        text(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
        text(tags::SOP_INSTANCE_UID, VR::UI, &sop),
        text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\M\\ND\\MOSAIC"),
        text(tags::MODALITY, VR::CS, "MR"),
        text(tags::MANUFACTURER, VR::LO, "SIEMENS"),
        text(tags::SERIES_DESCRIPTION, VR::LO, "ep2d_bold"),
        text(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.826.0.1.3680043.2.1125.77.3"),
        text(tags::SERIES_NUMBER, VR::IS, "4"),
        text(tags::INSTANCE_NUMBER, VR::IS, &spec.instance.to_string()),
        text(tags::IMAGE_POSITION_PATIENT, VR::DS, &join(&spec.position)),
        text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &join(&spec.orientation)),
        text(tags::PIXEL_SPACING, VR::DS, &join(&spec.spacing)),
        text(tags::SLICE_THICKNESS, VR::DS, "2.5"),
        text(tags::SPACING_BETWEEN_SLICES, VR::DS, &spec.step.to_string()),
        us(tags::SAMPLES_PER_PIXEL, 1),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, rows as u16),
        us(tags::COLUMNS, columns as u16),
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 16),
        us(tags::HIGH_BIT, 15),
        us(tags::PIXEL_REPRESENTATION, 0),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    if let Some(uid) = spec.series_uid {
        object.put(text(tags::SERIES_INSTANCE_UID, VR::UI, uid));
    }
    if spec.csa {
        let count = spec.count.to_string();
        let normal = spec.stored_normal.unwrap_or_else(|| normal(spec)).map(|v| format!("{v:.8}"));
        let normal: Vec<&str> = normal.iter().map(String::as_str).collect();
        let csa = encode_csa2(&[
            ("EchoLinePosition", "IS", &["32"]),
            ("NumberOfImagesInMosaic", "US", &[count.as_str()]),
            ("SliceNormalVector", "FD", &normal),
        ]);
        // Private block 0x11 (not the usual 0x10): the creator must be looked up.
        object.put(text(Tag(0x0029, 0x0010), VR::LO, "OTHER VENDOR"));
        object.put(text(Tag(0x0029, 0x1010), VR::LO, "not a CSA header"));
        object.put(text(Tag(0x0029, 0x0011), VR::LO, "SIEMENS CSA HEADER"));
        object.put(DataElement::new(Tag(0x0029, 0x1110), VR::OB, PrimitiveValue::U8(csa.into())));
    }
    let file = object
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::MR_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(sop),
        )
        .unwrap();
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).unwrap();
    bytes
}

/// LPS position of pixel (`row`, `column`) of tile `tile`, from the definition of the format:
/// the first tile's centre is the stored frame's centre, tiles step along the CSA normal. When
/// the frame is not a whole number of tiles, the shift uses the real quotient (nibabel, dcm2niix).
fn expected_lps(spec: &Spec, tile: usize, row: usize, column: usize) -> [f64; 3] {
    let n = across(spec.count) as f64;
    let o = spec.orientation;
    let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    let full_rows = (spec.tile_rows as f64 * n) + spec.extra as f64;
    let full_columns = (spec.tile_columns as f64 * n) + spec.extra as f64;
    let shift_columns = (full_columns - full_columns / n) / 2.0;
    let shift_rows = (full_rows - full_rows / n) / 2.0;
    let normal = normal(spec);
    std::array::from_fn(|a| {
        spec.position[a]
            + r[a] * spec.spacing[1] * (shift_columns + column as f64)
            + c[a] * spec.spacing[0] * (shift_rows + row as f64)
            + normal[a] * spec.step * tile as f64
    })
}

fn check_volume(spec: &Spec, image: &pedinorm_registration::Image<f32>) {
    assert_eq!(image.grid().dims(), [spec.tile_columns, spec.tile_rows, spec.count]);
    let spacing = image.grid().spacing();
    for (got, want) in spacing.iter().zip([spec.spacing[1], spec.spacing[0], spec.step]) {
        assert!((got - want).abs() < 1e-9, "spacing {spacing:?}");
    }
    for tile in 0..spec.count {
        for row in 0..spec.tile_rows {
            for column in 0..spec.tile_columns {
                let lps = expected_lps(spec, tile, row, column);
                let ras = [-lps[0], -lps[1], lps[2]];
                let index = image.grid().world_to_voxel(ras);
                let rounded = index.map(|v| v.round());
                for (v, r) in index.iter().zip(rounded) {
                    assert!((v - r).abs() < 1e-6, "tile {tile} ({row}, {column}) maps to {index:?}");
                }
                let [i, j, k] = rounded.map(|v| v as usize);
                assert_eq!(
                    image.data()[[i, j, k]],
                    value(spec.instance, tile, row, column) as f32,
                    "tile {tile} pixel ({row}, {column}) at voxel {:?}",
                    [i, j, k]
                );
            }
        }
    }
}

fn load(objects: Vec<Vec<u8>>) -> Result<Vec<super::SeriesVolume>, DicomError> {
    load_series_from_memory(
        objects
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| (PathBuf::from(format!("mosaic{i}.dcm")), bytes))
            .collect(),
    )
}

#[test]
fn mosaic_is_untiled_with_its_geometry() {
    let spec = Spec::default();
    let volumes = load(vec![mosaic(&spec)]).unwrap();
    assert_eq!(volumes.len(), 1);
    check_volume(&spec, &volumes[0].image);
    // Slices advance along row × column: tile 0 is the first slice.
    assert_eq!(volumes[0].image.data()[[0, 0, 0]], value(1, 0, 0, 0) as f32);
}

#[test]
fn reversed_slice_normal_reverses_the_slice_order() {
    let spec = Spec { reversed: true, count: 7, ..Spec::default() };
    let volumes = load(vec![mosaic(&spec)]).unwrap();
    check_volume(&spec, &volumes[0].image);
    // The last tile is the first slice along row × column.
    let data = volumes[0].image.data();
    assert_eq!(data[[0, 0, 0]], value(1, 6, 0, 0) as f32);
}

#[test]
fn tile_size_not_dividing_the_frame_is_cut_like_dcm2niix() {
    // 10 tiles of 3×5 in a 15×23 frame (4 tiles across): not a whole number of tiles.
    let spec = Spec { count: 10, tile_rows: 3, tile_columns: 5, extra: 3, ..Spec::default() };
    let bytes = mosaic(&spec);
    let volumes = load(vec![bytes]).unwrap();
    check_volume(&spec, &volumes[0].image);
}

#[test]
fn each_mosaic_file_of_a_series_is_one_volume() {
    let first = Spec::default();
    let second = Spec { instance: 2, ..Spec::default() };
    let volumes = load(vec![mosaic(&second), mosaic(&first)]).unwrap();
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[0].split_suffix, "_1");
    check_volume(&first, &volumes[0].image);
    check_volume(&second, &volumes[1].image);
    assert_eq!(volumes[1].files, vec![PathBuf::from("mosaic0.dcm")]);
}

#[test]
fn mosaic_without_csa_header_or_with_a_crossed_normal_is_refused() {
    let error = load(vec![mosaic(&Spec { csa: false, ..Spec::default() })]).unwrap_err();
    assert!(error.to_string().contains("NumberOfImagesInMosaic"), "{error}");
    assert!(error.to_string().contains("mosaic0.dcm"), "{error}");

    // A CSA normal along the row direction contradicts ImageOrientationPatient.
    let spec = Spec::default();
    let row = [spec.orientation[0], spec.orientation[1], spec.orientation[2]];
    let error = load(vec![mosaic(&Spec { stored_normal: Some(row), ..spec })]).unwrap_err();
    assert!(error.to_string().contains("SliceNormalVector"), "{error}");
}

#[test]
fn missing_series_uid_falls_back_to_a_documented_key() {
    let spec = Spec { series_uid: None, ..Spec::default() };
    let volumes = load(vec![mosaic(&spec)]).unwrap();
    check_volume(&spec, &volumes[0].image);
    assert!(volumes[0].series_instance_uid.starts_with("no-series-uid|"));

    // Without SeriesNumber, SeriesDescription and ProtocolName nothing tells series apart.
    let bytes = mosaic(&spec);
    let mut object = dicom_object::OpenFileOptions::new().from_reader(&bytes[..]).unwrap();
    object.remove_element(tags::SERIES_NUMBER);
    object.remove_element(tags::SERIES_DESCRIPTION);
    let mut stripped = Vec::new();
    object.write_all(&mut stripped).unwrap();
    let error = load(vec![stripped]).unwrap_err();
    assert!(matches!(error, DicomError::MissingField { field: "SeriesInstanceUID", .. }), "{error}");
    assert!(error.to_string().contains("mosaic0.dcm"), "{error}");
}
