//! Helpers shared by the service tests: a synthetic identified DICOM study, zips, an
//! in-process server on an ephemeral port, the real `pedinorm serve` as a child process with
//! its configuration, users, uploads, a JSON client with job polling, and a small phantom
//! cohort (4 mm) with its normative database for compute jobs.
#![allow(dead_code)]

#[path = "../component/mod.rs"]
pub mod component;
#[path = "../demo_common/mod.rs"]
pub mod demo_common;

pub use component::component_available;
use demo_common::quick_build;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use pedinorm::normdb::NormDbFile;
use pedinorm::service::Service;
use pedinorm::service::config::{ComputeConfig, ServiceConfig};
use pedinorm::synth_io::{DicomIdentity, write_dicom_series};
use pedinorm_templates::model::{
    BracketInput, NormalSubject, NormativeDb, TemplateSpace, assemble, map_normals,
};
use pedinorm_templates::stats::Sex;
use pedinorm_validation::growth::Sex as SynthSex;
use pedinorm_validation::subject::{Generator, SubjectSpec, SyntheticSubject};
use pedinorm_validation::{Abnormality, LesionTissue};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The patient name written into the synthetic study; it must never come back out.
pub const PATIENT_NAME: &str = "Rossiniano^Gioacchinetta";

/// A valid Italian codice fiscale (check character computed).
pub fn codice_fiscale() -> String {
    let first = b"RSSGCH16A41H501";
    let check = pedinorm::ingest::pseudonym::check_character(first);
    format!("{}{}", std::str::from_utf8(first).unwrap(), check as char)
}

/// A unique UID.
pub fn uid() -> String {
    format!("2.25.{}", rand::random::<u128>() >> 1)
}

fn text(tag: dicom_core::Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value.to_string()))
}

/// An identified 3 T paediatric brain MR series (`slices` slices of 16×16, 1×1×2 mm), as
/// DICOM Part 10 files; returns (StudyInstanceUID, files).
pub fn synthetic_study(slices: usize) -> (String, Vec<Vec<u8>>) {
    let study_uid = uid();
    let series_uid = uid();
    let mut files = Vec::new();
    for k in 0..slices {
        let mut object = InMemDicomObject::new_empty();
        let sop = uid();
        for (tag, vr, value) in [
            (tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.4"),
            (tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
            (tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str()),
            (tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str()),
            (tags::MODALITY, VR::CS, "MR"),
            (tags::PATIENT_NAME, VR::PN, PATIENT_NAME),
            (tags::PATIENT_ID, VR::LO, codice_fiscale().as_str()),
            (tags::ISSUER_OF_PATIENT_ID, VR::LO, "IT-CF"),
            (tags::PATIENT_BIRTH_DATE, VR::DA, "20160101"),
            (tags::PATIENT_SEX, VR::CS, "F"),
            (tags::PATIENT_AGE, VR::AS, "008Y"),
            (tags::STUDY_DATE, VR::DA, "20240315"),
            (tags::STUDY_TIME, VR::TM, "101010"),
            (tags::STUDY_ID, VR::SH, "1"),
            (tags::ACCESSION_NUMBER, VR::SH, "ACC1"),
            (tags::BODY_PART_EXAMINED, VR::CS, "HEAD"),
            (tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "3"),
            (tags::SERIES_DESCRIPTION, VR::LO, "T1 MPRAGE brain"),
            (tags::SERIES_NUMBER, VR::IS, "3"),
            // A 3 T MPRAGE's acquisition, so the series classifies as T1w.
            (tags::SCANNING_SEQUENCE, VR::CS, "GR\\IR"),
            (tags::SEQUENCE_VARIANT, VR::CS, "SP\\MP"),
            (tags::MR_ACQUISITION_TYPE, VR::CS, "3D"),
            (tags::REPETITION_TIME, VR::DS, "2300"),
            (tags::ECHO_TIME, VR::DS, "2.98"),
            (tags::INVERSION_TIME, VR::DS, "900"),
            (tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
            (tags::PIXEL_SPACING, VR::DS, "1\\1"),
            (tags::SLICE_THICKNESS, VR::DS, "2"),
            (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        ] {
            object.put(text(tag, vr, value));
        }
        object.put(text(tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string()));
        object.put(text(tags::IMAGE_POSITION_PATIENT, VR::DS, &format!("-8\\-8\\{}", 2 * k)));
        for (tag, value) in [
            (tags::SAMPLES_PER_PIXEL, 1u16),
            (tags::ROWS, 16),
            (tags::COLUMNS, 16),
            (tags::BITS_ALLOCATED, 16),
            (tags::BITS_STORED, 16),
            (tags::HIGH_BIT, 15),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        }
        let mut pixels = Vec::with_capacity(16 * 16 * 2);
        for j in 0..16u16 {
            for i in 0..16u16 {
                pixels.extend_from_slice(&(100 + i * 3 + j * 5 + k as u16 * 7).to_le_bytes());
            }
        }
        object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));
        let file = object
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.4"),
            )
            .unwrap();
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).unwrap();
        files.push(bytes);
    }
    (study_uid, files)
}

/// A zip of named entries.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut buffer);
        for (name, bytes) in entries {
            writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap();
    }
    buffer.into_inner()
}

/// A zip of a study's files (`study/0001.dcm`, ...).
pub fn zip_study(files: &[Vec<u8>]) -> Vec<u8> {
    let names: Vec<String> = (0..files.len()).map(|i| format!("study/{:04}.dcm", i + 1)).collect();
    let entries: Vec<(&str, &[u8])> =
        names.iter().map(String::as_str).zip(files.iter().map(Vec::as_slice)).collect();
    zip(&entries)
}

/// The pseudonym key of every test installation.
pub const PSEUDONYM_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Writes a pseudonym key file and returns a configuration using it.
pub fn test_config(data_dir: &Path) -> ServiceConfig {
    std::fs::create_dir_all(data_dir).unwrap();
    private(data_dir);
    let key = data_dir.join("pseudonym.key");
    std::fs::write(&key, PSEUDONYM_KEY).unwrap();
    let mut config = ServiceConfig::with_data_dir(data_dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.pseudonym_key_file = Some(key);
    config.national_id_issuer = Some("IT-CF".into());
    config.max_upload_bytes = 4 * 1024 * 1024;
    // The exhaustive tests send many requests without a token from one address.
    config.anonymous_requests_per_minute = 1_000_000;
    config
}

/// Makes a data directory private to the user (the service refuses a shared one).
pub fn private(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A server running in this process on an ephemeral port.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    service: Option<Service>,
}

impl TestServer {
    /// Starts the service (jobs included) on 127.0.0.1:0.
    pub async fn start(config: ServiceConfig) -> TestServer {
        let service = Service::start(config).unwrap();
        let router = service.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(async {
                    let _ = receiver.await;
                })
                .await
                .unwrap();
        });
        TestServer { base, shutdown: Some(sender), task: Some(task), service: Some(service) }
    }

    /// Stops the server and the job workers.
    pub async fn stop(mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(service) = self.service.take() {
            tokio::task::spawn_blocking(move || service.stop()).await.unwrap();
        }
    }
}

/// Starts the real `pedinorm serve --config CONFIG` as a child process and waits for the
/// address it bound (`HOST:PORT`). Its standard output and error go to `log` when given (with
/// `--log debug`, the most verbose level), else nowhere. The caller kills and waits for it.
pub fn spawn_server(config: &Path, address_file: &Path, log: Option<&Path>) -> (std::process::Child, String) {
    spawn_server_with(config, address_file, log, &[])
}

/// [`spawn_server`] with further arguments of `pedinorm serve` (e.g. `--rebuild-similar`).
#[allow(clippy::zombie_processes)]
pub fn spawn_server_with(
    config: &Path,
    address_file: &Path,
    log: Option<&Path>,
    extra: &[&str],
) -> (std::process::Child, String) {
    use std::process::{Command, Stdio};
    let _ = std::fs::remove_file(address_file);
    let mut command = Command::new(env!("CARGO_BIN_EXE_pedinorm"));
    command.args(["serve", "--config"]).arg(config).arg("--address-file").arg(address_file).args(extra);
    match log {
        Some(log) => {
            let file = std::fs::File::create(log).unwrap();
            command.args(["--log", "debug"]).stdout(file.try_clone().unwrap()).stderr(file);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let mut child = command.spawn().expect("pedinorm serve starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(address) = std::fs::read_to_string(address_file) {
            return (child, address);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited with {status} before listening");
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An installation for the real `pedinorm serve` in `dir`: the pseudonym key `DIR/pseudonym.key`
/// and the configuration file `DIR/NAME` (state in `DIR/state`, an ephemeral port, Italian
/// national identifiers) with the TOML lines `extra` appended. Returns the configuration's path.
pub fn write_server_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("pseudonym.key"), PSEUDONYM_KEY).unwrap();
    let path = dir.join(name);
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

/// The real `pedinorm serve --config CONFIG` running as a child process (its address file
/// next to the configuration), killed and reaped when dropped.
pub struct ServerProcess {
    /// The process.
    pub child: std::process::Child,
    /// `http://HOST:PORT`.
    pub base: String,
}

impl ServerProcess {
    /// Starts the server and waits until it listens (see [`spawn_server`] for `log`).
    pub fn start(config: &Path, log: Option<&Path>) -> ServerProcess {
        let (child, address) = spawn_server(config, &config.with_file_name("address"), log);
        ServerProcess { child, base: format!("http://{address}") }
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A consent record covering database A and/or B, dated `date`, with research use.
pub fn consent_record(database_a: bool, database_b: bool, date: &str) -> Value {
    json!({ "database_a": database_a, "database_b": database_b, "research_use": true, "date": date })
}

/// Uploads a zip as `multipart/form-data` offered to `database`, with a `consent` part when
/// given: (status, JSON body, or null when the body is not JSON).
pub fn upload_multipart(
    client: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    database: &str,
    consent: Option<&Value>,
    zip: Vec<u8>,
) -> (reqwest::StatusCode, Value) {
    use reqwest::blocking::multipart::{Form, Part};
    let mut form = Form::new();
    if let Some(consent) = consent {
        form = form.part("consent", Part::text(consent.to_string()));
    }
    form = form.part("file", Part::bytes(zip).file_name("study.zip"));
    let response = client
        .post(format!("{base}/api/v1/studies?database={database}"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    let status = response.status();
    (status, response.json().unwrap_or(Value::Null))
}

/// [`upload_multipart`] offered to database B with consent for it.
pub fn upload_consented_b(
    client: &reqwest::blocking::Client,
    base: &str,
    token: &str,
    zip: Vec<u8>,
) -> (reqwest::StatusCode, Value) {
    upload_multipart(client, base, token, "B", Some(&consent_record(false, true, "2024-01-02")), zip)
}

/// The Orthanc named by `PEDINORM_ORTHANC_URL` / `_USER` / `_PASSWORD` / `_PASSWORD_FILE` (as
/// `scripts/services/orthanc.sh start` prints them) as the PACS of `centre`; `None` when unset.
pub fn orthanc_from_env(centre: &str) -> Option<pedinorm::service::config::PacsConfig> {
    let url = std::env::var("PEDINORM_ORTHANC_URL").ok().filter(|u| !u.is_empty())?;
    Some(pedinorm::service::config::PacsConfig {
        centre: centre.into(),
        url,
        username: std::env::var("PEDINORM_ORTHANC_USER").ok(),
        password: std::env::var("PEDINORM_ORTHANC_PASSWORD").ok(),
        password_file: std::env::var("PEDINORM_ORTHANC_PASSWORD_FILE").ok().map(Into::into),
        dicomweb_root: "/dicom-web".into(),
        timeout_seconds: 30,
    })
}

/// [`orthanc_from_env`] for a test that needs Orthanc: `None` (the test returns early) when it
/// is not configured, and a failure instead under `CI=true`.
pub fn orthanc_for_test(centre: &str) -> Option<pedinorm::service::config::PacsConfig> {
    let config = orthanc_from_env(centre);
    component_available(
        config.is_some(),
        "PEDINORM_ORTHANC_URL not set (start Orthanc with scripts/services/orthanc.sh start)",
    )
    .then_some(config)
    .flatten()
}

/// Creates a user directly in the state and returns the token.
pub fn add_user(data_dir: &Path, name: &str, role: &str, centre: Option<&str>) -> String {
    let store = pedinorm::service::store::Store::open(data_dir).unwrap();
    private(data_dir);
    pedinorm::service::auth::add_user(&store, name, role.parse().unwrap(), centre).unwrap()
}

/// A fresh installation in a temporary folder (the TOML lines `extra`) with a scientist of
/// centre C1 and the real server running on it, logging to `DIR/server.log`: (folder, the
/// scientist's token, server, client).
pub fn scientist_server(
    extra: &str,
) -> (tempfile::TempDir, String, ServerProcess, reqwest::blocking::Client) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_server_config(dir.path(), "pedinorm.toml", extra);
    let scientist = add_user(&dir.path().join("state"), "sci", "scientist", Some("C1"));
    let server = ServerProcess::start(&config, Some(&dir.path().join("server.log")));
    (dir, scientist, server, reqwest::blocking::Client::new())
}

/// Creates a user with `pedinorm users add`, as an operator does, and returns the token,
/// checking that the token is all the command prints.
pub fn users_add_cli(data_dir: &Path, name: &str, role: &str, centre: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args(["users", "add", "--data-dir"])
        .arg(data_dir)
        .args(["--name", name, "--role", role, "--centre", centre])
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

/// A JSON client of one server: every call answers (status, body), the body parsed as JSON
/// (or a JSON string holding the text when it is not JSON).
#[derive(Clone)]
pub struct Api {
    /// HTTP client.
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Api {
    /// A client of `base`.
    pub fn new(base: &str) -> Api {
        Api { client: reqwest::Client::new(), base: base.to_string() }
    }

    /// Sends a prepared request.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// GET `path` with a token.
    pub async fn get(&self, token: &str, path: &str) -> (reqwest::StatusCode, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    /// POST a JSON body to `path` with a token.
    pub async fn post(&self, token: &str, path: &str, body: &Value) -> (reqwest::StatusCode, Value) {
        self.send(self.client.post(format!("{}{path}", self.base)).bearer_auth(token).json(body)).await
    }

    /// POST raw bytes with a content type.
    pub async fn post_bytes(
        &self,
        token: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (reqwest::StatusCode, Value) {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("Content-Type", content_type)
            .body(body);
        self.send(request).await
    }

    /// GET the raw bytes of `path`.
    pub async fn download(&self, token: &str, path: &str) -> (reqwest::StatusCode, Vec<u8>) {
        let response =
            self.client.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        (response.status(), response.bytes().await.unwrap().to_vec())
    }

    /// POSTs a request that queues a job (202 expected) and waits until the job is final.
    pub async fn run_job(&self, token: &str, path: &str, body: &Value, timeout: Duration) -> Value {
        let (status, accepted) = self.post(token, path, body).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{path}: {accepted}");
        self.wait_job(token, accepted["job"].as_i64().unwrap(), timeout).await
    }

    /// Polls a job until it is final; returns its JSON.
    pub async fn wait_job(&self, token: &str, job: i64, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (_, job_json) = self.get(token, &format!("/api/v1/jobs/{job}")).await;
            if matches!(job_json["state"].as_str(), Some("done" | "failed" | "cancelled")) {
                return job_json;
            }
            assert!(std::time::Instant::now() < deadline, "job {job} not finished in time: {job_json}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Uploads a study (zip) offered to `database` with consent for it, without waiting:
    /// (status, body) of the submission (202 with the study and its ingest job when accepted).
    pub async fn submit_consented(
        &self,
        token: &str,
        database: &str,
        zip: Vec<u8>,
    ) -> (reqwest::StatusCode, Value) {
        let consent = consent_record(database == "A", database == "B", "2024-01-02");
        let form = reqwest::multipart::Form::new()
            .part("consent", reqwest::multipart::Part::text(consent.to_string()))
            .part("file", reqwest::multipart::Part::bytes(zip).file_name("study.zip"));
        let request = self
            .client
            .post(format!("{}/api/v1/studies?database={database}", self.base))
            .bearer_auth(token)
            .multipart(form);
        self.send(request).await
    }

    /// Uploads a study (zip) offered to `database` with consent for it, waits for ingest and
    /// returns (study id, ingest job).
    pub async fn upload_consented(&self, token: &str, database: &str, zip: Vec<u8>) -> (i64, Value) {
        let (status, submitted) = self.submit_consented(token, database, zip).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{submitted}");
        let job = self.wait_job(token, submitted["job"].as_i64().unwrap(), Duration::from_secs(60)).await;
        (submitted["study"]["id"].as_i64().unwrap(), job)
    }
}

// ---------------------------------------------------------------------------------------------
// Phantom cohort at 4 mm (as in `tests/main_job_small.rs`)

/// Voxel size of the phantom cohort (mm).
pub const PHANTOM_MM: f64 = 4.0;

/// Issuer of the national identifier written by the synthetic DICOM writer.
pub const SYNTHETIC_ISSUER: &str = "SYNTHETIC-CF";

/// Short registration schedules for 4 mm images, used by the service's compute jobs and by
/// the normative database built in the tests (the two must match).
pub fn quick_compute() -> ComputeConfig {
    ComputeConfig {
        affine_iterations: Some(vec![60, 30, 10]),
        deformable_iterations: Some(vec![20, 10, 5]),
        bias_correction: false,
        template_jobs: 2,
        program: Some(env!("CARGO_BIN_EXE_pedinorm").into()),
    }
}

/// The procedural phantom brain on its 4 mm grid and a subject generator.
pub fn phantom_generator() -> Generator {
    pedinorm_validation::phantom_database::phantom_generator(PHANTOM_MM)
}

/// A synthetic subject (normal, or a case with a strong white-matter lesion).
pub fn phantom_subject(
    generator: &Generator,
    age_years: f64,
    female: bool,
    seed: u64,
    lesion: bool,
) -> SyntheticSubject {
    let sex = if female { SynthSex::Female } else { SynthSex::Male };
    let mut spec = SubjectSpec::normal(age_years, sex, seed);
    spec.resolution_mm = PHANTOM_MM;
    if lesion {
        spec = spec.with_abnormality(Abnormality::Lesion {
            tissue: LesionTissue::WhiteMatter,
            radius_mm: 10.0,
            contrast: 0.8,
        });
    }
    let mut subject = generator.subject(&spec).unwrap();
    subject.id = format!("phantom-{seed}");
    subject
}

/// The subject as an identified DICOM series (Part 10 files, one per slice) with fresh UIDs;
/// returns (StudyInstanceUID, files).
pub fn subject_dicom(subject: &SyntheticSubject, index: usize) -> (String, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let mut identity = DicomIdentity::synthetic(index, rand::random::<u64>() >> 1, subject, true);
    // UIDs from a fresh seed: a PACS that already holds an earlier run's study is not confused.
    identity.seed = rand::random::<u64>() >> 1;
    let paths = write_dicom_series(dir.path(), &subject.image, &identity).unwrap();
    let files: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let object = dicom_object::open_file(&paths[0]).unwrap();
    let study_uid = object.element(tags::STUDY_INSTANCE_UID).unwrap().to_str().unwrap();
    (study_uid.trim_end_matches(['\0', ' ']).to_string(), files)
}

/// Builds a small normative database (one bracket 8–13 years, template = the phantom on its
/// grid, leave-one-out calibration) from `count` normals, with the [`quick_compute`] mapping.
pub fn phantom_normdb(generator: &Generator, count: usize, path: &Path) -> NormativeDb {
    let normals: Vec<NormalSubject> = (0..count)
        .map(|i| {
            let subject = phantom_subject(
                generator,
                8.0 + 4.5 * i as f64 / count as f64,
                i % 2 == 0,
                100 + i as u64,
                false,
            );
            NormalSubject {
                pseudonym: subject.id.clone(),
                age_years: subject.age_years,
                sex: Sex::parse(subject.sex.code()).unwrap(),
                scanner: "synthetic-3T".into(),
                image: subject.image,
            }
        })
        .collect();
    let mut mapping = quick_compute().mapping();
    mapping.smoothing_fwhm_mm = 6.0;
    let options = quick_build(mapping);
    let bracket = BracketInput {
        name: "8-13y".into(),
        min_years: 8.0,
        max_years: 13.0,
        space: TemplateSpace::new(generator.base_on_grid(), None).unwrap(),
        labels: None,
    };
    let brackets = [bracket];
    let mapped = map_normals(&normals, &brackets, &options, &|_| {}).unwrap();
    let db = assemble(&brackets, &mapped, &options, None, "2026-01-01T00:00:00Z").unwrap();
    db.write(path).unwrap();
    db
}

/// A fresh installation folder whose private data directory `DIR/state` holds a phantom
/// normative database of eight normals ([`phantom_normdb`]): (folder, data directory, generator).
pub fn state_with_phantom_normdb() -> (tempfile::TempDir, PathBuf, Generator) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    private(&state);
    let generator = phantom_generator();
    phantom_normdb(&generator, 8, &state.join("normdb.h5"));
    (dir, state, generator)
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| e.path().display().to_string())
        .collect()
}
