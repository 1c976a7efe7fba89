//! A scientist builds a normative database from scratch through the service: database B
//! studies (phantom brains at 4 mm, uploaded as identified DICOM with consent) are ingested,
//! one withdraws consent, and a `scratch` build makes a template from the remaining studies,
//! the statistics and the calibration, records which studies it used, and installs it.

mod service_common;

use pedinorm::normdb::NormDbFile;
use pedinorm_templates::model::NormativeDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_build_from_consented_database_b_studies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.national_id_issuer = Some(SYNTHETIC_ISSUER.into());
    config.compute = quick_compute();
    let normdb_path = config.normdb_path();
    let scientist = add_user(dir.path(), "sci", "scientist", Some("C1"));
    let radiologist = add_user(dir.path(), "dr rad", "radiologist", Some("C1"));
    let zips = tokio::task::spawn_blocking(|| {
        let generator = phantom_generator();
        (0..5)
            .map(|i| {
                let subject = phantom_subject(&generator, 8.5 + i as f64, i % 2 == 0, 200 + i as u64, false);
                zip_study(&subject_dicom(&subject, i + 1).1)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let server = TestServer::start(config).await;
    let api = Api::new(&server.base);

    let mut study_ids = Vec::new();
    for zip in zips {
        let (study_id, job) = api.upload_consented(&scientist, "B", zip).await;
        assert_eq!(job["result"]["admitted"], true, "{job}");
        study_ids.push(study_id);
    }
    // The last study's consent is withdrawn: it must not enter the database.
    let withdrawn = study_ids[4];
    let (status, _) = api
        .post(
            &scientist,
            &format!("/api/v1/studies/{withdrawn}/consent/withdraw"),
            &json!({"reason": "family request"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, withdrawn_study) = api.get(&scientist, &format!("/api/v1/studies/{withdrawn}")).await;
    let withdrawn_pseudonym = withdrawn_study["metadata"]["pseudonym"].as_str().unwrap().to_string();

    // Requests are checked before a job is queued; only scientists (and admins) build. What
    // the OpenAPI document excludes is 400; what it allows but a stated rule refuses is 422.
    let builds = "/api/v1/normdb/builds";
    for bad in [
        json!({ "mode": "extend", "brackets": [{ "name": "a", "min_years": 1, "max_years": 2 }] }),
        json!({ "mode": "scratch" }),
        json!({ "mode": "scratch", "brackets": [{ "name": "../x", "min_years": 1, "max_years": 2 }] }),
        json!({ "mode": "scratch", "brackets": [{ "name": "a", "min_years": 1, "max_years": 26 }] }),
        json!({ "mode": "scratch", "brackets": [{ "name": "a", "min_years": 1, "max_years": 2 }], "voxel_rate": 0 }),
        json!({ "mode": "scratch", "brackets": [{ "name": "a", "min_years": 1, "max_years": 2 }], "nodes_per_bracket": 2.5 }),
        json!({ "mode": "rebuild" }),
    ] {
        let (status, body) = api.post(&scientist, builds, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let bracket =
        |name: &str, min: f64, max: f64| json!({ "name": name, "min_years": min, "max_years": max });
    for (refused, rule) in [
        (json!({ "mode": "scratch", "brackets": [bracket("a", 3.0, 2.0)] }), "min_years must be below"),
        (
            json!({ "mode": "scratch", "brackets": [bracket("a", 1.0, 2.0), bracket("a", 2.0, 3.0)] }),
            "used twice",
        ),
    ] {
        let (status, body) = api.post(&scientist, builds, &refused).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}: {body}");
        assert!(body["reasons"][0].as_str().unwrap().contains(rule), "{body}");
    }
    let (status, _) = api.post(&radiologist, builds, &json!({ "mode": "scratch" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Extending needs an installed database; a bracket without three studies is named.
    let job = api.run_job(&scientist, builds, &json!({}), Duration::from_secs(30)).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("normative database is missing"), "{job}");
    let too_few = json!({ "mode": "scratch", "brackets": [
        { "name": "0-8y", "min_years": 0, "max_years": 8 },
        { "name": "8-13y", "min_years": 8, "max_years": 13 } ] });
    let job = api.run_job(&scientist, builds, &too_few, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("bracket 0-8y has 0"), "{job}");

    // The build from scratch.
    let request = json!({
        "mode": "scratch", "install": true,
        "brackets": [{ "name": "8-13y", "min_years": 8, "max_years": 13 }],
        "template_iterations": 1, "nodes_per_bracket": 1, "smoothing_fwhm_mm": 6,
        "voxel_rate": 0.01, "cluster_rate": 0.1
    });
    let job = api.run_job(&scientist, builds, &request, Duration::from_secs(180)).await;
    assert_eq!(job["state"], "done", "{job}");
    let used: Vec<i64> = serde_json::from_value(job["result"]["studies"].clone()).unwrap();
    assert_eq!(used, study_ids[..4].to_vec(), "withdrawn consent excluded: {job}");
    assert_eq!(job["result"]["subjects"], 4, "{job}");
    assert_eq!(job["result"]["calibrated"], true, "{job}");
    assert_eq!(job["result"]["installed"], true, "{job}");

    // Provenance: in the job's outputs and in the installed database's history.
    let job_id = job["id"].as_i64().unwrap();
    let (status, provenance) =
        api.download(&scientist, &format!("/api/v1/jobs/{job_id}/outputs/studies.json")).await;
    assert_eq!(status, StatusCode::OK);
    let provenance: Value = serde_json::from_slice(&provenance).unwrap();
    assert_eq!(provenance["mode"], "scratch");
    assert_eq!(provenance["studies"], json!(used));
    let (status, summary) = api.get(&scientist, "/api/v1/normdb").await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["subjects"], 4);
    assert_eq!(summary["calibrated"], true);
    assert_eq!(summary["brackets"][0]["name"], "8-13y");
    assert_eq!(summary["brackets"][0]["subjects"], 4);
    let last = summary["history"].as_array().unwrap().last().unwrap().as_str().unwrap().to_string();
    assert!(last.ends_with(&format!("built from studies {used:?}")), "{last}");
    let db = NormativeDb::read(&normdb_path).unwrap();
    assert!(db.subjects.iter().all(|s| s.pseudonym != withdrawn_pseudonym));
    assert_eq!(db.brackets[0].template.grid().spacing(), [PHANTOM_MM; 3]);

    // Extending the installed database again adds nothing twice.
    let job = api.run_job(&scientist, builds, &json!({ "install": false }), Duration::from_secs(60)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["studies"], json!([]), "{job}");
    assert_eq!(job["result"]["subjects"], 4, "{job}");

    server.stop().await;
    assert_eq!(files_containing(dir.path(), "SYNTHETIC^"), Vec::<String>::new());
}
