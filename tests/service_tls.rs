//! `pedinorm serve` over HTTPS from configured certificate files (rustls), and plain HTTP
//! refused off loopback unless allowed: the real binary, a certificate made for the test.

mod service_common;

use service_common::{add_user, spawn_server};
use std::path::Path;
use std::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_pedinorm");

/// Kills the server when the test ends, passed or failed.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pedinorm serve --config CONFIG` and waits for the address it bound.
fn serve(config: &Path, address_file: &Path) -> (Server, String) {
    let (child, address) = spawn_server(config, address_file, None);
    (Server(child), address)
}

#[test]
fn https_with_configured_certificate_files() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("state");
    std::fs::create_dir_all(&data_dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let certificate_pem = certified.cert.pem();
    std::fs::write(work.path().join("cert.pem"), &certificate_pem).unwrap();
    std::fs::write(work.path().join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    // Relative paths are taken relative to the configuration file.
    let config = work.path().join("pedinorm.toml");
    std::fs::write(
        &config,
        "data_dir = \"state\"\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
    )
    .unwrap();
    let token = add_user(&data_dir, "tls test", "scientist", None);
    let (_server, address) = serve(&config, &work.path().join("address"));
    let port = address.rsplit(':').next().unwrap();
    let base = format!("https://localhost:{port}");

    let trusting = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(certificate_pem.as_bytes()).unwrap())
        .resolve("localhost", address.parse().unwrap())
        .build()
        .unwrap();
    let health = trusting.get(format!("{base}/health")).send().unwrap();
    assert_eq!(health.status(), 200);
    let whoami = trusting.get(format!("{base}/api/v1/whoami")).bearer_auth(&token).send().unwrap();
    assert_eq!(whoami.status(), 200);
    let body: serde_json::Value = whoami.json().unwrap();
    assert_eq!(body["user"]["role"], "scientist", "{body}");
    let anonymous = trusting.get(format!("{base}/api/v1/whoami")).send().unwrap();
    assert_eq!(anonymous.status(), 401);

    // A client that does not trust the certificate gets no answer; nor does plain HTTP.
    let untrusting = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .resolve("localhost", address.parse().unwrap())
        .build()
        .unwrap();
    assert!(untrusting.get(format!("{base}/health")).send().is_err());
    let plain = reqwest::blocking::get(format!("http://{address}/health"));
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "plain HTTP answered on the TLS port");
}

#[test]
fn plain_http_off_loopback_is_refused_unless_allowed() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--data-dir"])
        .arg(work.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plain HTTP is only served on a loopback address"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // Allowed explicitly in the configuration: it starts.
    let config = work.path().join("pedinorm.toml");
    std::fs::write(&config, "data_dir = \"state\"\nlisten = \"0.0.0.0:0\"\nallow_plain_http = true\n")
        .unwrap();
    let (_server, address) = serve(&config, &work.path().join("address"));
    let port = address.rsplit(':').next().unwrap();
    let health = reqwest::blocking::get(format!("http://127.0.0.1:{port}/health")).unwrap();
    assert_eq!(health.status(), 200);
}
