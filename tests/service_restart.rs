//! Fault tests with the real binary as a child process: `kill -9` while an ingest job runs,
//! restart, the job completes; `pedinorm users add` prints only the token; `pedinorm audit
//! verify` names an altered or removed record.

mod service_common;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use service_common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_pedinorm");

fn write_config(dir: &Path, stage_delay_ms: u64) -> PathBuf {
    let key = dir.join("pseudonym.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    let path = dir.join(format!("pedinorm-{stage_delay_ms}.toml"));
    std::fs::write(
        &path,
        format!(
            "data_dir = \"state\"\nlisten = \"127.0.0.1:0\"\npseudonym_key_file = \"pseudonym.key\"\n\
             national_id_issuer = \"IT-CF\"\n[jobs]\nconcurrency = 1\nstage_delay_ms = {stage_delay_ms}\n"
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path, address_file: &Path) -> (Child, String) {
    let (child, address) = spawn_server(config, address_file, None);
    (child, format!("http://{address}"))
}

fn users_add(data_dir: &Path, name: &str, role: &str) -> String {
    let output = Command::new(BINARY)
        .args(["users", "add", "--data-dir"])
        .arg(data_dir)
        .args(["--name", name, "--role", role, "--centre", "C1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    // Only the token on standard output.
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let token = stdout.trim().to_string();
    assert!(token.starts_with("pn_") && token.len() > 40, "{token}");
    token
}

fn job(client: &Client, base: &str, token: &str, id: i64) -> Value {
    client.get(format!("{base}/api/v1/jobs/{id}")).bearer_auth(token).send().unwrap().json().unwrap()
}

/// Uploads a study (zip) to database B with consent; returns the 202 answer.
fn upload_to_b(client: &Client, base: &str, token: &str, files: &[Vec<u8>]) -> Value {
    let consent =
        json!({ "database_a": false, "database_b": true, "research_use": true, "date": "2024-01-02" });
    let form = reqwest::blocking::multipart::Form::new()
        .part("consent", reqwest::blocking::multipart::Part::text(consent.to_string()))
        .part("file", reqwest::blocking::multipart::Part::bytes(zip_study(files)).file_name("study.zip"));
    let response = client
        .post(format!("{base}/api/v1/studies?database=B"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().unwrap()
}

#[test]
fn kill_9_during_a_job_then_restart_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let slow = write_config(dir.path(), 400);
    let normal = write_config(dir.path(), 0);
    let data_dir = dir.path().join("state");
    let address_file = dir.path().join("address");
    let token = users_add(&data_dir, "sci", "scientist");
    let (mut child, base) = start(&slow, &address_file);
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
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !data_dir.join("jobs").join(job_id.to_string()).exists(),
        "no outputs published before completion"
    );

    let (mut child, base) = start(&normal, &address_file);
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
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn audit_verify_names_altered_and_removed_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 0);
    let data_dir = dir.path().join("state");
    let address_file = dir.path().join("address");
    let token = users_add(&data_dir, "aud", "auditor");
    let (mut child, base) = start(&config, &address_file);
    let client = Client::new();
    for _ in 0..6 {
        assert_eq!(
            client.get(format!("{base}/api/v1/audit")).bearer_auth(&token).send().unwrap().status(),
            200
        );
    }
    assert_eq!(client.get(format!("{base}/api/v1/jobs")).bearer_auth(&token).send().unwrap().status(), 403);
    child.kill().unwrap();
    child.wait().unwrap();
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
