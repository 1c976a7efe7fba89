//! User administration over the API (admins): list, disable, enable, rotate a token. Every
//! call is audited by the guard like any request. Nothing is deleted. A disabled user's token
//! fails from the very next request: every request looks its token up in the state (there is
//! no cache that could keep it alive).

use super::{Answer, answer};
use crate::service::auth::{self, Principal, UserEntry};
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::Id;
use crate::service::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// A new token, shown once.
#[derive(Serialize, ToSchema)]
pub struct NewToken {
    /// The user.
    pub user: UserEntry,
    /// Bearer token (`pn_<id>_<secret>`); it is not stored and cannot be shown again.
    pub token: String,
}

/// List every user, disabled ones included (no secrets).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserEntry>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(state): State<AppState>) -> Answer<Vec<UserEntry>> {
    answer(&state, StatusCode::OK, |s| Ok(auth::list_users(&s.store)?)).await
}

/// Disable a user: their token fails from the next request on (the user is kept).
#[utoipa::path(post, path = "/api/v1/users/{id}/disable", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = UserEntry), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn disable_user(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
) -> Answer<UserEntry> {
    if principal.user.id == id {
        return Err(ApiError::Conflict("an administrator cannot disable their own account".into()));
    }
    answer(&state, StatusCode::OK, move |s| Ok(auth::set_disabled(&s.store, id, true)?)).await
}

/// Enable a disabled user again (with the token they had).
#[utoipa::path(post, path = "/api/v1/users/{id}/enable", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = UserEntry), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn enable_user(State(state): State<AppState>, Id(id): Id) -> Answer<UserEntry> {
    answer(&state, StatusCode::OK, move |s| Ok(auth::set_disabled(&s.store, id, false)?)).await
}

/// Replace a user's token: the old one fails at once, the new one is answered once.
#[utoipa::path(post, path = "/api/v1/users/{id}/rotate-token", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = NewToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn rotate_token(State(state): State<AppState>, Id(id): Id) -> Answer<NewToken> {
    answer(&state, StatusCode::OK, move |s| {
        let token = auth::rotate_token(&s.store, id)?;
        Ok(NewToken { user: auth::get_user(&s.store, id)?, token })
    })
    .await
}
