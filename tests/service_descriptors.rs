//! Clean Descriptors through a real ingest by the real `pedinorm serve`: a study whose free-text
//! descriptors name the patient (name parts, national identifier, birth date in three
//! spellings) is admitted, and no file of the state — sidecars, index, de-identified DICOM,
//! volumes, the service database — holds any of those tokens, in any case; what the
//! descriptors say about the acquisition is kept, and the de-identification record says the
//! option was applied.

mod service_common;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use service_common::*;

/// The codice fiscale of ROSSI MARIO, born 1980-01-01 in Rome (check character computed).
fn rossi_cf() -> String {
    let first = b"RSSMRA80A01H501";
    let check = pedinorm::ingest::pseudonym::check_character(first);
    format!("{}{}", std::str::from_utf8(first).unwrap(), check as char)
}

/// The synthetic study re-identified as Mario Rossi, with identities in its descriptors.
fn identified_study() -> Vec<Vec<u8>> {
    let (_, files) = synthetic_study(3);
    let cf = rossi_cf();
    files
        .into_iter()
        .map(|bytes| {
            let mut object = dicom_object::OpenFileOptions::new().from_reader(&bytes[..]).unwrap();
            for (tag, vr, value) in [
                (tags::PATIENT_NAME, VR::PN, "ROSSI^MARIO".to_string()),
                (tags::PATIENT_ID, VR::LO, cf.clone()),
                (tags::PATIENT_BIRTH_DATE, VR::DA, "19800101".to_string()),
                // Eight years old at the study, as the synthetic study's PatientAge says.
                (tags::STUDY_DATE, VR::DA, "19880315".to_string()),
                (tags::SERIES_DESCRIPTION, VR::LO, "T1 BRAIN ROSSI MARIO".to_string()),
                (tags::PROTOCOL_NAME, VR::LO, format!("BRAIN {}", cf.to_lowercase())),
                (tags::STUDY_DESCRIPTION, VR::LO, "NEURO Rossi 1980-01-01".to_string()),
                (tags::IMAGE_COMMENTS, VR::LT, "born 01.01.1980 (19800101) mario_rossi".to_string()),
            ] {
                object.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
            }
            let mut out = Vec::new();
            object.write_all(&mut out).unwrap();
            out
        })
        .collect()
}

#[test]
fn descriptors_lose_every_identity_token_through_a_real_ingest() {
    let (dir, scientist, server, _) = scientist_server("");
    let state = dir.path().join("state");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let api = Api::new(&server.base);
        let (_, job) = api.upload_consented(&scientist, "B", zip_study(&identified_study())).await;
        assert_eq!(job["result"]["admitted"], true, "{job}");
    });
    drop(server);

    let cf = rossi_cf();
    for needle in [
        "ROSSI",
        "Rossi",
        "rossi",
        "MARIO",
        "mario",
        cf.as_str(),
        cf.to_lowercase().as_str(),
        "19800101",
        "1980-01-01",
        "01.01.1980",
    ] {
        assert_eq!(files_containing(&state, needle), Vec::<String>::new(), "state files hold {needle}");
    }
    // What the descriptors say about the acquisition is kept, and the option is recorded.
    let sidecars: Vec<_> = walkdir::WalkDir::new(&state)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "sidecar.json")
        .collect();
    assert_eq!(sidecars.len(), 1);
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sidecars[0].path()).unwrap()).unwrap();
    assert_eq!(sidecar["SeriesDescription"], "T1 BRAIN", "{sidecar}");
    assert_eq!(sidecar["ProtocolName"], "BRAIN", "{sidecar}");
    assert!(sidecar["DeidentificationMethod"].to_string().contains("Clean Descriptors Option"), "{sidecar}");
    let dicom = walkdir::WalkDir::new(&state)
        .into_iter()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "dcm"))
        .expect("a de-identified DICOM file");
    let object = dicom_object::open_file(dicom.path()).unwrap();
    let text = |tag| object.element(tag).unwrap().to_str().unwrap().trim().to_string();
    assert_eq!(text(tags::SERIES_DESCRIPTION), "T1 BRAIN");
    assert_eq!(text(tags::STUDY_DESCRIPTION), "NEURO");
    assert_eq!(text(tags::IMAGE_COMMENTS), "born");
    let codes: Vec<String> = object
        .element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|item| item.element(tags::CODE_VALUE).unwrap().to_str().unwrap().trim().to_string())
        .collect();
    assert!(codes.contains(&"113100".to_string()) && codes.contains(&"113105".to_string()), "{codes:?}");
}
