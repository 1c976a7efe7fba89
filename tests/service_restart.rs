//! Fault tests with the real binary as a child process: `kill -9` while an ingest job runs,
//! restart, the job completes; `pedinorm users add` prints only the token; `pedinorm audit
//! verify` names an altered or removed record.

mod service_common;

use reqwest::blocking::Client;
use serde_json::Value;
use service_common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_pedinorm");

/// A configuration with one job at a time, each stage of a job taking `stage_delay_ms` longer.
fn write_config(dir: &Path, stage_delay_ms: u64) -> PathBuf {
    write_server_config(
        dir,
        &format!("pedinorm-{stage_delay_ms}.toml"),
        &format!("[jobs]\nconcurrency = 1\nstage_delay_ms = {stage_delay_ms}\n"),
    )
}

fn job(client: &Client, base: &str, token: &str, id: i64) -> Value {
    client.get(format!("{base}/api/v1/jobs/{id}")).bearer_auth(token).send().unwrap().json().unwrap()
}

/// Uploads a study (zip) to database B with consent; returns the 202 answer.
fn upload_to_b(client: &Client, base: &str, token: &str, files: &[Vec<u8>]) -> Value {
    let (status, submitted) = upload_consented_b(client, base, token, zip_study(files));
    assert_eq!(status, 202);
    submitted
}

#[test]
fn kill_9_during_a_job_then_restart_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let slow = write_config(dir.path(), 400);
    let normal = write_config(dir.path(), 0);
    let data_dir = dir.path().join("state");
    let token = users_add_cli(&data_dir, "sci", "scientist", "C1");
    let server = ServerProcess::start(&slow, None);
    let base = server.base.clone();
    let client = Client::new();
    let submitted = upload_to_b(&client, &base, &token, &synthetic_study(4).1);
    let job_id = submitted["job"].as_i64().unwrap();
    let study_id = submitted["study"]["id"].as_i64().unwrap();
    // A second job queued behind it must also survive.
    let queued_job = upload_to_b(&client, &base, &token, &synthetic_study(3).1)["job"].as_i64().unwrap();
    // Wait until the first job is running and has made progress, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = job(&client, &base, &token, job_id);
        if status["state"] == "running" && status["progress"].as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "job never ran: {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    assert!(
        !data_dir.join("jobs").join(job_id.to_string()).exists(),
        "no outputs published before completion"
    );

    let server = ServerProcess::start(&normal, None);
    let base = server.base.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first, second) = loop {
        let first = job(&client, &base, &token, job_id);
        let second = job(&client, &base, &token, queued_job);
        if first["state"] == "done" && second["state"] == "done" {
            break (first, second);
        }
        assert!(first["state"] != "failed" && second["state"] != "failed", "{first} {second}");
        assert!(Instant::now() < deadline, "jobs not finished after restart: {first} {second}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first["attempts"], 2, "the interrupted job ran again: {first}");
    assert_eq!(first["result"]["admitted"], true, "{first}");
    assert_eq!(second["result"]["admitted"], true, "{second}");
    let study: Value = client
        .get(format!("{base}/api/v1/studies/{study_id}"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(study["status"], "admitted");
    assert!(data_dir.join("jobs").join(job_id.to_string()).join("result.json").is_file());
    assert!(!data_dir.join("jobs").join(format!("{job_id}.partial")).exists());
    server.kill();
}

#[test]
fn audit_verify_names_altered_and_removed_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 0);
    let data_dir = dir.path().join("state");
    let token = users_add_cli(&data_dir, "aud", "auditor", "C1");
    let server = ServerProcess::start(&config, None);
    let base = server.base.clone();
    let client = Client::new();
    for _ in 0..6 {
        assert_eq!(
            client.get(format!("{base}/api/v1/audit")).bearer_auth(&token).send().unwrap().status(),
            200
        );
    }
    assert_eq!(client.get(format!("{base}/api/v1/jobs")).bearer_auth(&token).send().unwrap().status(), 403);
    server.kill();
    let verify =
        || Command::new(BINARY).args(["audit", "verify", "--data-dir"]).arg(&data_dir).output().unwrap();
    let output = verify();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // `users add` (record 1), six reads, one refusal.
    assert!(String::from_utf8_lossy(&output.stdout).contains("8 records"));

    let connection = rusqlite::Connection::open(data_dir.join("service.sqlite")).unwrap();
    let first: (String, String) = connection
        .query_row("SELECT action, role FROM audit WHERE seq = 1", [], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap();
    assert_eq!(first, ("user.add".to_string(), "operator".to_string()));
    // The triggers refuse edits; an attacker with file access drops them first.
    assert!(connection.execute("UPDATE audit SET outcome = '200' WHERE seq = 8", []).is_err());
    connection.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
    connection.execute("UPDATE audit SET outcome = '200' WHERE seq = 8", []).unwrap();
    let output = verify();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("audit record 8 was altered"), "{stderr}");
    connection.execute("UPDATE audit SET outcome = '403' WHERE seq = 8", []).unwrap();
    assert!(verify().status.success());
    connection.execute("DELETE FROM audit WHERE seq = 4", []).unwrap();
    let stderr = String::from_utf8_lossy(&verify().stderr).to_string();
    assert!(stderr.contains("audit record 4 was removed"), "{stderr}");
}
