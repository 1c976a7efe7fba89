//! The router: every route of [`super::roles::ROUTES`] with its handler, behind the guard;
//! `/openapi.json` and the fallback.

use super::error::ApiError;
use super::guard::guard;
use super::openapi;
use super::routes::{audit, cases, jobs, meta, normdb, studies, users, viewer};
use super::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};

async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::document_json()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Writes the aggregated audit records of anonymous requests as their windows end.
fn report_anonymous(state: &AppState) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let state = state.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            for record in state.anonymous.due(false) {
                if let Err(error) = state.audit.append(record).await {
                    tracing::error!("audit log: {error}");
                }
            }
        }
    });
}

/// Builds the router with the guard layer (and starts reporting anonymous requests to the
/// audit log).
pub fn router(state: AppState) -> axum::Router {
    report_anonymous(&state);
    let upload_limit = state.config.max_upload_bytes;
    axum::Router::new()
        .route("/health", get(meta::health))
        .route("/version", get(meta::version))
        .route("/openapi.json", get(openapi_document))
        .route("/ready", get(meta::ready))
        .route("/metrics", get(meta::metrics))
        .route("/api/v1/whoami", get(meta::whoami))
        .route(
            "/api/v1/studies",
            post(studies::upload_study).layer(DefaultBodyLimit::max(upload_limit)).get(studies::list_studies),
        )
        .route("/api/v1/studies/import", post(studies::import_study))
        .route("/api/v1/studies/{id}", get(studies::get_study))
        .route("/api/v1/studies/{id}/ingest", post(studies::ingest_study))
        .route("/api/v1/studies/{id}/consent", get(studies::get_consent).post(studies::record_consent))
        .route("/api/v1/studies/{id}/consent/withdraw", post(studies::withdraw_consent))
        .route("/api/v1/cases", post(cases::submit_case).get(cases::list_cases))
        .route("/api/v1/cases/{id}", get(cases::get_case).merge(patch(cases::update_case)))
        .route("/api/v1/cases/{id}/review", post(cases::review_case))
        .route("/api/v1/cases/{id}/approvals", post(cases::approve_case))
        .route("/api/v1/cases/{id}/confirmations", post(cases::confirm_case))
        .route("/api/v1/cases/{id}/reject", post(cases::reject_case))
        .route("/api/v1/cases/{id}/withdraw", post(cases::withdraw_case))
        .route("/api/v1/cases/{id}/deviation", post(cases::request_deviation))
        .route("/api/v1/cases/{id}/similar", get(cases::similar_cases))
        .route("/api/v1/jobs", get(jobs::list_jobs))
        .route("/api/v1/jobs/{id}", get(jobs::get_job))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/api/v1/jobs/{id}/outputs", get(jobs::job_outputs))
        .route("/api/v1/jobs/{id}/outputs/{name}", get(jobs::download_output))
        .route("/api/v1/jobs/{id}/store-back", post(jobs::store_back))
        .route("/api/v1/normdb", get(normdb::normdb_info))
        .route("/api/v1/normdb/templates", get(normdb::normdb_templates))
        .route("/api/v1/normdb/builds", post(normdb::start_build))
        .route("/api/v1/users", get(users::list_users))
        .route("/api/v1/users/{id}/disable", post(users::disable_user))
        .route("/api/v1/users/{id}/enable", post(users::enable_user))
        .route("/api/v1/users/{id}/rotate-token", post(users::rotate_token))
        .route("/api/v1/audit", get(audit::read_audit))
        .route("/api/v1/audit/verify", get(audit::verify_audit))
        .route("/viewer/session", post(viewer::open_session))
        .route("/viewer/session/end", post(viewer::end_session))
        .route("/viewer/jobs/{id}", get(viewer::page))
        .route("/viewer/jobs/{id}/manifest", get(viewer::manifest))
        .route("/viewer/jobs/{id}/files/{name}", get(viewer::file))
        .route("/viewer/assets/{name}", get(viewer::asset))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}
