//! The service's SQLite state file: schema and connection handling.
//!
//! One file (`DATA_DIR/service.sqlite`, WAL journal) holds users, the audit log, jobs, studies,
//! consent, cases and the signatures of their deviation results (derived, rebuildable). Rows
//! are never deleted: tables that must stay append-only (audit, case events) are guarded by
//! triggers as well.

use super::layout::StateEntry;
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("service state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The audit key or checkpoint file.
    #[error(transparent)]
    Anchor(#[from] super::audit_anchor::AnchorError),
    /// Creating the data directory failed.
    #[error("cannot create data directory {path}: {source}")]
    Io {
        /// Directory.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The data directory is open to other users.
    #[error("{0}")]
    Permissions(String),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    centre TEXT,
    salt BLOB NOT NULL,
    token_hash BLOB NOT NULL,
    created TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    centre TEXT NOT NULL,
    on_behalf_of TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT,
    error TEXT,
    result TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    centre TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, id);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    database TEXT NOT NULL,
    source TEXT NOT NULL,
    centre TEXT NOT NULL,
    status TEXT NOT NULL,
    reasons TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}',
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    created_by TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    ingest_job INTEGER,
    pacs_centre TEXT,
    pacs_study_uid TEXT,
    stored_path TEXT
);
CREATE TABLE IF NOT EXISTS consents (
    study_id INTEGER PRIMARY KEY REFERENCES studies(id),
    database_a INTEGER NOT NULL,
    database_b INTEGER NOT NULL,
    research_use INTEGER NOT NULL,
    consent_date TEXT NOT NULL,
    recorded_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    withdrawn_at TEXT,
    withdrawal_reason TEXT,
    withdrawn_by TEXT
);
CREATE TRIGGER IF NOT EXISTS consents_no_delete BEFORE DELETE ON consents
    BEGIN SELECT RAISE(ABORT, 'consent records are never deleted'); END;
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    status TEXT NOT NULL,
    orpha_codes TEXT NOT NULL DEFAULT '[]',
    clinical TEXT NOT NULL DEFAULT '{}',
    created_by TEXT NOT NULL,
    centre TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    withdrawal_reason TEXT
);
CREATE TRIGGER IF NOT EXISTS cases_no_delete BEFORE DELETE ON cases
    BEGIN SELECT RAISE(ABORT, 'cases are never deleted; withdraw them'); END;
CREATE TABLE IF NOT EXISTS case_events (
    id INTEGER PRIMARY KEY,
    case_id INTEGER NOT NULL REFERENCES cases(id),
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_centre TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TRIGGER IF NOT EXISTS case_events_no_update BEFORE UPDATE ON case_events
    BEGIN SELECT RAISE(ABORT, 'case events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS case_events_no_delete BEFORE DELETE ON case_events
    BEGIN SELECT RAISE(ABORT, 'case events are append-only'); END;
CREATE TABLE IF NOT EXISTS case_signatures (
    case_id INTEGER PRIMARY KEY REFERENCES cases(id),
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    age_years REAL NOT NULL,
    signature TEXT NOT NULL,
    updated TEXT NOT NULL
);
"#;

/// A shared connection to the state file. SQLite serializes writers anyway; one connection
/// behind a mutex keeps transactions simple and is far from being the bottleneck here.
#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (and creates or migrates) the state file inside `data_dir`. The state is private
    /// to the service's user: the directory is created 0700 and files 0600.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        super::protect::private_new_files();
        super::protect::create_private_dir(data_dir)
            .map_err(|source| StoreError::Io { path: data_dir.display().to_string(), source })?;
        let connection = open_connection(&StateEntry::Database.under(data_dir))?;
        Ok(Store { connection: Arc::new(Mutex::new(connection)) })
    }

    /// Locks the connection. A panic while holding it cannot leave SQLite inconsistent
    /// (transactions roll back), so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Opens one connection with the schema applied.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a job marked done or an audit record written survives power loss / kill -9.
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.execute_batch(SCHEMA)?;
    migrate(&connection)?;
    Ok(connection)
}

/// Brings a state file written by an earlier version up to the schema: jobs gained the
/// centre they belong to (older jobs belong to none, so only global roles see them).
fn migrate(connection: &Connection) -> Result<(), rusqlite::Error> {
    let has_centre =
        connection.prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'centre'")?.exists([])?;
    if !has_centre {
        connection.execute_batch("ALTER TABLE jobs ADD COLUMN centre TEXT NOT NULL DEFAULT ''")?;
    }
    Ok(())
}

/// Current UTC time in RFC 3339 with microseconds (sortable, unambiguous).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
