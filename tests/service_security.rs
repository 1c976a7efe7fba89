//! Security probes against the real `pedinorm serve` process: every route of the OpenAPI
//! document with every method (deny by default), refused uploads that store nothing, leftovers
//! of a crash swept at start, permissions of the data directory, no server paths in answers,
//! and the handling of anonymous noise.

mod service_common;

use pedinorm::service::roles::{self, Access, Role};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;
use service_common::*;
use std::path::Path;

/// A user in the state of `DIR/state`; returns the token.
fn user(dir: &Path, name: &str, role: Role) -> String {
    add_user(&dir.join("state"), name, role.as_str(), Some("C1"))
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "999999").replace("{name}", "report.json")
}

/// Every method a client may send (CONNECT is a proxy tunnel, not a request to a route).
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"];

#[test]
fn every_route_and_method_is_denied_unless_listed() {
    let dir = tempfile::tempdir().unwrap();
    // Far more requests without a token than the default allowance of one address.
    let config = write_server_config(dir.path(), "pedinorm.toml", "anonymous_requests_per_minute = 100000\n");
    let admin = user(dir.path(), "adm", Role::Admin);
    let auditor = user(dir.path(), "aud", Role::Auditor);
    let server = ServerProcess::start(&config, None);
    let client = Client::new();
    let document: Value = client.get(format!("{}/openapi.json", server.base)).send().unwrap().json().unwrap();
    let paths: Vec<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        paths.len(),
        roles::ROUTES.iter().map(|r| r.path).collect::<std::collections::BTreeSet<_>>().len()
    );
    let mut checked = 0;
    let mut probe_paths = paths.clone();
    probe_paths.push("/api/v1/no-such-thing".into());
    for path in &probe_paths {
        for method in METHODS {
            let url = format!("{}{}", server.base, concrete(path));
            let send = |token: Option<&str>| {
                let mut request =
                    client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                request.send().unwrap().status()
            };
            let listed = roles::lookup(method, path);
            let what = format!("{method} {path}");
            // Without a token, and with a token the service never issued.
            for token in [None, Some("pn_1_forged")] {
                let status = send(token);
                match listed.map(|r| r.access) {
                    Some(Access::Public) => assert!(status.is_success(), "{what} {token:?}: {status}"),
                    _ => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} {token:?}"),
                }
            }
            for (role, token) in [(Role::Admin, &admin), (Role::Auditor, &auditor)] {
                let status = send(Some(token));
                match listed {
                    None if paths.contains(path) => {
                        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{what} as {role}")
                    }
                    None => assert_eq!(status, StatusCode::NOT_FOUND, "{what} as {role}"),
                    Some(route) if !route.allows(role) => {
                        assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role}")
                    }
                    Some(_) => assert!(
                        !matches!(status.as_u16(), 401 | 403 | 405) && !status.is_server_error(),
                        "{what} as {role}: {status}"
                    ),
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, probe_paths.len() * METHODS.len());
    // A HEAD that is allowed answers like its GET, without a body.
    let head =
        client.head(format!("{}/api/v1/audit/verify", server.base)).bearer_auth(&auditor).send().unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let refused = client.request(reqwest::Method::DELETE, format!("{}/api/v1/studies/1", server.base));
    let refused = refused.bearer_auth(&admin).send().unwrap();
    assert_eq!(refused.headers()["allow"], "GET, HEAD");
}

fn study_rows(state: &Path) -> i64 {
    let connection = rusqlite::Connection::open(state.join("service.sqlite")).unwrap();
    connection.query_row("SELECT COUNT(*) FROM studies", [], |row| row.get(0)).unwrap()
}

/// Files under `dir` (recursively), as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn a_refused_upload_stores_nothing() {
    let (dir, scientist, server, client) = scientist_server("");
    let state = dir.path().join("state");
    let (_, files) = synthetic_study(3);
    for (database, refused_consent, expected) in [
        // Schema-valid records that break a stated rule: 422.
        ("A", consent_record(true, false, "2999-01-01"), StatusCode::UNPROCESSABLE_ENTITY), // in the future
        ("B", consent_record(false, false, "2024-01-02"), StatusCode::UNPROCESSABLE_ENTITY), // covers no database
        // Not a consent record at all: 400.
        ("B", serde_json::json!({ "database_b": true }), StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = upload_multipart(
            &client,
            &server.base,
            &scientist,
            database,
            Some(&refused_consent),
            zip_study(&files),
        );
        assert_eq!(status, expected, "{body}");
    }
    // Objects that are not DICOM.
    let (status, body) = upload_consented_b(
        &client,
        &server.base,
        &scientist,
        zip(&[("a.dcm", files[0].as_slice()), ("b.dcm", b"junk")]),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A PACS import with a consent in the future.
    let import = serde_json::json!({
        "centre": "C1", "study_instance_uid": "1.2.3", "database": "B",
        "consent": consent_record(false, true, "2999-01-01"),
    });
    let response = client
        .post(format!("{}/api/v1/studies/import", server.base))
        .bearer_auth(&scientist)
        .json(&import)
        .send();
    assert_eq!(response.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(study_rows(&state), 0, "a refused request left a study row");
    assert_eq!(files_under(&state.join("incoming")), Vec::<String>::new(), "a refused upload left files");
    let (_, listed) = call(&client, &server.base, "GET", "/api/v1/studies", &scientist, None);
    assert_eq!(listed, serde_json::json!([]));
    // The same upload with a valid consent is kept, with its consent.
    let (status, body) = upload_multipart(
        &client,
        &server.base,
        &scientist,
        "A",
        Some(&consent_record(true, false, "2024-01-02")),
        zip_study(&files),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["study"]["consent"]["database_a"], true, "{body}");
    assert_eq!(study_rows(&state), 1);
}

#[test]
fn answers_name_the_entry_never_a_server_path() {
    let (dir, scientist, server, client) = scientist_server("");
    let log = dir.path().join("server.log");
    let (_, files) = synthetic_study(2);
    let truncated = files[1][..400].to_vec();
    let (status, body) = upload_multipart(
        &client,
        &server.base,
        &scientist,
        "B",
        None,
        zip(&[("x/1.dcm", files[0].as_slice()), ("x/2.dcm", b"junk"), ("x/3.dcm", truncated.as_slice())]),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let reasons: Vec<String> =
        body["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].starts_with("part 1: zip entry 2: not a readable DICOM file"), "{reasons:?}");
    assert!(reasons[1].starts_with("part 1: zip entry 3: not a readable DICOM file"), "{reasons:?}");
    let text = body.to_string();
    let root = dir.path().display().to_string();
    for server_detail in [root.as_str(), "/tmp", "incoming", "upload-", "000002", ".dcm"] {
        assert!(!text.contains(server_detail), "the answer shows {server_detail}: {text}");
    }
    drop(server);
    // The stored file's full path is in the log, for the operator.
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("incoming/upload-") && log_text.contains("000002.dcm"), "{log_text}");
}

#[test]
fn identified_leftovers_of_a_crash_are_swept_at_start() {
    let (dir, scientist, server, client) = scientist_server("max_upload_files = 20000\n");
    let state = dir.path().join("state");
    // Owned data: a study waiting for consent (its received objects) and an admitted one.
    let (_, files) = synthetic_study(3);
    let (status, waiting) = upload_multipart(&client, &server.base, &scientist, "B", None, zip_study(&files));
    assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
    let waiting_dir = state.join("incoming").join(waiting["study"]["id"].as_i64().unwrap().to_string());
    let (status, admitted) =
        upload_consented_b(&client, &server.base, &scientist, zip_study(&synthetic_study(3).1));
    assert_eq!(status, StatusCode::ACCEPTED, "{admitted}");
    let job = admitted["job"].as_i64().unwrap();
    let status = wait_job(&client, &server.base, &scientist, job);
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["result"]["admitted"], true, "{status}");
    let owned_received = files_under(&waiting_dir);
    assert_eq!(owned_received.len(), 3);
    let archive = files_under(&state.join("archive"));
    assert!(!archive.is_empty());

    // kill -9 while a large upload is being unpacked.
    let many: Vec<Vec<u8>> = (0..6000).map(|_| files[0].clone()).collect();
    let big = zip_study(&many);
    let base = server.base.clone();
    let token = scientist.clone();
    let uploader = std::thread::spawn(move || {
        let form = reqwest::blocking::multipart::Form::new()
            .part("file", reqwest::blocking::multipart::Part::bytes(big).file_name("big.zip"));
        let _ = Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap()
            .post(format!("{base}/api/v1/studies?database=B"))
            .bearer_auth(token)
            .multipart(form)
            .send();
    });
    let unpacking = || {
        std::fs::read_dir(state.join("incoming"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("upload-"))
            .any(|e| std::fs::read_dir(e.path()).map(|mut d| d.next().is_some()).unwrap_or(false))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !unpacking() {
        assert!(std::time::Instant::now() < deadline, "the upload never started unpacking");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    drop(server); // SIGKILL
    uploader.join().unwrap();
    assert!(unpacking(), "the crash left an upload folder behind");
    // Leftovers of other crashes: an ingest staging folder of a dead process and received
    // objects no study owns.
    for leftover in ["archive/.staging/4194999-1/s/dicom/x.dcm", "incoming/424242/000001.dcm"] {
        let path = state.join(leftover);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, PATIENT_NAME).unwrap();
    }

    let log = dir.path().join("restart.log");
    let server = ServerProcess::start(&dir.path().join("pedinorm.toml"), Some(&log));
    let remaining: Vec<String> = std::fs::read_dir(state.join("incoming"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into())
        .collect();
    assert_eq!(remaining, vec![waiting_dir.file_name().unwrap().to_string_lossy().to_string()]);
    assert_eq!(files_under(&waiting_dir), owned_received, "the waiting study's objects are untouched");
    assert!(!state.join("archive/.staging").exists());
    assert_eq!(files_under(&state.join("archive")), archive, "the archive is untouched");
    assert!(
        files_containing(&state, PATIENT_NAME)
            .iter()
            .all(|f| f.starts_with(&waiting_dir.display().to_string()))
    );
    drop(server);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("removed 3 leftover staging folder(s) of identified data"), "{log_text}");
    for name in ["upload-", "4194999", "424242"] {
        assert!(!log_text.contains(name), "the log names {name}: {log_text}");
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs the server expecting it to refuse to start; returns its standard error.
fn refused_start(config: &Path) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a shared data directory");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_server_config(dir.path(), "pedinorm.toml", "");
    let state = dir.path().join("state");
    // The user is created by the command line, which creates the state.
    let scientist = users_add_cli(&state, "sci", "scientist", "C1");
    let server = ServerProcess::start(&config, None);
    let client = Client::new();
    let (status, waiting) =
        upload_multipart(&client, &server.base, &scientist, "B", None, zip_study(&synthetic_study(2).1));
    assert_eq!(status, StatusCode::ACCEPTED, "{waiting}");
    let (status, _) = upload_consented_b(&client, &server.base, &scientist, zip_study(&synthetic_study(2).1));
    assert_eq!(status, StatusCode::ACCEPTED);
    std::thread::sleep(std::time::Duration::from_secs(3));
    drop(server);
    let mut checked = 0;
    for entry in walkdir::WalkDir::new(&state).into_iter().flatten() {
        let expected = if entry.file_type().is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(entry.path()), expected, "{}", entry.path().display());
        checked += 1;
    }
    assert!(checked > 10, "{checked}");
    assert!(
        files_under(&state).iter().any(|f| f.starts_with("incoming/")),
        "identified objects were checked"
    );

    // A data directory others can read is refused, naming the rule; the override only warns.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = refused_start(&config);
    assert!(
        stderr.contains("open to group or others (mode 755)") && stderr.contains("chmod 700"),
        "{stderr}"
    );
    let config = write_server_config(dir.path(), "pedinorm.toml", "allow_shared_data_dir = true\n");
    let log = dir.path().join("shared.log");
    drop(ServerProcess::start(&config, Some(&log)));
    assert!(std::fs::read_to_string(&log).unwrap().contains("open to group or others"));
}

#[test]
fn anonymous_noise_is_rate_limited_and_audited_in_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_server_config(
        dir.path(),
        "pedinorm.toml",
        "anonymous_requests_per_minute = 20\nanonymous_audit_window_seconds = 4\n",
    );
    let radiologist = user(dir.path(), "rad", Role::Radiologist);
    let auditor = user(dir.path(), "aud", Role::Auditor);
    let server = ServerProcess::start(&config, None);
    let client = Client::new();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for i in 0..40 {
        let mut request = client.get(format!("{}/api/v1/studies/{i}", server.base));
        if i % 4 == 3 {
            request = request.bearer_auth("pn_1_forged");
        }
        *statuses.entry(request.send().unwrap().status().as_u16()).or_default() += 1;
    }
    // 20 at once, then one every 3 s.
    let unauthorized = statuses.get(&401).copied().unwrap_or(0);
    assert!((20..=22).contains(&unauthorized), "{statuses:?}");
    assert_eq!(unauthorized + statuses.get(&429).copied().unwrap_or(0), 40, "{statuses:?}");
    // Authenticated callers from the same address are not limited, and are audited one by one.
    for _ in 0..25 {
        let response = client.get(format!("{}/api/v1/whoami", server.base)).bearer_auth(&radiologist).send();
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    // The window ends and is reported within a second.
    std::thread::sleep(std::time::Duration::from_millis(6000));
    let (_, records) = call(&client, &server.base, "GET", "/api/v1/audit?limit=1000", &auditor, None);
    let records = records.as_array().unwrap();
    assert_eq!(records.iter().filter(|r| r["action"] == "whoami").count(), 25);
    let anonymous: Vec<&Value> = records.iter().filter(|r| r["action"] == "anonymous").collect();
    assert!((2..=4).contains(&anonymous.len()), "one record per address, status and window: {anonymous:?}");
    let mut counted = 0;
    for record in anonymous {
        let resource = record["resource"].as_str().unwrap();
        let (count, rest) = resource.split_once(' ').unwrap();
        assert!(rest.starts_with("request(s) without a valid token from 127.0.0.1"), "{resource}");
        assert!(matches!(record["outcome"].as_str(), Some("401" | "429")), "{record}");
        counted += count.parse::<u64>().unwrap();
    }
    assert_eq!(counted, 40);
    assert!(records.iter().all(|r| !r["resource"].as_str().unwrap().starts_with("/api/v1/studies/")));
}

/// (status, JSON body) of one request as `token` (the portal's acting headers when given).
fn call(
    client: &Client,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    acting: Option<(&str, &str, &str)>,
) -> (StatusCode, Value) {
    let mut request = client
        .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some((name, role, centre)) = acting {
        request = request
            .header("X-Acting-User", name)
            .header("X-Acting-Role", role)
            .header("X-Acting-Centre", centre);
    }
    if method != "GET" {
        let body = match (method, path.rsplit('/').next()) {
            ("PATCH", _) => serde_json::json!({ "orpha_codes": ["ORPHA:99"] }),
            (_, Some("consent")) => consent_record(true, false, "2024-01-02"),
            (_, Some("withdraw" | "reject")) => serde_json::json!({ "reason": "probe" }),
            _ => serde_json::json!({}),
        };
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

fn path_id(path: &str) -> i64 {
    path.split('/').nth(4).and_then(|id| id.parse().ok()).unwrap_or(0)
}

/// Waits until a job is final; returns it.
fn wait_job(client: &Client, base: &str, token: &str, job: i64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, status) = call(client, base, "GET", &format!("/api/v1/jobs/{job}"), token, None);
        if matches!(status["state"].as_str(), Some("done" | "failed" | "cancelled")) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn a_centre_reads_and_changes_only_its_own_studies_consent_cases_and_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_server_config(dir.path(), "pedinorm.toml", "");
    let state = dir.path().join("state");
    let at = |name: &str, role: Role, centre: &str| add_user(&state, name, role.as_str(), Some(centre));
    let radiologist_1 = at("rad one", Role::Radiologist, "C1");
    let radiologist_2 = at("rad two", Role::Radiologist, "C2");
    let scientist_2 = at("sci two", Role::Scientist, "C2");
    let committee_2 = at("prof two", Role::Committee, "C2");
    let admin = at("adm", Role::Admin, "C3");
    let auditor = at("aud", Role::Auditor, "C3");
    let portal = add_user(&state, "portal", "portal", None);
    let server = ServerProcess::start(&config, None);
    let client = Client::new();
    let base = server.base.as_str();
    let send = |method: &str, path: &str, token: &str| call(&client, base, method, path, token, None);

    // Centre C1 submits a study with consent, its case, and the ingest job runs.
    let (status, submitted) = upload_multipart(
        &client,
        base,
        &radiologist_1,
        "A",
        Some(&consent_record(true, false, "2024-01-02")),
        zip_study(&synthetic_study(3).1),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    assert_eq!(submitted["study"]["centre"], "C1");
    let study = submitted["study"]["id"].as_i64().unwrap();
    let job = submitted["job"].as_i64().unwrap();
    assert_eq!(wait_job(&client, base, &radiologist_1, job)["centre"], "C1");
    let request = client.post(format!("{base}/api/v1/cases")).bearer_auth(&radiologist_1);
    let response = request.json(&serde_json::json!({ "study_id": study })).send().unwrap();
    let (status, case): (StatusCode, Value) = (response.status(), response.json().unwrap());
    assert_eq!(status, StatusCode::CREATED, "{case}");
    let case = case["id"].as_i64().unwrap();

    let study_paths = [
        ("GET", format!("/api/v1/studies/{study}")),
        ("GET", format!("/api/v1/studies/{study}/consent")),
        ("POST", format!("/api/v1/studies/{study}/consent")),
        ("POST", format!("/api/v1/studies/{study}/consent/withdraw")),
        ("POST", format!("/api/v1/studies/{study}/ingest")),
    ];
    let case_paths = [
        ("GET", format!("/api/v1/cases/{case}")),
        ("PATCH", format!("/api/v1/cases/{case}")),
        ("POST", format!("/api/v1/cases/{case}/withdraw")),
        ("POST", format!("/api/v1/cases/{case}/deviation")),
    ];
    let job_paths = [
        ("GET", format!("/api/v1/jobs/{job}")),
        ("GET", format!("/api/v1/jobs/{job}/outputs")),
        ("GET", format!("/api/v1/jobs/{job}/outputs/report.json")),
        ("POST", format!("/api/v1/jobs/{job}/cancel")),
        ("POST", format!("/api/v1/jobs/{job}/store-back")),
    ];
    // Another centre's resource answers exactly as a missing one: same status, same words,
    // even with a body the handler would refuse.
    let missing = |method: &str, path: &str, token: &str| {
        let id = path_id(path);
        let other = path.replacen(&format!("/{id}"), "/999999", 1);
        let (status, body) = send(method, &other, token);
        (status, body.to_string().replace("999999", &id.to_string()))
    };
    for (method, path) in study_paths.iter().chain(&case_paths).chain(&job_paths) {
        let (status, body) = send(method, path, &radiologist_2);
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} by C2: {body}");
        assert_eq!((status, body.to_string()), missing(method, path, &radiologist_2), "{method} {path}");
        let request =
            client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{path}"));
        let invalid =
            request.bearer_auth(&radiologist_2).header("Content-Type", "application/json").body("{");
        assert_eq!(invalid.send().unwrap().status(), StatusCode::NOT_FOUND, "{method} {path} invalid body");
    }
    for (method, path) in study_paths.iter().chain(&job_paths) {
        let (status, body) = send(method, path, &scientist_2);
        if !matches!(status, StatusCode::FORBIDDEN) {
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} by a scientist of C2: {body}");
        }
    }
    // Nor can C2 open a case on C1's study, nor list C1's resources.
    let request = client.post(format!("{base}/api/v1/cases")).bearer_auth(&radiologist_2);
    let response = request.json(&serde_json::json!({ "study_id": study })).send().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    for list in ["/api/v1/studies", "/api/v1/cases", "/api/v1/jobs"] {
        assert_eq!(send("GET", list, &radiologist_2), (StatusCode::OK, serde_json::json!([])), "{list}");
        let (_, own) = send("GET", list, &radiologist_1);
        assert_eq!(own.as_array().unwrap().len(), 1, "{list}: {own}");
    }

    // C1 itself reads and changes them.
    assert_eq!(send("GET", &study_paths[0].1, &radiologist_1).0, StatusCode::OK);
    assert_eq!(send("GET", &study_paths[1].1, &radiologist_1).0, StatusCode::OK);
    assert_eq!(send("GET", &case_paths[0].1, &radiologist_1).0, StatusCode::OK);
    let patch = client.patch(format!("{base}{}", case_paths[1].1)).bearer_auth(&radiologist_1);
    let patched = patch.json(&serde_json::json!({ "orpha_codes": ["ORPHA:99"] })).send().unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(send("GET", &job_paths[1].1, &radiologist_1).0, StatusCode::OK);

    // The committee of C2 reviews and approves C1's case, but sees no C1 study or consent.
    assert_eq!(send("GET", &case_paths[0].1, &committee_2).0, StatusCode::OK);
    assert_eq!(send("POST", &format!("/api/v1/cases/{case}/review"), &committee_2).0, StatusCode::OK);
    let (status, approved) = send("POST", &format!("/api/v1/cases/{case}/approvals"), &committee_2);
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(send("GET", "/api/v1/cases", &committee_2).1.as_array().unwrap().len(), 1);
    for (method, path) in &study_paths[..2] {
        assert_eq!(send(method, path, &committee_2).0, StatusCode::NOT_FOUND, "{path} by committee of C2");
    }
    assert_eq!(send("GET", "/api/v1/studies", &committee_2), (StatusCode::OK, serde_json::json!([])));

    // Admins and auditors are global.
    for (_, path) in [&study_paths[0], &study_paths[1], &case_paths[0], &job_paths[0]] {
        assert_eq!(send("GET", path, &admin).0, StatusCode::OK, "{path} by an admin of C3");
    }
    assert_eq!(send("GET", "/api/v1/jobs", &admin).1.as_array().unwrap().len(), 1);
    let (status, records) = send("GET", "/api/v1/audit?limit=1000", &auditor);
    assert_eq!(status, StatusCode::OK);
    let centres: std::collections::BTreeSet<&str> =
        records.as_array().unwrap().iter().filter_map(|r| r["centre"].as_str()).collect();
    assert!(centres.contains("C1") && centres.contains("C2"), "{centres:?}");

    // The portal acts only for a registered user of that role and centre, within that scope.
    let as_portal =
        |path: &str, acting: (&str, &str, &str)| call(&client, base, "GET", path, &portal, Some(acting));
    assert_eq!(as_portal(&case_paths[0].1, ("rad one", "radiologist", "C1")).0, StatusCode::OK);
    assert_eq!(as_portal(&case_paths[0].1, ("rad two", "radiologist", "C2")).0, StatusCode::NOT_FOUND);
    assert_eq!(as_portal(&case_paths[0].1, ("prof two", "committee", "C2")).0, StatusCode::OK);
    for forged in [
        ("rad two", "radiologist", "C1"), // registered, but at another centre
        ("rad one", "committee", "C1"),   // registered, but with another role
        ("nobody", "radiologist", "C1"),  // not registered
    ] {
        let (status, body) = as_portal(&case_paths[0].1, forged);
        assert_eq!(status, StatusCode::FORBIDDEN, "{forged:?}: {body}");
        assert!(body["message"].as_str().unwrap().contains("registered user"), "{body}");
    }
}

/// Runs `pedinorm users ARGS --data-dir DIR/state`; returns its standard output.
fn users_cli(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(output.status.success(), "users {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn token_id(token: &str) -> String {
    token.split('_').nth(1).unwrap().to_string()
}

#[test]
fn users_are_disabled_enabled_and_rotated_with_immediate_effect() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_server_config(dir.path(), "pedinorm.toml", "");
    let admin = user(dir.path(), "adm", Role::Admin);
    let auditor = user(dir.path(), "aud", Role::Auditor);
    let radiologist = user(dir.path(), "rad", Role::Radiologist);
    let portal = add_user(&dir.path().join("state"), "portal", "portal", None);
    let id = token_id(&radiologist);
    let server = ServerProcess::start(&config, None);
    let client = Client::new();
    let base = server.base.as_str();
    let whoami = |token: &str| call(&client, base, "GET", "/api/v1/whoami", token, None).0;
    let as_portal =
        || call(&client, base, "GET", "/api/v1/cases", &portal, Some(("rad", "radiologist", "C1"))).0;
    assert_eq!(whoami(&radiologist), StatusCode::OK);
    assert_eq!(as_portal(), StatusCode::OK);

    // The command line, while the server runs: the token fails at the very next request.
    users_cli(dir.path(), &["disable", "--id", &id]);
    assert_eq!(whoami(&radiologist), StatusCode::UNAUTHORIZED);
    assert_eq!(as_portal(), StatusCode::FORBIDDEN, "the portal cannot act for a disabled user");
    let listed = users_cli(dir.path(), &["list"]);
    assert!(listed.lines().any(|l| l == format!("{id}\trad\tradiologist\tC1\tdisabled")), "{listed}");
    assert_eq!(listed.lines().count(), 4, "nothing is deleted: {listed}");

    // The API (admins only).
    let post = |path: &str, token: &str| call(&client, base, "POST", path, token, None);
    let (status, enabled) = post(&format!("/api/v1/users/{id}/enable"), &admin);
    assert_eq!((status, enabled["disabled"].as_bool()), (StatusCode::OK, Some(false)), "{enabled}");
    assert_eq!(whoami(&radiologist), StatusCode::OK);
    let (status, rotated) = post(&format!("/api/v1/users/{id}/rotate-token"), &admin);
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let api_token = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(whoami(&radiologist), StatusCode::UNAUTHORIZED, "the old token stops working");
    assert_eq!(whoami(&api_token), StatusCode::OK);
    assert_eq!(post(&format!("/api/v1/users/{id}/disable"), &api_token).0, StatusCode::FORBIDDEN);
    assert_eq!(call(&client, base, "GET", "/api/v1/users", &auditor, None).0, StatusCode::FORBIDDEN);
    let (status, disabled) = post(&format!("/api/v1/users/{id}/disable"), &admin);
    assert_eq!((status, disabled["disabled"].as_bool()), (StatusCode::OK, Some(true)), "{disabled}");
    assert_eq!(whoami(&api_token), StatusCode::UNAUTHORIZED);
    assert_eq!(post(&format!("/api/v1/users/{}/disable", token_id(&admin)), &admin).0, StatusCode::CONFLICT);
    assert_eq!(post("/api/v1/users/999/enable", &admin).0, StatusCode::NOT_FOUND);
    let (_, users) = call(&client, base, "GET", "/api/v1/users", &admin, None);
    assert_eq!(users.as_array().unwrap().len(), 4, "{users}");
    assert!(!users.to_string().contains("token_hash") && !users.to_string().contains("salt"));

    // The command line rotates a disabled user's token; enabled again, only the newest works.
    let cli_token = users_cli(dir.path(), &["rotate-token", "--id", &id]).trim().to_string();
    assert!(cli_token.starts_with(&format!("pn_{id}_")), "{cli_token}");
    users_cli(dir.path(), &["enable", "--id", &id]);
    assert_eq!(whoami(&cli_token), StatusCode::OK);
    assert_eq!(whoami(&api_token), StatusCode::UNAUTHORIZED);
    // A user added on the command line while the server runs can call at once.
    let added =
        users_cli(dir.path(), &["add", "--name", "newcomer", "--role", "scientist", "--centre", "C1"]);
    assert_eq!(whoami(added.trim()), StatusCode::OK);

    // Each step is in the audit log, whether made over the API or on the command line, and the
    // chain is intact.
    let (_, records) = call(&client, base, "GET", "/api/v1/audit?limit=1000", &auditor, None);
    let actions: Vec<(String, String)> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"].as_str().unwrap().starts_with("user."))
        .map(|r| (r["action"].as_str().unwrap().to_string(), r["role"].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        ("user.disable", "operator"),
        ("user.list", "operator"),
        ("user.enable", "admin"),
        ("user.rotate_token", "admin"),
        ("user.disable", "radiologist"), // refused (403), recorded all the same
        ("user.list", "auditor"),        // refused (403)
        ("user.disable", "admin"),
        ("user.disable", "admin"), // their own account: 409
        ("user.enable", "admin"),  // no such user: 404
        ("user.list", "admin"),
        ("user.rotate_token", "operator"),
        ("user.enable", "operator"),
        ("user.add", "operator"),
    ];
    let actions: Vec<(&str, &str)> = actions.iter().map(|(a, r)| (a.as_str(), r.as_str())).collect();
    assert_eq!(actions, expected);
    let (_, verify) = call(&client, base, "GET", "/api/v1/audit/verify", &auditor, None);
    assert_eq!(verify["intact"], true, "{verify}");
}

#[test]
fn job_errors_name_no_server_path() {
    let (dir, scientist, server, client) = scientist_server("");
    let log = dir.path().join("server.log");
    // The pseudonym key becomes unusable while the service runs: ingest fails naming the file.
    std::fs::write(dir.path().join("pseudonym.key"), "short").unwrap();
    let (status, submitted) =
        upload_consented_b(&client, &server.base, &scientist, zip_study(&synthetic_study(2).1));
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    let job = wait_job(&client, &server.base, &scientist, submitted["job"].as_i64().unwrap());
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("pseudonym key file pseudonym.key"), "{error}");
    let (_, listed) = call(&client, &server.base, "GET", "/api/v1/jobs", &scientist, None);
    let (_, study) = call(
        &client,
        &server.base,
        "GET",
        &format!("/api/v1/studies/{}", submitted["study"]["id"]),
        &scientist,
        None,
    );
    let root = dir.path().display().to_string();
    for answer in [job.to_string(), listed.to_string(), study.to_string()] {
        assert!(!answer.contains(&root) && !answer.contains("/tmp"), "a server path is shown: {answer}");
    }
    drop(server);
    // The operator finds the full path in the log.
    let key = dir.path().join("pseudonym.key").display().to_string();
    assert!(std::fs::read_to_string(&log).unwrap().contains(&key), "the log lacks the full path");
}
