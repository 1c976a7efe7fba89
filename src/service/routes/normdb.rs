//! The normative database: summary, templates and builds.

use super::{Answer, JobAccepted, answer, queue_job};
use crate::service::auth::Principal;
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::Body400;
use crate::service::scope::Scope;
use crate::service::state::AppState;
use crate::service::work;
use axum::extract::State;
use axum::http::StatusCode;

/// Normative database summary.
#[utoipa::path(get, path = "/api/v1/normdb", tag = "normdb", security(("bearer" = [])),
    responses((status = 200, body = work::NormdbSummary), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn normdb_info(State(state): State<AppState>) -> Answer<work::NormdbSummary> {
    let path = state.config.normdb_path();
    answer(&state, StatusCode::OK, move |_| work::normdb_summary(&path)).await
}

/// Templates and age brackets of the normative database.
#[utoipa::path(get, path = "/api/v1/normdb/templates", tag = "normdb", security(("bearer" = [])),
    responses((status = 200, body = Vec<work::BracketSummary>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn normdb_templates(State(state): State<AppState>) -> Answer<Vec<work::BracketSummary>> {
    let path = state.config.normdb_path();
    answer(&state, StatusCode::OK, move |_| work::normdb_summary(&path).map(|s| s.brackets)).await
}

/// Start a normative build from every admitted database B study whose consent stands
/// (withdrawn studies excluded): `mode: extend` adds them to the installed database,
/// `mode: scratch` builds a new one (a template per requested bracket, statistics,
/// calibration). The job result, its `studies.json` and the database's history list the
/// studies used.
#[utoipa::path(post, path = "/api/v1/normdb/builds", tag = "normdb", security(("bearer" = [])),
    request_body = work::BuildRequestShape,
    responses((status = 202, body = JobAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn start_build(
    State(state): State<AppState>,
    principal: Principal,
    Body400(request): Body400<work::BuildRequest>,
) -> Answer<JobAccepted> {
    request.validate()?;
    let params = serde_json::to_value(&request).map_err(ApiError::internal)?;
    let centre = Scope::of(&principal).centre;
    queue_job(&state, &principal, "normdb_build", params, move |_| Ok(centre)).await
}
