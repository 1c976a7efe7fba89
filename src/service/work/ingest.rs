//! The ingest job: de-identify, pseudonymize and admit a received study.

use super::{archive_dir, pacs_client, param_i64, strip_paths};
use crate::service::config::ServiceConfig;
use crate::service::consent::{self, Database};
use crate::service::jobs::{JobContext, JobFailure};
use crate::service::store::Store;
use crate::service::studies;
use serde_json::{Value, json};
use std::path::Path;

/// What ingest made of a study.
pub struct IngestOutcome {
    /// Named refusal reasons (empty when admitted).
    pub reasons: Vec<String>,
    /// De-identified metadata.
    pub metadata: Value,
    /// Study folder relative to the data directory.
    pub stored_path: Option<String>,
}

/// Calls ingest (de-identification, pseudonym, admission, store) on the received files.
fn run_ingest(
    config: &ServiceConfig,
    database: Database,
    input_dir: &Path,
    allow_unlinked: bool,
    ctx: &JobContext,
) -> Result<IngestOutcome, JobFailure> {
    use crate::ingest::{self, IdentifierSource, IngestError, IngestOptions, IngestProgress};
    let database = match database {
        // A study enters database A as "to be confirmed"; the case workflow confirms it.
        Database::A => ingest::admission::Database::parse("A", Some("A2")),
        Database::B => ingest::admission::Database::parse("B", None),
    }
    .map_err(JobFailure::Failed)?;
    let options = IngestOptions {
        database,
        data_dir: archive_dir(config),
        identifier: match &config.national_id_issuer {
            Some(issuer) => IdentifierSource::Issuer(issuer.clone()),
            None => IdentifierSource::None,
        },
        allow_unlinked,
        key_file: config.pseudonym_key_file.clone(),
    };
    let report = ingest::ingest_study_with_progress(&[input_dir.to_path_buf()], &options, &|progress| {
        let (percent, stage) = match progress {
            IngestProgress::Scanning(done, total) => {
                (10.0 + 30.0 * done as f64 / total.max(1) as f64, "reading headers")
            }
            IngestProgress::Storing(done, total) => {
                (40.0 + 55.0 * done as f64 / total.max(1) as f64, "de-identifying and storing")
            }
        };
        let _ = ctx.progress(percent, stage);
    });
    match report {
        Ok(report) => {
            let sex = first_sidecar_sex(&archive_dir(config).join(&report.study_dir));
            Ok(IngestOutcome {
                reasons: Vec::new(),
                metadata: json!({
                    "pseudonym": report.pseudonym,
                    "linked": report.linked,
                    "class": report.class,
                    "age_years": report.age_years,
                    "sex": sex,
                    "ingest_status": report.status,
                    "series": report.series.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
                    "skipped_series": report.skipped_series,
                    "skipped_files": report.skipped_files,
                }),
                stored_path: Some(report.study_dir.display().to_string()),
            })
        }
        Err(IngestError::Refused(reasons)) => Ok(IngestOutcome {
            reasons: reasons.iter().map(ToString::to_string).collect(),
            metadata: json!({}),
            stored_path: None,
        }),
        Err(error @ IngestError::OtherDatabase { .. }) => {
            Ok(IngestOutcome { reasons: vec![error.to_string()], metadata: json!({}), stored_path: None })
        }
        Err(error @ (IngestError::Dicom(_) | IngestError::NoInputs | IngestError::Input { .. })) => {
            Ok(IngestOutcome {
                // Input problems name files inside the service's own folder: keep only the rule.
                reasons: vec![format!("unreadable-study: {}", strip_paths(&error.to_string(), input_dir))],
                metadata: json!({}),
                stored_path: None,
            })
        }
        Err(error) => Err(JobFailure::Failed(strip_paths(&error.to_string(), input_dir))),
    }
}

/// `PatientSex` from the first series sidecar of a stored study (`M`, `F` or absent).
fn first_sidecar_sex(study_dir: &Path) -> Option<String> {
    let entries = walkdir::WalkDir::new(study_dir).max_depth(3).sort_by_file_name();
    for entry in entries.into_iter().flatten() {
        if entry.path().extension().is_some_and(|e| e == "json")
            && let Ok(bytes) = std::fs::read(entry.path())
            && let Ok(value) = serde_json::from_slice::<Value>(&bytes)
            && let Some(sex) = value.get("PatientSex").and_then(Value::as_str)
        {
            return Some(sex.to_string());
        }
    }
    None
}

pub(super) fn ingest_job(
    config: &ServiceConfig,
    store: &Store,
    ctx: &JobContext,
) -> Result<Value, JobFailure> {
    let study_id = param_i64(ctx, "study_id")?;
    let allow_unlinked = ctx.params["allow_unlinked"].as_bool().unwrap_or(false);
    ctx.progress(1.0, "checking consent")?;
    let (internals, consent) = {
        let connection = store.lock();
        let internals = studies::internals(&connection, study_id).map_err(JobFailure::from)?;
        (internals, consent::get(&connection, study_id).map_err(JobFailure::from)?)
    };
    let input_dir = studies::incoming_dir(&config.data_dir, study_id);
    let set = |status: &str, reasons: &[String], metadata: Option<&Value>| {
        studies::set_status(&store.lock(), study_id, status, reasons, metadata).map_err(JobFailure::from)
    };
    if let Err(reason) = consent::permits(consent.as_ref(), internals.database) {
        set("refused", std::slice::from_ref(&reason), None)?;
        let _ = std::fs::remove_dir_all(&input_dir);
        return Ok(json!({ "study_id": study_id, "admitted": false, "reasons": [reason] }));
    }
    let has_files = std::fs::read_dir(&input_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if !has_files {
        let Some((centre, study_uid)) = &internals.pacs else {
            return Err(JobFailure::Failed(
                "the received files of this study are gone; upload it again".into(),
            ));
        };
        ctx.progress(3.0, "retrieving from PACS")?;
        let client = pacs_client(config, centre)?;
        // QIDO first: a study the PACS does not hold is a named refusal, not a failure.
        let objects = if client.find_study(study_uid)?.is_empty() {
            Vec::new()
        } else {
            client.retrieve_study(study_uid)?
        };
        if objects.is_empty() {
            let reason =
                "pacs-study-not-found: the PACS holds no objects for that StudyInstanceUID".to_string();
            set("refused", std::slice::from_ref(&reason), None)?;
            return Ok(json!({ "study_id": study_id, "admitted": false, "reasons": [reason] }));
        }
        // Into a sibling folder first, so an interrupted retrieval is never taken as complete.
        let partial = input_dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        let limits = studies::UploadLimits {
            max_files: config.max_upload_files,
            max_total_bytes: config.max_unzipped_bytes,
        };
        let stored = studies::store_parts(&partial, objects.into_iter().map(|o| (None, o)).collect(), limits)
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&input_dir);
        std::fs::rename(&partial, &input_dir)?;
        studies::set_received(&store.lock(), study_id, stored.files, stored.bytes)?;
        let problems = studies::validate_dicom_dir(&input_dir, &stored.labels);
        if !problems.is_empty() {
            set("refused", &problems, None)?;
            let _ = std::fs::remove_dir_all(&input_dir);
            return Ok(json!({ "study_id": study_id, "admitted": false, "reasons": problems }));
        }
    }
    ctx.progress(8.0, "ingesting")?;
    let outcome = run_ingest(config, internals.database, &input_dir, allow_unlinked, ctx)?;
    ctx.progress(97.0, "recording")?;
    let admitted = outcome.reasons.is_empty();
    {
        let connection = store.lock();
        studies::set_status(
            &connection,
            study_id,
            if admitted { "admitted" } else { "refused" },
            &outcome.reasons,
            Some(&outcome.metadata),
        )?;
        if let Some(path) = &outcome.stored_path {
            studies::set_stored_path(&connection, study_id, path)?;
        }
    }
    // The identified originals are not kept once ingest has decided.
    let _ = std::fs::remove_dir_all(&input_dir);
    Ok(
        json!({ "study_id": study_id, "admitted": admitted, "reasons": outcome.reasons, "metadata": outcome.metadata }),
    )
}
