//! Centre scoping: who may act on which study, consent record, case and job.
//!
//! Studies (with their consent) and cases belong to the centre that submitted them; a job
//! belongs to the centre of the study or case it serves (a normative build to its caller's).
//! Admins and auditors act on every centre's. Committee members act on the cases of every
//! centre — reviewing, approving, rejecting and confirming across centres is their part of the
//! workflow, and the routes they may call edit nothing else — but see the studies and consent
//! of their own centre only. Everyone else (scientists, radiologists, the portal for the user
//! it acts for) reads and changes only their own centre's. A resource of another centre
//! answers 404, exactly as one that does not exist, so ids of other centres cannot be probed.

use super::auth::Principal;
use super::error::ApiError;
use super::roles::Role;
use super::state::AppState;
use super::store::Store;
use rusqlite::{Connection, OptionalExtension, params};

/// The kinds of resource that belong to a centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    /// A study, with its consent and ingest.
    Study,
    /// A database A case.
    Case,
    /// A job and its outputs.
    Job,
}

impl Owned {
    fn table(self) -> &'static str {
        match self {
            Owned::Study => "studies",
            Owned::Case => "cases",
            Owned::Job => "jobs",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Owned::Study => "study",
            Owned::Case => "case",
            Owned::Job => "job",
        }
    }

    /// The answer for an id the caller may not see: the same as for one that does not exist.
    pub fn not_found(self, id: i64) -> ApiError {
        ApiError::NotFound(format!("{} {id} does not exist", self.noun()))
    }
}

/// The role and centre whose scope applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The acting role (the portal's acting user's role for the portal).
    pub role: Role,
    /// The acting centre.
    pub centre: String,
}

impl Scope {
    /// The scope of a caller: the acting user's for the portal, else the account's.
    pub fn of(principal: &Principal) -> Scope {
        match &principal.acting {
            Some((_, role, centre)) => Scope { role: *role, centre: centre.clone() },
            None => Scope { role: principal.user.role, centre: principal.user.centre.clone() },
        }
    }

    /// The centre whose resources of `kind` the caller may see; `None` for every centre.
    pub fn visible_centre(&self, kind: Owned) -> Option<&str> {
        match (self.role, kind) {
            (Role::Admin | Role::Auditor, _) | (Role::Committee, Owned::Case) => None,
            _ => Some(&self.centre),
        }
    }

    /// Refuses (404) a resource that does not exist or belongs to a centre the caller may not
    /// see, in the same words and before the request body is read: the two cannot be told
    /// apart.
    pub fn check(&self, connection: &Connection, kind: Owned, id: i64) -> Result<(), ApiError> {
        match (centre_of(connection, kind, id)?, self.visible_centre(kind)) {
            (None, _) => Err(kind.not_found(id)),
            (Some(owner), Some(visible)) if owner != visible => Err(kind.not_found(id)),
            _ => Ok(()),
        }
    }
}

/// The centre a resource belongs to (`None` when it does not exist).
pub fn centre_of(connection: &Connection, kind: Owned, id: i64) -> Result<Option<String>, rusqlite::Error> {
    connection
        .query_row(&format!("SELECT centre FROM {} WHERE id = ?1", kind.table()), params![id], |row| {
            row.get(0)
        })
        .optional()
}

/// Ids of `kind`, newest first: at most `limit`, only those whose `column` equals the filter
/// value and that belong to `centre`, each when given.
pub fn newest_ids(
    connection: &Connection,
    kind: Owned,
    (column, value): (&'static str, Option<&str>),
    centre: Option<&str>,
    limit: i64,
) -> Result<Vec<i64>, rusqlite::Error> {
    let sql = format!(
        "SELECT id FROM {} WHERE (?1 IS NULL OR {column} = ?1) AND (?2 IS NULL OR centre = ?2)
         ORDER BY id DESC LIMIT ?3",
        kind.table()
    );
    let mut statement = connection.prepare(&sql)?;
    let ids = statement.query_map(params![value, centre, limit], |row| row.get::<_, i64>(0))?;
    ids.collect()
}

/// The resource a route acts on, from its path template and the request path:
/// `/api/v1/studies/{id}…`, `/api/v1/cases/{id}…`, `/api/v1/jobs/{id}…` and the viewer's
/// `/viewer/jobs/{id}…` (other routes own nothing).
pub fn target(template: &str, path: &str) -> Option<(Owned, i64)> {
    // (kind, the path segment holding the id)
    let (kind, segment) = if template.starts_with("/api/v1/studies/{id}") {
        (Owned::Study, 4)
    } else if template.starts_with("/api/v1/cases/{id}") {
        (Owned::Case, 4)
    } else if template.starts_with("/api/v1/jobs/{id}") {
        (Owned::Job, 4)
    } else if template.starts_with("/viewer/jobs/{id}") {
        (Owned::Job, 3)
    } else {
        return None;
    };
    // Ids out of the documented range are the handler's 400.
    let id: i64 = path.split('/').nth(segment)?.parse().ok()?;
    (1..=1 << 53).contains(&id).then_some((kind, id))
}

/// [`Scope::check`] for the resource a request targets (routes without one pass), off the
/// executor.
pub async fn enforce(
    state: &AppState,
    template: &str,
    path: &str,
    principal: &Principal,
) -> Result<(), ApiError> {
    let Some((kind, id)) = target(template, path) else { return Ok(()) };
    let scope = Scope::of(principal);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || scope.check(&store.lock(), kind, id))
        .await
        .map_err(ApiError::internal)?
}

/// The portal may act only for an enabled registered user of that name, role and centre.
pub async fn require_registered(store: &Store, name: &str, role: Role, centre: &str) -> Result<(), ApiError> {
    let (store, user, user_centre) = (store.clone(), name.to_string(), centre.to_string());
    let registered =
        tokio::task::spawn_blocking(move || super::auth::is_registered(&store, &user, role, &user_centre))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    if registered {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the portal may act only for a registered user: no enabled {role} of that name at centre `{centre}`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(role: Role, centre: &str) -> Scope {
        Scope { role, centre: centre.into() }
    }

    #[test]
    fn targets_and_visibility() {
        assert_eq!(
            target("/api/v1/cases/{id}/confirmations", "/api/v1/cases/7/confirmations"),
            Some((Owned::Case, 7))
        );
        assert_eq!(target("/api/v1/studies/{id}", "/api/v1/studies/3"), Some((Owned::Study, 3)));
        assert_eq!(target("/api/v1/studies", "/api/v1/studies"), None);
        assert_eq!(target("/api/v1/studies/{id}", "/api/v1/studies/0"), None);
        assert_eq!(target("/api/v1/studies/{id}", "/api/v1/studies/x"), None);
        assert_eq!(target("/api/v1/studies/import", "/api/v1/studies/import"), None);
        assert_eq!(
            target("/api/v1/jobs/{id}/outputs/{name}", "/api/v1/jobs/3/outputs/a.json"),
            Some((Owned::Job, 3))
        );
        assert_eq!(target("/viewer/jobs/{id}/files/{name}", "/viewer/jobs/5/files/x"), Some((Owned::Job, 5)));
        assert_eq!(target("/viewer/jobs/{id}", "/viewer/jobs/5"), Some((Owned::Job, 5)));
        assert_eq!(scope(Role::Committee, "C2").visible_centre(Owned::Case), None);
        assert_eq!(scope(Role::Committee, "C2").visible_centre(Owned::Study), Some("C2"));
        assert_eq!(scope(Role::Radiologist, "C2").visible_centre(Owned::Case), Some("C2"));
        assert_eq!(scope(Role::Scientist, "C2").visible_centre(Owned::Job), Some("C2"));
        assert_eq!(scope(Role::Auditor, "").visible_centre(Owned::Study), None);
        assert_eq!(scope(Role::Admin, "C1").visible_centre(Owned::Job), None);
    }

    #[test]
    fn other_centres_look_missing() {
        let connection = Connection::open_in_memory().unwrap();
        connection
            .execute_batch(
                "CREATE TABLE cases (id INTEGER PRIMARY KEY, centre TEXT NOT NULL);
             INSERT INTO cases VALUES (1, 'C1');",
            )
            .unwrap();
        let radiologist = scope(Role::Radiologist, "C2");
        let refused = radiologist.check(&connection, Owned::Case, 1).unwrap_err();
        assert_eq!(refused.to_string(), Owned::Case.not_found(1).to_string());
        let missing = radiologist.check(&connection, Owned::Case, 2).unwrap_err();
        assert_eq!(missing.to_string(), Owned::Case.not_found(2).to_string());
        assert!(scope(Role::Admin, "").check(&connection, Owned::Case, 2).is_err());
        assert!(scope(Role::Admin, "").check(&connection, Owned::Case, 1).is_ok());
        assert!(scope(Role::Radiologist, "C1").check(&connection, Owned::Case, 1).is_ok());
        assert!(scope(Role::Committee, "C2").check(&connection, Owned::Case, 1).is_ok());
    }
}
