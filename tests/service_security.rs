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
use std::path::{Path, PathBuf};
use std::process::Child;

/// A configuration file for a server on an ephemeral port with its state in `DIR/state`;
/// `extra` is appended (TOML lines).
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("pseudonym.key"), "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    let path = dir.join("pedinorm.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"state\"\nlisten = \"127.0.0.1:0\"\npseudonym_key_file = \"pseudonym.key\"\n\
             national_id_issuer = \"IT-CF\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// A running server process, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &Path, log: Option<&Path>) -> Server {
        let (child, address) = spawn_server(&dir.join("pedinorm.toml"), &dir.join("address"), log);
        Server { child, base: format!("http://{address}") }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    write_config(dir.path(), "");
    let admin = user(dir.path(), "adm", Role::Admin);
    let auditor = user(dir.path(), "aud", Role::Auditor);
    let server = Server::start(dir.path(), None);
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
