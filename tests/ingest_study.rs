//! End-to-end tests of `ingest_study`: de-identification checked element by element against
//! the profile, UID and date consistency, stability across runs, admission reasons,
//! idempotence, and that a refused study writes nothing.

mod ingest_support;

use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use hmac::Mac;
use ingest_support::*;
use pedinorm::ingest::admission::{CaseClass, Database};
use pedinorm::ingest::deidentify::{self, Action};
use pedinorm::ingest::index::StudyIndex;
use pedinorm::ingest::pseudonym::PseudonymKey;
use pedinorm::ingest::{IdentifierSource, IngestError, IngestOptions, IngestStatus, ingest_study};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    key_file: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let key_file = write_key(&root);
    Fixture { _dir: dir, root, key_file }
}

fn options(fixture: &Fixture, data: &str, database: Database) -> IngestOptions {
    IngestOptions {
        database,
        data_dir: fixture.root.join(data),
        identifier: IdentifierSource::Issuer(CF_ISSUER.into()),
        allow_unlinked: false,
        key_file: Some(fixture.key_file.clone()),
    }
}

fn study(fixture: &Fixture, name: &str, spec: &StudySpec) -> PathBuf {
    let dir = fixture.root.join(name);
    write_study(&dir, spec);
    dir
}

fn refusal_codes(result: Result<pedinorm::ingest::IngestReport, IngestError>) -> Vec<&'static str> {
    match result {
        Err(IngestError::Refused(reasons)) => reasons.iter().map(|r| r.code()).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The elements this ingest adds itself.
const ADDED: [Tag; 4] = [
    tags::PATIENT_IDENTITY_REMOVED,
    tags::DEIDENTIFICATION_METHOD,
    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
    tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
];

struct Expectation<'a> {
    key: &'a PseudonymKey,
    pseudonym: &'a str,
    shift: i64,
}

fn strings(element: &dicom_object::mem::InMemElement) -> Vec<String> {
    element
        .value()
        .to_multi_str()
        .map(|v| v.iter().map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_owned()).collect())
        .unwrap_or_default()
}

/// Checks every element of `output` (recursively) against the profile, given the source
/// `input`, and that nothing the profile keeps went missing.
fn check_against_profile(
    input: &InMemDicomObject,
    output: &InMemDicomObject,
    expect: &Expectation<'_>,
    depth: usize,
    failures: &mut Vec<String>,
) {
    for element in output.iter() {
        let tag = element.tag();
        let vr = element.vr();
        let place = format!("{tag} at depth {depth}");
        if tag.group() % 2 == 1 {
            failures.push(format!("{place}: private element kept"));
            continue;
        }
        let Some(source) = input.get(tag) else {
            let allowed = depth == 0 && (ADDED.contains(&tag) || tag == tags::PATIENT_ID);
            if !allowed {
                failures.push(format!("{place}: element not in the source"));
            }
            continue;
        };
        match deidentify::action(tag, vr) {
            Action::Remove => failures.push(format!("{place}: should have been removed")),
            Action::Keep => match (source.value(), element.value()) {
                (Value::Sequence(a), Value::Sequence(b)) => {
                    if a.items().len() != b.items().len() {
                        failures.push(format!("{place}: item count changed"));
                    }
                    for (x, y) in a.items().iter().zip(b.items()) {
                        check_against_profile(x, y, expect, depth + 1, failures);
                    }
                }
                (a, b) => {
                    if a.to_bytes().ok() != b.to_bytes().ok() && strings(source) != strings(element) {
                        failures.push(format!("{place}: kept value changed"));
                    }
                }
            },
            Action::CleanDescriptor => {
                // Kept only as a cleaned copy: never longer than the source, checked for
                // identities below.
                if strings(element).join("").len() > strings(source).join("").len() {
                    failures.push(format!("{place}: cleaned descriptor grew"));
                }
            }
            Action::Empty => {
                let empty = match element.value() {
                    Value::Sequence(s) => s.items().is_empty(),
                    _ => strings(element).iter().all(String::is_empty),
                };
                if !empty {
                    failures.push(format!("{place}: should be empty"));
                }
            }
            Action::Dummy => {
                if strings(element) == strings(source) && !strings(source).is_empty() {
                    failures.push(format!("{place}: dummy equals the original"));
                }
            }
            Action::ShiftDate => {
                let expected: Vec<String> = strings(source)
                    .iter()
                    .map(|v| {
                        if vr == VR::DT {
                            deidentify::shift_datetime(v, expect.shift).unwrap()
                        } else {
                            deidentify::shift_date(v, expect.shift).unwrap()
                        }
                    })
                    .collect();
                if strings(element) != expected {
                    failures.push(format!("{place}: date not shifted by {} days", expect.shift));
                }
            }
            Action::ReplaceUid => {
                let expected: Vec<String> =
                    strings(source).iter().map(|uid| deidentify::remap_uid(expect.key, uid)).collect();
                if strings(element) != expected {
                    failures.push(format!("{place}: UID not remapped"));
                }
            }
            Action::Pseudonym => {
                if strings(element) != [expect.pseudonym] {
                    failures.push(format!("{place}: not the pseudonym"));
                }
            }
        }
    }
    // Nothing the profile keeps in some form may be lost.
    for element in input.iter() {
        if deidentify::action(element.tag(), element.vr()) != Action::Remove
            && output.get(element.tag()).is_none()
        {
            failures.push(format!("{} at depth {depth}: lost", element.tag()));
        }
    }
}

/// All `.dcm` files under a directory.
fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect()
}

fn uid_at(object: &InMemDicomObject, tag: Tag) -> String {
    object.get(tag).unwrap().value().to_str().unwrap().trim_end_matches('\0').to_owned()
}

#[test]
fn every_output_element_follows_the_profile_and_references_stay_consistent() {
    let fixture = fixture();
    let spec = StudySpec::default();
    let input = study(&fixture, "in", &spec);
    let options = options(&fixture, "data", Database::B);
    let report = ingest_study(std::slice::from_ref(&input), &options).unwrap();
    assert_eq!(report.status, IngestStatus::Ingested);
    assert_eq!(report.series.len(), 2);
    assert!(report.linked);

    // The pseudonym is HMAC-SHA-256(key, codice fiscale), computed here independently.
    let key_bytes = std::fs::read(&fixture.key_file).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key_bytes.trim_ascii()).unwrap();
    mac.update(CODICE_FISCALE.as_bytes());
    assert_eq!(report.pseudonym, hex::encode(mac.finalize().into_bytes()));

    let key = PseudonymKey::from_file(&fixture.key_file).unwrap();
    let pseudonym = pedinorm::ingest::pseudonym::Pseudonym::from_hex(&report.pseudonym).unwrap();
    let shift = deidentify::day_shift(&key, &pseudonym);
    let expect = Expectation { key: &key, pseudonym: &report.pseudonym, shift };

    // Source objects by their expected new SOP Instance UID.
    let mut sources: BTreeMap<String, InMemDicomObject> = BTreeMap::new();
    for path in
        walkdir::WalkDir::new(&input).into_iter().map(|e| e.unwrap()).filter(|e| e.file_type().is_file())
    {
        let object = dicom_object::open_file(path.path()).unwrap().into_inner();
        sources.insert(deidentify::remap_uid(&key, &uid_at(&object, tags::SOP_INSTANCE_UID)), object);
    }

    let outputs = dicom_files(&options.data_dir);
    assert_eq!(outputs.len(), 7);
    let mut failures = Vec::new();
    let mut sop_uids = BTreeSet::new();
    let mut references = Vec::new();
    let mut frames_of_reference = BTreeSet::new();
    for path in &outputs {
        let file = dicom_object::open_file(path).unwrap();
        assert_eq!(file.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2.1");
        let sop = uid_at(&file, tags::SOP_INSTANCE_UID);
        assert_eq!(file.meta().media_storage_sop_instance_uid().trim_end_matches('\0'), sop);
        assert_eq!(path.file_stem().unwrap().to_str().unwrap(), sop);
        let series_dir = path.parent().unwrap().parent().unwrap();
        assert_eq!(
            series_dir.file_name().unwrap().to_str().unwrap(),
            uid_at(&file, tags::SERIES_INSTANCE_UID)
        );
        assert_eq!(uid_at(&file, tags::STUDY_INSTANCE_UID), report.study_uid);
        let source = &sources[&sop];
        check_against_profile(source, &file, &expect, 0, &mut failures);

        // Independent checks that do not rely on the action table.
        assert!(file.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).is_none());
        assert!(strings(file.get(tags::PATIENT_NAME).unwrap()).iter().all(String::is_empty));
        assert!(file.get(tags::PATIENT_BIRTH_DATE).is_none_or(|e| strings(e).iter().all(String::is_empty)));
        assert_eq!(strings(file.get(tags::PATIENT_ID).unwrap()), std::slice::from_ref(&report.pseudonym));
        assert_eq!(strings(file.get(tags::PATIENT_AGE).unwrap()), ["008Y"]);
        assert_eq!(strings(file.get(tags::PATIENT_SEX).unwrap()), ["F"]);
        assert_eq!(strings(file.get(tags::PATIENT_IDENTITY_REMOVED).unwrap()), ["YES"]);
        assert_eq!(
            strings(file.get(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).unwrap()),
            ["MODIFIED"]
        );
        assert_eq!(
            strings(file.get(tags::STUDY_DATE).unwrap()),
            [deidentify::shift_date(STUDY_DATE, shift).unwrap()]
        );
        assert_ne!(strings(file.get(tags::STUDY_DATE).unwrap()), [STUDY_DATE]);
        for tag in [tags::INSTITUTION_ADDRESS, tags::PERFORMING_PHYSICIAN_NAME] {
            assert!(file.get(tag).is_none(), "{tag}");
        }
        // Descriptors stay under the Clean Descriptors option, without the patient's identities.
        for tag in [tags::IMAGE_COMMENTS, tags::STUDY_DESCRIPTION] {
            let text = file.get(tag).map(|e| strings(e).join(" ")).unwrap_or_default().to_uppercase();
            for identity in ["ROSSI", "MARIO", CODICE_FISCALE] {
                assert!(!text.contains(identity), "{tag} keeps an identity: {text}");
            }
        }
        assert_eq!(
            file.get(tags::PIXEL_DATA).unwrap().value().to_bytes().unwrap(),
            source.get(tags::PIXEL_DATA).unwrap().value().to_bytes().unwrap()
        );

        sop_uids.insert(sop);
        frames_of_reference.insert(uid_at(&file, tags::FRAME_OF_REFERENCE_UID));
        if let Some(Value::Sequence(sequence)) = file.get(tags::REFERENCED_IMAGE_SEQUENCE).map(|e| e.value())
        {
            for item in sequence.items() {
                references.push(uid_at(item, tags::REFERENCED_SOP_INSTANCE_UID));
                assert_eq!(strings(item.get(tags::PERSON_NAME).unwrap()), ["DEIDENTIFIED"]);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(references.len(), 5);
    for reference in &references {
        assert!(sop_uids.contains(reference), "reference {reference} points to no stored instance");
    }
    assert_eq!(frames_of_reference.len(), 1);
    assert!(frames_of_reference.iter().all(|uid| uid.starts_with("2.25.")));

    // Volumes and sidecars are there, with the pseudonym and no identity.
    for series in &report.series {
        let dir = options.data_dir.join(&series.path);
        let sidecar: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("sidecar.json")).unwrap()).unwrap();
        assert_eq!(sidecar["Pseudonym"], report.pseudonym.as_str());
        assert_eq!(sidecar["MagneticFieldStrength"], 3.0);
        assert!((sidecar["AgeYears"].as_f64().unwrap() - 8.1).abs() < 0.05);
        let volume = pedinorm::formats::nifti::read_image(&dir.join("volume.nii.gz")).unwrap();
        assert_eq!(volume.grid().dims()[..2], [5, 6]);
    }
    let index = StudyIndex::open_existing(&options.data_dir).unwrap().unwrap();
    let studies = index.studies().unwrap();
    assert_eq!(studies.len(), 1);
    assert_eq!(studies[0].pseudonym, report.pseudonym);
    assert_eq!(index.series_count().unwrap(), 2);
}

#[test]
fn identity_never_reaches_any_stored_byte_and_reingest_is_stable() {
    let fixture = fixture();
    let spec = StudySpec::default();
    let input = study(&fixture, "in", &spec);
    let first = ingest_study(std::slice::from_ref(&input), &options(&fixture, "data1", Database::B)).unwrap();
    let second =
        ingest_study(std::slice::from_ref(&input), &options(&fixture, "data2", Database::B)).unwrap();
    assert_eq!(first.study_uid, second.study_uid);
    assert_eq!(first.pseudonym, second.pseudonym);

    let one = snapshot(&fixture.root.join("data1").join("B"));
    let two = snapshot(&fixture.root.join("data2").join("B"));
    assert!(!one.is_empty());
    assert_eq!(one.keys().collect::<Vec<_>>(), two.keys().collect::<Vec<_>>());
    for (path, bytes) in &one {
        assert!(two[path] == *bytes, "{} differs between runs", path.display());
    }

    let forbidden: Vec<&[u8]> = vec![
        CODICE_FISCALE.as_bytes(),
        b"ROSSI",
        b"VERDI",
        b"BIANCHI",
        b"NERI^",
        HOSPITAL_ID.as_bytes(),
        BIRTH_DATE.as_bytes(),
        STUDY_DATE.as_bytes(),
        INSTITUTION.as_bytes(),
        b"Via Roma",
        b"Via Verdi",
        b"ACC99812",
        b"SN-40123",
        b"1.2.826.0.1.3680043.9.7777",
    ];
    for (path, bytes) in snapshot(&fixture.root.join("data1")) {
        let mut contents = bytes.clone();
        if path.to_string_lossy().ends_with(".gz") {
            contents = gunzip(&bytes);
        }
        for needle in &forbidden {
            assert!(
                !contains(&contents, needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn ingesting_twice_adds_nothing() {
    let fixture = fixture();
    let input = study(&fixture, "in", &StudySpec::default());
    let options = options(&fixture, "data", Database::B);
    let first = ingest_study(std::slice::from_ref(&input), &options).unwrap();
    let before = snapshot(&options.data_dir);
    let index_before = before.keys().filter(|p| !p.ends_with("index.sqlite")).count();
    let again = ingest_study(std::slice::from_ref(&input), &options).unwrap();
    assert_eq!(again.status, IngestStatus::AlreadyIngested);
    assert_eq!(again.study_uid, first.study_uid);
    assert!(again.series.iter().all(|s| !s.newly_stored));
    let after = snapshot(&options.data_dir);
    assert_eq!(after.keys().filter(|p| !p.ends_with("index.sqlite")).count(), index_before);
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
    let index = StudyIndex::open_existing(&options.data_dir).unwrap().unwrap();
    assert_eq!(index.studies().unwrap().len(), 1);
    assert_eq!(index.series_count().unwrap(), 2);

    // The same study offered to the other database is refused, not duplicated.
    let other = IngestOptions { database: Database::A(CaseClass::A1), ..options.clone() };
    assert!(matches!(
        ingest_study(std::slice::from_ref(&input), &other),
        Err(IngestError::OtherDatabase { .. })
    ));

    // A later delivery of the same study with one more series adds only that series.
    let mut bigger = StudySpec::default();
    bigger.series.push((7, "FLAIR AX".into(), 3));
    let input2 = study(&fixture, "in2", &bigger);
    let extended = ingest_study(std::slice::from_ref(&input2), &options).unwrap();
    assert_eq!(extended.status, IngestStatus::SeriesAdded);
    assert_eq!(extended.series.iter().filter(|s| s.newly_stored).count(), 1);
    assert_eq!(StudyIndex::open_existing(&options.data_dir).unwrap().unwrap().series_count().unwrap(), 3);
    let final_snapshot = snapshot(&options.data_dir);
    for (path, bytes) in &before {
        if !path.ends_with("index.sqlite") {
            assert!(final_snapshot[path] == *bytes, "{} changed", path.display());
        }
    }
}

#[test]
fn a_refused_study_leaves_the_data_dir_unchanged() {
    let fixture = fixture();
    let options = options(&fixture, "data", Database::B);
    // A fresh data dir is not even created.
    let spec_1_5t = StudySpec { study_number: 2, field_strength: 1.5, ..StudySpec::default() };
    let refused = study(&fixture, "refused", &spec_1_5t);
    assert_eq!(
        refusal_codes(ingest_study(std::slice::from_ref(&refused), &options)),
        ["field-strength-not-accepted", "field-strength-not-accepted"]
    );
    assert!(!options.data_dir.exists());

    // An existing store is left byte for byte as it was.
    let accepted = study(&fixture, "accepted", &StudySpec::default());
    ingest_study(std::slice::from_ref(&accepted), &options).unwrap();
    let before = snapshot(&options.data_dir);
    assert!(ingest_study(std::slice::from_ref(&refused), &options).is_err());
    assert_eq!(snapshot(&options.data_dir), before);
}

#[test]
fn each_admission_rule_has_a_named_reason() {
    let fixture = fixture();
    let b = options(&fixture, "data", Database::B);
    let one_series = vec![(3, "T1 MPRAGE SAG".to_owned(), 3)];
    let base = StudySpec { series: one_series, ..StudySpec::default() };
    let cases: Vec<(StudySpec, Vec<&str>)> = vec![
        // A CT series is no T1w or T2w either.
        (StudySpec { modality: "CT".into(), ..base.clone() }, vec!["not-mr", "no-t1w-or-t2w"]),
        (StudySpec { body_part: Some("KNEE".into()), ..base.clone() }, vec!["not-brain"]),
        (StudySpec { field_strength: 1.5, ..base.clone() }, vec!["field-strength-not-accepted"]),
        (
            StudySpec {
                birth_date: Some("20000101".into()),
                patient_age: Some("023Y".into()),
                ..base.clone()
            },
            vec!["age-out-of-range"],
        ),
        (StudySpec { birth_date: None, patient_age: None, ..base.clone() }, vec!["age-unknown"]),
        (StudySpec { burned_in: true, ..base.clone() }, vec!["burned-in-annotation"]),
        (StudySpec { national_id: None, ..base.clone() }, vec!["unlinked"]),
        (
            StudySpec { national_id: Some("RSSMRA85T10A562T".into()), ..base.clone() },
            vec!["invalid-identifier"],
        ),
        (
            StudySpec {
                modality: "CT".into(),
                field_strength: 1.5,
                birth_date: None,
                patient_age: None,
                ..base.clone()
            },
            vec!["not-mr", "field-strength-not-accepted", "no-t1w-or-t2w", "age-unknown"],
        ),
    ];
    for (number, (mut spec, expected)) in cases.into_iter().enumerate() {
        spec.study_number = 100 + number as u32;
        let input = study(&fixture, &format!("case{number}"), &spec);
        let result = ingest_study(std::slice::from_ref(&input), &b);
        if let Err(IngestError::Refused(reasons)) = &result {
            for reason in reasons {
                assert!(!reason.to_string().contains("RSSMRA"), "{reason}");
            }
        }
        assert_eq!(refusal_codes(result), expected, "case {number}");
    }
    assert!(!b.data_dir.exists());

    // Unlinked studies pass when allowed, under a pseudonym that is not the national one.
    let unlinked_spec = StudySpec { study_number: 300, national_id: None, ..base.clone() };
    let unlinked = study(&fixture, "unlinked", &unlinked_spec);
    let allowed = IngestOptions { allow_unlinked: true, ..b.clone() };
    let report = ingest_study(std::slice::from_ref(&unlinked), &allowed).unwrap();
    assert!(!report.linked);

    // An explicit identifier wins over the files.
    let explicit =
        IngestOptions { identifier: IdentifierSource::Explicit("mrt mtt 25d09 f205z".into()), ..b.clone() };
    let spec = StudySpec { study_number: 301, ..base.clone() };
    let report = ingest_study(&[study(&fixture, "explicit", &spec)], &explicit).unwrap();
    assert!(report.linked);

    // Database A takes 1.5 T studies of any age with a class.
    let a = options(&fixture, "data-a", Database::A(CaseClass::A2));
    let spec = StudySpec {
        study_number: 302,
        field_strength: 1.5,
        patient_age: Some("030Y".into()),
        birth_date: None,
        ..base
    };
    let report = ingest_study(&[study(&fixture, "case-a", &spec)], &a).unwrap();
    assert_eq!(report.database, "A");
    assert_eq!(report.class.as_deref(), Some("A2"));
    assert!(a.data_dir.join("A").join(&report.pseudonym).join(&report.study_uid).is_dir());
}

/// Timing of a study of realistic size (a 176-slice 256×256 T1 and a 40-slice 384×384 T2):
/// `cargo test --test ingest_study -- --ignored --nocapture realistic_study_timing`.
#[test]
#[ignore = "measurement, run on demand"]
fn realistic_study_timing() {
    let fixture = fixture();
    let spec = StudySpec {
        series: vec![(3, "T1 MPRAGE SAG".into(), 176), (5, "T2 TSE AX".into(), 40)],
        matrix: (256, 256),
        ..StudySpec::default()
    };
    let input = fixture.root.join("in");
    write_study(&input.join("t1"), &StudySpec { series: vec![spec.series[0].clone()], ..spec.clone() });
    write_study(
        &input.join("t2"),
        &StudySpec { series: vec![spec.series[1].clone()], matrix: (384, 384), ..spec.clone() },
    );
    let options = options(&fixture, "data", Database::B);
    let start = std::time::Instant::now();
    let report = ingest_study(std::slice::from_ref(&input), &options).unwrap();
    let first = start.elapsed();
    assert_eq!(report.status, IngestStatus::Ingested);
    let start = std::time::Instant::now();
    let again = ingest_study(std::slice::from_ref(&input), &options).unwrap();
    let second = start.elapsed();
    assert_eq!(again.status, IngestStatus::AlreadyIngested);
    let stored: u64 = snapshot(&options.data_dir).values().map(|b| b.len() as u64).sum();
    println!(
        "216 files (176×256×256 + 40×384×384): ingest {:.2} s, re-ingest (already ingested) {:.2} s, stored {:.1} MB, threads {}",
        first.as_secs_f64(),
        second.as_secs_f64(),
        stored as f64 / 1e6,
        rayon::current_num_threads()
    );
}

#[test]
fn a_series_that_cannot_be_converted_is_skipped_and_reported() {
    let fixture = fixture();
    let input = study(&fixture, "in", &StudySpec::default());
    // A missing slice makes series 3 irregular (spacing 2.4 mm then 1.2 mm).
    std::fs::remove_file(input.join("series3").join("IM0002")).unwrap();
    std::fs::write(input.join("notes.txt"), b"not DICOM").unwrap();
    let options = options(&fixture, "data", Database::B);
    let report = ingest_study(std::slice::from_ref(&input), &options).unwrap();
    assert_eq!(report.series.len(), 1);
    assert_eq!(report.skipped_series.len(), 1);
    assert_eq!(report.skipped_series[0].series, "series 3");
    assert_eq!(report.skipped_files, 1);
    assert_eq!(dicom_files(&options.data_dir).len(), 3);

    // When no series converts, the conversion error is returned and nothing is stored.
    let broken = StudySpec { study_number: 2, series: vec![(3, "T1".into(), 4)], ..StudySpec::default() };
    let input = study(&fixture, "broken", &broken);
    std::fs::remove_file(input.join("series3").join("IM0002")).unwrap();
    let before = snapshot(&options.data_dir);
    let error = ingest_study(std::slice::from_ref(&input), &options).unwrap_err();
    assert!(matches!(error, IngestError::Dicom(_)), "{error}");
    assert_eq!(snapshot(&options.data_dir), before);
}

#[test]
fn a_database_b_study_whose_only_t1w_does_not_convert_is_refused_with_each_series() {
    let fixture = fixture();
    // Series 3 is the default MPRAGE; series 5 a 3 T FLAIR.
    let flair = [
        (tags::SCANNING_SEQUENCE, VR::CS, "SE\\IR"),
        (tags::SEQUENCE_VARIANT, VR::CS, "SK\\SP\\MP"),
        (tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
        (tags::REPETITION_TIME, VR::DS, "9000"),
        (tags::ECHO_TIME, VR::DS, "81"),
        (tags::INVERSION_TIME, VR::DS, "2500"),
    ]
    .into_iter()
    .map(|(tag, vr, value)| (5, tag, vr, value.to_owned()))
    .collect();
    let spec = StudySpec {
        study_number: 40,
        series: vec![(3, "T1 MPRAGE SAG".into(), 4), (5, "FLAIR AX".into(), 3)],
        series_tags: flair,
        ..StudySpec::default()
    };
    let input = study(&fixture, "in", &spec);
    // A missing slice makes series 3 irregular: it cannot become a volume.
    std::fs::remove_file(input.join("series3").join("IM0002")).unwrap();
    let options = options(&fixture, "data", Database::B);
    let error = ingest_study(std::slice::from_ref(&input), &options).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("no-t1w-or-t2w")
            && text.contains("series 3 T1w (prepared-gradient-echo) not converted")
            && text.contains("series 5 FLAIR (fluid-attenuated-inversion)"),
        "{text}"
    );
    assert!(snapshot(&options.data_dir).is_empty(), "nothing is left behind");
    // Database A takes the FLAIR alone.
    let a = IngestOptions { database: Database::A(CaseClass::A2), ..options };
    let report = ingest_study(std::slice::from_ref(&input), &a).unwrap();
    assert_eq!(report.series.iter().map(|s| s.series_class.as_deref()).collect::<Vec<_>>(), [Some("FLAIR")]);
}
