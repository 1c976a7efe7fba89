//! Against a real Orthanc (runs when `PEDINORM_ORTHANC_URL` is set, e.g. after
//! `eval "$(scripts/services/orthanc.sh start)"`), end to end: a synthetic case (phantom brain
//! at 4 mm with a strong white-matter lesion) is pushed into Orthanc as an identified DICOM
//! series; the service imports it by StudyInstanceUID (QIDO + WADO-RS) and ingests it; a
//! deviation map is computed by a service job against a small normative database built here;
//! the results are downloaded; the DICOM results (SEG of the clusters, z-map series) are stored
//! back (STOW-RS), found by QIDO in the original study, retrieved (WADO-RS) and read back by
//! pydicom and highdicom (`tests/dicom_results_check.py`: the SEG's frames set exactly the
//! voxels of the NIfTI cluster map) and checked by dciodvfy.

mod service_common;

use pedinorm::service::config::PacsConfig;
use pedinorm::service::pacs::PacsClient;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_common::*;
use std::time::Duration;

/// Runs `tests/dicom_results_check.py` on result objects (against the source series and the
/// deviation outputs) and returns its summary; dciodvfy must be installed under `CI=true`.
fn check_dicom_results(
    results: &std::path::Path,
    source: &std::path::Path,
    outputs: &std::path::Path,
) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dciodvfy = std::process::Command::new("dciodvfy").arg("-").output().is_ok();
    service_common::component::component_available(
        dciodvfy,
        "dciodvfy (Debian dicom3tools) is not installed",
    );
    let mut command = std::process::Command::new(root.join(".data/venv/bin/python"));
    command
        .arg(root.join("tests/dicom_results_check.py"))
        .arg("--results")
        .arg(results)
        .arg("--source")
        .arg(source);
    command
        .arg("--clusters")
        .arg(outputs.join("clusters_native.nii.gz"))
        .arg("--report")
        .arg(outputs.join("report.json"));
    if dciodvfy {
        command.arg("--strict");
    }
    let output = command.output().expect("the project venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&stdout).unwrap()
}

/// Deletes a series from Orthanc through its REST API (`/tools/lookup`, `DELETE /series/ID`):
/// what a PACS administrator does, which the service itself never does.
fn orthanc_delete_series(pacs: &PacsConfig, series_uid: &str) {
    let password = pacs.password.clone().or_else(|| {
        let file = pacs.password_file.as_ref()?;
        std::fs::read_to_string(file).ok().map(|p| p.lines().next().unwrap_or("").to_string())
    });
    let client = reqwest::blocking::Client::new();
    let authorized = |builder: reqwest::blocking::RequestBuilder| match &pacs.username {
        Some(user) => builder.basic_auth(user, password.as_deref()),
        None => builder,
    };
    let base = pacs.url.trim_end_matches('/');
    let found: Value = authorized(client.post(format!("{base}/tools/lookup")).body(series_uid.to_string()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let series =
        found.as_array().unwrap().iter().find(|f| f["Type"] == "Series").expect("the series is found");
    let response = authorized(client.delete(format!("{base}/series/{}", series["ID"].as_str().unwrap())))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Runs a PACS call off the async executor.
async fn with_pacs<T: Send + 'static>(
    pacs: &PacsConfig,
    work: impl FnOnce(PacsClient) -> T + Send + 'static,
) -> T {
    let pacs = pacs.clone();
    tokio::task::spawn_blocking(move || work(PacsClient::new(&pacs).unwrap())).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_study_to_deviation_map_and_derived_series_back() {
    let Some(pacs) = orthanc_for_test("C1") else { return };
    // Wrong credentials are refused by Orthanc (authentication is on).
    let wrong = PacsConfig { password: Some("wrong".into()), password_file: None, ..pacs.clone() };
    let error = with_pacs(&wrong, |client| client.system().unwrap_err()).await;
    assert!(error.to_string().contains("401"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.pacs = vec![pacs.clone()];
    config.national_id_issuer = Some(SYNTHETIC_ISSUER.into());
    config.compute = quick_compute();
    // The normative database (8 normals) and the case, built from the phantom.
    let normdb = config.normdb_path();
    let (db, case_subject) = tokio::task::spawn_blocking(move || {
        let generator = phantom_generator();
        let db = phantom_normdb(&generator, 8, &normdb);
        (db, phantom_subject(&generator, 10.3, true, 7, true))
    })
    .await
    .unwrap();
    assert!(db.calibration.is_some());
    let slices = case_subject.image.grid().dims()[2];
    let (study_uid, files) = subject_dicom(&case_subject, 1);
    // Identified copies for the read-back checks, outside the service's data directory.
    let identified = tempfile::tempdir().unwrap();
    let source_dir = identified.path().join("source_series");
    std::fs::create_dir_all(&source_dir).unwrap();
    for (k, bytes) in files.iter().enumerate() {
        std::fs::write(source_dir.join(format!("IM{:04}.dcm", k + 1)), bytes).unwrap();
    }
    with_pacs(&pacs, move |client| {
        for file in files {
            client.upload_instance(file).unwrap();
        }
    })
    .await;

    let radiologist = add_user(dir.path(), "dr rad", "radiologist", Some("C1"));
    let elsewhere = add_user(dir.path(), "dr far", "radiologist", Some("C2"));
    let server = TestServer::start(config).await;
    let api = Api::new(&server.base);

    // Unknown centre and malformed UID are refused before any job.
    let import = |centre: &str, uid: &str| {
        json!({
            "centre": centre, "study_instance_uid": uid, "database": "A",
            "consent": { "database_a": true, "database_b": false, "research_use": true, "date": "2024-02-02" }
        })
    };
    let (status, unknown) = api.post(&radiologist, "/api/v1/studies/import", &import("C9", &study_uid)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another centre's PACS answers as one that is not configured: a study belongs to the centre
    // that submits it, so a radiologist of C2 cannot pull C1's patients into C2.
    let (status, foreign) = api.post(&elsewhere, "/api/v1/studies/import", &import("C1", &study_uid)).await;
    assert_eq!((status, &foreign["message"]), (StatusCode::NOT_FOUND, &unknown["message"]), "{foreign}");
    let (status, _) = api.post(&radiologist, "/api/v1/studies/import", &import("C1", "1.2/../x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Import and ingest: de-identified, admitted to database A as a case study.
    let (status, submitted) =
        api.post(&radiologist, "/api/v1/studies/import", &import("C1", &study_uid)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let study_id = submitted["study"]["id"].as_i64().unwrap();
    let job = api.wait_job(&radiologist, submitted["job"].as_i64().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["admitted"], true, "{job}");
    let (_, study) = api.get(&radiologist, &format!("/api/v1/studies/{study_id}")).await;
    assert_eq!(study["source"], "pacs");
    assert_eq!(study["files"], slices);
    assert_eq!(study["metadata"]["sex"], "F", "{study}");
    assert!((study["metadata"]["age_years"].as_f64().unwrap() - 10.3).abs() < 0.01, "{study}");
    let text = study.to_string();
    assert!(!text.contains("SYNTHETIC^") && !text.contains(&study_uid), "no identities in responses: {text}");

    // A study the PACS does not hold is refused by name.
    let job = api
        .run_job(&radiologist, "/api/v1/studies/import", &import("C1", &uid()), Duration::from_secs(30))
        .await;
    assert_eq!(job["result"]["admitted"], false, "{job}");
    assert!(job["result"]["reasons"][0].as_str().unwrap().starts_with("pacs-study-not-found"), "{job}");

    // Case → deviation job against the normative database.
    let (status, case) = api.post(&radiologist, "/api/v1/cases", &json!({ "study_id": study_id })).await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
    let case_id = case["id"].as_i64().unwrap();
    let deviation = api
        .run_job(
            &radiologist,
            &format!("/api/v1/cases/{case_id}/deviation"),
            &json!({}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(deviation["state"], "done", "{deviation}");
    assert_eq!(deviation["result"]["summary"]["bracket"], "8-13y", "{deviation}");
    let deviation_id = deviation["id"].as_i64().unwrap();

    // Results: listed and downloadable.
    let (_, outputs) = api.get(&radiologist, &format!("/api/v1/jobs/{deviation_id}/outputs")).await;
    let names: Vec<&str> = outputs.as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    for name in pedinorm::pipeline::deviation::OUTPUT_FILES {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("montage") && n.ends_with(".png")), "{names:?}");
    let (status, report) =
        api.download(&radiologist, &format!("/api/v1/jobs/{deviation_id}/outputs/report.json")).await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert!(
        report["clusters"].as_array().unwrap().iter().any(|c| c["significant"] == true),
        "the strong lesion gives a significant cluster: {report}"
    );
    let (status, z_map) = api
        .download(&radiologist, &format!("/api/v1/jobs/{deviation_id}/outputs/intensity_z_native.nii.gz"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&z_map[..2], &[0x1f, 0x8b], "a gzip-compressed NIfTI");

    // Store-back: the results join the original study (STOW-RS) — the clusters as a SEG on
    // the case's series, the z-maps as derived MR series — which QIDO then finds there.
    let (store_back_path, no_body) = (format!("/api/v1/jobs/{deviation_id}/store-back"), json!({}));
    let store_back_job = || api.run_job(&radiologist, &store_back_path, &no_body, Duration::from_secs(60));
    let store_back = store_back_job().await;
    assert_eq!(store_back["state"], "done", "{store_back}");
    let stored = store_back["result"]["series"].as_array().unwrap().clone();
    let kinds: Vec<&str> = stored.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["seg", "sr", "report_pdf", "zmap_intensity", "zmap_logjac", "fused_intensity", "fused_logjac"],
        "{store_back}"
    );
    assert_eq!(store_back["result"]["instances"], 3 + 4 * slices, "{store_back}");
    let study_uid_query = study_uid.clone();
    let pacs_for_delete = pacs.clone();
    let series = with_pacs(&pacs, move |client| client.find_series(&study_uid_query).unwrap()).await;
    let uids: Vec<&str> = series.iter().filter_map(|s| s["0020000E"]["Value"][0].as_str()).collect();
    assert_eq!(uids.len(), 1 + stored.len(), "{uids:?}");
    for entry in &stored {
        let uid = entry["series_instance_uid"].as_str().unwrap();
        let found = series.iter().find(|s| s["0020000E"]["Value"][0] == uid);
        let found = found.unwrap_or_else(|| panic!("{} not in the study: {uids:?}", entry["kind"]));
        let modality = match entry["kind"].as_str().unwrap() {
            "seg" => "SEG",
            "sr" => "SR",
            "report_pdf" => "DOC",
            kind if kind.starts_with("fused") => "OT",
            _ => "MR",
        };
        assert_eq!(found["00080060"]["Value"][0], modality, "{found}");
        if let Some(count) = found["00201209"]["Value"][0].as_i64() {
            assert_eq!(count, entry["instances"].as_i64().unwrap(), "{found}");
        }
    }

    // Read back from the PACS (WADO-RS) and checked with pydicom, highdicom and dciodvfy
    // against the job's NIfTI cluster map.
    let results_dir = identified.path().join("from_pacs");
    std::fs::create_dir_all(&results_dir).unwrap();
    let study_uid_query = study_uid.clone();
    let objects = with_pacs(&pacs, move |client| client.retrieve_study(&study_uid_query).unwrap()).await;
    for (index, bytes) in objects.iter().enumerate() {
        std::fs::write(results_dir.join(format!("object{index:04}.dcm")), bytes).unwrap();
    }
    let outputs_dir = identified.path().join("outputs");
    std::fs::create_dir_all(&outputs_dir).unwrap();
    for name in ["clusters_native.nii.gz", "report.json"] {
        let (status, bytes) =
            api.download(&radiologist, &format!("/api/v1/jobs/{deviation_id}/outputs/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        std::fs::write(outputs_dir.join(name), bytes).unwrap();
    }
    let summary = check_dicom_results(&results_dir, &source_dir, &outputs_dir);
    assert_eq!(summary["objects"].as_u64().unwrap() as usize, 3 + 4 * slices, "{summary}");
    assert!(!summary["sr"]["cluster_volumes_ml"].as_object().unwrap().is_empty(), "{summary}");
    assert_eq!(store_back["result"]["source_series"], "found", "{store_back}");

    // The case's series is gone from the PACS: a second store-back writes the scored case image
    // into the study as a new series and puts the results on it.
    let original = uids.iter().find(|u| !stored.iter().any(|s| s["series_instance_uid"] == **u)).unwrap();
    let original = original.to_string();
    tokio::task::spawn_blocking(move || orthanc_delete_series(&pacs_for_delete, &original)).await.unwrap();
    let again = store_back_job().await;
    assert_eq!(again["state"], "done", "{again}");
    assert_eq!(again["result"]["source_series"], "written", "{again}");
    let written = again["result"]["series"].as_array().unwrap().clone();
    assert_eq!(written[0]["kind"], "source", "{again}");
    assert_eq!(written[0]["instances"], slices, "{again}");
    assert_eq!(again["result"]["instances"], slices + 3 + 4 * slices, "{again}");
    let study_uid_query = study_uid.clone();
    let objects = with_pacs(&pacs, move |client| client.retrieve_study(&study_uid_query).unwrap()).await;
    let (results_again, source_again) =
        (identified.path().join("from_pacs_again"), identified.path().join("written_source"));
    for dir in [&results_again, &source_again] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let source_uid = written[0]["series_instance_uid"].as_str().unwrap();
    for (index, bytes) in objects.iter().enumerate() {
        let object = dicom_object::from_reader(&bytes[128..]).unwrap();
        let series_uid = object.element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID).unwrap();
        let series_uid = series_uid.to_str().unwrap();
        let series_uid = series_uid.trim_end_matches('\0');
        let folder = if series_uid == source_uid {
            &source_again
        } else if written.iter().any(|s| s["series_instance_uid"] == series_uid) {
            &results_again
        } else {
            continue;
        };
        std::fs::write(folder.join(format!("object{index:04}.dcm")), bytes).unwrap();
    }
    let summary = check_dicom_results(&results_again, &source_again, &outputs_dir);
    assert_eq!(summary["objects"].as_u64().unwrap() as usize, 3 + 4 * slices, "{summary}");

    server.stop().await;
    assert_eq!(files_containing(dir.path(), "SYNTHETIC^"), Vec::<String>::new());
}
