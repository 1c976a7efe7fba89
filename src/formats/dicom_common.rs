//! What every DICOM object pedinorm writes shares: element builders, coded concepts, the
//! patient and study attributes copied from the study an object joins, the SOP Common and
//! equipment attributes, and Part 10 encoding. The series writer (`dicom_write`), the derived
//! series of the service and the result objects (`crate::dicom_results`) all build on it.
//!
//! Patient and study attributes come from the study's own objects or from the PACS's QIDO-RS
//! answer and go straight into objects of that same study: they are held in memory only,
//! never stored elsewhere or logged (the types here do not print them).

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use serde_json::Value;

/// Why an object could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the {what} as DICOM: {message}")]
pub struct EncodeError {
    /// The object (e.g. "segmentation", "slice 3 of the DICOM series").
    pub what: String,
    /// What went wrong.
    pub message: String,
}

/// Puts a text element (any string VR).
pub fn put_text(object: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<String>) {
    object.put(DataElement::new(tag, vr, PrimitiveValue::from(value.into())));
}

/// Puts a multi-valued text element (values joined by `\` in the encoding).
pub fn put_texts(object: &mut InMemDicomObject, tag: Tag, vr: VR, values: impl IntoIterator<Item = String>) {
    object.put(DataElement::new(tag, vr, PrimitiveValue::Strs(values.into_iter().collect())));
}

/// Puts an unsigned short (US).
pub fn put_u16(object: &mut InMemDicomObject, tag: Tag, value: u16) {
    object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// Puts a sequence of items.
pub fn put_sequence(object: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    object.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A coded concept: (CodeValue, CodingSchemeDesignator, CodeMeaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    /// CodeValue.
    pub value: &'static str,
    /// CodingSchemeDesignator (`DCM`, `SCT`, `UCUM`, ...).
    pub scheme: &'static str,
    /// CodeMeaning.
    pub meaning: &'static str,
}

impl Code {
    /// A code.
    pub const fn new(value: &'static str, scheme: &'static str, meaning: &'static str) -> Self {
        Code { value, scheme, meaning }
    }

    /// The code as a sequence item (Basic Code Sequence Macro).
    pub fn item(self) -> InMemDicomObject {
        let mut item = InMemDicomObject::new_empty();
        put_text(&mut item, tags::CODE_VALUE, VR::SH, self.value);
        put_text(&mut item, tags::CODING_SCHEME_DESIGNATOR, VR::SH, self.scheme);
        put_text(&mut item, tags::CODE_MEANING, VR::LO, self.meaning);
        item
    }
}

/// Puts a one-item code sequence.
pub fn put_code(object: &mut InMemDicomObject, tag: Tag, code: Code) {
    put_sequence(object, tag, vec![code.item()]);
}

/// The Patient and General Study attributes an object copies from its study, as (tag, VR,
/// DICOM JSON tag). Type 2: written empty when the study lacks them.
const STUDY_ATTRIBUTES: [(Tag, VR, &str); 9] = [
    (tags::PATIENT_NAME, VR::PN, "00100010"),
    (tags::PATIENT_ID, VR::LO, "00100020"),
    (tags::PATIENT_BIRTH_DATE, VR::DA, "00100030"),
    (tags::PATIENT_SEX, VR::CS, "00100040"),
    (tags::STUDY_DATE, VR::DA, "00080020"),
    (tags::STUDY_TIME, VR::TM, "00080030"),
    (tags::ACCESSION_NUMBER, VR::SH, "00080050"),
    (tags::STUDY_ID, VR::SH, "00200010"),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, "00080090"),
];

/// The study an object joins: its StudyInstanceUID and its patient and study attributes.
#[derive(Clone)]
pub struct StudyContext {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// Patient and General Study attributes (see [`STUDY_ATTRIBUTES`]).
    attributes: InMemDicomObject,
}

impl std::fmt::Debug for StudyContext {
    // Patient attributes never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyContext").field("study_uid", &self.study_uid).finish_non_exhaustive()
    }
}

/// A string value of a DICOM JSON attribute (a person name's alphabetic form).
pub fn json_string(dataset: &Value, tag: &str) -> Option<String> {
    let value = dataset.get(tag)?.get("Value")?.get(0)?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("Alphabetic").and_then(Value::as_str).map(str::to_string),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn element_text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = object.get(tag)?.to_str().ok()?;
    Some(value.trim_end_matches(['\0', ' ']).to_owned())
}

impl StudyContext {
    /// From a PACS's QIDO-RS answer for the study (DICOM JSON); `None` without a
    /// StudyInstanceUID.
    pub fn from_qido(study: &Value) -> Option<Self> {
        let study_uid = json_string(study, "0020000D")?;
        let mut attributes = InMemDicomObject::new_empty();
        for (tag, vr, json_tag) in STUDY_ATTRIBUTES {
            put_text(&mut attributes, tag, vr, json_string(study, json_tag).unwrap_or_default());
        }
        Some(StudyContext { study_uid, attributes })
    }

    /// From one of the study's own objects.
    pub fn from_object(object: &InMemDicomObject) -> Option<Self> {
        let study_uid = element_text(object, tags::STUDY_INSTANCE_UID).filter(|uid| !uid.is_empty())?;
        let mut attributes = InMemDicomObject::new_empty();
        for (tag, vr, _) in STUDY_ATTRIBUTES {
            put_text(&mut attributes, tag, vr, element_text(object, tag).unwrap_or_default());
        }
        Some(StudyContext { study_uid, attributes })
    }

    /// A new study (for results of a case that did not come from DICOM): empty patient and
    /// study attributes, today's date.
    pub fn new_study(study_uid: String, patient_id: &str, date: &str, time: &str) -> Self {
        let mut attributes = InMemDicomObject::new_empty();
        for (tag, vr, _) in STUDY_ATTRIBUTES {
            put_text(&mut attributes, tag, vr, "");
        }
        put_text(&mut attributes, tags::PATIENT_ID, VR::LO, patient_id);
        put_text(&mut attributes, tags::STUDY_DATE, VR::DA, date);
        put_text(&mut attributes, tags::STUDY_TIME, VR::TM, time);
        put_text(&mut attributes, tags::STUDY_ID, VR::SH, "1");
        StudyContext { study_uid, attributes }
    }

    /// The patient's sex as recorded (`F`, `M`, `O` or empty).
    pub fn patient_sex(&self) -> String {
        element_text(&self.attributes, tags::PATIENT_SEX).unwrap_or_default()
    }

    /// Puts the Patient and General Study attributes and the StudyInstanceUID into `object`.
    pub fn put_into(&self, object: &mut InMemDicomObject) {
        for element in self.attributes.iter() {
            object.put(element.clone());
        }
        put_text(object, tags::STUDY_INSTANCE_UID, VR::UI, self.study_uid.as_str());
    }
}

/// The software name written as Manufacturer of every object.
pub const MANUFACTURER: &str = "pedinorm";

/// Puts the General and Enhanced General Equipment attributes of pedinorm.
pub fn put_equipment(object: &mut InMemDicomObject) {
    put_text(object, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put_text(object, tags::MANUFACTURER_MODEL_NAME, VR::LO, "pedinorm deviation maps");
    // Type 1 in Enhanced General Equipment; software has no serial number, so the version is it.
    put_text(object, tags::DEVICE_SERIAL_NUMBER, VR::LO, env!("CARGO_PKG_VERSION"));
    put_text(object, tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION"));
}

/// Puts the SOP Common attributes (UTF-8 character set) and the content date and time.
pub fn put_sop_common(object: &mut InMemDicomObject, sop_class: &str, sop_instance: &str, when: &DateTime) {
    put_text(object, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_text(object, tags::SOP_CLASS_UID, VR::UI, sop_class);
    put_text(object, tags::SOP_INSTANCE_UID, VR::UI, sop_instance);
    put_text(object, tags::INSTANCE_CREATION_DATE, VR::DA, when.date.as_str());
    put_text(object, tags::INSTANCE_CREATION_TIME, VR::TM, when.time.as_str());
    put_text(object, tags::CONTENT_DATE, VR::DA, when.date.as_str());
    put_text(object, tags::CONTENT_TIME, VR::TM, when.time.as_str());
}

/// Puts the General Series attributes of a new series.
pub fn put_series(
    object: &mut InMemDicomObject,
    modality: &str,
    series_uid: &str,
    number: u32,
    description: &str,
) {
    put_text(object, tags::MODALITY, VR::CS, modality);
    put_text(object, tags::SERIES_INSTANCE_UID, VR::UI, series_uid);
    put_text(object, tags::SERIES_NUMBER, VR::IS, number.to_string());
    put_text(object, tags::SERIES_DESCRIPTION, VR::LO, description.chars().take(64).collect::<String>());
}

/// A DICOM date (`YYYYMMDD`) and time (`HHMMSS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTime {
    /// DA.
    pub date: String,
    /// TM.
    pub time: String,
}

impl DateTime {
    /// The current UTC date and time.
    pub fn now_utc() -> Self {
        let now = time::OffsetDateTime::now_utc();
        DateTime {
            date: format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day()),
            time: format!("{:02}{:02}{:02}", now.hour(), now.minute(), now.second()),
        }
    }
}

/// Encodes `object` as a Part 10 file (explicit VR little endian); `what` names it in errors.
pub fn encode_part10(object: InMemDicomObject, sop_class: &str, what: &str) -> Result<Vec<u8>, EncodeError> {
    let error = |message: String| EncodeError { what: what.to_owned(), message };
    let file = object
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(sop_class),
        )
        .map_err(|e| error(e.to_string()))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| error(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn study_context_copies_patient_and_study_attributes() {
        let qido = serde_json::json!({
            "0020000D": { "vr": "UI", "Value": ["1.2.3"] },
            "00100010": { "vr": "PN", "Value": [{ "Alphabetic": "Test^Patient" }] },
            "00100040": { "vr": "CS", "Value": ["F"] },
        });
        let study = StudyContext::from_qido(&qido).unwrap();
        assert_eq!(study.patient_sex(), "F");
        assert!(!format!("{study:?}").contains("Test"), "no patient data in Debug");
        let mut object = InMemDicomObject::new_empty();
        study.put_into(&mut object);
        assert_eq!(element_text(&object, tags::PATIENT_NAME).unwrap(), "Test^Patient");
        assert_eq!(element_text(&object, tags::STUDY_INSTANCE_UID).unwrap(), "1.2.3");
        assert_eq!(element_text(&object, tags::ACCESSION_NUMBER).unwrap(), "");
        let again = StudyContext::from_object(&object).unwrap();
        assert_eq!(again.study_uid, "1.2.3");
        assert!(StudyContext::from_qido(&serde_json::json!({})).is_none());
    }
}
