//! Two PACS, one per centre (runs when `PEDINORM_ORTHANC_URL` is set, e.g. after
//! `eval "$(scripts/services/orthanc.sh start)"`): the test starts a second Orthanc of its own
//! with the same script, pushes a study into that one only, and the service imports it from
//! the centre that holds it; asked of the other centre, the import is refused by name.

mod service_common;

use pedinorm::service::config::PacsConfig;
use pedinorm::service::pacs::PacsClient;
use reqwest::StatusCode;
use serde_json::json;
use service_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services/orthanc.sh");

/// A second Orthanc under a folder of its own; stopped when dropped.
struct SecondOrthanc {
    dir: PathBuf,
    config: PacsConfig,
}

impl SecondOrthanc {
    fn start(dir: &Path, centre: &str) -> SecondOrthanc {
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (http_port, dicom_port) = (free_port(), free_port());
        let output = Command::new(SCRIPT)
            .arg("start")
            .env("ORTHANC_DIR", dir)
            .env("ORTHANC_HTTP_PORT", http_port.to_string())
            .env("ORTHANC_DICOM_PORT", dicom_port.to_string())
            .env("ORTHANC_USER", "second")
            .output()
            .unwrap();
        assert!(output.status.success(), "second Orthanc: {}", String::from_utf8_lossy(&output.stderr));
        SecondOrthanc {
            dir: dir.to_owned(),
            config: PacsConfig {
                centre: centre.into(),
                url: format!("http://127.0.0.1:{http_port}"),
                username: Some("second".into()),
                password: None,
                password_file: Some(dir.join("password")),
                dicomweb_root: "/dicom-web".into(),
                timeout_seconds: 30,
            },
        }
    }
}

impl Drop for SecondOrthanc {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("stop").env("ORTHANC_DIR", &self.dir).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_is_imported_from_the_centre_that_holds_it() {
    let Some(first) = orthanc_for_test("C1") else { return };
    let dir = tempfile::tempdir().unwrap();
    let second = SecondOrthanc::start(&dir.path().join("orthanc-c2"), "C2");
    let (study_uid, files) = synthetic_study(3);
    let second_config = second.config.clone();
    tokio::task::spawn_blocking(move || {
        let client = PacsClient::new(&second_config).unwrap();
        for file in files {
            client.upload_instance(file).unwrap();
        }
    })
    .await
    .unwrap();

    let mut config = test_config(&dir.path().join("state"));
    config.pacs = vec![first, second.config.clone()];
    let radiologist = add_user(&dir.path().join("state"), "dr rad", "radiologist", Some("C1"));
    let second_radiologist = add_user(&dir.path().join("state"), "dr far", "radiologist", Some("C2"));
    let server = TestServer::start(config).await;
    let api = Api::new(&server.base);
    let import = |centre: &str| {
        json!({
            "centre": centre, "study_instance_uid": study_uid, "database": "A",
            "consent": { "database_a": true, "database_b": false, "research_use": true, "date": "2024-02-02" }
        })
    };

    // Asked of centre C1, whose PACS does not hold it: refused by name, nothing admitted.
    let job =
        api.run_job(&radiologist, "/api/v1/studies/import", &import("C1"), Duration::from_secs(60)).await;
    assert_eq!(job["result"]["admitted"], false, "{job}");
    assert!(job["result"]["reasons"][0].as_str().unwrap().starts_with("pacs-study-not-found"), "{job}");

    // A caller reaches their own centre's PACS only: C2's answers C1's radiologist as unknown.
    let (status, refused) = api.post(&radiologist, "/api/v1/studies/import", &import("C2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");

    // From centre C2, which holds it, by C2's radiologist: imported and admitted.
    let (status, submitted) = api.post(&second_radiologist, "/api/v1/studies/import", &import("C2")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let job =
        api.wait_job(&second_radiologist, submitted["job"].as_i64().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["admitted"], true, "{job}");
    let (_, study) =
        api.get(&second_radiologist, &format!("/api/v1/studies/{}", submitted["study"]["id"])).await;
    assert_eq!(study["source"], "pacs", "{study}");
    assert_eq!(study["files"], 3, "{study}");

    server.stop().await;
}
