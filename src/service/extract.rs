//! Request extractors whose rejections answer 400 with a JSON error: a JSON body, a query
//! string and a path id.

use super::error::ApiError;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde_json::Value;

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
