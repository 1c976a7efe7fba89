//! The sealed, anchored audit log against the real `pedinorm serve` process and the real
//! `pedinorm audit verify`: removing the newest records together with the stored head,
//! removing every record, and editing a record then recomputing every later hash without the
//! key are all detected, by the command line and by `GET /api/v1/audit/verify`.

mod service_common;

use reqwest::blocking::Client;
use serde_json::Value;
use service_common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_pedinorm");

/// A configuration whose audit key sits outside the data directory.
fn write_config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("audit.key"), "fedcba9876543210fedcba9876543210fedcba9876543210").unwrap();
    let path = dir.join("pedinorm.toml");
    std::fs::write(
        &path,
        "data_dir = \"state\"\nlisten = \"127.0.0.1:0\"\n\
         [audit]\nkey_file = \"audit.key\"\ncheckpoint_every_records = 4\n",
    )
    .unwrap();
    path
}

fn start(config: &Path, dir: &Path) -> (Child, String) {
    let (child, address) = spawn_server(config, &dir.join("address"), None);
    (child, format!("http://{address}"))
}

/// Stops the server as an operator does (SIGTERM: answered requests are checkpointed).
fn stop(mut child: Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

fn verify_cli(dir: &Path, data_dir: &Path) -> (bool, String) {
    let output = Command::new(BINARY)
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .arg("--audit-key-file")
        .arg(dir.join("audit.key"))
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn verify_api(config: &Path, dir: &Path, token: &str) -> Value {
    let (child, base) = start(config, dir);
    let report: Value = Client::new()
        .get(format!("{base}/api/v1/audit/verify"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    stop(child);
    report
}

/// Copies the data directory (server stopped) so each tampering starts from the same log.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Opens the state as an attacker with write access to the file: the triggers are dropped.
fn tamper(data_dir: &Path, sql: impl FnOnce(&rusqlite::Connection)) {
    let connection = rusqlite::Connection::open(data_dir.join("service.sqlite")).unwrap();
    connection.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
    sql(&connection);
}

/// Recomputes every record's `prev_hash`/`hash` from `from` on with the unkeyed chain
/// (SHA-256 of previous hash ‖ length-prefixed fields), and the stored head.
fn rehash_unkeyed(connection: &rusqlite::Connection, from: i64) {
    use sha2::{Digest, Sha256};
    let mut prev: String =
        connection.query_row("SELECT hash FROM audit WHERE seq = ?1", [from - 1], |r| r.get(0)).unwrap();
    let mut statement = connection
        .prepare("SELECT seq, time, user, role, centre, on_behalf_of, action, resource, outcome FROM audit WHERE seq >= ?1 ORDER BY seq")
        .unwrap();
    let rows: Vec<(i64, Vec<String>)> = statement
        .query_map([from], |row| {
            let seq: i64 = row.get(0)?;
            let mut fields = vec![seq.to_string()];
            for i in 1..9 {
                fields.push(row.get(i)?);
            }
            Ok((seq, fields))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut last = 0;
    for (seq, fields) in rows {
        let mut hasher = Sha256::new();
        hasher.update(prev.as_bytes());
        for field in &fields {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        let hash = hex::encode(hasher.finalize());
        connection
            .execute(
                "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                rusqlite::params![prev, hash, seq],
            )
            .unwrap();
        prev = hash;
        last = seq;
    }
    connection
        .execute("UPDATE meta SET value = ?1 WHERE key = 'audit_head'", [format!("{last} {prev}")])
        .unwrap();
}

#[test]
fn truncation_deletion_and_rehashing_of_the_audit_log_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let data_dir = dir.path().join("state");
    std::fs::create_dir_all(&data_dir).unwrap();
    let token = add_user(&data_dir, "aud", "auditor", None);
    let (child, base) = start(&config, dir.path());
    let client = Client::new();
    for _ in 0..10 {
        let status = client.get(format!("{base}/api/v1/whoami")).bearer_auth(&token).send().unwrap().status();
        assert_eq!(status, 200);
    }
    stop(child);
    // The key stayed where it was configured: nothing was created next to the state.
    assert!(!data_dir.join("audit.key").exists());
    let (ok, text) = verify_cli(dir.path(), &data_dir);
    assert!(ok && text.contains("10 records (10 sealed"), "{text}");
    let pristine = dir.path().join("pristine");
    copy_dir(&data_dir, &pristine);

    // 1. The newest records removed together with the stored head.
    tamper(&data_dir, |c| {
        let head: String = c.query_row("SELECT hash FROM audit WHERE seq = 7", [], |r| r.get(0)).unwrap();
        c.execute("DELETE FROM audit WHERE seq > 7", []).unwrap();
        c.execute("UPDATE meta SET value = ?1 WHERE key = 'audit_head'", [format!("7 {head}")]).unwrap();
    });
    let (ok, text) = verify_cli(dir.path(), &data_dir);
    assert!(!ok && text.contains("ends at record 7") && text.contains("covers record 10"), "{text}");
    let report = verify_api(&config, dir.path(), &token);
    assert_eq!(report["intact"], false, "{report}");
    assert!(report["problem"].as_str().unwrap().contains("covers record 10"), "{report}");
    // Requests answered since then fill the gap again, but not with the records the
    // checkpoint saw.
    let (ok, text) = verify_cli(dir.path(), &data_dir);
    assert!(!ok && text.contains("audit record 8 is not the record"), "{text}");

    // 2. Every record removed.
    std::fs::remove_dir_all(&data_dir).unwrap();
    copy_dir(&pristine, &data_dir);
    tamper(&data_dir, |c| {
        c.execute_batch("DELETE FROM audit; DELETE FROM meta WHERE key = 'audit_head';").unwrap();
    });
    let (ok, text) = verify_cli(dir.path(), &data_dir);
    assert!(!ok && text.contains("ends at record 0"), "{text}");

    // 3. One record edited, every later hash recomputed (the unkeyed way: the key is not
    // at hand).
    std::fs::remove_dir_all(&data_dir).unwrap();
    copy_dir(&pristine, &data_dir);
    tamper(&data_dir, |c| {
        c.execute("UPDATE audit SET outcome = '403' WHERE seq = 5", []).unwrap();
        rehash_unkeyed(c, 5);
    });
    let (ok, text) = verify_cli(dir.path(), &data_dir);
    assert!(!ok && text.contains("audit record 5 was altered"), "{text}");
    let report = verify_api(&config, dir.path(), &token);
    assert_eq!(report["intact"], false, "{report}");

    // 4. The checkpoint file removed with the log intact: the service refuses to re-anchor.
    std::fs::remove_dir_all(&data_dir).unwrap();
    copy_dir(&pristine, &data_dir);
    std::fs::remove_file(data_dir.join("audit.checkpoints")).unwrap();
    let (ok, text) = verify_cli(dir.path(), &data_dir);
    assert!(!ok && text.contains("holds no checkpoint"), "{text}");
    let status = Command::new(BINARY)
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("restore it"));
}
