//! The audit log: one record per request, append-only, hash-chained, sealed and anchored.
//!
//! Record `n` stores `hash_n = HMAC-SHA-256(key, hash_{n-1} ‖ canonical(record_n))` where the
//! canonical form is a fixed-order, length-prefixed encoding of every field including the
//! sequence number, and the key lives outside the state file ([`super::audit_anchor`]).
//! Altering a field breaks that record's hash, and recomputing the later hashes needs the key;
//! removing a record breaks the sequence and the next record's `prev_hash`; removing the newest
//! records (even with the chain head kept in `meta`) or all of them is caught by the signed
//! checkpoints in the second, append-only file. Records written before the key existed keep
//! their unkeyed `SHA-256(hash_{n-1} ‖ canonical)` chain and are reported as such.
//!
//! [`chain`] appends records (the canonical form, keyed and unkeyed hashes, the anchor that
//! seals them with checkpoints), [`verify`] checks the whole chain, [`writer`] commits the
//! request path's records in groups; this module holds the record and reads it back.

use super::audit_anchor::{
    AnchorError, AuditKey, Checkpoint, CheckpointFile, append_checkpoint, read_checkpoints,
};
use super::config::AuditConfig;
use super::layout::StateEntry;
use super::store::{Store, StoreError, now};
use rusqlite::params;
use serde::Serialize;

mod chain;
mod verify;
mod writer;

pub use chain::{Anchor, append_batch};
pub use verify::{AuditViolation, Verified, VerifyReport, verify_connection};
pub use writer::AuditWriter;

/// Hash that precedes the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One request as recorded (no patient identities: resources are service ids).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub seq: i64,
    /// UTC time (RFC 3339).
    pub time: String,
    /// Account name (`-` when unauthenticated).
    pub user: String,
    /// Role (`-` when unauthenticated).
    pub role: String,
    /// Centre of the account.
    pub centre: String,
    /// User the portal acted for (empty otherwise).
    pub on_behalf_of: String,
    /// Action name from the route table, e.g. `case.confirm`.
    pub action: String,
    /// Resource path, e.g. `/api/v1/cases/3`.
    pub resource: String,
    /// Outcome, e.g. `200`, `403`.
    pub outcome: String,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
}

/// A record to append (the chain fields are computed).
#[derive(Debug, Clone, Default)]
pub struct NewRecord {
    /// Account name.
    pub user: String,
    /// Role.
    pub role: String,
    /// Centre.
    pub centre: String,
    /// Acting-for user.
    pub on_behalf_of: String,
    /// Action.
    pub action: String,
    /// Resource.
    pub resource: String,
    /// Outcome.
    pub outcome: String,
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.get(0)?,
        time: row.get(1)?,
        user: row.get(2)?,
        role: row.get(3)?,
        centre: row.get(4)?,
        on_behalf_of: row.get(5)?,
        action: row.get(6)?,
        resource: row.get(7)?,
        outcome: row.get(8)?,
        prev_hash: row.get(9)?,
        hash: row.get(10)?,
    })
}

const COLUMNS: &str =
    "seq, time, user, role, centre, on_behalf_of, action, resource, outcome, prev_hash, hash";

/// Reads records with `seq > after`, oldest first, at most `limit`.
pub fn read(store: &Store, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
    let connection = store.lock();
    let mut statement =
        connection.prepare(&format!("SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"))?;
    let rows = statement.query_map(params![after, limit], row_to_record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

impl AuditRecord {
    /// The recorded fields (without the chain).
    fn content(&self) -> NewRecord {
        NewRecord {
            user: self.user.clone(),
            role: self.role.clone(),
            centre: self.centre.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            outcome: self.outcome.clone(),
        }
    }
}
