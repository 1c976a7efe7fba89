//! Database A case workflow.
//!
//! `submitted` → `under_committee_review` → `A2` (to be confirmed) → `A1` (confirmed), or
//! `rejected` by the committee; `withdrawn` from any state with a reason. Committee approvals
//! and diagnosis confirmations are recorded per specialist as append-only events; a case
//! becomes A2 after the configured number of distinct approvers and A1 once specialists of
//! the configured number of distinct centres have confirmed. Nothing is deleted.

use super::config::WorkflowConfig;
use super::error::ApiError;
use super::scope::Owned;
use super::store::now;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Case status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum CaseStatus {
    /// Submitted by a radiologist.
    #[serde(rename = "submitted")]
    Submitted,
    /// The committee is reviewing it.
    #[serde(rename = "under_committee_review")]
    UnderCommitteeReview,
    /// Approved by the committee; diagnosis to be confirmed.
    A2,
    /// Diagnosis confirmed by specialists of enough centres.
    A1,
    /// Rejected by the committee.
    #[serde(rename = "rejected")]
    Rejected,
    /// Withdrawn (with a reason).
    #[serde(rename = "withdrawn")]
    Withdrawn,
}

impl CaseStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Submitted => "submitted",
            CaseStatus::UnderCommitteeReview => "under_committee_review",
            CaseStatus::A2 => "A2",
            CaseStatus::A1 => "A1",
            CaseStatus::Rejected => "rejected",
            CaseStatus::Withdrawn => "withdrawn",
        }
    }
    fn parse(text: &str) -> CaseStatus {
        match text {
            "submitted" => CaseStatus::Submitted,
            "under_committee_review" => CaseStatus::UnderCommitteeReview,
            "A2" => CaseStatus::A2,
            "A1" => CaseStatus::A1,
            "rejected" => CaseStatus::Rejected,
            _ => CaseStatus::Withdrawn,
        }
    }
}

/// One event in a case's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaseEvent {
    /// When.
    pub time: String,
    /// `submitted`, `review_started`, `approval`, `confirmation`, `rejection`, `withdrawal`, `update`, `status`.
    pub kind: String,
    /// Specialist (account name, or the portal's acting user).
    pub actor: String,
    /// Specialist's centre.
    pub actor_centre: String,
    /// Comment, reason or new status.
    pub detail: String,
}

/// A case with its history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Case {
    /// Case id.
    pub id: i64,
    /// Study id.
    pub study_id: i64,
    /// Status.
    pub status: CaseStatus,
    /// Orphanet codes (`ORPHA:<digits>`).
    pub orpha_codes: Vec<String>,
    /// Free clinical data fields.
    #[schema(value_type = Object)]
    pub clinical: serde_json::Map<String, serde_json::Value>,
    /// Submitting account.
    pub created_by: String,
    /// Submitting centre.
    pub centre: String,
    /// Creation time.
    pub created: String,
    /// Last change.
    pub updated: String,
    /// Withdrawal reason.
    pub withdrawal_reason: Option<String>,
    /// Specialists who approved.
    pub approvals: Vec<String>,
    /// Distinct centres whose specialists confirmed.
    pub confirming_centres: Vec<String>,
    /// History, oldest first.
    pub events: Vec<CaseEvent>,
}

/// Body of a case submission.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCase {
    /// Study the case is built on (database A).
    pub study_id: i64,
    /// Orphanet codes (`ORPHA:<digits>`).
    #[serde(default)]
    pub orpha_codes: Vec<String>,
    /// Free clinical data fields (no identities).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub clinical: serde_json::Map<String, serde_json::Value>,
}

/// Body of a case update.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseUpdate {
    /// Replaces the Orphanet codes when given.
    #[serde(default)]
    pub orpha_codes: Option<Vec<String>>,
    /// Fields merged into the clinical data (a `null` value clears a field).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub clinical: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Who acts: the specialist and their centre.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Name.
    pub name: String,
    /// Centre.
    pub centre: String,
}

/// Validates an Orphanet code: `ORPHA:` followed by 1–7 digits, no leading zero.
pub fn validate_orpha_code(code: &str) -> Result<(), String> {
    let digits = code
        .strip_prefix("ORPHA:")
        .ok_or_else(|| format!("Orphanet code `{}` must have the form ORPHA:<number>", truncate(code)))?;
    let valid = !digits.is_empty()
        && digits.len() <= 7
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid {
        Ok(())
    } else {
        Err(format!("Orphanet code `{}` must be ORPHA: and 1–7 digits", truncate(code)))
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

fn check_codes(codes: &[String]) -> Result<Vec<String>, ApiError> {
    let reasons: Vec<String> = codes.iter().filter_map(|c| validate_orpha_code(c).err()).collect();
    if !reasons.is_empty() {
        return Err(ApiError::Refused { message: "invalid Orphanet codes".into(), reasons });
    }
    let unique: BTreeSet<String> = codes.iter().cloned().collect();
    Ok(unique.into_iter().collect())
}

fn check_clinical(clinical: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    if clinical.len() > 200 {
        return Err(ApiError::BadRequest("`clinical` holds at most 200 fields".into()));
    }
    for key in clinical.keys() {
        if key.is_empty() || key.len() > 100 {
            return Err(ApiError::BadRequest("`clinical` field names must be 1–100 characters".into()));
        }
    }
    if serde_json::to_string(clinical).map(|s| s.len()).unwrap_or(usize::MAX) > 64 * 1024 {
        return Err(ApiError::BadRequest("`clinical` must be under 64 KiB".into()));
    }
    Ok(())
}

fn add_event(
    connection: &Connection,
    case_id: i64,
    kind: &str,
    actor: &Actor,
    detail: &str,
) -> Result<(), ApiError> {
    connection.execute(
        "INSERT INTO case_events (case_id, time, kind, actor, actor_centre, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![case_id, now(), kind, actor.name, actor.centre, detail],
    )?;
    Ok(())
}

fn set_status(
    connection: &Connection,
    case_id: i64,
    status: CaseStatus,
    actor: &Actor,
) -> Result<(), ApiError> {
    connection.execute(
        "UPDATE cases SET status = ?2, updated = ?3 WHERE id = ?1",
        params![case_id, status.as_str(), now()],
    )?;
    add_event(connection, case_id, "status", actor, status.as_str())
}

/// Submits a case for a study of database A.
pub fn submit(connection: &Connection, input: &NewCase, actor: &Actor) -> Result<Case, ApiError> {
    let codes = check_codes(&input.orpha_codes)?;
    check_clinical(&input.clinical)?;
    let database: Option<String> = connection
        .query_row("SELECT database FROM studies WHERE id = ?1", params![input.study_id], |row| row.get(0))
        .optional()?;
    match database.as_deref() {
        None => return Err(ApiError::NotFound(format!("study {} does not exist", input.study_id))),
        Some("A") => {}
        Some(_) => {
            return Err(ApiError::Conflict(format!(
                "study {} was not offered to database A",
                input.study_id
            )));
        }
    }
    let time = now();
    connection.execute(
        "INSERT INTO cases (study_id, status, orpha_codes, clinical, created_by, centre, created, updated)
         VALUES (?1, 'submitted', ?2, ?3, ?4, ?5, ?6, ?6)",
        params![
            input.study_id,
            serde_json::to_string(&codes).unwrap_or_default(),
            serde_json::Value::Object(input.clinical.clone()).to_string(),
            actor.name,
            actor.centre,
            time
        ],
    )?;
    let id = connection.last_insert_rowid();
    add_event(connection, id, "submitted", actor, "")?;
    get(connection, id)
}

/// A case with its history.
pub fn get(connection: &Connection, id: i64) -> Result<Case, ApiError> {
    let row = connection
        .query_row(
            "SELECT id, study_id, status, orpha_codes, clinical, created_by, centre, created, updated, withdrawal_reason
             FROM cases WHERE id = ?1",
            params![id],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, String>(8)?,
                    row.get::<_, Option<String>>(9)?,
                ))
            },
        )
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("case {id} does not exist")))?;
    let mut statement = connection.prepare(
        "SELECT time, kind, actor, actor_centre, detail FROM case_events WHERE case_id = ?1 ORDER BY id",
    )?;
    let events = statement
        .query_map(params![id], |row| {
            Ok(CaseEvent {
                time: row.get(0)?,
                kind: row.get(1)?,
                actor: row.get(2)?,
                actor_centre: row.get(3)?,
                detail: row.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let approvals: BTreeSet<String> =
        events.iter().filter(|e| e.kind == "approval").map(|e| e.actor.clone()).collect();
    let confirming_centres: BTreeSet<String> =
        events.iter().filter(|e| e.kind == "confirmation").map(|e| e.actor_centre.clone()).collect();
    Ok(Case {
        id: row.0,
        study_id: row.1,
        status: CaseStatus::parse(&row.2),
        orpha_codes: serde_json::from_str(&row.3).unwrap_or_default(),
        clinical: serde_json::from_str(&row.4).unwrap_or_default(),
        created_by: row.5,
        centre: row.6,
        created: row.7,
        updated: row.8,
        withdrawal_reason: row.9,
        approvals: approvals.into_iter().collect(),
        confirming_centres: confirming_centres.into_iter().collect(),
        events,
    })
}

/// Cases, newest first, optionally filtered by status and by submitting centre.
pub fn list(
    connection: &Connection,
    status: Option<&str>,
    centre: Option<&str>,
    limit: i64,
) -> Result<Vec<Case>, ApiError> {
    let ids = super::scope::newest_ids(connection, Owned::Case, ("status", status), centre, limit)?;
    ids.into_iter().map(|id| get(connection, id)).collect()
}

fn require(case: &Case, allowed: &[CaseStatus], action: &str) -> Result<(), ApiError> {
    if allowed.contains(&case.status) {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!("case {} is {}: cannot {action}", case.id, case.status.as_str())))
    }
}

/// Updates Orphanet codes and clinical fields (not after rejection or withdrawal).
pub fn update(connection: &Connection, id: i64, input: &CaseUpdate, actor: &Actor) -> Result<Case, ApiError> {
    let case = get(connection, id)?;
    require(
        &case,
        &[CaseStatus::Submitted, CaseStatus::UnderCommitteeReview, CaseStatus::A2, CaseStatus::A1],
        "update it",
    )?;
    let mut changed = Vec::new();
    if let Some(codes) = &input.orpha_codes {
        let codes = check_codes(codes)?;
        connection.execute(
            "UPDATE cases SET orpha_codes = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(&codes).unwrap_or_default()],
        )?;
        changed.push("orpha_codes".to_string());
    }
    if let Some(fields) = &input.clinical {
        let mut clinical = case.clinical.clone();
        for (key, value) in fields {
            if value.is_null() {
                clinical.remove(key);
            } else {
                clinical.insert(key.clone(), value.clone());
            }
            changed.push(format!("clinical.{key}"));
        }
        check_clinical(&clinical)?;
        connection.execute(
            "UPDATE cases SET clinical = ?2 WHERE id = ?1",
            params![id, serde_json::Value::Object(clinical).to_string()],
        )?;
    }
    connection.execute("UPDATE cases SET updated = ?2 WHERE id = ?1", params![id, now()])?;
    add_event(connection, id, "update", actor, &changed.join(","))?;
    get(connection, id)
}

/// The committee starts reviewing a submitted case.
pub fn start_review(connection: &Connection, id: i64, actor: &Actor) -> Result<Case, ApiError> {
    let case = get(connection, id)?;
    require(&case, &[CaseStatus::Submitted], "start a review")?;
    add_event(connection, id, "review_started", actor, "")?;
    set_status(connection, id, CaseStatus::UnderCommitteeReview, actor)?;
    get(connection, id)
}

/// Records one specialist's committee approval; enough distinct approvers make it A2.
pub fn approve(
    connection: &Connection,
    id: i64,
    actor: &Actor,
    comment: &str,
    rules: &WorkflowConfig,
) -> Result<Case, ApiError> {
    let case = get(connection, id)?;
    require(&case, &[CaseStatus::UnderCommitteeReview], "record an approval")?;
    if case.approvals.contains(&actor.name) {
        return Err(ApiError::Conflict(format!("{} has already approved case {id}", actor.name)));
    }
    add_event(connection, id, "approval", actor, comment)?;
    if case.approvals.len() + 1 >= rules.committee_approvals_required {
        set_status(connection, id, CaseStatus::A2, actor)?;
    }
    get(connection, id)
}

/// Records one specialist's diagnosis confirmation; enough distinct centres make it A1.
pub fn confirm(
    connection: &Connection,
    id: i64,
    actor: &Actor,
    comment: &str,
    rules: &WorkflowConfig,
) -> Result<Case, ApiError> {
    let case = get(connection, id)?;
    require(&case, &[CaseStatus::A2], "record a confirmation")?;
    if actor.centre.is_empty() {
        return Err(ApiError::BadRequest("a confirming specialist must belong to a centre".into()));
    }
    let already = case.events.iter().any(|e| e.kind == "confirmation" && e.actor == actor.name);
    if already {
        return Err(ApiError::Conflict(format!("{} has already confirmed case {id}", actor.name)));
    }
    add_event(connection, id, "confirmation", actor, comment)?;
    let mut centres: BTreeSet<String> = case.confirming_centres.iter().cloned().collect();
    centres.insert(actor.centre.clone());
    if centres.len() >= rules.confirmation_centres_required {
        set_status(connection, id, CaseStatus::A1, actor)?;
    }
    get(connection, id)
}

/// The committee rejects a case under review or awaiting confirmation.
pub fn reject(connection: &Connection, id: i64, actor: &Actor, reason: &str) -> Result<Case, ApiError> {
    let case = get(connection, id)?;
    require(&case, &[CaseStatus::UnderCommitteeReview, CaseStatus::A2], "reject it")?;
    check_reason(reason)?;
    add_event(connection, id, "rejection", actor, reason)?;
    set_status(connection, id, CaseStatus::Rejected, actor)?;
    get(connection, id)
}

/// Withdraws a case (a state with its reason; nothing is deleted).
pub fn withdraw(connection: &Connection, id: i64, actor: &Actor, reason: &str) -> Result<Case, ApiError> {
    let case = get(connection, id)?;
    if case.status == CaseStatus::Withdrawn {
        return Err(ApiError::Conflict(format!("case {id} is already withdrawn")));
    }
    check_reason(reason)?;
    connection
        .execute("UPDATE cases SET withdrawal_reason = ?2 WHERE id = ?1", params![id, reason.trim()])?;
    add_event(connection, id, "withdrawal", actor, reason.trim())?;
    set_status(connection, id, CaseStatus::Withdrawn, actor)?;
    get(connection, id)
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::BadRequest("`reason` is required (1–2000 characters)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(name: &str, centre: &str) -> Actor {
        Actor { name: name.into(), centre: centre.into() }
    }

    #[test]
    fn orpha_codes_are_validated() {
        assert!(validate_orpha_code("ORPHA:558").is_ok());
        for bad in ["558", "ORPHA:", "ORPHA:05", "orpha:1", "ORPHA:12a", "ORPHA:12345678"] {
            assert!(validate_orpha_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workflow_reaches_a1_only_with_two_centres() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::store::Store::open(dir.path()).unwrap();
        let connection = store.lock();
        connection
            .execute(
                "INSERT INTO studies (database, source, centre, status, created_by, created, updated)
                 VALUES ('A', 'upload', 'C1', 'received', 'r', 't', 't'), ('B', 'upload', 'C1', 'received', 'r', 't', 't')",
                [],
            )
            .unwrap();
        let rules = WorkflowConfig { committee_approvals_required: 2, confirmation_centres_required: 2 };
        let radiologist = actor("rad", "C1");
        let case = submit(
            &connection,
            &NewCase { study_id: 1, orpha_codes: vec!["ORPHA:558".into()], clinical: Default::default() },
            &radiologist,
        )
        .unwrap();
        assert_eq!(case.status, CaseStatus::Submitted);
        let not_a = NewCase { study_id: 2, orpha_codes: vec![], clinical: Default::default() };
        assert!(matches!(submit(&connection, &not_a, &radiologist), Err(ApiError::Conflict(_))));
        let bad = NewCase { study_id: 1, orpha_codes: vec!["ORPHA:x".into()], clinical: Default::default() };
        assert!(matches!(submit(&connection, &bad, &radiologist), Err(ApiError::Refused { .. })));
        // Approval before review is refused.
        assert!(approve(&connection, 1, &actor("k1", "C1"), "", &rules).is_err());
        start_review(&connection, 1, &actor("k1", "C1")).unwrap();
        assert_eq!(
            approve(&connection, 1, &actor("k1", "C1"), "", &rules).unwrap().status,
            CaseStatus::UnderCommitteeReview
        );
        assert!(approve(&connection, 1, &actor("k1", "C1"), "", &rules).is_err(), "same specialist twice");
        assert_eq!(approve(&connection, 1, &actor("k2", "C2"), "", &rules).unwrap().status, CaseStatus::A2);
        // Two specialists of the same centre do not make A1.
        assert_eq!(confirm(&connection, 1, &actor("s1", "C1"), "", &rules).unwrap().status, CaseStatus::A2);
        assert_eq!(confirm(&connection, 1, &actor("s2", "C1"), "", &rules).unwrap().status, CaseStatus::A2);
        let case = confirm(&connection, 1, &actor("s3", "C3"), "ok", &rules).unwrap();
        assert_eq!(case.status, CaseStatus::A1);
        assert_eq!(case.confirming_centres, vec!["C1".to_string(), "C3".to_string()]);
        let case = withdraw(&connection, 1, &radiologist, "family request").unwrap();
        assert_eq!(case.status, CaseStatus::Withdrawn);
        assert_eq!(case.withdrawal_reason.as_deref(), Some("family request"));
        assert!(connection.execute("DELETE FROM cases WHERE id = 1", []).is_err());
        assert!(case.events.iter().any(|e| e.kind == "confirmation" && e.actor == "s3"));
    }
}
