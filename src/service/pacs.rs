//! PACS client: Orthanc's REST API and DICOMweb (QIDO-RS, WADO-RS, STOW-RS).
//!
//! Blocking (it runs inside job workers). One client per configured centre; credentials come
//! from the configuration (password inline or from a file) and never appear in errors.

use super::config::PacsConfig;
use reqwest::blocking::Client;
use serde_json::Value;
use std::time::Duration;

/// Errors talking to a PACS.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    /// The request did not complete.
    #[error("PACS of centre {centre}: request to {what} failed: {message}")]
    Transport {
        /// Centre.
        centre: String,
        /// What was asked.
        what: String,
        /// Cause (without credentials).
        message: String,
    },
    /// The PACS answered with an error status.
    #[error("PACS of centre {centre}: {what} answered HTTP {status}")]
    Status {
        /// Centre.
        centre: String,
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
    },
    /// The answer could not be understood.
    #[error("PACS of centre {centre}: {what}: {message}")]
    Protocol {
        /// Centre.
        centre: String,
        /// What was asked.
        what: String,
        /// Problem.
        message: String,
    },
    /// Bad configuration or argument.
    #[error("{0}")]
    Invalid(String),
}

/// Checks a DICOM UID (digits and dots, ≤ 64 characters) before it goes into a URL.
pub fn check_uid(uid: &str) -> Result<(), PacsError> {
    let valid = !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(())
    } else {
        Err(PacsError::Invalid("a DICOM UID must be digits separated by dots (≤ 64 characters)".into()))
    }
}

/// A client for one PACS.
pub struct PacsClient {
    centre: String,
    base: String,
    dicomweb: String,
    username: Option<String>,
    password: Option<String>,
    client: Client,
}

impl PacsClient {
    /// Builds a client from configuration (reads the password file if any).
    pub fn new(config: &PacsConfig) -> Result<Self, PacsError> {
        let password = match (&config.password, &config.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        PacsError::Invalid(format!(
                            "PACS of centre {}: cannot read password_file: {e}",
                            config.centre
                        ))
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            (None, None) => None,
        };
        let client = Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds))
            .build()
            .map_err(|e| PacsError::Invalid(format!("PACS client: {e}")))?;
        let base = config.url.trim_end_matches('/').to_string();
        let root = config.dicomweb_root.trim_end_matches('/');
        let root = if root.starts_with('/') { root.to_string() } else { format!("/{root}") };
        Ok(PacsClient {
            centre: config.centre.clone(),
            dicomweb: format!("{base}{root}"),
            base,
            username: config.username.clone(),
            password,
            client,
        })
    }

    /// Centre of this PACS.
    pub fn centre(&self) -> &str {
        &self.centre
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let builder = self.client.request(method, url);
        match &self.username {
            Some(user) => builder.basic_auth(user, self.password.as_deref()),
            None => builder,
        }
    }

    fn send(
        &self,
        what: &str,
        builder: reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, PacsError> {
        let response = builder.send().map_err(|e| PacsError::Transport {
            centre: self.centre.clone(),
            what: what.to_string(),
            // reqwest errors carry the URL, never the credentials (basic auth is a header).
            message: e.without_url().to_string(),
        })?;
        if !response.status().is_success() {
            return Err(PacsError::Status {
                centre: self.centre.clone(),
                what: what.to_string(),
                status: response.status().as_u16(),
            });
        }
        Ok(response)
    }

    fn protocol(&self, what: &str, message: impl std::fmt::Display) -> PacsError {
        PacsError::Protocol {
            centre: self.centre.clone(),
            what: what.to_string(),
            message: message.to_string(),
        }
    }

    /// Orthanc's `/system` (name, version): a liveness check that also checks credentials.
    pub fn system(&self) -> Result<Value, PacsError> {
        let response =
            self.send("system", self.request(reqwest::Method::GET, &format!("{}/system", self.base)))?;
        response.json().map_err(|e| self.protocol("system", e))
    }

    /// Stores one DICOM object through Orthanc's REST API (`POST /instances`); returns Orthanc's answer.
    pub fn upload_instance(&self, bytes: Vec<u8>) -> Result<Value, PacsError> {
        let builder = self
            .request(reqwest::Method::POST, &format!("{}/instances", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/dicom")
            .body(bytes);
        self.send("store instance", builder)?.json().map_err(|e| self.protocol("store instance", e))
    }

    /// QIDO-RS: studies matching a StudyInstanceUID (DICOM JSON).
    pub fn find_study(&self, study_uid: &str) -> Result<Vec<Value>, PacsError> {
        check_uid(study_uid)?;
        self.qido("QIDO-RS studies", &format!("{}/studies?StudyInstanceUID={study_uid}", self.dicomweb))
    }

    /// QIDO-RS: series of a study (DICOM JSON).
    pub fn find_series(&self, study_uid: &str) -> Result<Vec<Value>, PacsError> {
        check_uid(study_uid)?;
        self.qido("QIDO-RS series", &format!("{}/studies/{study_uid}/series", self.dicomweb))
    }

    /// A QIDO-RS query answered in DICOM JSON; no content (204, or an empty body) matches nothing.
    fn qido(&self, what: &str, url: &str) -> Result<Vec<Value>, PacsError> {
        let builder =
            self.request(reqwest::Method::GET, url).header(reqwest::header::ACCEPT, "application/dicom+json");
        let text = self.send(what, builder)?.text().map_err(|e| self.protocol(what, e))?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).map_err(|e| self.protocol(what, e))
    }

    /// WADO-RS: every object of a study, as DICOM files (Part 10 bytes).
    pub fn retrieve_study(&self, study_uid: &str) -> Result<Vec<Vec<u8>>, PacsError> {
        check_uid(study_uid)?;
        let what = "WADO-RS study";
        let url = format!("{}/studies/{study_uid}", self.dicomweb);
        let builder = self
            .request(reqwest::Method::GET, &url)
            .header(reqwest::header::ACCEPT, "multipart/related; type=\"application/dicom\"");
        let response = self.send(what, builder)?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let boundary = multipart_boundary(&content_type).ok_or_else(|| {
            self.protocol(what, format!("expected multipart/related, got `{content_type}`"))
        })?;
        let body = response.bytes().map_err(|e| self.protocol(what, e))?;
        split_multipart(&body, &boundary).map_err(|e| self.protocol(what, e))
    }

    /// STOW-RS: stores DICOM objects (Part 10 bytes); returns the PACS's DICOM JSON answer.
    pub fn store(&self, objects: &[Vec<u8>]) -> Result<Value, PacsError> {
        let what = "STOW-RS";
        let boundary = format!("pedinorm-{:016x}", rand::random::<u64>());
        let mut body = Vec::new();
        for object in objects {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(object);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let builder = self
            .request(reqwest::Method::POST, &format!("{}/studies", self.dicomweb))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(body);
        let text = self.send(what, builder)?.text().map_err(|e| self.protocol(what, e))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| self.protocol(what, e))
    }
}

/// The `boundary` parameter of a multipart content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("boundary")).then(|| value.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > haystack.len() {
        return None;
    }
    haystack[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// Splits a multipart body into the bodies of its parts.
pub fn split_multipart(body: &[u8], boundary: &str) -> Result<Vec<Vec<u8>>, String> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut position = find(body, &delimiter, 0).ok_or("no multipart boundary found")?;
    loop {
        let after = position + delimiter.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let headers_end = find(body, b"\r\n\r\n", after).ok_or("a part has no header end")?;
        let next = find(body, &delimiter, headers_end + 4).ok_or("the multipart body is truncated")?;
        let mut end = next;
        if end >= 2 && &body[end - 2..end] == b"\r\n" {
            end -= 2;
        }
        parts.push(body[headers_end + 4..end].to_vec());
        position = next;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_round_trip() {
        let content_type = "multipart/related; type=\"application/dicom\"; boundary=\"abc\"";
        assert_eq!(multipart_boundary(content_type).as_deref(), Some("abc"));
        let body = b"--abc\r\nContent-Type: application/dicom\r\n\r\nONE\r\n--abc\r\nContent-Type: x\r\n\r\nT\r\nWO\r\n--abc--\r\n";
        assert_eq!(split_multipart(body, "abc").unwrap(), vec![b"ONE".to_vec(), b"T\r\nWO".to_vec()]);
        assert!(split_multipart(b"--abc\r\nX: y\r\n\r\nunterminated", "abc").is_err());
    }

    #[test]
    fn uids_are_checked_before_urls() {
        assert!(check_uid("1.2.840.113619.2.1").is_ok());
        for bad in ["", "1..2", "1.2/../x", "1.2?x=1", &"1".repeat(65)] {
            assert!(check_uid(bad).is_err(), "{bad}");
        }
    }
}
