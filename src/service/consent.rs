//! Consent per study: scope (database A and/or B, research use), date, withdrawal.
//!
//! A withdrawal is recorded on the row (time, reason, by whom); nothing is deleted. Every
//! later computation asks [`permits`] first, so a withdrawn study is excluded from new
//! normative builds and new deviation maps.

use super::error::ApiError;
use super::store::now;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Which database a study is offered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Database {
    /// Rare-disease cases.
    A,
    /// Normal studies for the normative templates.
    B,
}

impl Database {
    /// `"A"` or `"B"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Database::A => "A",
            Database::B => "B",
        }
    }
    /// Parses `"A"` / `"B"`.
    pub fn parse(text: &str) -> Option<Database> {
        match text {
            "A" | "a" => Some(Database::A),
            "B" | "b" => Some(Database::B),
            _ => None,
        }
    }
}

/// Consent as given (request body).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// Consent to database A (rare-disease cases).
    pub database_a: bool,
    /// Consent to database B (normal cohort).
    pub database_b: bool,
    /// Consent to research use.
    pub research_use: bool,
    /// Date consent was given (`YYYY-MM-DD`, not in the future).
    #[schema(format = Date)]
    pub date: String,
}

/// Recorded consent.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Consent {
    /// Study id.
    pub study_id: i64,
    /// Consent to database A.
    pub database_a: bool,
    /// Consent to database B.
    pub database_b: bool,
    /// Consent to research use.
    pub research_use: bool,
    /// Date consent was given.
    pub date: String,
    /// Account that recorded it.
    pub recorded_by: String,
    /// When it was recorded.
    pub recorded_at: String,
    /// Whether consent was withdrawn.
    pub withdrawn: bool,
    /// When it was withdrawn.
    pub withdrawn_at: Option<String>,
    /// The reason given.
    pub withdrawal_reason: Option<String>,
}

/// Checks a `YYYY-MM-DD` date that is not in the future.
pub fn check_date(field: &str, text: &str) -> Result<(), ApiError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text, &format)
        .map_err(|_| ApiError::BadRequest(format!("`{field}` must be a date YYYY-MM-DD")))?;
    if date > time::OffsetDateTime::now_utc().date() {
        return Err(ApiError::rule(format!("`{field}` must not be in the future")));
    }
    Ok(())
}

/// Checks a consent record's own rules (date, scope), before anything is stored.
pub fn check_input(input: &ConsentInput) -> Result<(), ApiError> {
    check_date("date", &input.date)?;
    if !input.database_a && !input.database_b {
        return Err(ApiError::rule("consent must cover database A, database B or both"));
    }
    Ok(())
}

/// Records consent for a study (once; a withdrawn consent stays withdrawn).
pub fn record(
    connection: &Connection,
    study_id: i64,
    input: &ConsentInput,
    actor: &str,
) -> Result<Consent, ApiError> {
    check_input(input)?;
    if get(connection, study_id)?.is_some() {
        return Err(ApiError::Conflict(format!(
            "study {study_id} already has a consent record; records are never replaced (withdraw instead)"
        )));
    }
    connection.execute(
        "INSERT INTO consents (study_id, database_a, database_b, research_use, consent_date, recorded_by, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![study_id, input.database_a, input.database_b, input.research_use, input.date, actor, now()],
    )?;
    get(connection, study_id)?.ok_or_else(|| ApiError::internal("consent vanished"))
}

/// Records a withdrawal.
pub fn withdraw(
    connection: &Connection,
    study_id: i64,
    reason: &str,
    actor: &str,
) -> Result<Consent, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::BadRequest("`reason` is required (1–2000 characters)".into()));
    }
    let consent = get(connection, study_id)?
        .ok_or_else(|| ApiError::NotFound(format!("study {study_id} has no consent record")))?;
    if consent.withdrawn {
        return Err(ApiError::Conflict(format!("consent of study {study_id} is already withdrawn")));
    }
    connection.execute(
        "UPDATE consents SET withdrawn_at = ?2, withdrawal_reason = ?3, withdrawn_by = ?4 WHERE study_id = ?1",
        params![study_id, now(), reason, actor],
    )?;
    get(connection, study_id)?.ok_or_else(|| ApiError::internal("consent vanished"))
}

/// The consent of a study, if recorded.
pub fn get(connection: &Connection, study_id: i64) -> Result<Option<Consent>, ApiError> {
    Ok(connection
        .query_row(
            "SELECT study_id, database_a, database_b, research_use, consent_date, recorded_by, recorded_at,
                    withdrawn_at, withdrawal_reason FROM consents WHERE study_id = ?1",
            params![study_id],
            |row| {
                let withdrawn_at: Option<String> = row.get(7)?;
                Ok(Consent {
                    study_id: row.get(0)?,
                    database_a: row.get(1)?,
                    database_b: row.get(2)?,
                    research_use: row.get(3)?,
                    date: row.get(4)?,
                    recorded_by: row.get(5)?,
                    recorded_at: row.get(6)?,
                    withdrawn: withdrawn_at.is_some(),
                    withdrawn_at,
                    withdrawal_reason: row.get(8)?,
                })
            },
        )
        .optional()?)
}

/// `Ok` when the study may be used for `database`, else the named reason.
pub fn permits(consent: Option<&Consent>, database: Database) -> Result<(), String> {
    let Some(consent) = consent else {
        return Err(format!("consent_missing: no consent recorded for database {}", database.as_str()));
    };
    if consent.withdrawn {
        return Err("consent_withdrawn: consent was withdrawn".to_string());
    }
    let covered = match database {
        Database::A => consent.database_a,
        Database::B => consent.database_b,
    };
    if !covered {
        return Err(format!("consent_scope: consent does not cover database {}", database.as_str()));
    }
    Ok(())
}
