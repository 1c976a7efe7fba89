//! No identity in the service's logs: the real server, at its most verbose log level, ingests
//! an identified study (patient name, national identifier, birth date) and serves it back; its
//! log output, the audit log as the auditor reads it, and every file of its state hold none of
//! them, nor the pseudonym key.

mod service_common;

use serde_json::Value;
use service_common::*;
use std::time::Duration;

#[test]
fn identities_never_reach_logs_audit_or_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_server_config(dir.path(), "pedinorm.toml", "");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let scientist = add_user(&state, "sci", "scientist", Some("C1"));
    let auditor = add_user(&state, "aud", "auditor", None);
    let log = dir.path().join("server.log");
    let server = ServerProcess::start(&config, Some(&log));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let audit = runtime.block_on(async {
        let api = Api::new(&server.base);
        let (_, files) = synthetic_study(3);
        let (study, job) = api.upload_consented(&scientist, "B", zip_study(&files)).await;
        assert_eq!(job["result"]["admitted"], true, "{job}");
        // Read back what a client can see of the study and the job.
        let (_, shown) = api.get(&scientist, &format!("/api/v1/studies/{study}")).await;
        let (_, jobs) = api.get(&scientist, "/api/v1/jobs").await;
        let (_, records) = api.get(&auditor, "/api/v1/audit?limit=1000").await;
        assert!(records.as_array().is_some_and(|r| r.len() > 3), "{records}");
        // A bad upload carrying the identities in its entry name is refused without echoing them.
        let name = format!("{}_{}.dcm", PATIENT_NAME, codice_fiscale());
        let (status, refused) = api
            .post_bytes(&scientist, "/api/v1/studies?database=B", "application/zip", zip(&[(&name, b"junk")]))
            .await;
        assert!(status.is_client_error(), "{status} {refused}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        Value::Array(vec![shown, jobs, records, refused])
    });
    drop(server);

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("listening"), "the log was captured: {log_text}");
    let responses = audit.to_string();
    let family_name = PATIENT_NAME.split('^').next().unwrap();
    for needle in [family_name, codice_fiscale().as_str(), "20160101", PSEUDONYM_KEY] {
        assert!(!log_text.contains(needle), "the server log holds {needle}");
        assert!(!responses.contains(needle), "a response holds {needle}");
        assert_eq!(files_containing(&state, needle), Vec::<String>::new(), "state files hold {needle}");
    }
}
