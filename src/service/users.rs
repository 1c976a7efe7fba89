//! User administration over the API (admins): list, disable, enable, rotate a token. Every
//! call is audited by the guard like any request. Nothing is deleted. A disabled user's token
//! fails from the very next request: every request looks its token up in the state (there is
//! no cache that could keep it alive).

use super::api::{Id, Principal};
use super::auth::{self, AuthError, UserEntry};
use super::error::{ApiError, ErrorBody};
use super::state::AppState;
use super::store::Store;
use axum::Json;
use axum::extract::State;
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

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Invalid { .. } => ApiError::BadRequest(error.to_string()),
            AuthError::NotFound(_) => ApiError::NotFound(error.to_string()),
            AuthError::Store(error) => ApiError::internal(error),
        }
    }
}

async fn on_store<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Store) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// List every user, disabled ones included (no secrets).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserEntry>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<UserEntry>>, ApiError> {
    on_store(&state, auth::list_users).await.map(Json)
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
) -> Result<Json<UserEntry>, ApiError> {
    if principal.user.id == id {
        return Err(ApiError::Conflict("an administrator cannot disable their own account".into()));
    }
    on_store(&state, move |store| auth::set_disabled(store, id, true)).await.map(Json)
}

/// Enable a disabled user again (with the token they had).
#[utoipa::path(post, path = "/api/v1/users/{id}/enable", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = UserEntry), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn enable_user(State(state): State<AppState>, Id(id): Id) -> Result<Json<UserEntry>, ApiError> {
    on_store(&state, move |store| auth::set_disabled(store, id, false)).await.map(Json)
}

/// Replace a user's token: the old one fails at once, the new one is answered once.
#[utoipa::path(post, path = "/api/v1/users/{id}/rotate-token", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "User id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = NewToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn rotate_token(State(state): State<AppState>, Id(id): Id) -> Result<Json<NewToken>, ApiError> {
    on_store(&state, move |store| {
        let token = auth::rotate_token(store, id)?;
        Ok(NewToken { user: auth::get_user(store, id)?, token })
    })
    .await
    .map(Json)
}
