//! The HTTP API: router, authentication and authorization layer, audit of every request, and
//! the handlers. Paths, methods and roles come from [`super::roles::ROUTES`]; the OpenAPI
//! document is generated from the `#[utoipa::path]` annotations here.

use super::audit::{self, AuditRecord, NewRecord, VerifyReport};
use super::auth::{self, User};
use super::cases::{self, Actor, Case, CaseUpdate, NewCase};
use super::consent::{self, Consent, ConsentInput, Database};
use super::error::{ApiError, ErrorBody};
use super::jobs::{JobInfo, output_files};
use super::roles::{self, Access, Role};
use super::scope::{self, Owned, Scope};
use super::state::AppState;
use super::studies::{self, Study, UploadLimits};
use super::users;
use super::work;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use utoipa::{IntoParams, ToSchema};

/// Header naming the user the portal acts for.
pub const ACTING_USER: &str = "x-acting-user";
/// Header naming that user's role (checked against the route table).
pub const ACTING_ROLE: &str = "x-acting-role";
/// Header naming that user's centre.
pub const ACTING_CENTRE: &str = "x-acting-centre";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's account.
    pub user: User,
    /// For the portal: the user it acts for, with role and centre.
    pub acting: Option<(String, Role, String)>,
}

impl Principal {
    /// The specialist to record: the acting user for the portal, else the account.
    pub fn actor(&self) -> Actor {
        match &self.acting {
            Some((name, _, centre)) => Actor { name: name.clone(), centre: centre.clone() },
            None => Actor { name: self.user.name.clone(), centre: self.user.centre.clone() },
        }
    }
    /// Name recorded as job owner, study submitter…
    pub fn recorded_name(&self) -> String {
        match &self.acting {
            Some((name, _, _)) => format!("{} (via {})", name, self.user.name),
            None => self.user.name.clone(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or(ApiError::Unauthorized)
    }
}

/// JSON body whose rejections become 400 answers with a JSON error.
pub struct Body400<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body400<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(mut value) = Json::<Value>::from_request(request, state).await.map_err(json_rejection)?;
        integral_numbers_as_integers(&mut value);
        serde_json::from_value(value)
            .map(Body400)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// JSON Schema counts `7.0` as an integer; serde does not. Rewriting integral numbers as
/// integers makes every `integer` of the OpenAPI document accept what the schema accepts
/// (a fraction still fails, and `number` fields read integers as they are).
fn integral_numbers_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
                // Beyond 2^53 a float no longer names one integer; leave it to fail.
                if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0 {
                    *number = serde_json::Number::from(float as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("the body must be JSON (Content-Type: application/json)".into())
        }
        other => ApiError::BadRequest(format!("invalid JSON body: {}", other.body_text())),
    }
}

/// Path id that answers 400 with JSON when it is not a positive integer.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params): Path<std::collections::HashMap<String, String>> =
            Path::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::BadRequest("invalid path".into()))?;
        let raw = params.get("id").ok_or_else(|| ApiError::BadRequest("missing id".into()))?;
        // 1 ..= 2^53: every id a JSON number holds exactly (the OpenAPI bounds).
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0 && *id <= (1 << 53))
            .map(Id)
            .ok_or_else(|| ApiError::BadRequest("`id` must be a positive integer".into()))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Authenticates, authorizes and audits every request (those without a valid token are
/// rate-limited per address and audited in aggregate, see [`super::anonymous`]). Deny by default: a request reaches a
/// handler only when its (method, route) pair is in [`roles::ROUTES`] (`HEAD` follows `GET`)
/// and the caller passes that route's rule; any other pair answers 401 without a valid token,
/// 405 (listed path) or 404 (unknown path) with one.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let resource: String = request.uri().path().chars().take(300).collect();
    let matched = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let route = matched.as_deref().and_then(|path| roles::lookup(&method, path));
    let action = route.map(|r| r.action).unwrap_or("unknown");
    let mut record = NewRecord {
        user: "-".into(),
        role: "-".into(),
        action: action.into(),
        resource,
        ..Default::default()
    };
    let headers = request.headers().clone();
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // A request without a token spends its address's allowance before anything else runs.
    let response = if bearer(&headers).is_none() && !state.anonymous.admit(address) {
        ApiError::RateLimited.into_response()
    } else {
        dispatch(&state, request, next, route, matched.as_deref(), &headers, &mut record).await
    };
    state.metrics.record(action, response.status().as_u16(), started.elapsed().as_secs_f64());
    if record.user == "-" {
        // No valid token: a forged one spends the allowance too; counted, audited in aggregate.
        let limited = bearer(&headers).is_some() && !state.anonymous.admit(address);
        state.anonymous.note(address, response.status().as_u16());
        return if limited { ApiError::RateLimited.into_response() } else { response };
    }
    record.outcome = response.status().as_u16().to_string();
    // The audit record is committed before the answer leaves: an unaudited request never
    // succeeds. Records of concurrent requests share one commit (group commit).
    match state.audit.append(record).await {
        Ok(_) => response,
        Err(error) => ApiError::internal(format!("audit log: {error}")).into_response(),
    }
}

/// Serves a request the table lists (after the caller passed its rule), or answers for one
/// it does not.
async fn dispatch(
    state: &AppState,
    mut request: Request,
    next: Next,
    route: Option<&'static roles::RouteSpec>,
    matched: Option<&str>,
    headers: &HeaderMap,
    record: &mut NewRecord,
) -> Response {
    match route {
        Some(route) if route.access == Access::Public => next.run(request).await,
        Some(route) => {
            let authorized = match authorize(state, headers, route, record).await {
                Ok(principal) => scope::enforce(state, route.path, request.uri().path(), &principal)
                    .await
                    .map(|_| principal),
                Err(error) => Err(error),
            };
            match authorized {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    next.run(request).await
                }
                Err(error) => error.into_response(),
            }
        }
        // Not in the table: never served. Only an authenticated caller learns whether the
        // path exists.
        None => match authenticate(state, headers, record).await {
            Err(error) => error.into_response(),
            Ok(_) => match matched.and_then(roles::allowed_methods) {
                Some(allowed) => ApiError::MethodNotAllowed { method: request.method().to_string(), allowed }
                    .into_response(),
                None => ApiError::NotFound("no such endpoint".into()).into_response(),
            },
        },
    }
}

/// The account of the request's bearer token (recorded in the audit record), or 401.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    record: &mut NewRecord,
) -> Result<User, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthorized)?.to_string();
    let store = state.store.clone();
    let user = tokio::task::spawn_blocking(move || auth::authenticate(&store, &token))
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized)?;
    record.user = user.name.clone();
    record.role = user.role.to_string();
    record.centre = user.centre.clone();
    Ok(user)
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    route: &roles::RouteSpec,
    record: &mut NewRecord,
) -> Result<Principal, ApiError> {
    let user = authenticate(state, headers, record).await?;
    if !route.allows(user.role) {
        return Err(ApiError::Forbidden(format!(
            "role {} may not call {} {}",
            user.role, route.method, route.path
        )));
    }
    let mut acting = None;
    if user.role == Role::Portal {
        let name = header_text(headers, ACTING_USER).ok_or_else(|| {
            ApiError::BadRequest(format!("the portal must name the user it acts for ({ACTING_USER})"))
        })?;
        auth::check_name(ACTING_USER, name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let role: Role = header_text(headers, ACTING_ROLE)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("the portal must give the acting user's role ({ACTING_ROLE})"))
            })?
            .parse()
            .map_err(ApiError::BadRequest)?;
        let centre = header_text(headers, ACTING_CENTRE).unwrap_or("").to_string();
        if !centre.is_empty() {
            auth::check_name(ACTING_CENTRE, &centre).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        }
        record.on_behalf_of = format!("{name} ({role}, {centre})");
        if matches!(role, Role::Portal | Role::Admin) || !route.allows(role) {
            return Err(ApiError::Forbidden(format!(
                "the portal acting for role {role} may not call {} {}",
                route.method, route.path
            )));
        }
        scope::require_registered(&state.store, name, role, &centre).await?;
        acting = Some((name.to_string(), role, centre));
    }
    Ok(Principal { user, acting })
}

/// Runs blocking work (SQLite, files) on a clone of the state, off the async executor.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(AppState) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(state)).await.map_err(ApiError::internal)?
}

/// Query string whose rejections become 400 answers with a JSON error.
pub struct Query400<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query400<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Query400(value))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
    }
}

/// Moves or edits a case for the caller, recorded as the acting specialist, under the
/// configured workflow rules (off the async executor).
async fn case_action(
    state: &AppState,
    principal: &Principal,
    action: impl FnOnce(&rusqlite::Connection, &Actor, &super::config::WorkflowConfig) -> Result<Case, ApiError>
    + Send
    + 'static,
) -> Result<Json<Case>, ApiError> {
    let actor = principal.actor();
    blocking(state, move |s| action(&s.store.lock(), &actor, &s.config.workflow)).await.map(Json)
}

/// The centre a study, case or job belongs to (its jobs belong there too), or 404.
fn owning_centre(state: &AppState, kind: Owned, id: i64) -> Result<String, ApiError> {
    scope::centre_of(&state.store.lock(), kind, id)?.ok_or_else(|| kind.not_found(id))
}

/// A job by id, or 404.
fn find_job(jobs: &super::jobs::JobQueue, id: i64) -> Result<JobInfo, ApiError> {
    jobs.get(id)?.ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))
}

/// Queues a job of `kind` for the caller once `check` passes, belonging to the centre `check`
/// names (both off the async executor); answers 202 with the job id.
async fn queue_job(
    state: &AppState,
    principal: &Principal,
    kind: &'static str,
    params: serde_json::Value,
    check: impl FnOnce(&AppState) -> Result<String, ApiError> + Send + 'static,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    let owner = principal.recorded_name();
    blocking(state, move |s| {
        let centre = check(&s)?;
        let job = s.jobs.enqueue(kind, &params, &owner, &centre)?;
        Ok(JobAccepted { job })
    })
    .await
    .map(|accepted| (StatusCode::ACCEPTED, Json(accepted)))
}

// ---------------------------------------------------------------------------------------------
// Health, version, metrics

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

// ---------------------------------------------------------------------------------------------
// Studies and consent

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
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
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
    blocking(&state, move |s| {
        let limits =
            UploadLimits { max_files: config.max_upload_files, max_total_bytes: config.max_unzipped_bytes };
        let staging_root = config.data_dir.join("incoming");
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
    .map(|submitted| (StatusCode::ACCEPTED, Json(submitted)))
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
    store: &super::store::Store,
    jobs: &super::jobs::JobQueue,
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
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let database = request.database;
    if let Some(input) = &request.consent {
        consent::check_input(input)?;
    }
    super::pacs::check_uid(&request.study_instance_uid).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A study belongs to the centre that submits it, so a caller imports from their own
    // centre's PACS only (admins from any); another centre's answers as an unknown one.
    let own_centre = Scope::of(&principal).visible_centre(Owned::Study).map(str::to_string);
    let reachable = own_centre.is_none_or(|own| own == request.centre);
    if !reachable || !state.config.pacs.iter().any(|p| p.centre == request.centre) {
        return Err(ApiError::NotFound("no PACS is configured for that centre".into()));
    }
    let owner = principal.recorded_name();
    let centre = principal.actor().centre;
    blocking(&state, move |s| {
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
    .map(|submitted| (StatusCode::ACCEPTED, Json(submitted)))
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

fn limit(query: &ListQuery) -> i64 {
    query.limit.unwrap_or(100).clamp(1, 1000)
}

/// List the studies the caller may see (see the scoping rules), newest first.
#[utoipa::path(get, path = "/api/v1/studies", tag = "studies", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<Study>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_studies(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<ListQuery>,
) -> Result<Json<Vec<Study>>, ApiError> {
    let scope = Scope::of(&principal);
    blocking(&state, move |s| {
        let centre = scope.visible_centre(Owned::Study);
        studies::list(&s.store.lock(), query.filter.as_deref(), centre, limit(&query))
    })
    .await
    .map(Json)
}

/// One study.
#[utoipa::path(get, path = "/api/v1/studies/{id}", tag = "studies", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Study), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_study(State(state): State<AppState>, Id(id): Id) -> Result<Json<Study>, ApiError> {
    blocking(&state, move |s| studies::get(&s.store.lock(), id)).await.map(Json)
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
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let owner = principal.recorded_name();
    blocking(&state, move |s| {
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
    .map(|submitted| (StatusCode::ACCEPTED, Json(submitted)))
}

/// Consent of a study.
#[utoipa::path(get, path = "/api/v1/studies/{id}/consent", tag = "consent", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Study id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Consent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_consent(State(state): State<AppState>, Id(id): Id) -> Result<Json<Consent>, ApiError> {
    blocking(&state, move |s| {
        let connection = s.store.lock();
        studies::internals(&connection, id)?;
        consent::get(&connection, id)?
            .ok_or_else(|| ApiError::NotFound(format!("study {id} has no consent record")))
    })
    .await
    .map(Json)
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
) -> Result<(StatusCode, Json<Consent>), ApiError> {
    let owner = principal.recorded_name();
    blocking(&state, move |s| {
        let connection = s.store.lock();
        studies::internals(&connection, id)?;
        consent::record(&connection, id, &input, &owner)
    })
    .await
    .map(|consent| (StatusCode::CREATED, Json(consent)))
}

/// A reason (withdrawal, rejection).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Why (1–2000 characters; no identities).
    pub reason: String,
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
) -> Result<Json<Consent>, ApiError> {
    let owner = principal.recorded_name();
    blocking(&state, move |s| {
        let connection = s.store.lock();
        studies::internals(&connection, id)?;
        consent::withdraw(&connection, id, &reason.reason, &owner)
    })
    .await
    .map(Json)
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Submit a database A case.
#[utoipa::path(post, path = "/api/v1/cases", tag = "cases", security(("bearer" = [])), request_body = NewCase,
    responses((status = 201, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn submit_case(
    State(state): State<AppState>,
    principal: Principal,
    Body400(input): Body400<NewCase>,
) -> Result<(StatusCode, Json<Case>), ApiError> {
    let actor = principal.actor();
    let scope = Scope::of(&principal);
    blocking(&state, move |s| {
        let connection = s.store.lock();
        // A study of another centre cannot be the subject of this centre's case.
        scope.check(&connection, Owned::Study, input.study_id)?;
        let consent = consent::get(&connection, input.study_id)?;
        if let Err(reason) = consent::permits(consent.as_ref(), Database::A) {
            // Check existence first so an unknown study answers 404.
            studies::internals(&connection, input.study_id)?;
            return Err(ApiError::Refused {
                message: "a case needs consent for database A".into(),
                reasons: vec![reason],
            });
        }
        cases::submit(&connection, &input, &actor)
    })
    .await
    .map(|case| (StatusCode::CREATED, Json(case)))
}

/// List the cases the caller may see (filter = status), newest first.
#[utoipa::path(get, path = "/api/v1/cases", tag = "cases", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<Case>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_cases(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<ListQuery>,
) -> Result<Json<Vec<Case>>, ApiError> {
    let scope = Scope::of(&principal);
    blocking(&state, move |s| {
        let centre = scope.visible_centre(Owned::Case);
        cases::list(&s.store.lock(), query.filter.as_deref(), centre, limit(&query))
    })
    .await
    .map(Json)
}

/// One case with its history.
#[utoipa::path(get, path = "/api/v1/cases/{id}", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_case(State(state): State<AppState>, Id(id): Id) -> Result<Json<Case>, ApiError> {
    blocking(&state, move |s| cases::get(&s.store.lock(), id)).await.map(Json)
}

/// Update Orphanet codes and clinical fields.
#[utoipa::path(patch, path = "/api/v1/cases/{id}", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)), request_body = CaseUpdate,
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_case(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(input): Body400<CaseUpdate>,
) -> Result<Json<Case>, ApiError> {
    case_action(&state, &principal, move |db, actor, _| cases::update(db, id, &input, actor)).await
}

/// An optional comment.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    /// Comment (no identities).
    #[serde(default)]
    pub comment: String,
}

fn check_comment(comment: &str) -> Result<(), ApiError> {
    if comment.len() > 2000 {
        return Err(ApiError::BadRequest("`comment` is limited to 2000 characters".into()));
    }
    Ok(())
}

/// The committee starts reviewing a submitted case.
#[utoipa::path(post, path = "/api/v1/cases/{id}/review", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn review_case(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
) -> Result<Json<Case>, ApiError> {
    case_action(&state, &principal, move |db, actor, _| cases::start_review(db, id, actor)).await
}

/// Record a committee member's approval (A2 once enough distinct members approved).
#[utoipa::path(post, path = "/api/v1/cases/{id}/approvals", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)), request_body = Comment,
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve_case(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(comment): Body400<Comment>,
) -> Result<Json<Case>, ApiError> {
    check_comment(&comment.comment)?;
    case_action(&state, &principal, move |db, actor, rules| {
        cases::approve(db, id, actor, &comment.comment, rules)
    })
    .await
}

/// Record a specialist's diagnosis confirmation (A1 once specialists of enough centres confirmed).
#[utoipa::path(post, path = "/api/v1/cases/{id}/confirmations", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)), request_body = Comment,
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn confirm_case(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(comment): Body400<Comment>,
) -> Result<Json<Case>, ApiError> {
    check_comment(&comment.comment)?;
    case_action(&state, &principal, move |db, actor, rules| {
        cases::confirm(db, id, actor, &comment.comment, rules)
    })
    .await
}

/// The committee rejects a case.
#[utoipa::path(post, path = "/api/v1/cases/{id}/reject", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)), request_body = Reason,
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reject_case(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(reason): Body400<Reason>,
) -> Result<Json<Case>, ApiError> {
    case_action(&state, &principal, move |db, actor, _| cases::reject(db, id, actor, &reason.reason)).await
}

/// Withdraw a case (a state with its reason; nothing is deleted).
#[utoipa::path(post, path = "/api/v1/cases/{id}/withdraw", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)), request_body = Reason,
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn withdraw_case(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Body400(reason): Body400<Reason>,
) -> Result<Json<Case>, ApiError> {
    case_action(&state, &principal, move |db, actor, _| cases::withdraw(db, id, actor, &reason.reason)).await
}

/// A queued job.
#[derive(Serialize, ToSchema)]
pub struct JobAccepted {
    /// Job id; poll `/api/v1/jobs/{id}`.
    pub job: i64,
}

/// Request a deviation map for a case (age and sex from the study); returns a job.
#[utoipa::path(post, path = "/api/v1/cases/{id}/deviation", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 202, body = JobAccepted), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn request_deviation(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    queue_job(&state, &principal, "deviation", serde_json::json!({ "case_id": id }), move |s| {
        work::check_deviation_request(&s.store, id, &s.config.normdb_path())?;
        owning_centre(s, Owned::Case, id)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// List the jobs the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<JobInfo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<ListQuery>,
) -> Result<Json<Vec<JobInfo>>, ApiError> {
    let scope = Scope::of(&principal);
    blocking(&state, move |s| {
        s.jobs.list(limit(&query), scope.visible_centre(Owned::Job)).map_err(ApiError::from)
    })
    .await
    .map(Json)
}

/// Job status and progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = JobInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_job(State(state): State<AppState>, Id(id): Id) -> Result<Json<JobInfo>, ApiError> {
    blocking(&state, move |s| find_job(&s.jobs, id)).await.map(Json)
}

/// Cancel a queued or running job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = JobInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(State(state): State<AppState>, Id(id): Id) -> Result<Json<JobInfo>, ApiError> {
    blocking(&state, move |s| s.jobs.cancel(id).map_err(ApiError::from)).await.map(Json)
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
pub async fn job_outputs(
    State(state): State<AppState>,
    Id(id): Id,
) -> Result<Json<Vec<OutputFile>>, ApiError> {
    blocking(&state, move |s| {
        let job = find_job(&s.jobs, id)?;
        if job.state != super::jobs::JobState::Done {
            return Err(ApiError::Conflict(format!("job {id} has no outputs: it is not done")));
        }
        Ok(output_files(&s.jobs.output_dir(id))
            .into_iter()
            .map(|(name, bytes)| OutputFile { name, bytes })
            .collect())
    })
    .await
    .map(Json)
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
    } else {
        "application/octet-stream"
    }
}

/// Download one output (NIfTI z-maps, cluster map, report.json, PNG montages).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs/{name}", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Job id", minimum = 1, maximum = 9007199254740992_i64), ("name" = String, Path, description = "File name from the outputs list", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$")),
    responses((status = 200, description = "The file: JSON for `.json` outputs, PNG for montages, gzip for NIfTI maps",
               content((serde_json::Value = "application/json"), (Vec<u8> = "image/png"), (Vec<u8> = "application/gzip"),
                       (Vec<u8> = "text/csv"), (Vec<u8> = "application/octet-stream"))),
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
        if job.state != super::jobs::JobState::Done {
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
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    queue_job(&state, &principal, "store_back", serde_json::json!({ "deviation_job": id }), move |s| {
        work::check_store_back_request(&s.store, &s.jobs, id)?;
        owning_centre(s, Owned::Job, id)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Normative database

/// Normative database summary.
#[utoipa::path(get, path = "/api/v1/normdb", tag = "normdb", security(("bearer" = [])),
    responses((status = 200, body = work::NormdbSummary), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn normdb_info(State(state): State<AppState>) -> Result<Json<work::NormdbSummary>, ApiError> {
    let path = state.config.normdb_path();
    blocking(&state, move |_| work::normdb_summary(&path)).await.map(Json)
}

/// Templates and age brackets of the normative database.
#[utoipa::path(get, path = "/api/v1/normdb/templates", tag = "normdb", security(("bearer" = [])),
    responses((status = 200, body = Vec<work::BracketSummary>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn normdb_templates(
    State(state): State<AppState>,
) -> Result<Json<Vec<work::BracketSummary>>, ApiError> {
    let path = state.config.normdb_path();
    blocking(&state, move |_| work::normdb_summary(&path).map(|s| s.brackets)).await.map(Json)
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
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    request.validate()?;
    let params = serde_json::to_value(&request).map_err(ApiError::internal)?;
    let centre = Scope::of(&principal).centre;
    queue_job(&state, &principal, "normdb_build", params, move |_| Ok(centre)).await
}

// ---------------------------------------------------------------------------------------------
// Audit

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
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let after = query.after.unwrap_or(0).max(0);
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    blocking(&state, move |s| audit::read(&s.store, after, limit).map_err(ApiError::from)).await.map(Json)
}

/// Verify the audit log's hash chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = VerifyReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn verify_audit(State(state): State<AppState>) -> Result<Json<VerifyReport>, ApiError> {
    blocking(&state, move |s| s.audit.verify(&s.store).map_err(ApiError::from)).await.map(Json)
}

// ---------------------------------------------------------------------------------------------

async fn openapi_document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi::document_json()).into_response()
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
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/openapi.json", get(openapi_document))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/whoami", get(whoami))
        .route(
            "/api/v1/studies",
            post(upload_study).layer(DefaultBodyLimit::max(upload_limit)).get(list_studies),
        )
        .route("/api/v1/studies/import", post(import_study))
        .route("/api/v1/studies/{id}", get(get_study))
        .route("/api/v1/studies/{id}/ingest", post(ingest_study))
        .route("/api/v1/studies/{id}/consent", get(get_consent).post(record_consent))
        .route("/api/v1/studies/{id}/consent/withdraw", post(withdraw_consent))
        .route("/api/v1/cases", post(submit_case).get(list_cases))
        .route("/api/v1/cases/{id}", get(get_case).merge(patch(update_case)))
        .route("/api/v1/cases/{id}/review", post(review_case))
        .route("/api/v1/cases/{id}/approvals", post(approve_case))
        .route("/api/v1/cases/{id}/confirmations", post(confirm_case))
        .route("/api/v1/cases/{id}/reject", post(reject_case))
        .route("/api/v1/cases/{id}/withdraw", post(withdraw_case))
        .route("/api/v1/cases/{id}/deviation", post(request_deviation))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/jobs/{id}/outputs", get(job_outputs))
        .route("/api/v1/jobs/{id}/outputs/{name}", get(download_output))
        .route("/api/v1/jobs/{id}/store-back", post(store_back))
        .route("/api/v1/normdb", get(normdb_info))
        .route("/api/v1/normdb/templates", get(normdb_templates))
        .route("/api/v1/normdb/builds", post(start_build))
        .route("/api/v1/users", get(users::list_users))
        .route("/api/v1/users/{id}/disable", post(users::disable_user))
        .route("/api/v1/users/{id}/enable", post(users::enable_user))
        .route("/api/v1/users/{id}/rotate-token", post(users::rotate_token))
        .route("/api/v1/audit", get(read_audit))
        .route("/api/v1/audit/verify", get(verify_audit))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_numbers_become_integers_and_fractions_stay() {
        let mut value = serde_json::json!({"n": 7.0, "list": [1.0, 2.5, -3.0], "big": 1e300, "s": "7.0"});
        integral_numbers_as_integers(&mut value);
        assert_eq!(value, serde_json::json!({"n": 7, "list": [1, 2.5, -3], "big": 1e300, "s": "7.0"}));
        assert!(value["n"].is_i64() && value["list"][1].is_f64() && value["big"].is_f64());
    }
}
