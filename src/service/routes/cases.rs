//! The database A case workflow: submission, review, approvals, confirmations, rejection,
//! withdrawal and deviation requests.

use super::{Answer, JobAccepted, ListQuery, Reason, answer, list_visible, owning_centre, queue_job};
use crate::service::auth::Principal;
use crate::service::cases::{self, Actor, Case, CaseUpdate, NewCase};
use crate::service::config::WorkflowConfig;
use crate::service::consent::{self, Database};
use crate::service::error::{ApiError, ErrorBody};
use crate::service::extract::{Body400, Id, Query400};
use crate::service::scope::{Owned, Scope};
use crate::service::similar::{self, SimilarCases};
use crate::service::state::AppState;
use crate::service::{studies, work};
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

/// Moves or edits a case for the caller, recorded as the acting specialist, under the
/// configured workflow rules (off the async executor).
async fn case_action(
    state: &AppState,
    principal: &Principal,
    action: impl FnOnce(&rusqlite::Connection, &Actor, &WorkflowConfig) -> Result<Case, ApiError> + Send + 'static,
) -> Answer<Case> {
    let actor = principal.actor();
    answer(state, StatusCode::OK, move |s| action(&s.store.lock(), &actor, &s.config.workflow)).await
}

/// Submit a database A case.
#[utoipa::path(post, path = "/api/v1/cases", tag = "cases", security(("bearer" = [])), request_body = NewCase,
    responses((status = 201, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn submit_case(
    State(state): State<AppState>,
    principal: Principal,
    Body400(input): Body400<NewCase>,
) -> Answer<Case> {
    let actor = principal.actor();
    let scope = Scope::of(&principal);
    answer(&state, StatusCode::CREATED, move |s| {
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
}

/// List the cases the caller may see (filter = status), newest first.
#[utoipa::path(get, path = "/api/v1/cases", tag = "cases", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = Vec<Case>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_cases(
    State(state): State<AppState>,
    principal: Principal,
    Query400(query): Query400<ListQuery>,
) -> Answer<Vec<Case>> {
    list_visible(&state, &principal, Owned::Case, query, cases::list).await
}

/// One case with its history.
#[utoipa::path(get, path = "/api/v1/cases/{id}", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_case(State(state): State<AppState>, Id(id): Id) -> Answer<Case> {
    answer(&state, StatusCode::OK, move |s| cases::get(&s.store.lock(), id)).await
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
) -> Answer<Case> {
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

/// A committee approval or a diagnosis confirmation with its comment (at most 2000 characters).
async fn with_comment(
    state: &AppState,
    principal: &Principal,
    id: i64,
    Comment { comment }: Comment,
    record: fn(&rusqlite::Connection, i64, &Actor, &str, &WorkflowConfig) -> Result<Case, ApiError>,
) -> Answer<Case> {
    if comment.len() > 2000 {
        return Err(ApiError::BadRequest("`comment` is limited to 2000 characters".into()));
    }
    case_action(state, principal, move |db, actor, rules| record(db, id, actor, &comment, rules)).await
}

/// The committee starts reviewing a submitted case.
#[utoipa::path(post, path = "/api/v1/cases/{id}/review", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64)),
    responses((status = 200, body = Case), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn review_case(State(state): State<AppState>, principal: Principal, Id(id): Id) -> Answer<Case> {
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
) -> Answer<Case> {
    with_comment(&state, &principal, id, comment, cases::approve).await
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
) -> Answer<Case> {
    with_comment(&state, &principal, id, comment, cases::confirm).await
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
) -> Answer<Case> {
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
) -> Answer<Case> {
    case_action(&state, &principal, move |db, actor, _| cases::withdraw(db, id, actor, &reason.reason)).await
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
) -> Answer<JobAccepted> {
    queue_job(&state, &principal, "deviation", serde_json::json!({ "case_id": id }), move |s| {
        work::check_deviation_request(&s.store, id, &s.config.normdb_path())?;
        owning_centre(s, Owned::Case, id)
    })
    .await
}

/// How many similar cases to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SimilarQuery {
    /// At most this many (1–50, default 5).
    #[param(minimum = 1, maximum = 50)]
    #[serde(default)]
    pub k: Option<i64>,
}

/// The confirmed (A1) cases whose deviation patterns are most like this case's, among those the
/// caller may read: Orphanet codes, clinical fields, age and similarity (docs/similar.md).
#[utoipa::path(get, path = "/api/v1/cases/{id}/similar", tag = "cases", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Case id", minimum = 1, maximum = 9007199254740992_i64), SimilarQuery),
    responses((status = 200, body = SimilarCases), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn similar_cases(
    State(state): State<AppState>,
    principal: Principal,
    Id(id): Id,
    Query400(query): Query400<SimilarQuery>,
) -> Answer<SimilarCases> {
    let k = query.k.unwrap_or(5);
    if !(1..=i64::from(similar::MAX_K)).contains(&k) {
        return Err(ApiError::BadRequest(format!("`k` must be 1–{} (got {k})", similar::MAX_K)));
    }
    let scope = Scope::of(&principal);
    answer(&state, StatusCode::OK, move |s| {
        similar::most_similar(
            &s.store.lock(),
            &s.similar_index,
            id,
            k as u32,
            scope.visible_centre(Owned::Case),
        )
    })
    .await
}
