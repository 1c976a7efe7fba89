//! Against a real Orthanc (runs when `PEDINORM_ORTHANC_URL` is set, e.g. after
//! `eval "$(scripts/services/orthanc.sh start)"`): push a study into Orthanc, import it
//! through the service by StudyInstanceUID, and store a derived series back (STOW-RS) that
//! joins the original study. When a normative database is installed for the service
//! (`PEDINORM_SERVICE_NORMDB`), a deviation map is computed and its z-map stored back.

mod service_common;

use pedinorm::service::config::PacsConfig;
use pedinorm::service::pacs::PacsClient;
use serde_json::{Value, json};
use service_common::*;
use std::time::Duration;

fn pacs_config() -> Option<PacsConfig> {
    let url = std::env::var("PEDINORM_ORTHANC_URL").ok().filter(|u| !u.is_empty())?;
    Some(PacsConfig {
        centre: "C1".into(),
        url,
        username: std::env::var("PEDINORM_ORTHANC_USER").ok(),
        password: std::env::var("PEDINORM_ORTHANC_PASSWORD").ok(),
        password_file: std::env::var("PEDINORM_ORTHANC_PASSWORD_FILE").ok().map(Into::into),
        dicomweb_root: "/dicom-web".into(),
        timeout_seconds: 30,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_orthanc_and_store_back() {
    let Some(pacs) = pacs_config() else {
        eprintln!("PEDINORM_ORTHANC_URL not set: Orthanc test not run");
        return;
    };
    // Wrong credentials are refused by Orthanc (authentication is on).
    let wrong = PacsConfig { password: Some("wrong".into()), password_file: None, ..pacs.clone() };
    let error = tokio::task::spawn_blocking(move || PacsClient::new(&wrong).unwrap().system().unwrap_err())
        .await
        .unwrap();
    assert!(error.to_string().contains("401"), "{error}");

    let (study_uid, files) = synthetic_study(4);
    let push = pacs.clone();
    tokio::task::spawn_blocking(move || {
        let client = PacsClient::new(&push).unwrap();
        for file in files {
            client.upload_instance(file).unwrap();
        }
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.pacs = vec![pacs.clone()];
    if let Ok(normdb) = std::env::var("PEDINORM_SERVICE_NORMDB") {
        config.normdb = Some(normdb.into());
    }
    let has_normdb = config.normdb_path().is_file();
    let radiologist = add_user(dir.path(), "dr rad", "radiologist", Some("C1"));
    let server = TestServer::start(config).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();

    // Unknown centre and malformed UID are refused before any job.
    let response = client
        .post(format!("{base}/api/v1/studies/import"))
        .bearer_auth(&radiologist)
        .json(&json!({ "centre": "C9", "study_instance_uid": study_uid, "database": "A" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = client
        .post(format!("{base}/api/v1/studies/import"))
        .bearer_auth(&radiologist)
        .json(&json!({ "centre": "C1", "study_instance_uid": "1.2/../x", "database": "A" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = client
        .post(format!("{base}/api/v1/studies/import"))
        .bearer_auth(&radiologist)
        .json(&json!({
            "centre": "C1", "study_instance_uid": study_uid, "database": "A",
            "consent": { "database_a": true, "database_b": false, "research_use": true, "date": "2024-02-02" }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let submitted: Value = response.json().await.unwrap();
    let study_id = submitted["study"]["id"].as_i64().unwrap();
    let job =
        wait_job(&client, &base, &radiologist, submitted["job"].as_i64().unwrap(), Duration::from_secs(60))
            .await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["admitted"], true, "{job}");
    let study: Value = client
        .get(format!("{base}/api/v1/studies/{study_id}"))
        .bearer_auth(&radiologist)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(study["source"], "pacs");
    assert_eq!(study["files"], 4);
    let text = study.to_string();
    assert!(!text.contains("Rossiniano") && !text.contains(&study_uid), "no identities in responses: {text}");

    // A study the PACS does not hold is refused by name.
    let response = client
        .post(format!("{base}/api/v1/studies/import"))
        .bearer_auth(&radiologist)
        .json(&json!({
            "centre": "C1", "study_instance_uid": uid(), "database": "A",
            "consent": { "database_a": true, "database_b": false, "research_use": true, "date": "2024-02-02" }
        }))
        .send()
        .await
        .unwrap();
    let missing: Value = response.json().await.unwrap();
    let job =
        wait_job(&client, &base, &radiologist, missing["job"].as_i64().unwrap(), Duration::from_secs(30))
            .await;
    assert_eq!(job["result"]["admitted"], false, "{job}");
    assert!(job["result"]["reasons"][0].as_str().unwrap().starts_with("pacs-study-not-found"), "{job}");

    if has_normdb {
        // Full path: case → deviation job → store-back job → a new series in the study.
        let case: Value = client
            .post(format!("{base}/api/v1/cases"))
            .bearer_auth(&radiologist)
            .json(&json!({ "study_id": study_id }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let case_id = case["id"].as_i64().unwrap();
        let accepted: Value = client
            .post(format!("{base}/api/v1/cases/{case_id}/deviation"))
            .bearer_auth(&radiologist)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let deviation = accepted["job"].as_i64().unwrap();
        let job = wait_job(&client, &base, &radiologist, deviation, Duration::from_secs(300)).await;
        assert_eq!(job["state"], "done", "{job}");
        let accepted: Value = client
            .post(format!("{base}/api/v1/jobs/{deviation}/store-back"))
            .bearer_auth(&radiologist)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job = wait_job(
            &client,
            &base,
            &radiologist,
            accepted["job"].as_i64().unwrap(),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(job["state"], "done", "{job}");
    } else {
        // Without a normative database the store-back path is exercised directly: a derived
        // series built by the service from a map on a grid of the study joins the study.
        let grid =
            pedinorm_registration::Grid::axis_aligned([16, 16, 4], [1.0, 1.0, 2.0], [8.0, 8.0, 0.0]).unwrap();
        let data =
            ndarray::Array3::from_shape_fn((16, 16, 4), |(i, j, k)| (i as f32 - j as f32) * 0.25 + k as f32);
        let image = pedinorm_registration::Image::new(data, grid).unwrap();
        let pacs = pacs.clone();
        let study_uid_1 = study_uid.clone();
        let series_uid = tokio::task::spawn_blocking(move || {
            let client = PacsClient::new(&pacs).unwrap();
            let found = client.find_study(&study_uid_1).unwrap();
            assert_eq!(found.len(), 1);
            let objects =
                pedinorm::service::derived::derived_series(&image, &found[0], "pedinorm test z-map").unwrap();
            client.store(&objects).unwrap();
            pedinorm::service::derived::series_uid_of(&objects[0]).unwrap()
        })
        .await
        .unwrap();
        let pacs = pacs_config().unwrap();
        let study_uid_2 = study_uid.clone();
        let series = tokio::task::spawn_blocking(move || {
            PacsClient::new(&pacs).unwrap().find_series(&study_uid_2).unwrap()
        })
        .await
        .unwrap();
        let uids: Vec<String> =
            series.iter().filter_map(|s| s["0020000E"]["Value"][0].as_str().map(str::to_string)).collect();
        assert!(uids.contains(&series_uid), "derived series not in the study: {uids:?}");
        assert_eq!(uids.len(), 2);
    }
    server.stop().await;
    assert_eq!(files_containing(dir.path(), "Rossiniano"), Vec::<String>::new());
}
