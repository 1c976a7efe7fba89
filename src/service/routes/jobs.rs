//! Jobs: status, cancellation, outputs and sending a deviation's maps back to the PACS.

use super::{Answer, JobAccepted, ListQuery, answer, blocking, limit, owning_centre, queue_job};
use crate::service::auth::Principal;
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::{Id, Query400};
use crate::service::jobs::{JobInfo, JobQueue, JobState, output_files};
use crate::service::scope::{Owned, Scope};
use crate::service::state::AppState;
use crate::service::work;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A job by id, or 404.
fn find_job(jobs: &JobQueue, id: i64) -> Result<JobInfo, ApiError> {
    jobs.get(id)?.ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))
}

/// List the jobs the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<JobInfo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<ListQuery>,
) -> Answer<Vec<JobInfo>> {
    let scope = Scope::of(&principal);
    answer(&state, StatusCode::OK, move |s| {
        s.jobs.list(limit(query.limit), scope.visible_centre(Owned::Job)).map_err(ApiError::from)
    })
    .await
}

/// Job status and progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = JobInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(State(state): State<AppState>, Id(id): Id) -> Answer<JobInfo> {
    answer(&state, StatusCode::OK, move |s| find_job(&s.jobs, id)).await
}

/// Cancel a queued or running job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = JobInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(State(state): State<AppState>, Id(id): Id) -> Answer<JobInfo> {
    answer(&state, StatusCode::OK, move |s| s.jobs.cancel(id).map_err(ApiError::from)).await
}

/// One output file.
#[derive(Serialize, ToSchema)]
pub struct OutputFile {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Output files of a finished job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Vec<OutputFile>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn job_outputs(State(state): State<AppState>, Id(id): Id) -> Answer<Vec<OutputFile>> {
    answer(&state, StatusCode::OK, move |s| {
        let job = find_job(&s.jobs, id)?;
        if job.state != JobState::Done {
            return Err(ApiError::Conflict(format!("job {id} has no outputs: it is not done")));
        }
        Ok(output_files(&s.jobs.output_dir(id))
            .into_iter()
            .map(|(name, bytes)| OutputFile { name, bytes })
            .collect())
    })
    .await
}

fn content_type_for(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".png") {
        "image/png"
    } else if name.ends_with(".gz") {
        "application/gzip"
    } else if name.ends_with(".csv") {
        "text/csv"
    } else if name.ends_with(".tsv") {
        "text/tab-separated-values"
    } else if name.ends_with(".svg") {
        "image/svg+xml"
    } else {
        "application/octet-stream"
    }
}

/// Download one output (NIfTI z-maps, cluster map, report.json, PNG montages, the regional
/// table and its SVG charts).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs/{name}", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64), ("name" = String, Path, description = "File name from the outputs list", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")),
    responses((status = 200, description = "The file: JSON for `.json` outputs, PNG for montages, gzip for NIfTI maps, TSV for the regional table, SVG for its charts",
               content((serde_json::Value = "application/json"), (Vec<u8> = "image/png"), (Vec<u8> = "application/gzip"),
                       (Vec<u8> = "text/csv"), (Vec<u8> = "text/tab-separated-values"), (Vec<u8> = "image/svg+xml"),
                       (Vec<u8> = "application/octet-stream"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download_output(
    State(state): State<AppState>,
    Id(id): Id,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Path((_, name)) = path;
    // Only plain names listed in the job folder: no separators, no dot files, no traversal.
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(ApiError::BadRequest("`name` must be a plain file name from the outputs list".into()));
    }
    let (bytes, name) = blocking(&state, move |s| {
        let job = find_job(&s.jobs, id)?;
        if job.state != JobState::Done {
            return Err(ApiError::NotFound(format!("job {id} is not done")));
        }
        let listed = output_files(&s.jobs.output_dir(id)).into_iter().any(|(n, _)| n == name);
        if !listed {
            return Err(ApiError::NotFound(format!("job {id} has no output named {name}")));
        }
        let bytes = std::fs::read(s.jobs.output_dir(id).join(&name)).map_err(ApiError::internal)?;
        Ok((bytes, name))
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type_for(&name).to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        Body::from(bytes),
    )
        .into_response())
}

/// Send a deviation job's maps back to the PACS of the study as a derived DICOM series.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/store-back", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "A finished deviation job", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 202, body = JobAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn store_back(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
) -> Answer<JobAccepted> {
    queue_job(&state, &principal, "store_back", serde_json::json!({ "deviation_job": id }), move |s| {
        work::check_store_back_request(&s.store, &s.jobs, id)?;
        owning_centre(s, Owned::Job, id)
    })
    .await
}
