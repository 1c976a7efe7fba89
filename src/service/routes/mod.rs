//! The handlers, one module per resource, and what they share: running blocking work off the
//! async executor and answering it as JSON, queuing a job, list limits, a reason. The OpenAPI
//! document is generated from the `#[utoipa::path]` annotations here ([`super::openapi`]);
//! the router is [`super::router`].

pub mod audit;
pub mod cases;
pub mod jobs;
pub mod meta;
pub mod normdb;
pub mod studies;
pub mod users;
pub mod viewer;

use super::auth::Principal;
use super::error::ApiError;
use super::scope::{self, Owned, Scope};
use super::state::AppState;
use axum::Json;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What a JSON handler answers: a status with a body, or an error.
pub type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// Runs blocking work (SQLite, files) on a clone of the state, off the async executor.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(AppState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(state)).await.map_err(ApiError::internal)?
}

/// Runs blocking work off the async executor and answers its value as JSON with `status`.
async fn answer<T: Send + 'static>(
    state: &AppState,
    status: StatusCode,
    work: impl FnOnce(AppState) -> Result<T, ApiError> + Send + 'static,
) -> Answer<T> {
    blocking(state, work).await.map(|value| (status, Json(value)))
}

/// A listing of studies or cases, newest first: the filter, the centre to keep (`None`: every
/// centre) and the limit.
type Listing<T> = fn(&rusqlite::Connection, Option<&str>, Option<&str>, i64) -> Result<Vec<T>, ApiError>;

/// Lists the studies or cases (`kind`) the caller may see with the query's filter and limit,
/// off the async executor.
async fn list_visible<T: Send + 'static>(
    state: &AppState,
    principal: &Principal,
    kind: Owned,
    query: ListQuery,
    list: Listing<T>,
) -> Answer<Vec<T>> {
    let scope = Scope::of(principal);
    answer(state, StatusCode::OK, move |s| {
        let centre = scope.visible_centre(kind);
        list(&s.store.lock(), query.filter.as_deref(), centre, limit(query.limit))
    })
    .await
}

/// The centre a study, case or job belongs to (its jobs belong there too), or 404.
pub(super) fn owning_centre(state: &AppState, kind: Owned, id: i64) -> Result<String, ApiError> {
    scope::centre_of(&state.store.lock(), kind, id)?.ok_or_else(|| kind.not_found(id))
}

/// Queues a job of `kind` for the caller once `check` passes, belonging to the centre `check`
/// names (both off the async executor); answers 202 with the job id.
pub(super) async fn queue_job(
    state: &AppState,
    principal: &Principal,
    kind: &'static str,
    params: serde_json::Value,
    check: impl FnOnce(&AppState) -> Result<String, ApiError> + Send + 'static,
) -> Answer<JobAccepted> {
    let owner = principal.recorded_name();
    answer(state, StatusCode::ACCEPTED, move |s| {
        let centre = check(&s)?;
        let job = s.jobs.enqueue(kind, &params, &owner, &centre)?;
        Ok(JobAccepted { job })
    })
    .await
}

/// A queued job.
#[derive(Serialize, ToSchema)]
pub struct JobAccepted {
    /// Job id; poll `/api/v1/jobs/{id}`.
    pub job: i64,
}

/// List query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Filter (database `A`/`B` for studies, status for cases).
    #[serde(default)]
    pub filter: Option<String>,
    /// At most this many (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// How many entries a list answers: as many as asked within 1–1000, 100 when not asked.
pub(super) fn limit(asked: Option<i64>) -> i64 {
    asked.unwrap_or(100).clamp(1, 1000)
}

/// A reason (withdrawal, rejection).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why (1–2000 characters; no identities).
    pub reason: String,
}
