//! The guard in front of every handler: authenticates, authorizes and audits each request.
//! Paths, methods and roles come from [`super::roles::ROUTES`]; deny by default.

use super::audit::NewRecord;
use super::auth::{self, ACTING_CENTRE, ACTING_ROLE, ACTING_USER, Principal, User};
use super::error::ApiError;
use super::roles::{self, Access, Role};
use super::scope;
use super::state::AppState;
use super::viewer::{self, session};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The viewer's session cookie, when the route takes one (see [`viewer::accepts_session`]) and
/// no token is sent (a token, when present, decides).
fn session_cookie<'a>(headers: &'a HeaderMap, route: Option<&roles::RouteSpec>) -> Option<&'a str> {
    let takes_cookie = route.is_some_and(|r| viewer::accepts_session(r.path));
    (takes_cookie && bearer(headers).is_none()).then(|| session::from_cookie_header(headers)).flatten()
}

/// Whether the request carries a credential (a token, or a session cookie where one counts).
fn has_credential(headers: &HeaderMap, route: Option<&roles::RouteSpec>) -> bool {
    bearer(headers).is_some() || session_cookie(headers, route).is_some()
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
    let response = if !has_credential(&headers, route) && !state.anonymous.admit(address) {
        ApiError::RateLimited.into_response()
    } else {
        dispatch(&state, request, next, route, matched.as_deref(), &headers, &mut record).await
    };
    state.metrics.record(action, response.status().as_u16(), started.elapsed().as_secs_f64());
    if record.user == "-" {
        // No valid token: a forged one spends the allowance too; counted, audited in aggregate.
        let limited = has_credential(&headers, route) && !state.anonymous.admit(address);
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
    record_caller(record, &user);
    Ok(user)
}

/// The audit record names the account that called, before any later check can refuse it.
fn record_caller(record: &mut NewRecord, user: &User) {
    record.user = user.name.clone();
    record.role = user.role.to_string();
    record.centre = user.centre.clone();
}

/// 403 unless the account's role may call `route`.
fn allowed(route: &roles::RouteSpec, role: Role) -> Result<(), ApiError> {
    if route.allows(role) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("role {role} may not call {} {}", route.method, route.path)))
    }
}

/// The caller of a request to `route`: the account of its token (with the user the portal
/// names in the `x-acting-*` headers), or the owner of its viewer session; 401 without either.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    route: &roles::RouteSpec,
    record: &mut NewRecord,
) -> Result<(User, Option<(String, Role, String)>), ApiError> {
    if let Some(id) = session_cookie(headers, Some(route)) {
        let owner = state.viewer_sessions.resolve(id).ok_or(ApiError::Unauthorized)?;
        let store = state.store.clone();
        // The account is looked up again: a disabled user's session, or one whose token was
        // rotated, fails at once.
        let (id, hash) = (owner.user_id, owner.token_hash);
        let user = tokio::task::spawn_blocking(move || auth::session_user(&store, id, &hash))
            .await
            .map_err(ApiError::internal)?
            .ok_or(ApiError::Unauthorized)?;
        record_caller(record, &user);
        allowed(route, user.role)?;
        return Ok((user, owner.acting));
    }
    let user = authenticate(state, headers, record).await?;
    allowed(route, user.role)?;
    if user.role != Role::Portal {
        return Ok((user, None));
    }
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
    Ok((user, Some((name.to_string(), role, centre))))
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    route: &roles::RouteSpec,
    record: &mut NewRecord,
) -> Result<Principal, ApiError> {
    let (user, acting) = caller(state, headers, route, record).await?;
    if let Some((name, role, centre)) = &acting {
        record.on_behalf_of = format!("{name} ({role}, {centre})");
        if matches!(role, Role::Portal | Role::Admin) || !route.allows(*role) {
            return Err(ApiError::Forbidden(format!(
                "the portal acting for role {role} may not call {} {}",
                route.method, route.path
            )));
        }
        scope::require_registered(&state.store, name, *role, centre).await?;
    }
    Ok(Principal { user, acting })
}
