//! The audit log: reading and verifying its hash chain.

use super::{Answer, answer, limit};
use crate::service::audit::{self, AuditRecord, VerifyReport};
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::Query400;
use crate::service::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

/// Audit query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Records after this sequence number (default 0).
    #[serde(default)]
    pub after: Option<i64>,
    /// At most this many (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// Read the audit log, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Vec<AuditRecord>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn read_audit(
    State(state): State<AppState>,
    Query400(query): Query400<AuditQuery>,
) -> Answer<Vec<AuditRecord>> {
    let after = query.after.unwrap_or(0).max(0);
    let count = limit(query.limit);
    answer(&state, StatusCode::OK, move |s| audit::read(&s.store, after, count).map_err(ApiError::from)).await
}

/// Verify the audit log's hash chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = VerifyReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn verify_audit(State(state): State<AppState>) -> Answer<VerifyReport> {
    answer(&state, StatusCode::OK, move |s| s.audit.verify(&s.store).map_err(ApiError::from)).await
}
