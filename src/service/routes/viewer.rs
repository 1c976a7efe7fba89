//! The web viewer's routes: opening a session from a bearer token and ending it, the page of a deviation
//! job, its manifest and files, and the page's static files. Every response is marked
//! uncacheable and carries the page's security headers.

use super::blocking;
use crate::service::auth::Principal;
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::Id;
use crate::service::state::AppState;
use crate::service::viewer::{assets, files, session};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A response with the viewer's headers: its content type, no caching (patient images), no
/// MIME sniffing, no referrer, and the page's Content-Security-Policy.
fn viewer_response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(assets::CSP));
    response
}

/// An open viewer session.
#[derive(Serialize, ToSchema)]
pub struct SessionOpened {
    /// Seconds until the session cookie expires (open a new session then).
    pub expires_in_seconds: u64,
}

/// Open a viewer session: answers a `pedinorm_viewer` cookie (HttpOnly, SameSite=Strict,
/// `Path=/viewer`, `Secure` behind TLS) standing for the caller — the portal's acting user
/// included — for 15 minutes, so a browser can load `/viewer/jobs/{id}` without the token.
#[utoipa::path(post, path = "/viewer/session", tag = "viewer", security(("bearer" = [])),
    responses((status = 201, body = SessionOpened, headers(("set-cookie" = String, description = "The session cookie"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn open_session(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let user_id = principal.user.id;
    let token_hash = blocking(&state, move |s| {
        crate::service::auth::token_hash(&s.store, user_id).ok_or(ApiError::Unauthorized)
    })
    .await?;
    let owner = session::SessionOwner { user_id, token_hash, acting: principal.acting.clone() };
    let id = state.viewer_sessions.create(owner);
    let cookie = session::set_cookie(&id, state.config.tls.is_some());
    let mut response =
        (StatusCode::CREATED, Json(SessionOpened { expires_in_seconds: session::LIFETIME.as_secs() }))
            .into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Sign out of the viewer: ends the session the request's cookie stands for (if any) and tells
/// the browser to drop the cookie.
#[utoipa::path(post, path = "/viewer/session/end", tag = "viewer", security(("bearer" = []), ("viewer_session" = [])),
    responses((status = 204, description = "The session is ended", headers(("set-cookie" = String, description = "The cookie, expired"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn end_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session::from_cookie_header(&headers) {
        state.viewer_sessions.end(id);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie(state.config.tls.is_some())) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The viewer page of a finished deviation job (HTML; the session cookie or a token).
#[utoipa::path(get, path = "/viewer/jobs/{id}", tag = "viewer", security(("bearer" = []), ("viewer_session" = [])),
    params(("id" = i64, Path, description = "A deviation job", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, description = "The page", content_type = "text/html"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn page(State(state): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    blocking(&state, move |s| files::deviation_job(&s, id)).await?;
    Ok(viewer_response(StatusCode::OK, "text/html; charset=utf-8", assets::PAGE.as_bytes().to_vec()))
}

/// What the page of a deviation job loads: the case's volumes by contrast, the z-maps per
/// channel on the case's grid and in template space, the template, the charts.
#[utoipa::path(get, path = "/viewer/jobs/{id}/manifest", tag = "viewer", security(("bearer" = []), ("viewer_session" = [])),
    params(("id" = i64, Path, description = "A deviation job", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = files::Manifest),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn manifest(State(state): State<AppState>, Id(id): Id) -> Result<Response, ApiError> {
    let manifest = blocking(&state, move |s| {
        let job = files::deviation_job(&s, id)?;
        files::manifest(&s, &job)
    })
    .await?;
    let body = serde_json::to_vec(&manifest).map_err(ApiError::internal)?;
    Ok(viewer_response(StatusCode::OK, "application/json", body))
}

/// One file of a deviation job's viewer, by a name from its manifest: a case volume
/// (`case-N.nii.gz`), `template.nii.gz`, a z-map or cluster map (`.nii.gz`), `report.json`,
/// or an SVG chart.
#[utoipa::path(get, path = "/viewer/jobs/{id}/files/{name}", tag = "viewer", security(("bearer" = []), ("viewer_session" = [])),
    params(("id" = i64, Path, description = "A deviation job", minimum = 1, maximum = 9007199254740992_i64),
           ("name" = String, Path, description = "A name from the manifest or `report.json`", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")),
    responses((status = 200, description = "The file: gzip for NIfTI, JSON for the report, SVG for charts",
               content((Vec<u8> = "application/gzip"), (serde_json::Value = "application/json"), (Vec<u8> = "image/svg+xml"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn file(
    State(state): State<AppState>,
    Id(id): Id,
    path: Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Path((_, name)) = path;
    files::check_name(&name)?;
    let served = blocking(&state, move |s| {
        let job = files::deviation_job(&s, id)?;
        files::read(&s, &job, &name)
    })
    .await?;
    Ok(viewer_response(StatusCode::OK, served.content_type, served.bytes))
}

/// The page's script, style sheet and NiiVue bundle (`viewer.js`, `viewer.css`, `niivue.js`).
#[utoipa::path(get, path = "/viewer/assets/{name}", tag = "viewer", security(("bearer" = []), ("viewer_session" = [])),
    params(("name" = String, Path, description = "`viewer.js`, `viewer.css` or `niivue.js`", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")),
    responses((status = 200, description = "The file", content((String = "text/javascript"), (String = "text/css"))),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn asset(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    files::check_name(&name)?;
    let (bytes, content_type) =
        blocking(&state, move |s| assets::asset(&name, &s.config.viewer_assets_dir())).await?;
    Ok(viewer_response(StatusCode::OK, content_type, bytes))
}
