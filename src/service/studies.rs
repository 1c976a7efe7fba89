//! Studies received by the service: upload checks (size, zip-slip, DICOM validity), storage
//! of the received objects until ingest, and the studies table.
//!
//! Received objects are written under `DATA_DIR/incoming/<study id>/` with names chosen by the
//! service (`000001.dcm`, ...): client file names and zip entry names are never used as paths
//! (they may carry patient names) and never echoed back. The identified objects are removed
//! once ingest has finished (admitted or refused); the de-identified study is kept by ingest.

use super::consent::{self, Consent, Database};
use super::error::ApiError;
use super::layout::StateEntry;
use super::scope::Owned;
use super::store::now;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Limits applied to an upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest number of objects.
    pub max_files: usize,
    /// Largest total uncompressed size.
    pub max_total_bytes: u64,
}

/// A study as shown to clients (no identities).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Study {
    /// Study id.
    pub id: i64,
    /// Database offered to (`A` or `B`).
    pub database: String,
    /// `upload` or `pacs`.
    pub source: String,
    /// Centre of the submitting account.
    pub centre: String,
    /// `received`, `ingest_queued`, `admitted`, `refused`, `failed`.
    pub status: String,
    /// Named refusal reasons.
    pub reasons: Vec<String>,
    /// De-identified metadata from ingest (age, sex, field strength, series, pseudonym).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Number of objects received.
    pub files: i64,
    /// Bytes received.
    pub bytes: i64,
    /// Submitting account.
    pub created_by: String,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub updated: String,
    /// Latest ingest job.
    pub ingest_job: Option<i64>,
    /// Recorded consent.
    pub consent: Option<Consent>,
}

/// Where the objects of a study wait for ingest.
pub fn incoming_dir(data_dir: &Path, study_id: i64) -> PathBuf {
    StateEntry::Incoming.under(data_dir).join(study_id.to_string())
}

/// Refuses client-given names that try to leave their folder (`..`, absolute, drive prefix).
pub fn check_client_path(name: &str) -> Result<(), String> {
    if name.contains('\0') {
        return Err("a file name contains a NUL byte".into());
    }
    let normalized = name.replace('\\', "/");
    let path = Path::new(&normalized);
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("a file name contains `..` (path traversal)".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("a file name is an absolute path (path traversal)".into());
            }
        }
    }
    if normalized.len() >= 2 && normalized.as_bytes()[1] == b':' {
        return Err("a file name carries a drive prefix (path traversal)".into());
    }
    Ok(())
}

/// What [`store_parts`] kept.
#[derive(Debug, Clone)]
pub struct StoredParts {
    /// Objects stored (`000001.dcm`, … in order).
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// For each stored object, in order, the entry it came from as the client knows it
    /// (`part 2`, `part 1: zip entry 7`): never a client file name nor a server path.
    pub labels: Vec<String>,
}

/// Collects received parts into `dir`: zip archives are expanded (entries checked), other
/// parts are taken as DICOM objects.
pub fn store_parts(
    dir: &Path,
    parts: Vec<(Option<String>, Vec<u8>)>,
    limits: UploadLimits,
) -> Result<StoredParts, ApiError> {
    std::fs::create_dir_all(dir).map_err(ApiError::internal)?;
    let mut count = 0usize;
    let mut total = 0u64;
    let mut labels = Vec::new();
    let mut write = |label: String, bytes: &[u8]| -> Result<(), ApiError> {
        labels.push(label);
        count += 1;
        total += bytes.len() as u64;
        if count > limits.max_files {
            return Err(ApiError::TooLarge(format!("an upload holds at most {} objects", limits.max_files)));
        }
        if total > limits.max_total_bytes {
            return Err(ApiError::TooLarge(format!(
                "an upload holds at most {} bytes once expanded",
                limits.max_total_bytes
            )));
        }
        crate::atomic::write_bytes(&dir.join(format!("{count:06}.dcm")), bytes).map_err(ApiError::internal)
    };
    for (index, (name, bytes)) in parts.into_iter().enumerate() {
        if let Some(name) = &name {
            check_client_path(name)
                .map_err(|rule| ApiError::BadRequest(format!("part {}: {rule}", index + 1)))?;
        }
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            expand_zip(index + 1, &bytes, limits, &mut write)?;
        } else {
            write(format!("part {}", index + 1), &bytes)?;
        }
    }
    if count == 0 {
        return Err(ApiError::BadRequest("the upload holds no files".into()));
    }
    Ok(StoredParts { files: count, bytes: total, labels })
}

/// Stores one object under the label of the entry it came from.
type WriteObject<'a> = dyn FnMut(String, &[u8]) -> Result<(), ApiError> + 'a;

fn expand_zip(
    part: usize,
    bytes: &[u8],
    limits: UploadLimits,
    write: &mut WriteObject<'_>,
) -> Result<(), ApiError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| ApiError::BadRequest(format!("part {part}: not a readable zip archive ({e})")))?;
    if archive.len() > limits.max_files.saturating_mul(2) {
        return Err(ApiError::TooLarge(format!("part {part}: the zip archive has too many entries")));
    }
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| {
            ApiError::BadRequest(format!("part {part}: zip entry {}: unreadable ({e})", index + 1))
        })?;
        let label = format!("part {part}: zip entry {}", index + 1);
        check_client_path(entry.name()).map_err(|rule| ApiError::BadRequest(format!("{label}: {rule}")))?;
        if entry.enclosed_name().is_none() {
            return Err(ApiError::BadRequest(format!("{label}: its path escapes the archive (zip-slip)")));
        }
        if entry.is_symlink() {
            return Err(ApiError::BadRequest(format!("{label}: symbolic links are refused")));
        }
        if entry.is_dir() {
            continue;
        }
        let file_name =
            entry.enclosed_name().and_then(|p| p.file_name().map(|f| f.to_string_lossy().to_string()));
        // macOS resource forks and DICOMDIR indexes are not images.
        if matches!(file_name.as_deref(), Some("DICOMDIR") | Some(".DS_Store"))
            || entry.name().starts_with("__MACOSX/")
        {
            continue;
        }
        if entry.size() > limits.max_total_bytes {
            return Err(ApiError::TooLarge(format!("{label}: larger than the upload limit")));
        }
        let mut content = Vec::with_capacity(entry.size().min(1 << 26) as usize);
        // Bound the read by the declared size + 1 so a lying header cannot expand further.
        (&mut entry)
            .take(limits.max_total_bytes + 1)
            .read_to_end(&mut content)
            .map_err(|e| ApiError::BadRequest(format!("{label}: cannot be decompressed ({e})")))?;
        write(label, &content)?;
    }
    Ok(())
}

/// Checks that every stored object is a readable DICOM file with the tags ingest needs;
/// returns the named problems. Objects are named by `labels` (from [`store_parts`]; by
/// position when missing), never by their client names nor by server paths: the reader's
/// full message, which names the stored file, goes to the log only.
pub fn validate_dicom_dir(dir: &Path, labels: &[String]) -> Vec<String> {
    use dicom_dictionary_std::tags;
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            tracing::warn!("cannot list received files in {}: {e}", dir.display());
            return vec!["the received files cannot be read".into()];
        }
    };
    files.sort();
    for (index, path) in files.iter().enumerate() {
        let label = labels.get(index).cloned().unwrap_or_else(|| format!("object {}", index + 1));
        match dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(path) {
            Err(error) => {
                tracing::warn!("received object {label} ({}) is not readable DICOM: {error}", path.display());
                problems.push(format!("{label}: not a readable DICOM file ({})", reader_cause(&error, path)))
            }
            Ok(object) => {
                for (tag, name) in [
                    (tags::STUDY_INSTANCE_UID, "StudyInstanceUID"),
                    (tags::SERIES_INSTANCE_UID, "SeriesInstanceUID"),
                    (tags::SOP_INSTANCE_UID, "SOPInstanceUID"),
                ] {
                    if object.element(tag).is_err() {
                        problems.push(format!("{label}: missing {name}"));
                    }
                }
            }
        }
        if problems.len() >= 20 {
            problems.push("further objects not checked".into());
            break;
        }
    }
    problems
}

/// The reader's explanation without the stored file's path: the innermost cause (which says
/// what was wrong with the bytes), with any path of the file removed.
fn reader_cause(error: &dyn std::error::Error, path: &Path) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    let mut text: String = text.lines().next().unwrap_or("").chars().take(200).collect();
    for shown in
        [path.display().to_string(), path.parent().map(|p| p.display().to_string()).unwrap_or_default()]
    {
        if !shown.is_empty() {
            text = text.replace(&shown, "");
        }
    }
    text.replace("''", "").replace("\"\"", "").trim().to_string()
}

/// Creates a study row.
pub fn insert(
    connection: &Connection,
    database: Database,
    source: &str,
    centre: &str,
    created_by: &str,
    pacs: Option<(&str, &str)>,
) -> Result<i64, ApiError> {
    let time = now();
    connection.execute(
        "INSERT INTO studies (database, source, centre, status, created_by, created, updated, pacs_centre, pacs_study_uid)
         VALUES (?1, ?2, ?3, 'received', ?4, ?5, ?5, ?6, ?7)",
        params![database.as_str(), source, centre, created_by, time, pacs.map(|p| p.0), pacs.map(|p| p.1)],
    )?;
    Ok(connection.last_insert_rowid())
}

/// Updates status, reasons and (optionally) metadata.
pub fn set_status(
    connection: &Connection,
    id: i64,
    status: &str,
    reasons: &[String],
    metadata: Option<&serde_json::Value>,
) -> Result<(), rusqlite::Error> {
    connection.execute(
        "UPDATE studies SET status = ?2, reasons = ?3, updated = ?4, metadata = COALESCE(?5, metadata) WHERE id = ?1",
        params![
            id,
            status,
            serde_json::to_string(reasons).unwrap_or_default(),
            now(),
            metadata.map(|m| m.to_string())
        ],
    )?;
    Ok(())
}

/// Records the files received.
pub fn set_received(
    connection: &Connection,
    id: i64,
    files: usize,
    bytes: u64,
) -> Result<(), rusqlite::Error> {
    connection.execute(
        "UPDATE studies SET files = ?2, bytes = ?3, updated = ?4 WHERE id = ?1",
        params![id, files as i64, bytes as i64, now()],
    )?;
    Ok(())
}

/// Internal facts of a study the API does not show.
#[derive(Debug, Clone)]
pub struct StudyInternals {
    /// Offered database.
    pub database: Database,
    /// Status.
    pub status: String,
    /// PACS centre and StudyInstanceUID for PACS imports.
    pub pacs: Option<(String, String)>,
    /// Ingest output folder (relative to the data directory).
    pub stored_path: Option<String>,
    /// Ingest metadata.
    pub metadata: serde_json::Value,
}

/// Internal facts of a study.
pub fn internals(connection: &Connection, id: i64) -> Result<StudyInternals, ApiError> {
    connection
        .query_row(
            "SELECT database, status, pacs_centre, pacs_study_uid, stored_path, metadata FROM studies WHERE id = ?1",
            params![id],
            |row| {
                let centre: Option<String> = row.get(2)?;
                let uid: Option<String> = row.get(3)?;
                let metadata: String = row.get(5)?;
                Ok(StudyInternals {
                    database: Database::parse(&row.get::<_, String>(0)?).unwrap_or(Database::A),
                    status: row.get(1)?,
                    pacs: centre.zip(uid),
                    stored_path: row.get(4)?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                })
            },
        )
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("study {id} does not exist")))
}

/// Records where ingest stored the de-identified study.
pub fn set_stored_path(connection: &Connection, id: i64, path: &str) -> Result<(), rusqlite::Error> {
    connection.execute("UPDATE studies SET stored_path = ?2 WHERE id = ?1", params![id, path])?;
    Ok(())
}

/// Records the latest ingest job.
pub fn set_ingest_job(connection: &Connection, id: i64, job: i64) -> Result<(), rusqlite::Error> {
    connection.execute(
        "UPDATE studies SET ingest_job = ?2, status = 'ingest_queued', updated = ?3 WHERE id = ?1",
        params![id, job, now()],
    )?;
    Ok(())
}

/// One study as shown to clients.
pub fn get(connection: &Connection, id: i64) -> Result<Study, ApiError> {
    let study = connection
        .query_row(
            "SELECT id, database, source, centre, status, reasons, metadata, files, bytes, created_by, created, updated,
                    ingest_job FROM studies WHERE id = ?1",
            params![id],
            |row| {
                let reasons: String = row.get(5)?;
                let metadata: String = row.get(6)?;
                Ok(Study {
                    id: row.get(0)?,
                    database: row.get(1)?,
                    source: row.get(2)?,
                    centre: row.get(3)?,
                    status: row.get(4)?,
                    reasons: serde_json::from_str(&reasons).unwrap_or_default(),
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    files: row.get(7)?,
                    bytes: row.get(8)?,
                    created_by: row.get(9)?,
                    created: row.get(10)?,
                    updated: row.get(11)?,
                    ingest_job: row.get(12)?,
                    consent: None,
                })
            },
        )
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("study {id} does not exist")))?;
    Ok(Study { consent: consent::get(connection, id)?, ..study })
}

/// Studies, newest first; only those of `centre` when given.
pub fn list(
    connection: &Connection,
    database: Option<&str>,
    centre: Option<&str>,
    limit: i64,
) -> Result<Vec<Study>, ApiError> {
    let ids = super::scope::newest_ids(connection, Owned::Study, ("database", database), centre, limit)?;
    ids.into_iter().map(|id| get(connection, id)).collect()
}

/// Studies of database B admitted and still consented (the input of a normative build).
pub fn consented_b_studies(connection: &Connection) -> Result<Vec<(i64, String)>, ApiError> {
    let mut statement = connection.prepare(
        "SELECT s.id, s.stored_path FROM studies s JOIN consents c ON c.study_id = s.id
         WHERE s.database = 'B' AND s.status = 'admitted' AND c.database_b = 1 AND c.withdrawn_at IS NULL
           AND s.stored_path IS NOT NULL ORDER BY s.id",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(names: &[&str]) -> Vec<u8> {
        let mut buffer = std::io::Cursor::new(Vec::new());
        {
            let mut writer = zip::ZipWriter::new(&mut buffer);
            for name in names {
                writer.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
                writer.write_all(b"not dicom").unwrap();
            }
            writer.finish().unwrap();
        }
        buffer.into_inner()
    }

    #[test]
    fn traversal_is_refused_everywhere() {
        let limits = UploadLimits { max_files: 10, max_total_bytes: 1000 };
        let dir = tempfile::tempdir().unwrap();
        for name in ["../evil.dcm", "/etc/passwd", "a/../../b", "C:\\x", "..\\x"] {
            assert!(check_client_path(name).is_err(), "{name}");
            let error = store_parts(&dir.path().join("u"), vec![(Some(name.into()), b"x".to_vec())], limits);
            assert!(matches!(error, Err(ApiError::BadRequest(_))), "{name}");
            let error = store_parts(&dir.path().join("z"), vec![(None, zip_with(&["ok.dcm", name]))], limits);
            assert!(matches!(error, Err(ApiError::BadRequest(_))), "zip {name}");
        }
        assert!(!dir.path().join("evil.dcm").exists());
        let stored =
            store_parts(&dir.path().join("ok"), vec![(None, zip_with(&["a/1.dcm", "a/2.dcm"]))], limits)
                .unwrap();
        assert_eq!(stored.files, 2);
        assert_eq!(stored.labels, ["part 1: zip entry 1", "part 1: zip entry 2"]);
        assert!(dir.path().join("ok/000002.dcm").exists());
        let many: Vec<&str> = vec!["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11"];
        let error = store_parts(&dir.path().join("m"), vec![(None, zip_with(&many))], limits);
        assert!(matches!(error, Err(ApiError::TooLarge(_))));
        let problems = validate_dicom_dir(&dir.path().join("ok"), &stored.labels);
        assert_eq!(problems.len(), 2);
        assert!(problems[1].starts_with("part 1: zip entry 2: not a readable DICOM file"), "{problems:?}");
        let root = dir.path().display().to_string();
        assert!(problems.iter().all(|p| !p.contains(&root) && !p.contains("000002")), "{problems:?}");
    }
}
