//! Helpers shared by the service tests: a synthetic identified DICOM study, zips, an
//! in-process server on an ephemeral port, and polling.
#![allow(dead_code)]

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use pedinorm::service::Service;
use pedinorm::service::config::ServiceConfig;
use std::io::Write;
use std::path::Path;
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

/// Writes a pseudonym key file and returns a configuration using it.
pub fn test_config(data_dir: &Path) -> ServiceConfig {
    std::fs::create_dir_all(data_dir).unwrap();
    let key = data_dir.join("pseudonym.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    let mut config = ServiceConfig::with_data_dir(data_dir.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    config.pseudonym_key_file = Some(key);
    config.national_id_issuer = Some("IT-CF".into());
    config.max_upload_bytes = 4 * 1024 * 1024;
    config
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
            axum::serve(listener, router)
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

/// Creates a user directly in the state and returns the token.
pub fn add_user(data_dir: &Path, name: &str, role: &str, centre: Option<&str>) -> String {
    let store = pedinorm::service::store::Store::open(data_dir).unwrap();
    pedinorm::service::auth::add_user(&store, name, role.parse().unwrap(), centre).unwrap()
}

/// Polls a job until it is final; returns its JSON.
pub async fn wait_job(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    job: i64,
    timeout: Duration,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let job_json: serde_json::Value = client
            .get(format!("{base}/api/v1/jobs/{job}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = job_json["state"].as_str().unwrap_or("").to_string();
        if matches!(state.as_str(), "done" | "failed" | "cancelled") {
            return job_json;
        }
        assert!(std::time::Instant::now() < deadline, "job {job} not finished in time: {job_json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
