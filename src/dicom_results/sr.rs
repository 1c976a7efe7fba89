//! The measurements as a structured report: a Comprehensive 3D SR following TID 1500
//! (Measurement Report). Each significant cluster is a TID 1411 volumetric measurement group
//! that references its segment of the segmentation and the source series, with its volume
//! (ml) and peak z; each atlas region of the report and each regional volume (with its centile
//! and z when the database has growth models) is a TID 1501 measurement group.
//!
//! Codes are DCM, SCT, LOINC and UCUM where a standard concept exists; the z-scores and
//! centiles have none, so they are coded in the private scheme `99PEDINORM`, declared in
//! CodingSchemeIdentificationSequence.

use super::source::SourceSeries;
use super::{ResultsError, Significant};
use crate::formats::dicom_common::{
    Code, DateTime, encode_part10, put_code, put_equipment, put_sequence, put_series, put_sop_common,
    put_text, put_u16,
};
use crate::formats::dicom_write::decimal_string;
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use serde_json::Value;

/// SeriesNumber of the structured report.
pub const SERIES_NUMBER: u32 = 9920;
/// The private coding scheme of the concepts DICOM does not code.
pub const PRIVATE_SCHEME: &str = "99PEDINORM";

const REPORT: Code = Code::new("126000", "DCM", "Imaging Measurement Report");
const LANGUAGE: Code = Code::new("121049", "DCM", "Language of Content Item and Descendants");
const ENGLISH: Code = Code::new("en", "RFC5646", "English");
const OBSERVER_TYPE: Code = Code::new("121005", "DCM", "Observer Type");
const DEVICE: Code = Code::new("121007", "DCM", "Device");
const DEVICE_UID: Code = Code::new("121012", "DCM", "Device Observer UID");
const DEVICE_NAME: Code = Code::new("121013", "DCM", "Device Observer Name");
const PROCEDURE: Code = Code::new("121058", "DCM", "Procedure reported");
const MR_BRAIN: Code = Code::new("24590-2", "LN", "MR Brain");
const IMAGE_LIBRARY: Code = Code::new("111028", "DCM", "Image Library");
const MEASUREMENTS: Code = Code::new("126010", "DCM", "Imaging Measurements");
const GROUP: Code = Code::new("125007", "DCM", "Measurement Group");
const TRACKING_ID: Code = Code::new("112039", "DCM", "Tracking Identifier");
const TRACKING_UID: Code = Code::new("112040", "DCM", "Tracking Unique Identifier");
const FINDING: Code = Code::new("121071", "DCM", "Finding");
const LESION: Code = super::seg::PROPERTY_TYPE;
const SEGMENT: Code = Code::new("121191", "DCM", "Referenced Segment");
const SOURCE_SERIES: Code = Code::new("121232", "DCM", "Source series for segmentation");
const VOLUME: Code = Code::new("118565006", "SCT", "Volume");
const ML: Code = Code::new("ml", "UCUM", "milliliter");
const NO_UNITS: Code = Code::new("1", "UCUM", "no units");
const PERCENT: Code = Code::new("%", "UCUM", "percent");
const PEAK_Z: Code = Code::new("PEAKZ", PRIVATE_SCHEME, "Peak z-score against the normative model");
const MEAN_INTENSITY_Z: Code = Code::new("MEANZI", PRIVATE_SCHEME, "Mean intensity z-score");
const MEAN_LOGJAC_Z: Code = Code::new("MEANZJ", PRIVATE_SCHEME, "Mean log-Jacobian z-score");
const CENTILE: Code = Code::new("CENTILE", PRIVATE_SCHEME, "Centile against the normative growth model");
const VOLUME_Z: Code = Code::new("VOLZ", PRIVATE_SCHEME, "z-score against the normative growth model");

/// A content item: relationship (none for the root), value type and concept name.
fn item(relationship: &str, value_type: &str, concept: Code) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    if !relationship.is_empty() {
        put_text(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    }
    put_text(&mut item, tags::VALUE_TYPE, VR::CS, value_type);
    put_code(&mut item, tags::CONCEPT_NAME_CODE_SEQUENCE, concept);
    item
}

fn template(object: &mut InMemDicomObject, identifier: &str) {
    let mut reference = InMemDicomObject::new_empty();
    put_text(&mut reference, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_text(&mut reference, tags::TEMPLATE_IDENTIFIER, VR::CS, identifier);
    put_sequence(object, tags::CONTENT_TEMPLATE_SEQUENCE, vec![reference]);
}

fn container(
    relationship: &str,
    concept: Code,
    template_id: Option<&str>,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let mut item = item(relationship, "CONTAINER", concept);
    put_text(&mut item, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    if let Some(identifier) = template_id {
        template(&mut item, identifier);
    }
    if !children.is_empty() {
        put_sequence(&mut item, tags::CONTENT_SEQUENCE, children);
    }
    item
}

fn code(relationship: &str, concept: Code, value: Code) -> InMemDicomObject {
    let mut item = item(relationship, "CODE", concept);
    put_code(&mut item, tags::CONCEPT_CODE_SEQUENCE, value);
    item
}

fn text(relationship: &str, concept: Code, value: &str) -> InMemDicomObject {
    let mut item = item(relationship, "TEXT", concept);
    put_text(&mut item, tags::TEXT_VALUE, VR::UT, value);
    item
}

fn uidref(relationship: &str, concept: Code, value: &str) -> InMemDicomObject {
    let mut item = item(relationship, "UIDREF", concept);
    put_text(&mut item, tags::UID, VR::UI, value);
    item
}

fn num(concept: Code, value: f64, unit: Code) -> InMemDicomObject {
    let mut item = item("CONTAINS", "NUM", concept);
    let mut measured = InMemDicomObject::new_empty();
    put_text(&mut measured, tags::NUMERIC_VALUE, VR::DS, decimal_string(value));
    put_code(&mut measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit);
    put_sequence(&mut item, tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
    item
}

fn reference(class: &str, instance: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_text(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
    put_text(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance);
    item
}

/// The segmentation the report's clusters refer to.
#[derive(Debug, Clone)]
pub struct SegReference {
    /// SeriesInstanceUID of the segmentation.
    pub series: String,
    /// SOPInstanceUID of the segmentation.
    pub instance: String,
}

/// The UIDs a report gets.
#[derive(Debug, Clone)]
pub struct SrUids {
    /// SeriesInstanceUID.
    pub series: String,
    /// SOPInstanceUID.
    pub instance: String,
    /// Device Observer UID.
    pub device: String,
    /// Tracking UIDs are this root with `.N` appended per measurement group.
    pub tracking_root: String,
}

fn cluster_group(
    cluster: &Significant,
    number: u16,
    seg: &SegReference,
    source: &SourceSeries,
    tracking_uid: String,
) -> InMemDicomObject {
    let mut segment = item("CONTAINS", "IMAGE", SEGMENT);
    let mut referenced = reference(uids::SEGMENTATION_STORAGE, &seg.instance);
    put_u16(&mut referenced, tags::REFERENCED_SEGMENT_NUMBER, number);
    put_sequence(&mut segment, tags::REFERENCED_SOP_SEQUENCE, vec![referenced]);
    let children = vec![
        text("CONTAINS", TRACKING_ID, &cluster.label),
        uidref("CONTAINS", TRACKING_UID, &tracking_uid),
        code("CONTAINS", FINDING, LESION),
        segment,
        uidref("CONTAINS", SOURCE_SERIES, &source.series_uid),
        num(VOLUME, cluster.volume_ml, ML),
        num(PEAK_Z, f64::from(cluster.peak_z), NO_UNITS),
    ];
    container("CONTAINS", GROUP, Some("1411"), children)
}

fn simple_group(name: &str, tracking_uid: String, values: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut children = vec![
        text("CONTAINS", TRACKING_ID, &name.chars().take(64).collect::<String>()),
        uidref("CONTAINS", TRACKING_UID, &tracking_uid),
    ];
    children.extend(values);
    container("CONTAINS", GROUP, Some("1501"), children)
}

/// The measurement groups of the report's atlas regions (mean z per channel) and regional
/// volumes (with centile and z when placed on growth models).
fn regional_groups(report: &Value, next_uid: &mut impl FnMut() -> String) -> Vec<InMemDicomObject> {
    let mut groups = Vec::new();
    for region in report["regions"].as_array().into_iter().flatten() {
        let (Some(name), Some(intensity), Some(logjac)) =
            (region["name"].as_str(), region["intensity_mean_z"].as_f64(), region["logjac_mean_z"].as_f64())
        else {
            continue;
        };
        groups.push(simple_group(
            &format!("region {name}"),
            next_uid(),
            vec![num(MEAN_INTENSITY_Z, intensity, NO_UNITS), num(MEAN_LOGJAC_Z, logjac, NO_UNITS)],
        ));
    }
    let regional = &report["regional"];
    let placed: Vec<&Value> = regional["centiles"].as_array().into_iter().flatten().collect();
    if placed.is_empty() {
        let names = regional["volumes"]["names"].as_array().into_iter().flatten();
        let values = regional["volumes"]["values_ml"].as_array().into_iter().flatten();
        for (name, value) in names.zip(values) {
            if let (Some(name), Some(value)) = (name.as_str(), value.as_f64()) {
                groups.push(simple_group(
                    &format!("volume {name}"),
                    next_uid(),
                    vec![num(VOLUME, value, ML)],
                ));
            }
        }
    } else {
        for measure in placed {
            let (Some(name), Some(value)) = (measure["measure"].as_str(), measure["value"].as_f64()) else {
                continue;
            };
            let mut values = vec![num(VOLUME, value, ML)];
            if let Some(centile) = measure["centile"].as_f64() {
                values.push(num(CENTILE, centile, PERCENT));
            }
            if let Some(z) = measure["z"].as_f64() {
                values.push(num(VOLUME_Z, z, NO_UNITS));
            }
            groups.push(simple_group(&format!("volume {name}"), next_uid(), values));
        }
    }
    groups
}

/// The measurement report of `clusters` (numbered as the segmentation's segments) and of the
/// regional values of `report`.
pub fn measurement_report(
    source: &SourceSeries,
    clusters: &[Significant],
    seg: Option<&SegReference>,
    report: &Value,
    uids: &SrUids,
    when: &DateTime,
) -> Result<Vec<u8>, ResultsError> {
    let mut counter = 0u32;
    let mut next_uid = || {
        counter += 1;
        format!("{}.{counter}", uids.tracking_root)
    };
    let mut measurements = Vec::new();
    if let Some(seg) = seg {
        for (index, cluster) in clusters.iter().enumerate() {
            measurements.push(cluster_group(cluster, index as u16 + 1, seg, source, next_uid()));
        }
    }
    measurements.extend(regional_groups(report, &mut next_uid));
    let content = vec![
        code("HAS CONCEPT MOD", LANGUAGE, ENGLISH),
        code("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        uidref("HAS OBS CONTEXT", DEVICE_UID, &uids.device),
        text("HAS OBS CONTEXT", DEVICE_NAME, "pedinorm"),
        code("HAS CONCEPT MOD", PROCEDURE, MR_BRAIN),
        container("CONTAINS", IMAGE_LIBRARY, None, Vec::new()),
        container("CONTAINS", MEASUREMENTS, None, measurements),
    ];

    let mut object = InMemDicomObject::new_empty();
    put_sop_common(&mut object, uids::COMPREHENSIVE3_DSR_STORAGE, &uids.instance, when);
    let mut scheme = InMemDicomObject::new_empty();
    put_text(&mut scheme, tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME);
    put_text(&mut scheme, tags::CODING_SCHEME_NAME, VR::ST, "pedinorm normative deviation measures");
    put_text(&mut scheme, tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION, VR::ST, "pedinorm");
    put_sequence(&mut object, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![scheme]);
    source.study.put_into(&mut object);
    put_series(&mut object, "SR", &uids.series, SERIES_NUMBER, "pedinorm measurement report (SR)");
    put_equipment(&mut object);
    put_sequence(&mut object, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, Vec::new());
    put_text(&mut object, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_text(&mut object, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put_text(&mut object, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    put_sequence(&mut object, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
    // Every instance the content references, by study and series.
    let mut series = vec![super::seg::referenced_series(source)];
    if let Some(seg) = seg {
        let mut seg_series = InMemDicomObject::new_empty();
        put_text(&mut seg_series, tags::SERIES_INSTANCE_UID, VR::UI, seg.series.as_str());
        put_sequence(
            &mut seg_series,
            tags::REFERENCED_SOP_SEQUENCE,
            vec![reference(uids::SEGMENTATION_STORAGE, &seg.instance)],
        );
        series.push(seg_series);
    }
    for entry in &mut series {
        // The Common Instance Reference module names instances ReferencedInstanceSequence; the
        // evidence sequence names them ReferencedSOPSequence.
        if let Ok(instances) = entry.take_element(tags::REFERENCED_INSTANCE_SEQUENCE) {
            entry.put(dicom_core::DataElement::new(
                tags::REFERENCED_SOP_SEQUENCE,
                VR::SQ,
                instances.into_value(),
            ));
        }
    }
    let mut study = InMemDicomObject::new_empty();
    put_text(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, source.study.study_uid.as_str());
    put_sequence(&mut study, tags::REFERENCED_SERIES_SEQUENCE, series);
    put_sequence(&mut object, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, vec![study]);
    let root = container("", REPORT, Some("1500"), content);
    for element in root.into_iter() {
        object.put(element);
    }
    Ok(encode_part10(object, uids::COMPREHENSIVE3_DSR_STORAGE, "structured report")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::dicom_write::UidSource;
    use ndarray::Array3;
    use pedinorm_registration::{Grid, Image};

    fn items(object: &InMemDicomObject, tag: dicom_core::Tag) -> &[InMemDicomObject] {
        object.element(tag).unwrap().items().unwrap()
    }

    fn concept(item: &InMemDicomObject) -> String {
        let code = &items(item, tags::CONCEPT_NAME_CODE_SEQUENCE)[0];
        code.element(tags::CODE_VALUE).unwrap().to_str().unwrap().trim_end().to_string()
    }

    #[test]
    fn clusters_and_regions_become_measurement_groups() {
        let grid = Grid::axis_aligned([4, 4, 2], [2.0; 3], [0.0; 3]).unwrap();
        let image = Image::new(Array3::from_elem((4, 4, 2), 1.0f32), grid).unwrap();
        let when = DateTime { date: "20260101".into(), time: "120000".into() };
        let source = SourceSeries::new_study(&image, "P1", UidSource::Seeded(9), &when).unwrap();
        let cluster = Significant {
            label: "intensity z>0 cluster 1".into(),
            channel: "intensity".into(),
            positive: true,
            peak_z: 7.5,
            volume_ml: 0.016,
            template_volume_ml: 0.02,
            region: None,
            peak_native_mm: [0.0; 3],
            mask: Array3::from_elem((4, 4, 2), false),
        };
        let report = serde_json::json!({
            "regions": [{ "name": "hippocampus", "intensity_mean_z": 1.5, "logjac_mean_z": -2.0 }],
            "regional": { "centiles": [{ "measure": "total_brain", "value": 1200.0, "centile": 3.0, "z": -1.9 }] },
        });
        let seg = SegReference { series: "1.2.1".into(), instance: "1.2.2".into() };
        let uids = SrUids {
            series: "1.2.3".into(),
            instance: "1.2.4".into(),
            device: "1.2.5".into(),
            tracking_root: "1.2.6".into(),
        };
        let bytes = measurement_report(&source, &[cluster], Some(&seg), &report, &uids, &when).unwrap();
        let object = dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(std::io::Cursor::new(bytes))
            .unwrap();
        assert_eq!(concept(&object), "126000");
        let template = &items(&object, tags::CONTENT_TEMPLATE_SEQUENCE)[0];
        assert_eq!(template.element(tags::TEMPLATE_IDENTIFIER).unwrap().to_str().unwrap().trim_end(), "1500");
        let content = items(&object, tags::CONTENT_SEQUENCE);
        let measurements = content.iter().find(|i| concept(i) == "126010").unwrap();
        let groups = items(measurements, tags::CONTENT_SEQUENCE);
        // One cluster group, one region group, one regional-volume group.
        assert_eq!(groups.len(), 3);
        let cluster_items = items(&groups[0], tags::CONTENT_SEQUENCE);
        let segment = cluster_items.iter().find(|i| concept(i) == "121191").unwrap();
        let referenced = &items(segment, tags::REFERENCED_SOP_SEQUENCE)[0];
        assert_eq!(referenced.element(tags::REFERENCED_SEGMENT_NUMBER).unwrap().to_int::<u16>().unwrap(), 1);
        let volume = cluster_items.iter().find(|i| concept(i) == "118565006").unwrap();
        let measured = &items(volume, tags::MEASURED_VALUE_SEQUENCE)[0];
        assert_eq!(measured.element(tags::NUMERIC_VALUE).unwrap().to_str().unwrap().trim(), "0.016");
        let unit = &items(measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)[0];
        assert_eq!(unit.element(tags::CODE_VALUE).unwrap().to_str().unwrap().trim(), "ml");
        let regional = items(&groups[2], tags::CONTENT_SEQUENCE);
        assert!(regional.iter().any(|i| concept(i) == "CENTILE"));
        // Without a segmentation only the regional groups remain.
        let bytes = measurement_report(&source, &[], None, &report, &uids, &when).unwrap();
        assert!(!bytes.is_empty());
    }
}
