//! Synthetic DICOM studies for the ingest tests: classic MR slices carrying every kind of
//! identifying data a real study carries (names, IDs, birth date, national identifier in
//! OtherPatientIDsSequence, dates, institution, private tags, references between instances).

#![allow(dead_code)]

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use std::path::{Path, PathBuf};

/// A valid codice fiscale used as the test patient's national identifier.
pub const CODICE_FISCALE: &str = "RSSMRA85T10A562S";
/// The issuer under which the codice fiscale is recorded.
pub const CF_ISSUER: &str = "IT-CF";
/// The patient's name in the source files.
pub const PATIENT_NAME: &str = "ROSSI^MARIO";
/// The hospital patient ID in the source files.
pub const HOSPITAL_ID: &str = "HOSP-778812";
/// The birth date in the source files.
pub const BIRTH_DATE: &str = "20150310";
/// The study date in the source files.
pub const STUDY_DATE: &str = "20230415";
/// Institution name in the source files.
pub const INSTITUTION: &str = "OSPEDALE PEDIATRICO SAN ZENO";

/// What to vary in a synthetic study.
#[derive(Debug, Clone)]
pub struct StudySpec {
    /// Distinguishes studies: part of every UID.
    pub study_number: u32,
    /// National identifier placed in OtherPatientIDsSequence under [`CF_ISSUER`].
    pub national_id: Option<String>,
    /// MagneticFieldStrength.
    pub field_strength: f64,
    /// Modality.
    pub modality: String,
    /// BodyPartExamined.
    pub body_part: Option<String>,
    /// Birth date (None: absent).
    pub birth_date: Option<String>,
    /// PatientAge (None: absent).
    pub patient_age: Option<String>,
    /// BurnedInAnnotation YES on the first slice of the first series.
    pub burned_in: bool,
    /// (SeriesNumber, SeriesDescription, slices) per series.
    pub series: Vec<(u32, String, usize)>,
    /// Rows and columns of every slice.
    pub matrix: (usize, usize),
    /// Elements that replace the defaults (an MPRAGE's acquisition) in one series:
    /// (SeriesNumber, tag, VR, value).
    pub series_tags: Vec<(u32, Tag, VR, String)>,
}

/// The acquisition of a 3 T T2 TSE (Siemens): what series 5 of the default study carries.
pub fn t2_tse_tags(series_number: u32) -> Vec<(u32, Tag, VR, String)> {
    [
        (tags::SCANNING_SEQUENCE, VR::CS, "SE"),
        (tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP\\OSP"),
        (tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
        (tags::REPETITION_TIME, VR::DS, "6000"),
        (tags::ECHO_TIME, VR::DS, "96"),
        (tags::FLIP_ANGLE, VR::DS, "150"),
    ]
    .into_iter()
    .map(|(tag, vr, value)| (series_number, tag, vr, value.to_owned()))
    .collect()
}

impl Default for StudySpec {
    fn default() -> Self {
        Self {
            study_number: 1,
            national_id: Some(CODICE_FISCALE.to_owned()),
            field_strength: 3.0,
            modality: "MR".into(),
            body_part: Some("HEAD".into()),
            birth_date: Some(BIRTH_DATE.into()),
            patient_age: Some("008Y".into()),
            burned_in: false,
            series: vec![(3, "T1 MPRAGE SAG".into(), 4), (5, "T2 TSE AX".into(), 3)],
            matrix: (6, 5),
            series_tags: t2_tse_tags(5),
        }
    }
}

/// The original StudyInstanceUID of a spec.
pub fn study_uid(spec: &StudySpec) -> String {
    format!("1.2.826.0.1.3680043.9.7777.{}", spec.study_number)
}

/// The original SeriesInstanceUID of a series.
pub fn series_uid(spec: &StudySpec, series_number: u32) -> String {
    format!("{}.{series_number}", study_uid(spec))
}

/// The original SOPInstanceUID of a slice.
pub fn sop_uid(spec: &StudySpec, series_number: u32, slice: usize) -> String {
    format!("{}.{}", series_uid(spec, series_number), slice + 1)
}

fn text(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

/// Writes the study's slices under `dir` (one folder per series) and returns their paths.
pub fn write_study(dir: &Path, spec: &StudySpec) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let (rows, columns) = spec.matrix;
    for (series_index, (number, description, slices)) in spec.series.iter().enumerate() {
        let series_dir = dir.join(format!("series{number}"));
        std::fs::create_dir_all(&series_dir).unwrap();
        for slice in 0..*slices {
            let mut object = InMemDicomObject::from_element_iter([
                text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
                text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\M\\ND"),
                text(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
                text(tags::SOP_INSTANCE_UID, VR::UI, &sop_uid(spec, *number, slice)),
                text(tags::STUDY_DATE, VR::DA, STUDY_DATE),
                text(tags::SERIES_DATE, VR::DA, STUDY_DATE),
                text(tags::ACQUISITION_DATE, VR::DA, STUDY_DATE),
                text(tags::CONTENT_DATE, VR::DA, STUDY_DATE),
                text(tags::STUDY_TIME, VR::TM, "101500"),
                text(tags::SERIES_TIME, VR::TM, "102000"),
                text(tags::ACQUISITION_TIME, VR::TM, "102010.5"),
                text(tags::CONTENT_TIME, VR::TM, "102011"),
                text(tags::ACQUISITION_DATE_TIME, VR::DT, &format!("{STUDY_DATE}102010.500000")),
                text(tags::ACCESSION_NUMBER, VR::SH, "ACC99812"),
                text(tags::MODALITY, VR::CS, &spec.modality),
                text(tags::MANUFACTURER, VR::LO, "SIEMENS"),
                text(tags::INSTITUTION_NAME, VR::LO, INSTITUTION),
                text(tags::INSTITUTION_ADDRESS, VR::ST, "Via Roma 1, Verona"),
                text(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "VERDI^GIUSEPPE"),
                text(tags::STATION_NAME, VR::SH, "MRC40123"),
                text(tags::STUDY_DESCRIPTION, VR::LO, "RM ENCEFALO ROSSI"),
                text(tags::SERIES_DESCRIPTION, VR::LO, description),
                text(tags::PERFORMING_PHYSICIAN_NAME, VR::PN, "BIANCHI^ANNA"),
                text(tags::OPERATORS_NAME, VR::PN, "NERI^LUCA"),
                text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "Prisma"),
                text(tags::PATIENT_NAME, VR::PN, PATIENT_NAME),
                text(tags::PATIENT_ID, VR::LO, HOSPITAL_ID),
                text(tags::ISSUER_OF_PATIENT_ID, VR::LO, "HOSPITAL"),
                text(tags::PATIENT_SEX, VR::CS, "F"),
                text(tags::PATIENT_SIZE, VR::DS, "1.25"),
                text(tags::PATIENT_WEIGHT, VR::DS, "25"),
                text(tags::PATIENT_ADDRESS, VR::LO, "Via Verdi 12, Verona"),
                text(Tag(0x0010, 0x1090), VR::LO, "MRL-1"),
                text(tags::ADDITIONAL_PATIENT_HISTORY, VR::LT, "seizures; mother ROSSI^ANNA"),
                text(tags::SCANNING_SEQUENCE, VR::CS, "GR\\IR"),
                text(tags::SEQUENCE_VARIANT, VR::CS, "SP\\MP"),
                text(tags::MR_ACQUISITION_TYPE, VR::CS, "3D"),
                text(tags::SLICE_THICKNESS, VR::DS, "1.2"),
                text(tags::REPETITION_TIME, VR::DS, "2300"),
                text(tags::ECHO_TIME, VR::DS, "2.98"),
                text(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, &spec.field_strength.to_string()),
                text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "SN-40123"),
                text(tags::PROTOCOL_NAME, VR::LO, description),
                text(tags::FLIP_ANGLE, VR::DS, "9"),
                text(tags::PATIENT_POSITION, VR::CS, "HFS"),
                text(tags::STUDY_INSTANCE_UID, VR::UI, &study_uid(spec)),
                text(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid(spec, *number)),
                text(tags::STUDY_ID, VR::SH, "S4411"),
                text(tags::SERIES_NUMBER, VR::IS, &number.to_string()),
                text(tags::INSTANCE_NUMBER, VR::IS, &(slice + 1).to_string()),
                text(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("-3\\-4\\{}", 1.2 * slice as f64)),
                text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
                text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &format!("{}.99", study_uid(spec))),
                text(tags::IMAGE_COMMENTS, VR::LT, "patient ROSSI MARIO, CF in notes"),
                DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
                text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
                DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows as u16)),
                DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(columns as u16)),
                text(tags::PIXEL_SPACING, VR::DS, "1\\1"),
                DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
                DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
                DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
                DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
                // Private block carrying the identifier, as vendor headers sometimes do.
                text(Tag(0x0029, 0x0010), VR::LO, "ACME PRIVATE"),
                text(Tag(0x0029, 0x1010), VR::LO, CODICE_FISCALE),
                text(Tag(0x0029, 0x1011), VR::LO, PATIENT_NAME),
            ]);
            for (_, tag, vr, value) in spec.series_tags.iter().filter(|(n, ..)| n == number) {
                object.put(text(*tag, *vr, value));
            }
            if let Some(birth) = &spec.birth_date {
                object.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, birth));
            }
            if let Some(age) = &spec.patient_age {
                object.put(text(tags::PATIENT_AGE, VR::AS, age));
            }
            if let Some(body_part) = &spec.body_part {
                object.put(text(tags::BODY_PART_EXAMINED, VR::CS, body_part));
            }
            let mut other_ids = vec![InMemDicomObject::from_element_iter([
                text(tags::PATIENT_ID, VR::LO, HOSPITAL_ID),
                text(tags::ISSUER_OF_PATIENT_ID, VR::LO, "HOSPITAL"),
                text(tags::TYPE_OF_PATIENT_ID, VR::CS, "TEXT"),
            ])];
            if let Some(national_id) = &spec.national_id {
                other_ids.push(InMemDicomObject::from_element_iter([
                    text(tags::PATIENT_ID, VR::LO, national_id),
                    text(tags::ISSUER_OF_PATIENT_ID, VR::LO, CF_ISSUER),
                    text(tags::TYPE_OF_PATIENT_ID, VR::CS, "TEXT"),
                ]));
            }
            object.put(sequence(tags::OTHER_PATIENT_I_DS_SEQUENCE, other_ids));
            object.put(sequence(
                tags::REFERENCED_STUDY_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, "1.2.840.10008.3.1.2.3.1"),
                    text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &format!("{}.500", study_uid(spec))),
                ])],
            ));
            object.put(sequence(
                tags::REQUEST_ATTRIBUTES_SEQUENCE,
                vec![InMemDicomObject::from_element_iter([
                    text(tags::REQUESTED_PROCEDURE_ID, VR::SH, "RP-1"),
                    text(tags::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "SPS-1"),
                ])],
            ));
            // Each slice after the first references its predecessor (a localizer-style
            // reference), with a nested person name and date to clean.
            if slice > 0 {
                object.put(sequence(
                    tags::REFERENCED_IMAGE_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([
                        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
                        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &sop_uid(spec, *number, slice - 1)),
                        text(tags::PERSON_NAME, VR::PN, PATIENT_NAME),
                        text(tags::INSTANCE_CREATION_DATE, VR::DA, STUDY_DATE),
                        text(Tag(0x0029, 0x0010), VR::LO, "ACME PRIVATE"),
                        text(Tag(0x0029, 0x1012), VR::LO, CODICE_FISCALE),
                    ])],
                ));
            }
            if spec.burned_in && series_index == 0 && slice == 0 {
                object.put(text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"));
            } else {
                object.put(text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"));
            }
            let pixels: Vec<u16> = (0..rows * columns)
                .map(|i| (i * 7 + slice * 31 + series_index * 101) as u16 % 4096)
                .collect();
            object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())));
            let file = object
                .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
                .unwrap();
            let path = series_dir.join(format!("IM{:04}", slice + 1));
            file.write_to_file(&path).unwrap();
            paths.push(path);
        }
    }
    paths
}

/// A key file with a 40-byte key, in `dir`.
pub fn write_key(dir: &Path) -> PathBuf {
    let path = dir.join("pseudonym.key");
    std::fs::write(&path, b"test-key-0123456789-abcdefghijklmnopqrstu\n").unwrap();
    path
}

/// What most ingest tests start from: a temporary folder with a pseudonym key and the default
/// identified study in `study/`. Returns the folder, the key file and the study folder.
pub fn default_study() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path());
    let study = dir.path().join("study");
    write_study(&study, &StudySpec::default());
    (dir, key_file, study)
}

/// Every file under `dir` (relative path → bytes), skipping nothing.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    if !dir.exists() {
        return files;
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            let relative = entry.path().strip_prefix(dir).unwrap().to_path_buf();
            files.insert(relative, std::fs::read(entry.path()).unwrap());
        }
    }
    files
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

/// Decompresses gzip bytes (for looking inside `.nii.gz`).
pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}
