//! Service configuration: a TOML file (`pedinorm serve --config pedinorm.toml`) or embedded
//! defaults under a data directory (`pedinorm serve --data-dir DIR --listen 127.0.0.1:PORT`).

use super::layout::StateEntry;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Errors while reading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this schema.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// File that failed.
        path: PathBuf,
        /// Parser message (names the field).
        message: String,
    },
    /// A value breaks a rule.
    #[error("configuration field `{field}`: {rule}")]
    Invalid {
        /// Field name.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
}

/// TLS certificate and key (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One PACS (Orthanc or any DICOMweb server) belonging to a centre.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsConfig {
    /// Centre that holds the PACS; studies are imported from the centre named in the request.
    pub centre: String,
    /// Base URL of the server, e.g. `http://127.0.0.1:8042`.
    pub url: String,
    /// HTTP basic-auth user name (optional).
    #[serde(default)]
    pub username: Option<String>,
    /// HTTP basic-auth password (optional); prefer `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (first line), so it need not sit in the configuration.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Path of the DICOMweb root below `url` (Orthanc's plugin default is `/dicom-web`).
    #[serde(default = "default_dicomweb_root")]
    pub dicomweb_root: String,
    /// Request timeout in seconds.
    #[serde(default = "default_pacs_timeout")]
    pub timeout_seconds: u64,
}

fn default_dicomweb_root() -> String {
    "/dicom-web".to_string()
}
fn default_pacs_timeout() -> u64 {
    60
}

/// Job queue settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Number of jobs run at the same time.
    pub concurrency: usize,
    /// Queued jobs beyond this number are refused (HTTP 503) instead of growing without bound.
    pub max_queued: usize,
    /// Pause at each progress report, in milliseconds. For fault-injection tests (it makes a
    /// job last long enough to be interrupted); leave 0 in production.
    pub stage_delay_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { concurrency: 1, max_queued: 100, stage_delay_ms: 0 }
    }
}

/// Case-workflow rules for database A.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// Committee approvals (distinct specialists) that move a case from review to A2.
    pub committee_approvals_required: usize,
    /// Distinct centres whose specialists must confirm the diagnosis for A1.
    pub confirmation_centres_required: usize,
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig { committee_approvals_required: 1, confirmation_centres_required: 2 }
    }
}

/// How the service's normative builds register images (deviation maps and added normals are
/// mapped with the parameters stored in the database they use).
///
/// The defaults are the standard schedule sized for 1–2 mm brains
/// ([`pedinorm_templates::model::MappingParams::standard`]); a service working on coarse
/// images (tests, demonstrations) can shorten it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeConfig {
    /// Affine iterations per pyramid level, coarse to fine (three levels); `None` = standard.
    pub affine_iterations: Option<Vec<usize>>,
    /// Diffeomorphic iterations per pyramid level, coarse to fine (three levels); `None` =
    /// standard.
    pub deformable_iterations: Option<Vec<usize>>,
    /// Correct the bias field before registration.
    pub bias_correction: bool,
    /// Worker processes of a template build started by the service.
    pub template_jobs: usize,
    /// The `pedinorm` program that runs the steps of a template build; default: this
    /// executable (or `PEDINORM_PROGRAM`).
    pub program: Option<PathBuf>,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            affine_iterations: None,
            deformable_iterations: None,
            bias_correction: true,
            template_jobs: 1,
            program: None,
        }
    }
}

impl ComputeConfig {
    /// The mapping parameters of normative builds.
    pub fn mapping(&self) -> pedinorm_templates::model::MappingParams {
        let mut mapping = pedinorm_templates::model::MappingParams::standard();
        if let Some(iterations) = &self.affine_iterations {
            mapping.affine_iterations = iterations.clone();
        }
        if let Some(iterations) = &self.deformable_iterations {
            mapping.deformable_iterations = iterations.clone();
        }
        mapping.bias_correction = self.bias_correction;
        mapping
    }
}

/// Audit-log sealing and anchoring.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// File holding the secret key that seals the audit chain (at least 32 bytes). Default:
    /// the file named by `PEDINORM_AUDIT_KEY_FILE`, else `DATA_DIR/audit.key` (created at the
    /// first start). Keep it outside the data directory: whoever can read it can reseal an
    /// edited log.
    pub key_file: Option<PathBuf>,
    /// Append-only file of signed checkpoints; default `DATA_DIR/audit.checkpoints`.
    pub checkpoint_file: Option<PathBuf>,
    /// A checkpoint after at most this many records.
    pub checkpoint_every_records: u64,
    /// A checkpoint at most this many seconds after a record.
    pub checkpoint_every_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: None,
            checkpoint_file: None,
            checkpoint_every_records: 1000,
            checkpoint_every_seconds: 60,
        }
    }
}

/// The whole service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Directory holding the SQLite state, uploads, job outputs and ingested studies.
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS with these files; without it the service speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Allow plain HTTP on a non-loopback address (off by default: tokens would travel in clear).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Largest accepted upload body, in bytes.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
    /// Largest total uncompressed size of a zip upload, in bytes (zip-bomb guard).
    #[serde(default = "default_max_unzipped")]
    pub max_unzipped_bytes: u64,
    /// Largest number of files in one upload.
    #[serde(default = "default_max_files")]
    pub max_upload_files: usize,
    /// Normative database (HDF5) used for deviation maps; default `DATA_DIR/normdb.h5`.
    #[serde(default)]
    pub normdb: Option<PathBuf>,
    /// File holding the secret pseudonym key handed to ingest (never logged).
    #[serde(default)]
    pub pseudonym_key_file: Option<PathBuf>,
    /// Issuer of the national identifier in OtherPatientIDsSequence, handed to ingest.
    #[serde(default)]
    pub national_id_issuer: Option<String>,
    /// Audit-log sealing and anchoring.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Job queue.
    #[serde(default)]
    pub jobs: JobsConfig,
    /// Case workflow.
    #[serde(default)]
    pub workflow: WorkflowConfig,
    /// PACS servers, one per centre.
    #[serde(default)]
    pub pacs: Vec<PacsConfig>,
    /// Registration schedule of compute jobs.
    #[serde(default)]
    pub compute: ComputeConfig,
    /// Start even when the data directory is open to group or others (only warn).
    #[serde(default)]
    pub allow_shared_data_dir: bool,
    /// Requests without a valid token one client address may send per minute (429 beyond).
    #[serde(default = "default_anonymous_rate")]
    pub anonymous_requests_per_minute: u32,
    /// Requests without a valid token are audited as one record per address, status and
    /// window of this many seconds, with their count.
    #[serde(default = "default_anonymous_window")]
    pub anonymous_audit_window_seconds: u64,
    /// Folder holding the web viewer's NiiVue bundle (`niivue.js`); default: the folder named
    /// by `PEDINORM_VIEWER_ASSETS`, else `.data/viewer` of the source tree this binary was
    /// built from (where `scripts/setup.sh` puts it).
    #[serde(default)]
    pub viewer_assets: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_upload() -> usize {
    512 * 1024 * 1024
}
fn default_max_unzipped() -> u64 {
    2 * 1024 * 1024 * 1024
}
fn default_max_files() -> usize {
    5000
}
fn default_anonymous_rate() -> u32 {
    120
}
fn default_anonymous_window() -> u64 {
    60
}

impl ServiceConfig {
    /// Embedded defaults under `data_dir`.
    pub fn with_data_dir(data_dir: PathBuf, listen: SocketAddr) -> Self {
        ServiceConfig {
            data_dir,
            listen,
            tls: None,
            allow_plain_http: false,
            max_upload_bytes: default_max_upload(),
            max_unzipped_bytes: default_max_unzipped(),
            max_upload_files: default_max_files(),
            normdb: None,
            pseudonym_key_file: None,
            national_id_issuer: None,
            audit: AuditConfig::default(),
            jobs: JobsConfig::default(),
            workflow: WorkflowConfig::default(),
            pacs: Vec::new(),
            compute: ComputeConfig::default(),
            allow_shared_data_dir: false,
            anonymous_requests_per_minute: default_anonymous_rate(),
            anonymous_audit_window_seconds: default_anonymous_window(),
            viewer_assets: None,
        }
    }

    /// Reads and checks a TOML file; relative paths in it are taken relative to the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config: ServiceConfig = toml::from_str(&text)
            .map_err(|error| ConfigError::Parse { path: path.to_path_buf(), message: error.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.data_dir);
        if let Some(tls) = config.tls.as_mut() {
            rebase(&mut tls.cert);
            rebase(&mut tls.key);
        }
        if let Some(p) = config.normdb.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.pseudonym_key_file.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.audit.key_file.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.audit.checkpoint_file.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.compute.program.as_mut() {
            rebase(p);
        }
        if let Some(p) = config.viewer_assets.as_mut() {
            rebase(p);
        }
        for pacs in &mut config.pacs {
            if let Some(p) = pacs.password_file.as_mut() {
                rebase(p);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules that the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, rule: &str| {
            Err(ConfigError::Invalid { field: field.to_string(), rule: rule.to_string() })
        };
        if self.jobs.concurrency == 0 || self.jobs.concurrency > 64 {
            return invalid("jobs.concurrency", "must be between 1 and 64");
        }
        if self.workflow.confirmation_centres_required == 0 {
            return invalid("workflow.confirmation_centres_required", "must be at least 1");
        }
        if self.workflow.committee_approvals_required == 0 {
            return invalid("workflow.committee_approvals_required", "must be at least 1");
        }
        if self.audit.checkpoint_every_records == 0 || self.audit.checkpoint_every_seconds == 0 {
            return invalid("audit.checkpoint_every_records", "checkpoint intervals must be positive");
        }
        if self.anonymous_requests_per_minute == 0 {
            return invalid("anonymous_requests_per_minute", "must be at least 1");
        }
        if self.anonymous_audit_window_seconds == 0 {
            return invalid("anonymous_audit_window_seconds", "must be at least 1");
        }
        if self.max_upload_bytes == 0 {
            return invalid("max_upload_bytes", "must be positive");
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.allow_plain_http {
            return invalid(
                "listen",
                "plain HTTP is only served on a loopback address; configure [tls] or set allow_plain_http = true",
            );
        }
        let levels = pedinorm_templates::model::MappingParams::standard().affine_iterations.len();
        for (field, iterations) in [
            ("compute.affine_iterations", &self.compute.affine_iterations),
            ("compute.deformable_iterations", &self.compute.deformable_iterations),
        ] {
            if let Some(iterations) = iterations
                && (iterations.len() != levels || iterations.iter().any(|&n| n == 0 || n > 10_000))
            {
                return invalid(field, &format!("must list {levels} iteration counts between 1 and 10000"));
            }
        }
        if self.compute.template_jobs == 0 || self.compute.template_jobs > 64 {
            return invalid("compute.template_jobs", "must be between 1 and 64");
        }
        let mut centres = std::collections::BTreeSet::new();
        for (index, pacs) in self.pacs.iter().enumerate() {
            if !centres.insert(pacs.centre.clone()) {
                return invalid(&format!("pacs[{index}].centre"), "one PACS per centre");
            }
            if !(pacs.url.starts_with("http://") || pacs.url.starts_with("https://")) {
                return invalid(&format!("pacs[{index}].url"), "must start with http:// or https://");
            }
        }
        Ok(())
    }

    /// Path of the normative database used for deviation maps.
    pub fn normdb_path(&self) -> PathBuf {
        self.normdb.clone().unwrap_or_else(|| self.state_path(StateEntry::Normdb))
    }

    /// The folder of the web viewer's NiiVue bundle (see [`ServiceConfig::viewer_assets`]).
    pub fn viewer_assets_dir(&self) -> PathBuf {
        self.viewer_assets
            .clone()
            .or_else(|| std::env::var_os("PEDINORM_VIEWER_ASSETS").map(PathBuf::from))
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/viewer"))
    }

    /// Path of a file or folder of the data directory.
    pub fn state_path(&self, entry: StateEntry) -> PathBuf {
        entry.under(&self.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_off_loopback_is_refused_unless_allowed() {
        let mut config =
            ServiceConfig::with_data_dir(PathBuf::from("/tmp/x"), "0.0.0.0:8080".parse().unwrap());
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("listen"), "{error}");
        config.allow_plain_http = true;
        config.validate().unwrap();
    }

    #[test]
    fn file_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pedinorm.toml");
        std::fs::write(
            &path,
            "data_dir = \"state\"\nlisten = \"127.0.0.1:9000\"\n[jobs]\nconcurrency = 2\n\
             [[pacs]]\ncentre = \"C1\"\nurl = \"http://127.0.0.1:8042\"\n",
        )
        .unwrap();
        let config = ServiceConfig::from_file(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("state"));
        assert_eq!(config.jobs.concurrency, 2);
        assert_eq!(config.pacs[0].dicomweb_root, "/dicom-web");
        std::fs::write(&path, "data_dir = \"s\"\nbogus = 1\n").unwrap();
        let error = ServiceConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("bogus"), "{error}");
    }
}
