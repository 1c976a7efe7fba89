//! The significant clusters as a DICOM Segmentation (SEG IOD, BINARY): one segment per
//! cluster, labelled with its channel and sign, on the source series' own slices. A frame is
//! one segment on one source slice (empty frames are left out, as highdicom does); each frame
//! carries its plane position and references the source slice it was derived from, and the
//! plane orientation and pixel measures are shared.

use super::source::SourceSeries;
use super::{ResultsError, Significant, lps_orientation, slice_position};
use crate::formats::dicom_common::{
    Code, DateTime, encode_part10, put_code, put_equipment, put_sequence, put_series, put_sop_common,
    put_text, put_texts, put_u16,
};
use crate::formats::dicom_write::decimal_string;
use dicom_core::smallvec::SmallVec;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

/// SeriesNumber of the segmentation.
pub const SERIES_NUMBER: u32 = 9910;

/// SCT "Morphologically abnormal structure": the category of every segment.
pub const CATEGORY: Code = Code::new("49755003", "SCT", "Morphologically abnormal structure");
/// SCT "Lesion": the property type of every segment (a region that deviates from the normals).
pub const PROPERTY_TYPE: Code = Code::new("52988006", "SCT", "Lesion");
/// SCT "Brain": where every segment lies.
pub const ANATOMIC_REGION: Code = Code::new("12738006", "SCT", "Brain");
/// DCM "Segmentation": how each frame was derived from its source slice.
const DERIVATION: Code = Code::new("113076", "DCM", "Segmentation");
/// DCM "Source image for image processing operation".
const SOURCE_PURPOSE: Code = Code::new("121322", "DCM", "Source image for image processing operation");

/// One frame: a segment on a source slice.
struct Frame {
    segment: u16,
    slice: usize,
}

/// A CIELab colour as DICOM stores it (L* 0..100, a* and b* −128..127, scaled to 0..65535).
fn cielab(l: f64, a: f64, b: f64) -> [u16; 3] {
    let scale = |value: f64, low: f64, high: f64| ((value - low) / (high - low) * 65535.0).round() as u16;
    [scale(l, 0.0, 100.0), scale(a, -128.0, 127.0), scale(b, -128.0, 127.0)]
}

fn referenced_image(source: &SourceSeries, slice: usize) -> InMemDicomObject {
    let reference = &source.slices[slice];
    let mut item = InMemDicomObject::new_empty();
    put_text(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, reference.sop_class_uid.as_str());
    put_text(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, reference.sop_instance_uid.as_str());
    if let Some(frame) = reference.frame_number {
        put_text(&mut item, tags::REFERENCED_FRAME_NUMBER, VR::IS, frame.to_string());
    }
    item
}

/// The Referenced Series Sequence of the Common Instance Reference module: every SOP instance
/// of the source series, once.
pub(super) fn referenced_series(source: &SourceSeries) -> InMemDicomObject {
    let mut seen = std::collections::BTreeSet::new();
    let instances = source
        .slices
        .iter()
        .filter(|s| seen.insert(s.sop_instance_uid.clone()))
        .map(|s| {
            let mut item = InMemDicomObject::new_empty();
            put_text(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, s.sop_class_uid.as_str());
            put_text(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, s.sop_instance_uid.as_str());
            item
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    put_text(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, source.series_uid.as_str());
    put_sequence(&mut series, tags::REFERENCED_INSTANCE_SEQUENCE, instances);
    series
}

fn segment_item(number: u16, cluster: &Significant) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_u16(&mut item, tags::SEGMENT_NUMBER, number);
    put_text(&mut item, tags::SEGMENT_LABEL, VR::LO, cluster.label.as_str());
    put_text(&mut item, tags::SEGMENT_DESCRIPTION, VR::ST, cluster.description());
    put_text(&mut item, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
    put_text(&mut item, tags::SEGMENT_ALGORITHM_NAME, VR::LO, "pedinorm calibrated deviation clusters");
    put_code(&mut item, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, CATEGORY);
    put_code(&mut item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, PROPERTY_TYPE);
    put_code(&mut item, tags::ANATOMIC_REGION_SEQUENCE, ANATOMIC_REGION);
    // Red above the normals, blue below, as in the montages and the fused series.
    let colour = if cluster.positive { cielab(53.2, 80.1, 67.2) } else { cielab(32.3, 79.2, -107.9) };
    item.put(DataElement::new(
        tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
        VR::US,
        PrimitiveValue::U16(SmallVec::from_slice(&colour)),
    ));
    item
}

fn dimension_index(pointer: Tag, group: Tag, organization: &str, label: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::DIMENSION_INDEX_POINTER,
        VR::AT,
        PrimitiveValue::Tags(SmallVec::from_slice(&[pointer])),
    ));
    item.put(DataElement::new(
        tags::FUNCTIONAL_GROUP_POINTER,
        VR::AT,
        PrimitiveValue::Tags(SmallVec::from_slice(&[group])),
    ));
    put_text(&mut item, tags::DIMENSION_ORGANIZATION_UID, VR::UI, organization);
    put_text(&mut item, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
    item
}

fn per_frame_item(source: &SourceSeries, frame: &Frame) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    let mut derivation = InMemDicomObject::new_empty();
    put_code(&mut derivation, tags::DERIVATION_CODE_SEQUENCE, DERIVATION);
    let mut referenced = referenced_image(source, frame.slice);
    put_code(&mut referenced, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, SOURCE_PURPOSE);
    // The frame is the source slice's own pixel grid: readers may index it by source image.
    put_text(&mut referenced, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
    put_sequence(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![referenced]);
    put_sequence(&mut item, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
    let mut content = InMemDicomObject::new_empty();
    content.put(DataElement::new(
        tags::DIMENSION_INDEX_VALUES,
        VR::UL,
        PrimitiveValue::U32(SmallVec::from_slice(&[u32::from(frame.segment), frame.slice as u32 + 1])),
    ));
    put_sequence(&mut item, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
    let mut position = InMemDicomObject::new_empty();
    put_texts(
        &mut position,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        slice_position(&source.grid, frame.slice).map(decimal_string),
    );
    put_sequence(&mut item, tags::PLANE_POSITION_SEQUENCE, vec![position]);
    let mut segment = InMemDicomObject::new_empty();
    put_u16(&mut segment, tags::REFERENCED_SEGMENT_NUMBER, frame.segment);
    put_sequence(&mut item, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![segment]);
    item
}

fn shared_item(source: &SourceSeries) -> InMemDicomObject {
    let spacing = source.grid.spacing();
    let mut orientation = InMemDicomObject::new_empty();
    put_texts(
        &mut orientation,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        lps_orientation(&source.grid).into_iter().map(decimal_string),
    );
    let mut measures = InMemDicomObject::new_empty();
    // PixelSpacing is (between rows, between columns): rows step along voxel axis j.
    put_texts(
        &mut measures,
        tags::PIXEL_SPACING,
        VR::DS,
        [decimal_string(spacing[1]), decimal_string(spacing[0])],
    );
    put_text(&mut measures, tags::SLICE_THICKNESS, VR::DS, decimal_string(spacing[2]));
    put_text(&mut measures, tags::SPACING_BETWEEN_SLICES, VR::DS, decimal_string(spacing[2]));
    let mut item = InMemDicomObject::new_empty();
    put_sequence(&mut item, tags::PLANE_ORIENTATION_SEQUENCE, vec![orientation]);
    put_sequence(&mut item, tags::PIXEL_MEASURES_SEQUENCE, vec![measures]);
    item
}

/// The UIDs a segmentation gets.
#[derive(Debug, Clone)]
pub struct SegUids {
    /// SeriesInstanceUID.
    pub series: String,
    /// SOPInstanceUID.
    pub instance: String,
    /// DimensionOrganizationUID.
    pub dimension_organization: String,
}

/// The segmentation of `clusters` (each with its mask on the source grid) on `source`'s
/// slices; `None` when there is no cluster (a segmentation needs at least one segment).
pub fn segmentation(
    source: &SourceSeries,
    clusters: &[Significant],
    uids: &SegUids,
    when: &DateTime,
) -> Result<Option<Vec<u8>>, ResultsError> {
    if clusters.is_empty() {
        return Ok(None);
    }
    let dims = source.grid.dims();
    let (Ok(columns), Ok(rows)) = (u16::try_from(dims[0]), u16::try_from(dims[1])) else {
        return Err(ResultsError::TooLarge { dims });
    };
    if clusters.len() > usize::from(u16::MAX) {
        return Err(ResultsError::TooLarge { dims });
    }
    let mut frames = Vec::new();
    for (index, cluster) in clusters.iter().enumerate() {
        for slice in 0..dims[2] {
            if cluster.mask.slice(ndarray::s![.., .., slice]).iter().any(|&v| v) {
                frames.push(Frame { segment: index as u16 + 1, slice });
            }
        }
    }
    let frame_pixels = dims[0] * dims[1];
    // Bits are packed across frames without padding, least significant bit first.
    let mut pixels = vec![0u8; (frames.len() * frame_pixels).div_ceil(8).next_multiple_of(2)];
    for (f, frame) in frames.iter().enumerate() {
        let mask = &clusters[usize::from(frame.segment) - 1].mask;
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                if mask[[i, j, frame.slice]] {
                    let bit = f * frame_pixels + j * dims[0] + i;
                    pixels[bit / 8] |= 1 << (bit % 8);
                }
            }
        }
    }

    let mut object = InMemDicomObject::new_empty();
    put_sop_common(&mut object, uids::SEGMENTATION_STORAGE, &uids.instance, when);
    source.study.put_into(&mut object);
    put_series(&mut object, "SEG", &uids.series, SERIES_NUMBER, "pedinorm significant clusters (SEG)");
    put_equipment(&mut object);
    put_text(&mut object, tags::FRAME_OF_REFERENCE_UID, VR::UI, source.frame_of_reference_uid.as_str());
    put_text(&mut object, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put_texts(&mut object, tags::IMAGE_TYPE, VR::CS, ["DERIVED".into(), "PRIMARY".into()]);
    put_text(&mut object, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_text(&mut object, tags::CONTENT_LABEL, VR::CS, "CLUSTERS");
    put_text(
        &mut object,
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        "significant deviation clusters vs normative database",
    );
    put_text(&mut object, tags::CONTENT_CREATOR_NAME, VR::PN, "");
    put_text(&mut object, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_u16(&mut object, tags::SAMPLES_PER_PIXEL, 1);
    put_text(&mut object, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put_u16(&mut object, tags::ROWS, rows);
    put_u16(&mut object, tags::COLUMNS, columns);
    put_u16(&mut object, tags::BITS_ALLOCATED, 1);
    put_u16(&mut object, tags::BITS_STORED, 1);
    put_u16(&mut object, tags::HIGH_BIT, 0);
    put_u16(&mut object, tags::PIXEL_REPRESENTATION, 0);
    put_text(&mut object, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_text(&mut object, tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string());
    let mut organization = InMemDicomObject::new_empty();
    put_text(
        &mut organization,
        tags::DIMENSION_ORGANIZATION_UID,
        VR::UI,
        uids.dimension_organization.as_str(),
    );
    put_sequence(&mut object, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![organization]);
    put_text(&mut object, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    put_sequence(
        &mut object,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dimension_index(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                &uids.dimension_organization,
                "Segment Number",
            ),
            dimension_index(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                &uids.dimension_organization,
                "Image Position Patient",
            ),
        ],
    );
    put_sequence(
        &mut object,
        tags::SEGMENT_SEQUENCE,
        clusters.iter().enumerate().map(|(i, c)| segment_item(i as u16 + 1, c)).collect(),
    );
    put_sequence(&mut object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared_item(source)]);
    put_sequence(
        &mut object,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        frames.iter().map(|f| per_frame_item(source, f)).collect(),
    );
    put_sequence(&mut object, tags::REFERENCED_SERIES_SEQUENCE, vec![referenced_series(source)]);
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(SmallVec::from_vec(pixels))));
    Ok(Some(encode_part10(object, uids::SEGMENTATION_STORAGE, "segmentation")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::dicom_write::UidSource;
    use ndarray::Array3;
    use pedinorm_registration::{Grid, Image};

    fn parse(bytes: &[u8]) -> dicom_object::FileDicomObject<InMemDicomObject> {
        dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(std::io::Cursor::new(bytes))
            .unwrap()
    }

    fn text(object: &InMemDicomObject, tag: Tag) -> String {
        object.element(tag).unwrap().to_str().unwrap().trim_end_matches(['\0', ' ']).to_string()
    }

    fn items(object: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
        object.element(tag).unwrap().items().unwrap()
    }

    fn cluster(label: &str, positive: bool, mask: Array3<bool>) -> Significant {
        Significant {
            label: label.into(),
            channel: "intensity".into(),
            positive,
            peak_z: if positive { 6.0 } else { -5.0 },
            volume_ml: 0.1,
            template_volume_ml: 0.1,
            region: None,
            peak_native_mm: [0.0; 3],
            mask,
        }
    }

    #[test]
    fn one_segment_per_cluster_one_frame_per_slice_it_touches() {
        // An oblique grid, so that positions and orientation are not trivially axis-aligned.
        let mut affine = nalgebra::Matrix4::identity();
        let rotation = nalgebra::Rotation3::from_euler_angles(0.2, -0.1, 0.3);
        affine.fixed_view_mut::<3, 3>(0, 0).copy_from(
            &(rotation.matrix() * nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(1.0, 1.5, 2.0))),
        );
        affine[(0, 3)] = -20.0;
        affine[(1, 3)] = 5.0;
        affine[(2, 3)] = 12.5;
        let grid = Grid::new([5, 4, 3], affine).unwrap();
        let image =
            Image::new(Array3::from_shape_fn((5, 4, 3), |(i, j, k)| (i + j + k) as f32), grid.clone())
                .unwrap();
        let when = DateTime { date: "20260101".into(), time: "120000".into() };
        let source = SourceSeries::new_study(&image, "PSEUDO1", UidSource::Seeded(3), &when).unwrap();
        let mut first = Array3::from_elem((5, 4, 3), false);
        first[[1, 2, 0]] = true;
        first[[4, 3, 2]] = true;
        let mut second = Array3::from_elem((5, 4, 3), false);
        second[[0, 0, 1]] = true;
        let clusters = [
            cluster("intensity z>0 cluster 1", true, first),
            cluster("intensity z<0 cluster 1", false, second),
        ];
        let uids = SegUids {
            series: "1.2.3.1".into(),
            instance: "1.2.3.2".into(),
            dimension_organization: "1.2.3.3".into(),
        };
        let bytes = segmentation(&source, &clusters, &uids, &when).unwrap().unwrap();
        let object = parse(&bytes);
        assert_eq!(text(&object, tags::SOP_CLASS_UID), uids::SEGMENTATION_STORAGE);
        assert_eq!(text(&object, tags::MODALITY), "SEG");
        assert_eq!(text(&object, tags::SEGMENTATION_TYPE), "BINARY");
        assert_eq!(text(&object, tags::STUDY_INSTANCE_UID), source.study.study_uid);
        assert_eq!(text(&object, tags::FRAME_OF_REFERENCE_UID), source.frame_of_reference_uid);
        assert_eq!(text(&object, tags::NUMBER_OF_FRAMES), "3");
        let segments = items(&object, tags::SEGMENT_SEQUENCE);
        assert_eq!(segments.len(), 2);
        for (n, segment) in segments.iter().enumerate() {
            assert_eq!(text(segment, tags::SEGMENT_NUMBER), (n + 1).to_string());
            let category = &items(segment, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE)[0];
            assert_eq!(text(category, tags::CODE_VALUE), "49755003");
        }
        assert_eq!(text(&segments[1], tags::SEGMENT_LABEL), "intensity z<0 cluster 1");
        // Frames: segment 1 on slices 0 and 2, segment 2 on slice 1, each at its slice's
        // position and referencing that slice's object.
        let frames = items(&object, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
        let expected = [(1, 0), (1, 2), (2, 1)];
        assert_eq!(frames.len(), expected.len());
        for (frame, (segment, slice)) in frames.iter().zip(expected) {
            let identification = &items(frame, tags::SEGMENT_IDENTIFICATION_SEQUENCE)[0];
            assert_eq!(text(identification, tags::REFERENCED_SEGMENT_NUMBER), segment.to_string());
            let position = &items(frame, tags::PLANE_POSITION_SEQUENCE)[0];
            let values = position.element(tags::IMAGE_POSITION_PATIENT).unwrap().to_multi_float64().unwrap();
            let want = super::super::slice_position(&grid, slice);
            for (a, b) in values.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{values:?} vs {want:?}");
            }
            let derivation = &items(frame, tags::DERIVATION_IMAGE_SEQUENCE)[0];
            let referenced = &items(derivation, tags::SOURCE_IMAGE_SEQUENCE)[0];
            assert_eq!(
                text(referenced, tags::REFERENCED_SOP_INSTANCE_UID),
                source.slices[slice].sop_instance_uid
            );
        }
        let shared = &items(&object, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)[0];
        let orientation = &items(shared, tags::PLANE_ORIENTATION_SEQUENCE)[0];
        let values =
            orientation.element(tags::IMAGE_ORIENTATION_PATIENT).unwrap().to_multi_float64().unwrap();
        for (a, b) in values.iter().zip(super::super::lps_orientation(&grid)) {
            assert!((a - b).abs() < 1e-5);
        }
        // Pixel bits: frame 0 has (i 1, j 2), frame 1 (i 4, j 3), frame 2 (i 0, j 0), LSB first.
        let pixels = object.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        let set: Vec<usize> = (0..pixels.len() * 8).filter(|&b| pixels[b / 8] >> (b % 8) & 1 == 1).collect();
        assert_eq!(set, vec![2 * 5 + 1, 20 + 3 * 5 + 4, 40]);
        let references =
            items(&items(&object, tags::REFERENCED_SERIES_SEQUENCE)[0], tags::REFERENCED_INSTANCE_SEQUENCE);
        assert_eq!(references.len(), 3);
        assert!(segmentation(&source, &[], &uids, &when).unwrap().is_none());
    }
}
