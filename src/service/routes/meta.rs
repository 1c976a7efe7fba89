//! Health, version, readiness, metrics and the caller's identity.

use super::blocking;
use crate::service::auth::{Principal, User};
use crate::service::error::{ApiError, ErrorBody};
use crate::service::roles::Role;
use crate::service::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Liveness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    pub status: String,
}

/// Health check (no token).
#[utoipa::path(get, path = "/health", tag = "service", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Build information.
#[derive(Serialize, ToSchema)]
pub struct Version {
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
}

/// Version (no token).
#[utoipa::path(get, path = "/version", tag = "service", responses((status = 200, body = Version)))]
pub async fn version() -> Json<Version> {
    Json(Version { name: env!("CARGO_PKG_NAME").into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Readiness details.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `degraded`.
    pub status: String,
    /// State database answers.
    pub database: bool,
    /// Normative database file present.
    pub normdb: bool,
    /// Seconds since start.
    pub uptime_seconds: f64,
}

/// Readiness: the state database answers; reports whether the normative database is present.
#[utoipa::path(get, path = "/ready", tag = "service", security(("bearer" = [])),
    responses((status = 200, body = Readiness), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let database = blocking(&state, move |s| {
        Ok(s.store.lock().query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).is_ok())
    })
    .await?;
    if !database {
        return Err(ApiError::Unavailable("the state database does not answer".into()));
    }
    let normdb = state.config.normdb_path().is_file();
    Ok(Json(Readiness {
        status: if normdb { "ready" } else { "degraded" }.into(),
        database,
        normdb,
        uptime_seconds: state.started.elapsed().as_secs_f64(),
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "service", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = blocking(&state, move |s| s.jobs.counts().map_err(ApiError::from)).await?;
    let mut text = state.metrics.render();
    text.push_str("# HELP pedinorm_jobs Jobs by state.\n# TYPE pedinorm_jobs gauge\n");
    for (job_state, count) in counts {
        text.push_str(&format!("pedinorm_jobs{{state=\"{job_state}\"}} {count}\n"));
    }
    text.push_str(&format!(
        "# HELP pedinorm_uptime_seconds Seconds since start.\n# TYPE pedinorm_uptime_seconds gauge\npedinorm_uptime_seconds {}\n",
        state.started.elapsed().as_secs_f64()
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// The caller as the service sees it.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// Account.
    pub user: User,
    /// For the portal: the acting user.
    pub acting_user: Option<String>,
    /// For the portal: the acting user's role.
    pub acting_role: Option<Role>,
    /// For the portal: the acting user's centre.
    pub acting_centre: Option<String>,
}

/// Who am I.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "service", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(principal: Principal) -> Json<WhoAmI> {
    let (acting_user, acting_role, acting_centre) = match principal.acting {
        Some((name, role, centre)) => (Some(name), Some(role), Some(centre)),
        None => (None, None, None),
    };
    Json(WhoAmI { user: principal.user, acting_user, acting_role, acting_centre })
}
