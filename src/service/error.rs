//! The API's error type: every failure becomes a JSON body `{ "error": CODE, "message": TEXT,
//! "reasons": [...] }` with a matching status. Internal errors are logged and answered with a
//! generic message so no internal detail (paths, identities) leaks.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code (`bad_request`, `not_found`, `conflict`, …).
    pub error: String,
    /// Human-readable explanation naming the field and the rule.
    pub message: String,
    /// Named reasons (admission refusals, validation failures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not with this method; carries the methods it has.
    #[error("{method} is not served on this path (allowed: {allowed})")]
    MethodNotAllowed {
        /// The refused method.
        method: String,
        /// The methods of the role table for the path, comma-separated (the `Allow` header).
        allowed: String,
    },
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 422: the input was well-formed but refused, with named reasons.
    #[error("{message}")]
    Refused {
        /// Summary.
        message: String,
        /// Named reasons.
        reasons: Vec<String>,
    },
    /// 429: too many requests without a valid token from one address.
    #[error("too many requests without a valid token from this address; retry later")]
    RateLimited,
    /// 503.
    #[error("{0}")]
    Unavailable(String),
    /// 502: a PACS answered with an error.
    #[error("{0}")]
    BadGateway(String),
    /// 500: logged, answered generically.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Refused { .. } => "refused",
            ApiError::RateLimited => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BadGateway(_) => "pacs_error",
            ApiError::Internal(_) => "internal",
        }
    }

    /// 422 for a request that matches the OpenAPI document but breaks one rule the operation
    /// states in prose (a date in the future, bracket bounds out of order): 400 is kept for
    /// requests the document itself excludes.
    pub fn rule(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        ApiError::Refused { message: reason.clone(), reasons: vec![reason] }
    }

    /// Shorthand for an internal error from any displayable cause.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl From<super::store::StoreError> for ApiError {
    fn from(error: super::store::StoreError) -> Self {
        ApiError::internal(error)
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(error: rusqlite::Error) -> Self {
        ApiError::internal(error)
    }
}

impl From<super::jobs::JobError> for ApiError {
    fn from(error: super::jobs::JobError) -> Self {
        use super::jobs::JobError;
        match error {
            JobError::QueueFull(_) => ApiError::Unavailable(error.to_string()),
            JobError::NotFound(_) => ApiError::NotFound(error.to_string()),
            JobError::Finished(_) => ApiError::Conflict(error.to_string()),
            JobError::UnknownKind(_) | JobError::Store(_) => ApiError::internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!("internal error: {detail}");
        }
        let reasons = match &self {
            ApiError::Refused { reasons, .. } => reasons.clone(),
            _ => Vec::new(),
        };
        let body = ErrorBody { error: self.code().to_string(), message: self.to_string(), reasons };
        let mut response = (self.status(), Json(body)).into_response();
        match &self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::RateLimited => {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("60"));
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = axum::http::HeaderValue::from_str(allowed) {
                    response.headers_mut().insert(axum::http::header::ALLOW, value);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<super::auth::AuthError> for ApiError {
    fn from(error: super::auth::AuthError) -> Self {
        match error {
            super::auth::AuthError::Invalid { .. } => ApiError::BadRequest(error.to_string()),
            super::auth::AuthError::NotFound(_) => ApiError::NotFound(error.to_string()),
            super::auth::AuthError::Store(error) => ApiError::internal(error),
        }
    }
}
