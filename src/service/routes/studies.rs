//! Studies: upload, PACS import, listing, ingest, and each study's consent.

use super::{Answer, ListQuery, Reason, answer, list_visible};
use crate::service::auth::Principal;
use crate::service::consent::{self, Consent, ConsentInput, Database};
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::{Body400, Id, Query400};
use crate::service::jobs::JobQueue;
use crate::service::layout::StateEntry;
use crate::service::pacs;
use crate::service::scope::{self, Owned, Scope};
use crate::service::state::AppState;
use crate::service::store::Store;
use crate::service::studies::{self, Study, UploadLimits};
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Database the study is offered to: `A` or `B`.
    pub database: Database,
    /// Admit a study without a national identifier as unlinked.
    #[serde(default)]
    pub allow_unlinked: bool,
}

/// Answer to an upload or import.
#[derive(Serialize, ToSchema)]
pub struct Submitted {
    /// The study.
    pub study: Study,
    /// The ingest job, when it could be queued (consent recorded).
    pub job: Option<i64>,
}

/// The `multipart/form-data` form of an upload, as the OpenAPI document describes it (the
/// handler reads the parts as they stream in).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// DICOM objects or zip archives, one part each (at least one).
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1)]
    pub file: Vec<Vec<u8>>,
    /// The consent record (JSON), when consent is given with the upload.
    #[schema(required = false)]
    pub consent: ConsentInput,
}

/// Upload a study: a zip archive (`application/zip`), one DICOM object (`application/dicom`),
/// or `multipart/form-data` with parts `file` (DICOM objects or zips) and optionally
/// `consent` (JSON [`ConsentInput`]). Ingest runs as a job once consent is recorded.
#[utoipa::path(post, path = "/api/v1/studies", tag = "studies", security(("bearer" = [])), params(UploadQuery),
    request_body(content((UploadForm = "multipart/form-data"), ("application/zip"), ("application/dicom")), description = "DICOM objects"),
    responses((status = 202, body = Submitted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn upload_study(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<UploadQuery>,
    request: Request,
) -> Answer<Submitted> {
    let database = query.database;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut parts: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let mut consent_input: Option<ConsentInput> = None;
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = axum::extract::Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid multipart body: {}", e.body_text())))?;
        loop {
            let field = multipart.next_field().await.map_err(multipart_error)?;
            let Some(field) = field else { break };
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(multipart_error)?;
            match name.as_str() {
                "file" | "files" => parts.push((file_name, bytes.to_vec())),
                "consent" => {
                    let input: ConsentInput = serde_json::from_slice(&bytes).map_err(|e| {
                        ApiError::BadRequest(format!("part `consent` is not a valid consent record: {e}"))
                    })?;
                    consent::check_input(&input)?;
                    consent_input = Some(input);
                }
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "unexpected multipart part `{}` (expected `file` or `consent`)",
                        other.chars().take(40).collect::<String>()
                    )));
                }
            }
        }
    } else if content_type.starts_with("application/zip")
        || content_type.starts_with("application/dicom")
        || content_type.starts_with("application/octet-stream")
    {
        let bytes =
            axum::body::to_bytes(request.into_body(), state.config.max_upload_bytes).await.map_err(|_| {
                ApiError::TooLarge(format!("uploads are limited to {} bytes", state.config.max_upload_bytes))
            })?;
        parts.push((None, bytes.to_vec()));
    } else {
        return Err(ApiError::BadRequest(
            "Content-Type must be application/zip, application/dicom or multipart/form-data".into(),
        ));
    }
    let config = state.config.clone();
    let owner = principal.recorded_name();
    let centre = principal.actor().centre;
    let allow_unlinked = query.allow_unlinked;
    answer(&state, StatusCode::ACCEPTED, move |s| {
        let limits =
            UploadLimits { max_files: config.max_upload_files, max_total_bytes: config.max_unzipped_bytes };
        let staging_root = config.state_path(StateEntry::Incoming);
        std::fs::create_dir_all(&staging_root).map_err(ApiError::internal)?;
        let staging = tempfile::Builder::new()
            .prefix("upload-")
            .tempdir_in(&staging_root)
            .map_err(ApiError::internal)?;
        let stored = studies::store_parts(staging.path(), parts, limits)?;
        let problems = studies::validate_dicom_dir(staging.path(), &stored.labels);
        if !problems.is_empty() {
            return Err(ApiError::Refused {
                message: "the upload holds objects that are not valid DICOM".into(),
                reasons: problems,
            });
        }
        // Study row, consent and files are kept together or not at all: the files move into
        // place inside the transaction, and a failed commit takes them out again.
        let id = {
            let mut connection = s.store.lock();
            let transaction = connection.transaction()?;
            let id = studies::insert(&transaction, database, "upload", &centre, &owner, None)?;
            studies::set_received(&transaction, id, stored.files, stored.bytes)?;
            if let Some(input) = &consent_input {
                consent::record(&transaction, id, input, &owner)?;
            }
            let incoming = studies::incoming_dir(&config.data_dir, id);
            std::fs::rename(staging.path(), &incoming).map_err(ApiError::internal)?;
            if let Err(error) = transaction.commit() {
                let _ = std::fs::remove_dir_all(&incoming);
                return Err(error.into());
            }
            id
        };
        finish_submission(&s.store, &s.jobs, id, database, &owner, allow_unlinked)
    })
    .await
}

fn multipart_error(error: axum::extract::multipart::MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge("the upload is larger than the configured limit".into())
    } else {
        ApiError::BadRequest(format!("invalid multipart body: {}", error.body_text()))
    }
}

/// Queues ingest of a stored study when its consent permits it.
fn finish_submission(
    store: &Store,
    jobs: &JobQueue,
    id: i64,
    database: Database,
    owner: &str,
    allow_unlinked: bool,
) -> Result<Submitted, ApiError> {
    let connection = store.lock();
    let permitted = consent::permits(consent::get(&connection, id)?.as_ref(), database).is_ok();
    let centre = scope::centre_of(&connection, Owned::Study, id)?.unwrap_or_default();
    let job = if permitted {
        drop(connection);
        let job = jobs.enqueue(
            "ingest",
            &serde_json::json!({ "study_id": id, "allow_unlinked": allow_unlinked }),
            owner,
            &centre,
        )?;
        let connection = store.lock();
        studies::set_ingest_job(&connection, id, job)?;
        Some(job)
    } else {
        drop(connection);
        None
    };
    let connection = store.lock();
    Ok(Submitted { study: studies::get(&connection, id)?, job })
}

/// Import request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// Centre whose PACS holds the study (one the service has a PACS for, else 404).
    #[schema(min_length = 1, max_length = 100)]
    pub centre: String,
    /// StudyInstanceUID in that PACS: digits separated by dots, at most 64 characters.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)*$", min_length = 1, max_length = 64)]
    pub study_instance_uid: String,
    /// Database the study is offered to: `A` or `B`.
    pub database: Database,
    /// Consent, if already known.
    #[serde(default)]
    pub consent: Option<ConsentInput>,
    /// Admit a study without a national identifier as unlinked.
    #[serde(default)]
    pub allow_unlinked: bool,
}

/// Import a study from a centre's PACS by StudyInstanceUID; retrieval and ingest run as a job.
#[utoipa::path(post, path = "/api/v1/studies/import", tag = "studies", security(("bearer" = [])),
    request_body = ImportRequest,
    responses((status = 202, body = Submitted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 502, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn import_study(
    State(state): State<AppState>,
    principal: Principal,
    Body400(request): Body400<ImportRequest>,
) -> Answer<Submitted> {
    let database = request.database;
    if let Some(input) = &request.consent {
        consent::check_input(input)?;
    }
    pacs::check_uid(&request.study_instance_uid).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A study belongs to the centre that submits it, so a caller imports from their own
    // centre's PACS only (admins from any); another centre's answers as an unknown one.
    let own_centre = Scope::of(&principal).visible_centre(Owned::Study).map(str::to_string);
    let reachable = own_centre.is_none_or(|own| own == request.centre);
    if !reachable || !state.config.pacs.iter().any(|p| p.centre == request.centre) {
        return Err(ApiError::NotFound("no PACS is configured for that centre".into()));
    }
    let owner = principal.recorded_name();
    let centre = principal.actor().centre;
    answer(&state, StatusCode::ACCEPTED, move |s| {
        let id = {
            let mut connection = s.store.lock();
            let transaction = connection.transaction()?;
            let id = studies::insert(
                &transaction,
                database,
                "pacs",
                &centre,
                &owner,
                Some((&request.centre, &request.study_instance_uid)),
            )?;
            if let Some(input) = &request.consent {
                consent::record(&transaction, id, input, &owner)?;
            }
            transaction.commit()?;
            id
        };
        finish_submission(&s.store, &s.jobs, id, database, &owner, request.allow_unlinked)
    })
    .await
}

/// List the studies the caller may see (see the scoping rules), newest first.
#[utoipa::path(get, path = "/api/v1/studies", tag = "studies", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<Study>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_studies(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<ListQuery>,
) -> Answer<Vec<Study>> {
    list_visible(&state, &principal, Owned::Study, query, studies::list).await
}

/// One study.
#[utoipa::path(get, path = "/api/v1/studies/{id}", tag = "studies", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Study), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_study(State(state): State<AppState>, Id(id): Id) -> Answer<Study> {
    answer(&state, StatusCode::OK, move |s| studies::get(&s.store.lock(), id)).await
}

/// Ingest options.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// Admit a study without a national identifier as unlinked.
    #[serde(default)]
    pub allow_unlinked: bool,
}

/// (Re)start ingest of a received study (after consent was recorded, or after a failure).
#[utoipa::path(post, path = "/api/v1/studies/{id}/ingest", tag = "studies", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)), request_body = IngestRequest,
    responses((status = 202, body = Submitted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn ingest_study(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(request): Body400<IngestRequest>,
) -> Answer<Submitted> {
    let owner = principal.recorded_name();
    answer(&state, StatusCode::ACCEPTED, move |s| {
        let internals = studies::internals(&s.store.lock(), id)?;
        if matches!(internals.status.as_str(), "admitted" | "ingest_queued" | "refused") {
            return Err(ApiError::Conflict(format!(
                "study {id} is {}: ingest cannot start again",
                internals.status
            )));
        }
        let consent = consent::get(&s.store.lock(), id)?;
        if let Err(reason) = consent::permits(consent.as_ref(), internals.database) {
            return Err(ApiError::Refused {
                message: "ingest needs consent for the database".into(),
                reasons: vec![reason],
            });
        }
        finish_submission(&s.store, &s.jobs, id, internals.database, &owner, request.allow_unlinked)
    })
    .await
}

/// Runs `work` on the state database once study `id` is known to exist (else 404), off the
/// async executor, and answers its value with `status`.
async fn on_study<T: Send + 'static>(
    state: &AppState,
    status: StatusCode,
    id: i64,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, ApiError> + Send + 'static,
) -> Answer<T> {
    answer(state, status, move |s| {
        let connection = s.store.lock();
        studies::internals(&connection, id)?;
        work(&connection)
    })
    .await
}

/// Consent of a study.
#[utoipa::path(get, path = "/api/v1/studies/{id}/consent", tag = "consent", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Consent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_consent(State(state): State<AppState>, Id(id): Id) -> Answer<Consent> {
    on_study(&state, StatusCode::OK, id, move |connection| {
        consent::get(connection, id)?
            .ok_or_else(|| ApiError::NotFound(format!("study {id} has no consent record")))
    })
    .await
}

/// Record the consent of a study (once).
#[utoipa::path(post, path = "/api/v1/studies/{id}/consent", tag = "consent", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)), request_body = ConsentInput,
    responses((status = 201, body = Consent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn record_consent(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(input): Body400<ConsentInput>,
) -> Answer<Consent> {
    let owner = principal.recorded_name();
    on_study(&state, StatusCode::CREATED, id, move |connection| {
        consent::record(connection, id, &input, &owner)
    })
    .await
}

/// Withdraw consent: recorded, nothing deleted; the study is excluded from later computations.
#[utoipa::path(post, path = "/api/v1/studies/{id}/consent/withdraw", tag = "consent", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)), request_body = Reason,
    responses((status = 200, body = Consent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn withdraw_consent(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(reason): Body400<Reason>,
) -> Answer<Consent> {
    let owner = principal.recorded_name();
    on_study(&state, StatusCode::OK, id, move |connection| {
        consent::withdraw(connection, id, &reason.reason, &owner)
    })
    .await
}
