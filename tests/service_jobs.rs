//! Jobs over HTTP: progress while a job runs, the bounded queue answering 503 without losing
//! accepted work, and cancellation of a running and of a queued job (audited, no outputs).

mod service_common;

use reqwest::StatusCode;
use serde_json::Value;
use service_common::*;
use std::time::{Duration, Instant};

/// Polls job `id` until `until` holds for its JSON; returns that JSON.
async fn poll_job(api: &Api, token: &str, id: i64, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, job) = api.get(token, &format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if until(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never reached the expected state: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_full_queue_and_cancellation_over_http() {
    let work = tempfile::tempdir().unwrap();
    let mut config = test_config(work.path());
    config.jobs.concurrency = 1;
    config.jobs.max_queued = 1;
    // Each progress report pauses, so that a job is seen running and can be cancelled.
    config.jobs.stage_delay_ms = 1000;
    let server = TestServer::start(config).await;
    let api = Api::new(&server.base);
    let scientist = add_user(work.path(), "scientist", "scientist", None);
    let auditor = add_user(work.path(), "auditor", "auditor", None);
    let study = |slices| zip_study(&synthetic_study(slices).1);

    // The first job runs: its state shows percent and stage.
    let (status, first) = api.submit_consented(&scientist, "B", study(3)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let first = first["job"].as_i64().unwrap();
    let running = poll_job(&api, &scientist, first, |job| job["state"] == "running").await;
    let progress = running["progress"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&progress), "{running}");
    assert!(!running["stage"].as_str().unwrap().is_empty(), "{running}");

    // One more is queued; the next answers 503 naming the limit.
    let (status, second) = api.submit_consented(&scientist, "B", study(4)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    let second = second["job"].as_i64().unwrap();
    let (status, refused) = api.submit_consented(&scientist, "B", study(5)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert!(refused.to_string().contains("the job queue is full (1 jobs queued)"), "{refused}");

    // Cancelling the queued job ends it at once; cancelling the running one ends it at its
    // next progress report. Neither has outputs.
    let (status, cancelled) =
        api.post(&scientist, &format!("/api/v1/jobs/{second}/cancel"), &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (status, _) = api.post(&scientist, &format!("/api/v1/jobs/{first}/cancel"), &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let ended = poll_job(&api, &scientist, first, |job| job["state"] != "running").await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
    for id in [first, second] {
        let (status, body) = api.get(&scientist, &format!("/api/v1/jobs/{id}/outputs")).await;
        assert_eq!(status, StatusCode::CONFLICT, "job {id}: {body}");
    }
    // A finished job cannot be cancelled again.
    let (status, body) = api.post(&scientist, &format!("/api/v1/jobs/{second}/cancel"), &Value::Null).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The queue takes work again and completes it.
    let (_, job) = api.upload_consented(&scientist, "B", study(3)).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["result"]["admitted"], true, "{job}");

    // Both cancellations and the refused submission are in the audit log.
    let (status, records) = api.get(&auditor, "/api/v1/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    let records = records.as_array().unwrap();
    for id in [first, second] {
        let resource = format!("/api/v1/jobs/{id}/cancel");
        assert!(
            records.iter().any(|r| r["resource"].as_str().unwrap_or("").contains(&resource)),
            "no audit record for {resource}"
        );
    }
    assert!(records.iter().any(|r| r["outcome"].as_str().unwrap_or("").contains("503")), "no 503 audited");

    server.stop().await;
}
