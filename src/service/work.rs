//! Job handlers: the service's bridge to ingest, the deviation pipeline, normative builds and
//! the PACS. Each call into another part of pedinorm sits in one function here.

use super::config::ServiceConfig;
use super::consent::{self, Database};
use super::error::ApiError;
use super::jobs::{JobContext, JobFailure, JobQueue, JobState};
use super::layout::StateEntry;
use super::pacs::PacsClient;
use super::store::Store;
use super::{cases, studies};
use crate::normdb::NormDbFile;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use utoipa::ToSchema;

/// Directory (inside the data directory) where ingest keeps admitted studies and its index.
pub fn archive_dir(config: &ServiceConfig) -> PathBuf {
    config.state_path(StateEntry::Archive)
}

/// Registers every job kind on the queue.
pub fn register_handlers(queue: &mut JobQueue, config: Arc<ServiceConfig>, store: Store) {
    let (c, s) = (config.clone(), store.clone());
    queue.register("ingest", Arc::new(move |ctx: &JobContext| ingest_job(&c, &s, ctx)));
    let (c, s) = (config.clone(), store.clone());
    queue.register("deviation", Arc::new(move |ctx: &JobContext| deviation_job(&c, &s, ctx)));
    let (c, s) = (config.clone(), store.clone());
    queue.register("store_back", Arc::new(move |ctx: &JobContext| store_back_job(&c, &s, ctx)));
    let (c, s) = (config, store);
    queue.register("normdb_build", Arc::new(move |ctx: &JobContext| normdb_build_job(&c, &s, ctx)));
}

fn param_i64(ctx: &JobContext, name: &str) -> Result<i64, JobFailure> {
    ctx.params[name].as_i64().ok_or_else(|| JobFailure::Failed(format!("job parameter `{name}` is missing")))
}

fn pacs_client(config: &ServiceConfig, centre: &str) -> Result<PacsClient, JobFailure> {
    let pacs = config
        .pacs
        .iter()
        .find(|p| p.centre == centre)
        .ok_or_else(|| JobFailure::Failed(format!("no PACS is configured for centre {centre}")))?;
    PacsClient::new(pacs).map_err(JobFailure::from)
}

// ---------------------------------------------------------------------------------------------
// Ingest

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

fn strip_paths(message: &str, dir: &Path) -> String {
    message.replace(&format!("{}/", dir.display()), "").replace(&dir.display().to_string(), "study")
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

fn ingest_job(config: &ServiceConfig, store: &Store, ctx: &JobContext) -> Result<Value, JobFailure> {
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

// ---------------------------------------------------------------------------------------------
// Deviation maps

/// Checks that a deviation map can be computed for a case (answered before queuing a job).
pub fn check_deviation_request(store: &Store, case_id: i64, normdb: &Path) -> Result<(), ApiError> {
    let connection = store.lock();
    let case = cases::get(&connection, case_id)?;
    if matches!(case.status, cases::CaseStatus::Withdrawn | cases::CaseStatus::Rejected) {
        return Err(ApiError::Conflict(format!("case {case_id} is {}", case.status.as_str())));
    }
    let internals = studies::internals(&connection, case.study_id)?;
    if internals.status != "admitted" {
        return Err(ApiError::Conflict(format!(
            "study {} of case {case_id} is {}: it must be admitted by ingest first",
            case.study_id, internals.status
        )));
    }
    if let Err(reason) = consent::permits(consent::get(&connection, case.study_id)?.as_ref(), Database::A) {
        return Err(ApiError::Refused {
            message: "no consent for a deviation map".into(),
            reasons: vec![reason],
        });
    }
    if !normdb.is_file() {
        return Err(ApiError::Unavailable(
            "the normative database is missing: build or install it first".into(),
        ));
    }
    Ok(())
}

/// Computes the deviation maps of one case volume into `out_dir` (z-maps, clusters, PNG
/// montages, report.json) with the deviation pipeline.
fn run_deviation(
    normdb: &Path,
    case_volume: &Path,
    age_years: f64,
    sex: Option<&str>,
    out_dir: &Path,
    ctx: &JobContext,
) -> Result<Value, JobFailure> {
    use crate::pipeline::deviation::{DeviationOptions, run_case};
    ctx.progress(5.0, "reading the normative database")?;
    let db = pedinorm_templates::model::NormativeDb::read(normdb).map_err(|e| {
        tracing::error!("normative database: {e}");
        JobFailure::Failed("the normative database cannot be read".into())
    })?;
    ctx.progress(15.0, "reading the case")?;
    let case = crate::formats::nifti::read_image(case_volume)
        .map_err(|_| JobFailure::Failed("the case volume cannot be read".into()))?;
    let options = DeviationOptions {
        age_years,
        sex: sex.and_then(pedinorm_templates::stats::Sex::parse),
        max_regions: 30,
        site: crate::formats::dicom::sidecar::Sidecar::next_to(case_volume).and_then(|s| s.scanner_label()),
    };
    ctx.progress(20.0, "registering, scoring and writing maps and report")?;
    // Names in the report are service-level, never file paths of the archive.
    let result = run_case(&db, &case, &options, "case", "normdb.h5", out_dir)
        .map_err(|e| JobFailure::Failed(strip_paths(&e.to_string(), out_dir)))?;
    Ok(json!({
        "bracket": result.bracket,
        "clusters": result.clusters.iter().filter(|c| c.significant).count(),
        "warnings": result.warnings,
        "registration_similarity": result.registration_similarity,
        "reliable": result.reliability.reliable,
        "reliability_reasons": result.reliability.reasons,
        "site": result.site_adjustment.as_ref().map(|a| a.describe()),
    }))
}

/// The T1-weighted volume of a stored study: the largest `.nii.gz` under it.
fn study_volume(study_dir: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(study_dir)
        .max_depth(4)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".nii.gz"))
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .map(|e| e.into_path())
}

fn deviation_job(config: &ServiceConfig, store: &Store, ctx: &JobContext) -> Result<Value, JobFailure> {
    let case_id = param_i64(ctx, "case_id")?;
    // Checked again: consent may have been withdrawn while the job waited.
    check_deviation_request(store, case_id, &config.normdb_path())
        .map_err(|e| JobFailure::Failed(e.to_string()))?;
    let (study_id, internals) = {
        let connection = store.lock();
        let case = cases::get(&connection, case_id).map_err(JobFailure::from)?;
        (case.study_id, studies::internals(&connection, case.study_id).map_err(JobFailure::from)?)
    };
    let stored =
        internals.stored_path.ok_or_else(|| JobFailure::Failed("the study has no stored volume".into()))?;
    let volume = study_volume(&archive_dir(config).join(stored))
        .ok_or_else(|| JobFailure::Failed("the study has no NIfTI volume".into()))?;
    let age = internals.metadata["age_years"]
        .as_f64()
        .ok_or_else(|| JobFailure::Failed("the study's age is unknown".into()))?;
    let sex = internals.metadata["sex"].as_str().map(str::to_string);
    ctx.progress(2.0, "starting deviation maps")?;
    let summary = run_deviation(&config.normdb_path(), &volume, age, sex.as_deref(), &ctx.work_dir, ctx)?;
    Ok(json!({ "case_id": case_id, "study_id": study_id, "age_years": age, "summary": summary }))
}

// ---------------------------------------------------------------------------------------------
// Store-back to the PACS

/// Checks that a deviation job's maps can be sent back to the study's PACS.
pub fn check_store_back_request(store: &Store, jobs: &JobQueue, job_id: i64) -> Result<(), ApiError> {
    let job = jobs.get(job_id)?.ok_or_else(|| ApiError::NotFound(format!("job {job_id} does not exist")))?;
    if job.kind != "deviation" {
        return Err(ApiError::Conflict(format!("job {job_id} is not a deviation job")));
    }
    if job.state != JobState::Done {
        return Err(ApiError::Conflict(format!("job {job_id} is not done")));
    }
    let study_id = job.result.as_ref().and_then(|r| r["study_id"].as_i64()).unwrap_or(0);
    let internals = studies::internals(&store.lock(), study_id)?;
    if internals.pacs.is_none() {
        return Err(ApiError::Conflict(
            "the study was uploaded, not imported from a PACS: nowhere to send it".into(),
        ));
    }
    Ok(())
}

fn store_back_job(config: &ServiceConfig, store: &Store, ctx: &JobContext) -> Result<Value, JobFailure> {
    let deviation_job = param_i64(ctx, "deviation_job")?;
    let jobs_dir = config.state_path(StateEntry::Jobs);
    let result: Value = serde_json::from_slice(&std::fs::read(
        jobs_dir.join(deviation_job.to_string()).join("result.json"),
    )?)?;
    let study_id = result["study_id"]
        .as_i64()
        .ok_or_else(|| JobFailure::Failed("deviation result lacks study".into()))?;
    let internals = studies::internals(&store.lock(), study_id).map_err(JobFailure::from)?;
    let (centre, study_uid) =
        internals.pacs.ok_or_else(|| JobFailure::Failed("the study was not imported from a PACS".into()))?;
    let map = jobs_dir.join(deviation_job.to_string()).join("intensity_z_native.nii.gz");
    if !map.is_file() {
        return Err(JobFailure::Failed("the deviation job has no intensity_z_native.nii.gz".into()));
    }
    ctx.progress(5.0, "querying the PACS")?;
    let client = pacs_client(config, &centre)?;
    let found = client.find_study(&study_uid)?;
    let study =
        found.first().ok_or_else(|| JobFailure::Failed("the PACS no longer holds the study".into()))?;
    ctx.progress(20.0, "building the derived series")?;
    let image = crate::formats::nifti::read_image(&map)?;
    let series = super::derived::derived_series(&image, study, "pedinorm intensity z-map")?;
    let (objects, series_uid) = (series.objects, series.series_uid);
    ctx.progress(60.0, "sending to the PACS (STOW-RS)")?;
    let answer = client.store(&objects)?;
    crate::atomic::write_bytes(&ctx.work_dir.join("stow_response.json"), answer.to_string().as_bytes())?;
    Ok(
        json!({ "deviation_job": deviation_job, "centre": centre, "instances": objects.len(), "series_instance_uid": series_uid }),
    )
}

// ---------------------------------------------------------------------------------------------
// Normative database

/// One age bracket of the normative database.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BracketSummary {
    /// Bracket name.
    pub name: String,
    /// Lower age bound (years, inclusive).
    pub min_years: f64,
    /// Upper age bound (years, exclusive).
    pub max_years: f64,
    /// Template grid dimensions.
    pub dims: [usize; 3],
    /// Template voxel size (mm).
    pub spacing_mm: [f64; 3],
    /// Subjects in this bracket.
    pub subjects: usize,
}

/// Summary of the normative database.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NormdbSummary {
    /// Software that wrote it.
    pub software: String,
    /// Creation time.
    pub created_utc: String,
    /// Last modification.
    pub modified_utc: String,
    /// Subjects.
    pub subjects: usize,
    /// Whether calibration results are present.
    pub calibrated: bool,
    /// Age brackets.
    pub brackets: Vec<BracketSummary>,
    /// Operations recorded in the database, oldest first (creation, service builds with the
    /// studies they used).
    pub history: Vec<String>,
}

/// Reads (and caches by modification time) the normative database summary. The cache lock
/// is held during a read, so concurrent requests after a change wait for one read instead of
/// each reading the whole file.
pub fn normdb_summary(path: &Path) -> Result<NormdbSummary, ApiError> {
    static CACHE: Mutex<Option<(PathBuf, std::time::SystemTime, NormdbSummary)>> = Mutex::new(None);
    // A missing database is an absent resource (404); one that cannot be read is a 503.
    let missing =
        || ApiError::NotFound("the normative database is missing: build or install it first".into());
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|_| missing())?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, m, summary)) = cache.as_ref()
        && p == path
        && *m == modified
    {
        return Ok(summary.clone());
    }
    let summary = read_normdb_summary(path)?;
    *cache = Some((path.to_path_buf(), modified, summary.clone()));
    Ok(summary)
}

fn read_normdb_summary(path: &Path) -> Result<NormdbSummary, ApiError> {
    let db = pedinorm_templates::model::NormativeDb::read(path).map_err(|e| {
        tracing::error!("normative database: {e}");
        ApiError::Unavailable("the normative database cannot be read".into())
    })?;
    let brackets = db
        .brackets
        .iter()
        .map(|bracket| BracketSummary {
            name: bracket.name.clone(),
            min_years: bracket.min_years,
            max_years: bracket.max_years,
            dims: bracket.template.grid().dims(),
            spacing_mm: bracket.template.grid().spacing(),
            subjects: db.subjects.iter().filter(|s| s.bracket == bracket.name).count(),
        })
        .collect();
    Ok(NormdbSummary {
        software: db.metadata.software.clone(),
        created_utc: db.metadata.created_utc.clone(),
        modified_utc: db.metadata.modified_utc.clone(),
        subjects: db.subjects.len(),
        calibrated: db.calibration.is_some(),
        brackets,
        history: db.metadata.history.clone(),
    })
}

/// How a normative build starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildMode {
    /// Add the studies to the installed database (same templates; statistics updated).
    #[default]
    Extend,
    /// Build a new database: one template per requested bracket from its studies, then the
    /// statistics and the leave-one-out calibration.
    Scratch,
}

/// An age bracket of a build from scratch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BracketRequest {
    /// Name (1–40 letters, digits, `-`, `_`, `.`; not starting with `.`; unique in the request).
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,39}$")]
    pub name: String,
    /// Lower age bound (years, inclusive; below `max_years`).
    #[schema(minimum = 0.0, maximum = 25.0)]
    pub min_years: f64,
    /// Upper age bound (years, exclusive; above `min_years`).
    #[schema(exclusive_minimum = 0.0, maximum = 25.0)]
    pub max_years: f64,
}

/// The body of a normative build as the OpenAPI document describes it: one shape per mode.
/// The server reads the flat [`BuildRequest`] (clearer errors than an untagged enum, and the
/// form job parameters are stored in) and [`BuildRequest::validate`] enforces this shape; a
/// test checks the two agree.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BuildRequestShape {
    /// Add the consented studies to the installed database.
    Extend(ExtendBuild),
    /// Build a new database.
    Scratch(ScratchBuild),
}

/// `mode: extend` (the default): no brackets, no build parameters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBuild {
    /// Install the result as the service's normative database.
    #[serde(default)]
    pub install: bool,
    /// `extend` (also when absent).
    #[serde(default)]
    #[schema(inline, required = false)]
    pub mode: ExtendMode,
}

/// The extend mode.
#[derive(Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtendMode {
    /// Extend.
    #[default]
    Extend,
}

/// The scratch mode.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScratchMode {
    /// Scratch.
    Scratch,
}

/// `mode: scratch`: the brackets to build and optional build parameters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScratchBuild {
    /// Install the result as the service's normative database.
    #[serde(default)]
    pub install: bool,
    /// `scratch`.
    #[schema(inline)]
    pub mode: ScratchMode,
    /// The age brackets (1–20; each needs three studies).
    #[schema(min_items = 1, max_items = 20)]
    pub brackets: Vec<BracketRequest>,
    /// Deformable template iterations after the affine one (default 2).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub template_iterations: Option<usize>,
    /// Age nodes per bracket (default 2).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub nodes_per_bracket: Option<usize>,
    /// Smoothing FWHM of the maps in mm (default 4).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 20.0)]
    pub smoothing_fwhm_mm: Option<f64>,
    /// Nominal voxelwise false-positive rate of the calibration (default 0.001).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 0.5)]
    pub voxel_rate: Option<f64>,
    /// Nominal per-image false-cluster rate of the calibration (default 0.05).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub cluster_rate: Option<f64>,
}

/// Parameters of a normative build.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// Install the resulting database as the service's normative database when the build
    /// succeeds (atomically; the job folder keeps its own copy).
    #[serde(default)]
    pub install: bool,
    /// `extend` (default) or `scratch`.
    #[serde(default)]
    pub mode: BuildMode,
    /// Scratch builds: the age brackets (at least one; each needs three studies).
    #[serde(default)]
    pub brackets: Vec<BracketRequest>,
    /// Scratch builds: deformable template iterations after the affine one (1–10, default 2).
    #[serde(default)]
    pub template_iterations: Option<usize>,
    /// Scratch builds: age nodes per bracket (1–10, default 2).
    #[serde(default)]
    pub nodes_per_bracket: Option<usize>,
    /// Scratch builds: smoothing FWHM of the maps in mm (0–20, default 4).
    #[serde(default)]
    pub smoothing_fwhm_mm: Option<f64>,
    /// Scratch builds: nominal voxelwise false-positive rate of the calibration (0–0.5,
    /// default 0.001).
    #[serde(default)]
    pub voxel_rate: Option<f64>,
    /// Scratch builds: nominal per-image false-cluster rate of the calibration (0–1, default
    /// 0.05).
    #[serde(default)]
    pub cluster_rate: Option<f64>,
}

impl BuildRequest {
    /// Checks the request: brackets and parameters only with `scratch`, and in range (400, what
    /// the OpenAPI document's [`BuildRequestShape`] excludes); distinct bracket names and each
    /// bracket's bounds in order (422, rules the document states in prose).
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |rule: String| Err(ApiError::BadRequest(rule));
        let scratch_only = self.template_iterations.is_some()
            || self.nodes_per_bracket.is_some()
            || self.smoothing_fwhm_mm.is_some()
            || self.voxel_rate.is_some()
            || self.cluster_rate.is_some()
            || !self.brackets.is_empty();
        if self.mode == BuildMode::Extend {
            if scratch_only {
                return bad("brackets and build parameters apply to `mode: scratch` only".into());
            }
            return Ok(());
        }
        if self.brackets.is_empty() || self.brackets.len() > 20 {
            return bad("`brackets`: a scratch build needs 1 to 20 age brackets".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (index, bracket) in self.brackets.iter().enumerate() {
            let valid_name = (1..=40).contains(&bracket.name.len())
                && !bracket.name.starts_with('.')
                && bracket.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid_name {
                return bad(format!(
                    "`brackets[{index}].name` must be 1–40 letters, digits, `-`, `_` or `.`"
                ));
            }
            if !names.insert(bracket.name.as_str()) {
                return Err(ApiError::rule(format!("`brackets[{index}].name` is used twice")));
            }
            let in_range = |years: f64| (0.0..=25.0).contains(&years);
            if !(in_range(bracket.min_years) && in_range(bracket.max_years)) {
                return bad(format!("`brackets[{index}]`: ages must be between 0 and 25 years"));
            }
            if bracket.max_years <= bracket.min_years {
                return Err(ApiError::rule(format!(
                    "`brackets[{index}]`: min_years must be below max_years"
                )));
            }
        }
        let in_range = |value: Option<f64>, low: f64, high: f64, open_low: bool| {
            value.is_none_or(|v| v.is_finite() && v <= high && if open_low { v > low } else { v >= low })
        };
        if !self.template_iterations.is_none_or(|n| (1..=10).contains(&n)) {
            return bad("`template_iterations` must be between 1 and 10".into());
        }
        if !self.nodes_per_bracket.is_none_or(|n| (1..=10).contains(&n)) {
            return bad("`nodes_per_bracket` must be between 1 and 10".into());
        }
        if !in_range(self.smoothing_fwhm_mm, 0.0, 20.0, false) {
            return bad("`smoothing_fwhm_mm` must be between 0 and 20".into());
        }
        if !in_range(self.voxel_rate, 0.0, 0.5, true) {
            return bad("`voxel_rate` must be in (0, 0.5]".into());
        }
        if !in_range(self.cluster_rate, 0.0, 1.0, true) {
            return bad("`cluster_rate` must be in (0, 1]".into());
        }
        Ok(())
    }
}

/// A consented, admitted database B study ready to enter a build.
struct BuildStudy {
    study_id: i64,
    volume: PathBuf,
    pseudonym: String,
    age_years: f64,
    sex: pedinorm_templates::stats::Sex,
}

/// The studies a build may use: admitted to database B with standing consent (withdrawn ones
/// excluded), with their volume, age and sex; the others come back with the reason.
fn select_build_studies(
    config: &ServiceConfig,
    store: &Store,
) -> Result<(Vec<BuildStudy>, Vec<Value>), JobFailure> {
    let selected = studies::consented_b_studies(&store.lock()).map_err(JobFailure::from)?;
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (study_id, stored) in selected {
        let metadata = studies::internals(&store.lock(), study_id).map_err(JobFailure::from)?.metadata;
        let pseudonym = metadata["pseudonym"].as_str().unwrap_or_default().to_string();
        let age = metadata["age_years"].as_f64();
        let sex = metadata["sex"].as_str().and_then(pedinorm_templates::stats::Sex::parse);
        let volume = study_volume(&archive_dir(config).join(stored));
        match (volume, age, sex, pseudonym.is_empty()) {
            (Some(volume), Some(age_years), Some(sex), false) => {
                usable.push(BuildStudy { study_id, volume, pseudonym, age_years, sex })
            }
            (None, ..) => skipped.push(json!({ "study": study_id, "reason": "no NIfTI volume" })),
            _ => skipped.push(json!({ "study": study_id, "reason": "age, sex or pseudonym unknown" })),
        }
    }
    Ok((usable, skipped))
}

/// The scanner label of a study's volume (empty when its sidecar names none): normals are
/// grouped by it for site effects.
fn scanner_of(volume: &std::path::Path) -> String {
    crate::formats::dicom::sidecar::Sidecar::next_to(volume)
        .and_then(|s| s.scanner_label())
        .unwrap_or_default()
}

fn read_build_image(study: &BuildStudy) -> Result<pedinorm_registration::Image<f32>, JobFailure> {
    crate::formats::nifti::read_image(&study.volume)
        .map_err(|_| JobFailure::Failed(format!("the volume of study {} cannot be read", study.study_id)))
}

/// Extends the installed normative database with the given studies (each registered to the
/// template of its age bracket, statistics updated).
fn extend_normdb(
    config: &ServiceConfig,
    studies: &[BuildStudy],
    ctx: &JobContext,
) -> Result<(pedinorm_templates::model::NormativeDb, Vec<i64>, Vec<Value>), JobFailure> {
    use pedinorm_templates::model::{NormalSubject, add_subject};
    let normdb = config.normdb_path();
    if !normdb.is_file() {
        return Err(JobFailure::Failed(
            "the normative database is missing: build one with `mode: scratch` or install one built with `pedinorm normdb build`".into(),
        ));
    }
    let mut db = pedinorm_templates::model::NormativeDb::read(&normdb).map_err(|e| {
        tracing::error!("normative database: {e}");
        JobFailure::Failed("the normative database cannot be read".into())
    })?;
    let mut added = Vec::new();
    let mut skipped = Vec::new();
    for (index, study) in studies.iter().enumerate() {
        let percent = 5.0 + 90.0 * index as f64 / studies.len() as f64;
        ctx.progress(percent, &format!("adding study {}", study.study_id))?;
        if db.subjects.iter().any(|s| s.pseudonym == study.pseudonym) {
            skipped.push(json!({ "study": study.study_id, "reason": "already in the database" }));
            continue;
        }
        let subject = NormalSubject {
            pseudonym: study.pseudonym.clone(),
            age_years: study.age_years,
            sex: study.sex,
            scanner: scanner_of(&study.volume),
            image: read_build_image(study)?,
        };
        match add_subject(&mut db, &subject, &crate::normdb::now_utc()) {
            Ok(_) => added.push(study.study_id),
            Err(error) => skipped.push(json!({ "study": study.study_id, "reason": error.to_string() })),
        }
    }
    db.metadata.touch(&format!("service build (extend): added studies {added:?}"), &crate::normdb::now_utc());
    Ok((db, added, skipped))
}

/// Builds a new normative database from the studies: for each bracket a template from its
/// studies (local batch executor, resumable folders under `templates/`), then every study
/// mapped to its bracket's template, statistics and leave-one-out calibration.
fn scratch_normdb(
    config: &ServiceConfig,
    request: &BuildRequest,
    studies: Vec<BuildStudy>,
    mut skipped: Vec<Value>,
    ctx: &JobContext,
) -> Result<(pedinorm_templates::model::NormativeDb, Vec<i64>, Vec<Value>), JobFailure> {
    use crate::batch::LocalExecutor;
    use crate::pipeline::database::{BracketTemplate, MIN_TEMPLATE_SUBJECTS, build_database};
    use crate::pipeline::steps::default_program;
    use crate::pipeline::template_build::{SubjectInput, SubjectSource, build_template};
    use pedinorm_templates::age::AgeBracket;
    use pedinorm_templates::model::{BuildOptions, NormalSubject};
    use pedinorm_templates::template::{RegistrationSettings, TemplateConfig, TemplateTarget};

    let inside = |study: &BuildStudy| {
        request.brackets.iter().any(|b| study.age_years >= b.min_years && study.age_years < b.max_years)
    };
    let (used, outside): (Vec<BuildStudy>, Vec<BuildStudy>) = studies.into_iter().partition(inside);
    for study in &outside {
        skipped.push(json!({ "study": study.study_id, "reason": "age outside every requested bracket" }));
    }
    let mapping = {
        let mut mapping = config.compute.mapping();
        mapping.smoothing_fwhm_mm = request.smoothing_fwhm_mm.unwrap_or(mapping.smoothing_fwhm_mm);
        mapping
    };
    let program = config.compute.program.clone().unwrap_or_else(default_program);
    let executor = LocalExecutor::new(program, config.compute.template_jobs);
    let brackets_total = request.brackets.len() as f64;
    let mut inputs = Vec::new();
    for (index, bracket) in request.brackets.iter().enumerate() {
        let members: Vec<&BuildStudy> = used
            .iter()
            .filter(|s| s.age_years >= bracket.min_years && s.age_years < bracket.max_years)
            .collect();
        if members.len() < MIN_TEMPLATE_SUBJECTS {
            return Err(JobFailure::Failed(format!(
                "bracket {} has {} admitted database B studies with consent; a template needs at least {MIN_TEMPLATE_SUBJECTS}",
                bracket.name,
                members.len()
            )));
        }
        let base = 5.0 + 50.0 * index as f64 / brackets_total;
        ctx.progress(base, &format!("template {}", bracket.name))?;
        let subjects: Vec<SubjectInput> = members
            .iter()
            .map(|s| SubjectInput {
                id: format!("study-{}", s.study_id),
                source: SubjectSource::Path(s.volume.clone()),
                age_years: s.age_years,
            })
            .collect();
        // The coarsest voxel spacing of the members: registration never works finer than the data.
        let mut spacing = 0.0f64;
        for study in &members {
            let header = crate::formats::nifti::read_image(&study.volume).map_err(|_| {
                JobFailure::Failed(format!("the volume of study {} cannot be read", study.study_id))
            })?;
            spacing = spacing.max(header.grid().spacing().into_iter().fold(0.0, f64::max));
        }
        let template_config = TemplateConfig {
            target: TemplateTarget::Bracket(AgeBracket {
                name: bracket.name.clone(),
                min_years: bracket.min_years,
                max_years: bracket.max_years,
            }),
            iterations: request.template_iterations.unwrap_or(2),
            template_spacing_mm: Some(spacing),
            registration: RegistrationSettings {
                spacing_mm: spacing.max(RegistrationSettings::default().spacing_mm),
                affine_iterations: mapping.affine_iterations.clone(),
                deformable_iterations: mapping.deformable_iterations.clone(),
            },
            ..TemplateConfig::default()
        };
        let span = 50.0 / brackets_total;
        let template = build_template(
            &subjects,
            &template_config,
            &ctx.work_dir.join("templates").join(&bracket.name),
            &executor,
            1,
            &|event| {
                if let crate::batch::ProgressEvent::StageProgress { stage, done, total } = event {
                    let fraction = *done as f64 / (*total).max(1) as f64;
                    let _ =
                        ctx.progress(base + span * fraction, &format!("template {}: {stage}", bracket.name));
                }
            },
        )
        .map_err(|e| {
            JobFailure::Failed(strip_paths(&format!("template {}: {e}", bracket.name), &ctx.work_dir))
        })?;
        inputs.push(BracketTemplate {
            name: bracket.name.clone(),
            min_years: bracket.min_years,
            max_years: bracket.max_years,
            template: template.template,
        });
    }
    ctx.progress(55.0, "mapping the studies to their templates")?;
    let normals = used
        .iter()
        .map(|s| {
            Ok(NormalSubject {
                pseudonym: s.pseudonym.clone(),
                age_years: s.age_years,
                sex: s.sex,
                scanner: scanner_of(&s.volume),
                image: read_build_image(s)?,
            })
        })
        .collect::<Result<Vec<_>, JobFailure>>()?;
    let defaults = BuildOptions::default();
    let options = BuildOptions {
        mapping,
        nodes_per_bracket: request.nodes_per_bracket.unwrap_or(defaults.nodes_per_bracket),
        voxel_rate: request.voxel_rate.unwrap_or(defaults.voxel_rate),
        cluster_rate: request.cluster_rate.unwrap_or(defaults.cluster_rate),
        ..defaults
    };
    let mut db = build_database(&normals, inputs, None, &options, &|_| {})
        .map_err(|e| JobFailure::Failed(e.to_string()))?;
    let ids: Vec<i64> = used.iter().map(|s| s.study_id).collect();
    db.metadata
        .touch(&format!("service build (scratch): built from studies {ids:?}"), &crate::normdb::now_utc());
    Ok((db, ids, skipped))
}

fn normdb_build_job(config: &ServiceConfig, store: &Store, ctx: &JobContext) -> Result<Value, JobFailure> {
    let request: BuildRequest = serde_json::from_value(ctx.params.clone())?;
    request.validate().map_err(|e| JobFailure::Failed(e.to_string()))?;
    ctx.progress(1.0, "selecting consented database B studies")?;
    let (usable, skipped) = select_build_studies(config, store)?;
    if usable.is_empty() {
        return Err(JobFailure::Failed("no admitted database B study with consent is available".into()));
    }
    let (db, used, skipped) = match request.mode {
        BuildMode::Extend => {
            let (db, added, mut more) = extend_normdb(config, &usable, ctx)?;
            more.extend(skipped);
            (db, added, more)
        }
        BuildMode::Scratch => scratch_normdb(config, &request, usable, skipped, ctx)?,
    };
    ctx.progress(96.0, "writing the database")?;
    // Provenance: the studies this database was built from (withdrawn consent excluded), in
    // the job folder and in the database's own history.
    crate::atomic::write_bytes(
        &ctx.work_dir.join("studies.json"),
        serde_json::to_vec_pretty(&json!({ "mode": request.mode, "studies": used, "skipped": skipped }))?
            .as_slice(),
    )?;
    let output = ctx.work_dir.join("normdb.h5");
    db.write(&output).map_err(|e| JobFailure::Failed(strip_paths(&e.to_string(), &ctx.work_dir)))?;
    if request.install {
        // Copy into place atomically; the job folder keeps its own copy.
        let bytes = std::fs::read(&output)?;
        crate::atomic::write_bytes(&config.normdb_path(), &bytes)?;
    }
    Ok(json!({
        "mode": request.mode,
        "studies": used,
        "skipped": skipped,
        "subjects": db.subjects.len(),
        "brackets": db.brackets.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        "calibrated": db.calibration.is_some(),
        "installed": request.install,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The documented shape and the server's reading agree on which bodies are well formed.
    #[test]
    fn the_documented_build_shape_accepts_what_the_server_accepts() {
        let bracket = json!({ "name": "a", "min_years": 1, "max_years": 2 });
        let bodies = [
            (json!({}), true),
            (json!({ "install": true }), true),
            (json!({ "mode": "extend" }), true),
            (json!({ "mode": "scratch", "brackets": [bracket] }), true),
            (
                json!({ "mode": "scratch", "brackets": [bracket], "voxel_rate": 0.01, "nodes_per_bracket": 3 }),
                true,
            ),
            (json!({ "mode": "extend", "brackets": [bracket] }), false),
            (json!({ "mode": "extend", "voxel_rate": 0.01 }), false),
            (json!({ "mode": "scratch" }), false),
            (json!({ "mode": "rebuild" }), false),
            (json!({ "install": true, "colour": "blue" }), false),
        ];
        for (body, well_formed) in bodies {
            let server = serde_json::from_value::<BuildRequest>(body.clone())
                .map_err(|e| ApiError::BadRequest(e.to_string()))
                .and_then(|request| request.validate());
            let shape = serde_json::from_value::<BuildRequestShape>(body.clone());
            assert_eq!(server.is_ok(), well_formed, "{body}: {server:?}");
            // A scratch body without brackets parses as the shape but its `minItems` refuses it.
            let shape_ok =
                shape.is_ok_and(|s| !matches!(s, BuildRequestShape::Scratch(ref b) if b.brackets.is_empty()));
            assert_eq!(shape_ok, well_formed, "{body}");
        }
    }
}
