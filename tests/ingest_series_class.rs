//! Series classification through `pedinorm ingest`: a study with a series of each class,
//! written by the project's DICOM series writer with the acquisition headers of a 3 T
//! Siemens protocol, is ingested from the command line; each series' sidecar and index row
//! carry its class and rule; a database-B study whose only volume is a FLAIR is refused with
//! the rule, and database A takes it.

mod ingest_support;

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use ingest_support::{CODICE_FISCALE, snapshot, write_key};
use pedinorm::formats::dicom_write::{PixelScaling, SeriesSpec, UidSource, write_series};
use pedinorm::ingest::index::StudyIndex;
use pedinorm_registration::{Grid, Image};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One series: number, description, images, acquisition elements.
struct Acquisition {
    number: u32,
    description: &'static str,
    slices: usize,
    elements: Vec<(Tag, VR, &'static str)>,
    expected: (&'static str, &'static str),
}

fn protocol() -> Vec<Acquisition> {
    vec![
        Acquisition {
            number: 1,
            description: "localizer",
            slices: 3,
            elements: vec![
                (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\LOCALIZER"),
                (tags::SCANNING_SEQUENCE, VR::CS, "GR"),
                (tags::SEQUENCE_VARIANT, VR::CS, "SP"),
                (tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
                (tags::REPETITION_TIME, VR::DS, "8.6"),
                (tags::ECHO_TIME, VR::DS, "4"),
                (tags::FLIP_ANGLE, VR::DS, "20"),
            ],
            expected: ("localizer", "localizer-image-type"),
        },
        Acquisition {
            number: 2,
            description: "t1_mprage_sag_p2",
            slices: 8,
            elements: vec![
                (tags::SCANNING_SEQUENCE, VR::CS, "GR\\IR"),
                (tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP\\MP"),
                (tags::SCAN_OPTIONS, VR::CS, "IR"),
                (tags::SEQUENCE_NAME, VR::SH, "*tfl3d1_16ns"),
                (tags::MR_ACQUISITION_TYPE, VR::CS, "3D"),
                (tags::REPETITION_TIME, VR::DS, "2300"),
                (tags::ECHO_TIME, VR::DS, "2.98"),
                (tags::INVERSION_TIME, VR::DS, "900"),
                (tags::FLIP_ANGLE, VR::DS, "9"),
            ],
            expected: ("T1w", "prepared-gradient-echo"),
        },
        Acquisition {
            number: 3,
            description: "t2_tse_tra",
            slices: 6,
            elements: vec![
                (tags::SCANNING_SEQUENCE, VR::CS, "SE"),
                (tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP\\OSP"),
                (tags::SEQUENCE_NAME, VR::SH, "*tse2d1_15"),
                (tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
                (tags::REPETITION_TIME, VR::DS, "6000"),
                (tags::ECHO_TIME, VR::DS, "96"),
                (tags::FLIP_ANGLE, VR::DS, "150"),
            ],
            expected: ("T2w", "long-tr-long-te"),
        },
        Acquisition {
            number: 4,
            description: "t2_tirm_tra_dark-fluid",
            slices: 6,
            elements: flair_elements(),
            expected: ("FLAIR", "fluid-attenuated-inversion"),
        },
        Acquisition {
            number: 5,
            description: "ep2d_diff_3scan_trace",
            slices: 6,
            elements: vec![
                (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\DIFFUSION\\NONE\\ND"),
                (tags::SCANNING_SEQUENCE, VR::CS, "EP"),
                (tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP"),
                (tags::SEQUENCE_NAME, VR::SH, "*ep_b1000t"),
                (tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
                (tags::REPETITION_TIME, VR::DS, "5400"),
                (tags::ECHO_TIME, VR::DS, "89"),
                (tags::FLIP_ANGLE, VR::DS, "90"),
                (Tag(0x0019, 0x0010), VR::LO, "SIEMENS MR HEADER"),
                (Tag(0x0019, 0x100C), VR::IS, "1000"),
            ],
            expected: ("DWI", "diffusion-b-value"),
        },
        Acquisition {
            number: 6,
            description: "swi_tra",
            slices: 6,
            elements: vec![
                (tags::SCANNING_SEQUENCE, VR::CS, "GR"),
                (tags::SEQUENCE_VARIANT, VR::CS, "SP"),
                (tags::SEQUENCE_NAME, VR::SH, "*swi3d1r"),
                (tags::MR_ACQUISITION_TYPE, VR::CS, "3D"),
                (tags::REPETITION_TIME, VR::DS, "27"),
                (tags::ECHO_TIME, VR::DS, "20"),
                (tags::FLIP_ANGLE, VR::DS, "15"),
            ],
            expected: ("other", "t2star-gradient-echo"),
        },
    ]
}

fn flair_elements() -> Vec<(Tag, VR, &'static str)> {
    vec![
        (tags::SCANNING_SEQUENCE, VR::CS, "SE\\IR"),
        (tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP\\MP\\OSP"),
        (tags::SEQUENCE_NAME, VR::SH, "*tir2d1_21"),
        (tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
        (tags::REPETITION_TIME, VR::DS, "9000"),
        (tags::ECHO_TIME, VR::DS, "81"),
        (tags::INVERSION_TIME, VR::DS, "2500"),
        (tags::FLIP_ANGLE, VR::DS, "150"),
    ]
}

/// Patient, study and scanner attributes every series of the study shares.
fn shared_attributes(study_number: u32) -> InMemDicomObject {
    let mut object = InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100".to_owned()),
        (tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\M\\ND".to_owned()),
        (tags::STUDY_DATE, VR::DA, "20230415".to_owned()),
        (tags::STUDY_TIME, VR::TM, "101500".to_owned()),
        (tags::MANUFACTURER, VR::LO, "SIEMENS".to_owned()),
        (tags::MANUFACTURER_MODEL_NAME, VR::LO, "Prisma".to_owned()),
        (tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "3".to_owned()),
        (tags::BODY_PART_EXAMINED, VR::CS, "HEAD".to_owned()),
        (tags::PATIENT_NAME, VR::PN, "ROSSI^MARIO".to_owned()),
        (tags::PATIENT_ID, VR::LO, format!("HOSP-{study_number}")),
        (tags::PATIENT_BIRTH_DATE, VR::DA, "20150310".to_owned()),
        (tags::PATIENT_SEX, VR::CS, "F".to_owned()),
        (tags::PATIENT_POSITION, VR::CS, "HFS".to_owned()),
        (tags::STUDY_ID, VR::SH, "1".to_owned()),
    ] {
        object.put(DataElement::new(tag, vr, PrimitiveValue::from(value.as_str())));
    }
    object
}

/// Writes the study's series (one folder each) with the project's series writer.
fn write_study(dir: &Path, study_number: u32, series: &[Acquisition]) {
    let study_uid = UidSource::Seeded(1000 + u64::from(study_number)).uid(10);
    for acquisition in series {
        let grid =
            Grid::axis_aligned([8, 7, acquisition.slices], [1.0, 1.0, 1.2], [-4.0, -3.0, 0.0]).unwrap();
        let mut image = Image::filled(grid, 0.0f32);
        for (i, value) in image.as_mut_slice().iter_mut().enumerate() {
            *value = ((i * 37 + acquisition.number as usize * 11) % 997) as f32;
        }
        let mut attributes = shared_attributes(study_number);
        attributes.put(DataElement::new(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from(acquisition.description),
        ));
        attributes.put(DataElement::new(
            tags::PROTOCOL_NAME,
            VR::LO,
            PrimitiveValue::from(acquisition.description),
        ));
        attributes.put(DataElement::new(
            tags::SERIES_NUMBER,
            VR::IS,
            PrimitiveValue::from(acquisition.number.to_string()),
        ));
        for &(tag, vr, value) in &acquisition.elements {
            attributes.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        }
        let spec = SeriesSpec {
            study_uid: study_uid.clone(),
            uids: UidSource::Seeded(u64::from(study_number) * 100 + u64::from(acquisition.number)),
            scaling: PixelScaling::unsigned_full_range(&image),
            attributes,
        };
        write_series(&dir.join(format!("series{}", acquisition.number)), &image, &spec).unwrap();
    }
}

fn ingest(args: &[&str], key_file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("ingest")
        .args(args)
        .env("PEDINORM_PSEUDONYM_KEY_FILE", key_file)
        .output()
        .unwrap()
}

#[test]
fn every_series_is_classified_into_its_sidecar_and_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path());
    let study = dir.path().join("study");
    let series = protocol();
    write_study(&study, 1, &series);
    let data = dir.path().join("data");
    let output = ingest(
        &[
            "--database",
            "B",
            "--data-dir",
            data.to_str().unwrap(),
            "--national-id",
            CODICE_FISCALE,
            "--json",
            study.to_str().unwrap(),
        ],
        &key_file,
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stored = report["series"].as_array().unwrap();
    assert_eq!(stored.len(), series.len(), "{report:#}");

    // Sidecars: SeriesNumber → (class, rule), and the report agrees.
    let mut from_sidecars = BTreeMap::new();
    for entry in stored {
        let sidecar_path = data.join(entry["path"].as_str().unwrap()).join("sidecar.json");
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&sidecar_path).unwrap()).unwrap();
        let class = sidecar["SeriesClass"].as_str().unwrap().to_owned();
        assert_eq!(entry["series_class"].as_str(), Some(class.as_str()));
        assert!(sidecar["SeriesClassReason"].as_str().unwrap().contains("3 T ranges"), "{sidecar:#}");
        from_sidecars.insert(
            sidecar["SeriesNumber"].as_u64().unwrap() as u32,
            (class, sidecar["SeriesClassRule"].as_str().unwrap().to_owned()),
        );
    }
    let expected: BTreeMap<u32, (String, String)> =
        series.iter().map(|a| (a.number, (a.expected.0.to_owned(), a.expected.1.to_owned()))).collect();
    assert_eq!(from_sidecars, expected);

    // Index: the same classes and rules, by series UID.
    let study_uid = report["study_uid"].as_str().unwrap();
    let index = StudyIndex::open_existing(&data).unwrap().unwrap();
    let classes: BTreeMap<String, Option<String>> =
        index.series_classes(study_uid).unwrap().into_iter().collect();
    let connection = rusqlite::Connection::open(data.join("index.sqlite")).unwrap();
    for entry in stored {
        let uid = entry["series_uid"].as_str().unwrap();
        let sidecar: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.join(entry["path"].as_str().unwrap()).join("sidecar.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(classes[uid].as_deref(), sidecar["SeriesClass"].as_str());
        let rule: String = connection
            .query_row("SELECT series_class_rule FROM series WHERE series_uid = ?1", [uid], |row| row.get(0))
            .unwrap();
        assert_eq!(Some(rule.as_str()), sidecar["SeriesClassRule"].as_str());
    }
}

#[test]
fn a_database_b_study_with_only_flair_is_refused_with_the_rule_and_database_a_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key(dir.path());
    let study = dir.path().join("study");
    let series: Vec<Acquisition> = protocol().into_iter().filter(|a| matches!(a.number, 1 | 4)).collect();
    write_study(&study, 2, &series);
    let data = dir.path().join("data");
    let common = ["--data-dir", data.to_str().unwrap(), "--national-id", CODICE_FISCALE];
    let refused =
        ingest(&[&["--database", "B"][..], &common, &[study.to_str().unwrap()]].concat(), &key_file);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no-t1w-or-t2w")
            && stderr.contains("series 4 FLAIR (fluid-attenuated-inversion)")
            && stderr.contains("series 1 localizer (localizer-image-type)"),
        "{stderr}"
    );
    assert!(snapshot(&data).is_empty(), "a refused study writes nothing");

    let accepted = ingest(
        &[&["--database", "A", "--class", "A2"][..], &common, &[study.to_str().unwrap()]].concat(),
        &key_file,
    );
    assert!(accepted.status.success(), "{}", String::from_utf8_lossy(&accepted.stderr));
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(stdout.contains("stored FLAIR") && stdout.contains("stored localizer"), "{stdout}");
}

#[test]
fn pedinorm_classify_agrees_with_ingest_without_storing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    let series = protocol();
    write_study(&study, 3, &series);
    std::fs::write(study.join("notes.txt"), b"not DICOM").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args(["classify", "--json", study.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let found: BTreeMap<String, (String, String)> = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["series"].as_str().unwrap().to_owned(),
                (s["class"].as_str().unwrap().to_owned(), s["rule"].as_str().unwrap().to_owned()),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, String)> = series
        .iter()
        .map(|a| (format!("series {}", a.number), (a.expected.0.to_owned(), a.expected.1.to_owned())))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(report["unreadable"].as_array().unwrap().len(), 1);
    // Nothing identifying is printed.
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ROSSI"));
}
