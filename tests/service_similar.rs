//! `GET /api/v1/cases/{id}/similar` against the real `pedinorm serve` process: four synthetic
//! cases (phantom at 4 mm; three of one disease class, one of another) are uploaded, ingested,
//! confirmed (A1) or left awaiting confirmation (A2) and mapped by deviation jobs against a
//! small normative database; then the route answers the confirmed cases most like a case,
//! only those the caller may read, refuses bad input with 4xx, and every call is audited.
//! A restart with `--rebuild-similar` gives the same answer from the jobs' outputs.

mod service_common;

use pedinorm_validation::Site;
use pedinorm_validation::disease_classes::{DISEASE_CLASSES, DiseaseClass};
use pedinorm_validation::phantom_database::phantom_spec;
use reqwest::StatusCode;
use serde_json::{Value, json};
use service_common::*;
use std::path::Path;
use std::time::Duration;

fn class(name: &str) -> DiseaseClass {
    *DISEASE_CLASSES.iter().find(|c| c.name == name).unwrap()
}

/// Config of the real server: the synthetic DICOM issuer and the quick 4 mm schedules.
fn write_config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("pseudonym.key"), PSEUDONYM_KEY).unwrap();
    let config = dir.join("pedinorm.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"state\"\nlisten = \"127.0.0.1:0\"\npseudonym_key_file = \"pseudonym.key\"\n\
             national_id_issuer = \"{SYNTHETIC_ISSUER}\"\n\
             [compute]\naffine_iterations = [60, 30, 10]\ndeformable_iterations = [20, 10, 5]\n\
             bias_correction = false\n"
        ),
    )
    .unwrap();
    config
}

struct Tokens {
    radiologist_c1: String,
    radiologist_c2: String,
    committee_c1: String,
    committee_c2: String,
    scientist: String,
    auditor: String,
}

/// Uploads `subject` as a database A study of the radiologist's centre, opens its case with
/// `orpha` and `category`, confirms it (A1) when asked, runs its deviation job; returns the case id.
async fn case(
    api: &Api,
    tokens: &Tokens,
    radiologist: &str,
    subject: &pedinorm_validation::SyntheticSubject,
    index: usize,
    (orpha, category): (&str, &str),
    confirm: bool,
) -> i64 {
    let (_, files) = subject_dicom(subject, index);
    let (study, ingest) = api.upload_consented(radiologist, "A", zip_study(&files)).await;
    assert_eq!(ingest["result"]["admitted"], true, "{ingest}");
    let body = json!({ "study_id": study, "orpha_codes": [orpha], "clinical": { "category": category } });
    let (status, case) = api.post(radiologist, "/api/v1/cases", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{case}");
    let id = case["id"].as_i64().unwrap();
    let path = |action: &str| format!("/api/v1/cases/{id}{action}");
    assert_eq!(api.post(&tokens.committee_c1, &path("/review"), &json!({})).await.0, StatusCode::OK);
    let (_, approved) = api.post(&tokens.committee_c1, &path("/approvals"), &json!({})).await;
    assert_eq!(approved["status"], "A2", "{approved}");
    if confirm {
        api.post(&tokens.committee_c1, &path("/confirmations"), &json!({})).await;
        let (_, confirmed) = api.post(&tokens.committee_c2, &path("/confirmations"), &json!({})).await;
        assert_eq!(confirmed["status"], "A1", "{confirmed}");
    }
    let job = api.run_job(radiologist, &path("/deviation"), &json!({}), Duration::from_secs(300)).await;
    assert_eq!(job["state"], "done", "{job}");
    id
}

fn ids(answer: &Value) -> Vec<i64> {
    answer["similar"].as_array().unwrap().iter().map(|s| s["case_id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_confirmed_cases_by_role_and_centre() {
    let (dir, state, generator) = state_with_phantom_normdb();
    let tokens = Tokens {
        radiologist_c1: add_user(&state, "dr one", "radiologist", Some("C1")),
        radiologist_c2: add_user(&state, "dr two", "radiologist", Some("C2")),
        committee_c1: add_user(&state, "prof one", "committee", Some("C1")),
        committee_c2: add_user(&state, "prof two", "committee", Some("C2")),
        scientist: add_user(&state, "sci", "scientist", Some("C1")),
        auditor: add_user(&state, "aud", "auditor", None),
    };
    let config = write_config(dir.path());
    let server = ServerProcess::start(&config, Some(&dir.path().join("server.log")));
    let api = Api::new(&server.base);

    // Members of two classes at ages inside the database's bracket (8–13 years).
    let member = |name: &str, age: f64, seed: u64| {
        let spec = phantom_spec(PHANTOM_MM, age, seed, Site::reference());
        generator.subject(&class(name).member(spec, generator.brain_centre())).unwrap()
    };
    let query_subject = member("periventricular_wm", 9.0, 11);
    let query =
        case(&api, &tokens, &tokens.radiologist_c1, &query_subject, 1, ("ORPHA:1", "leukodystrophy"), false)
            .await;
    let same_c1 = member("periventricular_wm", 12.0, 12);
    let same_c1 =
        case(&api, &tokens, &tokens.radiologist_c1, &same_c1, 2, ("ORPHA:2", "leukodystrophy"), true).await;
    let same_c2 = member("periventricular_wm", 10.5, 13);
    let same_c2 =
        case(&api, &tokens, &tokens.radiologist_c2, &same_c2, 3, ("ORPHA:3", "leukodystrophy"), true).await;
    let other = member("frontal_cortical_lesion", 9.2, 14);
    let other =
        case(&api, &tokens, &tokens.radiologist_c1, &other, 4, ("ORPHA:4", "cortical dysplasia"), true).await;

    // The radiologist of C1 reads C1's cases: the confirmed one of the same pattern first.
    let path = format!("/api/v1/cases/{query}/similar?k=5");
    let (status, answer) = api.get(&tokens.radiologist_c1, &path).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["indexed"], 3, "A1 signatures of every centre: {answer}");
    assert_eq!(ids(&answer), vec![same_c1, other], "{answer}");
    let first = &answer["similar"][0];
    assert_eq!(first["orpha_codes"], json!(["ORPHA:2"]));
    assert_eq!(first["clinical"]["category"], "leukodystrophy");
    assert!((first["age_years"].as_f64().unwrap() - 12.0).abs() < 1.0, "{first}");
    let score = |i: usize| answer["similar"][i]["similarity"].as_f64().unwrap();
    assert!(score(0) > score(1), "{answer}");

    // The committee reads every centre's cases; k bounds the answer.
    let (_, every) = api.get(&tokens.committee_c1, &path).await;
    let every_ids = ids(&every);
    assert_eq!(every_ids.len(), 3, "{every}");
    assert!(every_ids[..2].contains(&same_c2) && every_ids[..2].contains(&same_c1), "{every}");
    assert_eq!(*every_ids.last().unwrap(), other, "the other pattern last: {every}");
    let (_, one) = api.get(&tokens.committee_c2, &format!("/api/v1/cases/{query}/similar?k=1")).await;
    assert_eq!(ids(&one).len(), 1);

    // Another centre's case looks missing; roles that do not read cases are refused; bad k is 400.
    let (status, _) = api.get(&tokens.radiologist_c2, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.get(&tokens.scientist, &path).await.0, StatusCode::FORBIDDEN);
    for bad in ["k=0", "k=51", "k=abc", "k=2.5", "other=1"] {
        let (status, body) =
            api.get(&tokens.radiologist_c1, &format!("/api/v1/cases/{query}/similar?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(api.get(&tokens.radiologist_c1, "/api/v1/cases/999/similar").await.0, StatusCode::NOT_FOUND);

    // Every call audited, refusals included.
    let (_, records) = api.get(&tokens.auditor, "/api/v1/audit?limit=1000").await;
    let similar: Vec<&Value> =
        records.as_array().unwrap().iter().filter(|r| r["action"] == "case.similar").collect();
    assert!(similar.len() >= 11, "{} audited", similar.len());
    assert!(similar.iter().any(|r| r["outcome"] == "403" && r["user"] == "sci"));
    assert!(similar.iter().any(|r| r["outcome"] == "200" && r["user"] == "prof two"));

    // The index is derived data: rebuilt from the jobs' outputs, the answer is the same.
    server.kill();
    let connection = rusqlite::Connection::open(state.join("service.sqlite")).unwrap();
    connection.execute("UPDATE case_signatures SET signature = '{}'", []).unwrap();
    drop(connection);
    let (mut child, address) =
        spawn_server_with(&config, &dir.path().join("address"), None, &["--rebuild-similar"]);
    let again = Api::new(&format!("http://{address}"));
    let (status, rebuilt) = again.get(&tokens.radiologist_c1, &path).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    assert_eq!(ids(&rebuilt), ids(&answer));
    assert_eq!(rebuilt["similar"][0]["similarity"], answer["similar"][0]["similarity"]);
}
