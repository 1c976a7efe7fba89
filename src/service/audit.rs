//! The audit log: one record per request, append-only, hash-chained.
//!
//! Record `n` stores `hash_n = SHA-256(hash_{n-1} ‖ canonical(record_n))` where the canonical
//! form is a fixed-order, length-prefixed encoding of every field including the sequence
//! number. Altering a field breaks that record's hash; removing a record breaks the sequence
//! and the next record's `prev_hash`; removing the newest records is caught by the chain head
//! kept in the `meta` table (updated in the same transaction as each append).

use super::store::{Store, StoreError, now};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditViolation {
    /// A record's content does not match its hash (it was altered).
    #[error("audit record {seq} was altered: its hash does not match its content")]
    Altered {
        /// Sequence number.
        seq: i64,
    },
    /// A record's `prev_hash` does not match the previous record (records were removed or reordered).
    #[error(
        "audit record {seq} does not follow record {previous}: records between them were removed or altered"
    )]
    Broken {
        /// Sequence number.
        seq: i64,
        /// Previous sequence number found.
        previous: i64,
    },
    /// A sequence number is missing.
    #[error("audit record {seq} was removed")]
    Removed {
        /// Missing sequence number.
        seq: i64,
    },
}

/// Result of a verification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// Records checked.
    pub records: i64,
    /// `true` when the chain is intact.
    pub intact: bool,
    /// The first problem, naming the record.
    pub problem: Option<String>,
}

fn canonical(seq: i64, record: &NewRecord, time: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [
        seq.to_string().as_str(),
        time,
        &record.user,
        &record.role,
        &record.centre,
        &record.on_behalf_of,
        &record.action,
        &record.resource,
        &record.outcome,
    ] {
        // Length prefixes make the encoding unambiguous ("ab","c" ≠ "a","bc").
        out.extend_from_slice(&(field.len() as u64).to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

fn chain_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical);
    hex::encode(hasher.finalize())
}

fn head(connection: &Connection) -> rusqlite::Result<(i64, String)> {
    let value: Option<String> = connection
        .query_row("SELECT value FROM meta WHERE key = 'audit_head'", [], |row| row.get(0))
        .optional()?;
    Ok(value
        .and_then(|v| v.split_once(' ').map(|(seq, hash)| (seq.parse().unwrap_or(0), hash.to_string())))
        .unwrap_or((0, GENESIS.to_string())))
}

/// Appends one record (inside its own transaction).
pub fn append(store: &Store, record: &NewRecord) -> Result<i64, StoreError> {
    let seqs = append_batch(&mut store.lock(), std::slice::from_ref(record))?;
    Ok(seqs[0])
}

/// Appends records in order in one transaction (one commit, so one disk sync for all of
/// them); returns their sequence numbers.
pub fn append_batch(connection: &mut Connection, records: &[NewRecord]) -> Result<Vec<i64>, StoreError> {
    let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let last: Option<(i64, String)> = transaction
        .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (mut seq, mut prev_hash) = last.unwrap_or((0, GENESIS.to_string()));
    let mut seqs = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let time = now();
        let hash = chain_hash(&prev_hash, &canonical(seq, record, &time));
        transaction.execute(
            "INSERT INTO audit (seq, time, user, role, centre, on_behalf_of, action, resource, outcome, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                seq,
                time,
                record.user,
                record.role,
                record.centre,
                record.on_behalf_of,
                record.action,
                record.resource,
                record.outcome,
                prev_hash,
                hash
            ],
        )?;
        prev_hash = hash;
        seqs.push(seq);
    }
    transaction.execute(
        "INSERT INTO meta (key, value) VALUES ('audit_head', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![format!("{seq} {prev_hash}")],
    )?;
    transaction.commit()?;
    Ok(seqs)
}

type Pending = (NewRecord, tokio::sync::oneshot::Sender<Result<i64, String>>);

/// Group commit of the request path's audit records: one writer thread with its own SQLite
/// connection takes every record waiting, appends them in one transaction and answers each
/// caller once that transaction is on disk. Requests arriving together share one disk sync
/// instead of queueing behind one sync each, and readers (own connection, WAL) never wait for
/// it; a request still gets its answer only after its record is durable.
pub struct AuditWriter {
    sender: std::sync::mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Most records committed together.
    const MAX_BATCH: usize = 256;

    /// Opens the writer's connection on the state file of `data_dir` and starts its thread
    /// (which ends when the writer is dropped).
    pub fn start(data_dir: &std::path::Path) -> Result<AuditWriter, StoreError> {
        let mut connection = super::store::open_connection(&data_dir.join("service.sqlite"))?;
        let (sender, receiver) = std::sync::mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut batch = vec![first];
                    while batch.len() < Self::MAX_BATCH
                        && let Ok(next) = receiver.try_recv()
                    {
                        batch.push(next);
                    }
                    let records: Vec<NewRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
                    match append_batch(&mut connection, &records) {
                        Ok(seqs) => {
                            for ((_, reply), seq) in batch.into_iter().zip(seqs) {
                                let _ = reply.send(Ok(seq));
                            }
                        }
                        Err(error) => {
                            for (_, reply) in batch {
                                let _ = reply.send(Err(error.to_string()));
                            }
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: "audit writer thread".into(), source })?;
        Ok(AuditWriter { sender })
    }

    /// Appends one record; resolves once it is committed.
    pub async fn append(&self, record: NewRecord) -> Result<i64, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.sender.send((record, reply)).map_err(|_| "the audit writer has stopped".to_string())?;
        answer.await.map_err(|_| "the audit writer has stopped".to_string())?
    }
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

/// Checks the whole chain; `Err` names the first bad record.
pub fn verify_connection(connection: &Connection) -> Result<Result<i64, AuditViolation>, StoreError> {
    let mut statement = connection.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let mut rows = statement.query([])?;
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS.to_string();
    let mut count = 0;
    while let Some(row) = rows.next()? {
        let record = row_to_record(row)?;
        if record.seq != expected_seq {
            return Ok(Err(AuditViolation::Removed { seq: expected_seq }));
        }
        let new = NewRecord {
            user: record.user.clone(),
            role: record.role.clone(),
            centre: record.centre.clone(),
            on_behalf_of: record.on_behalf_of.clone(),
            action: record.action.clone(),
            resource: record.resource.clone(),
            outcome: record.outcome.clone(),
        };
        let recomputed = chain_hash(&record.prev_hash, &canonical(record.seq, &new, &record.time));
        if recomputed != record.hash {
            return Ok(Err(AuditViolation::Altered { seq: record.seq }));
        }
        if record.prev_hash != prev_hash {
            return Ok(Err(AuditViolation::Broken { seq: record.seq, previous: record.seq - 1 }));
        }
        prev_hash = record.hash;
        expected_seq += 1;
        count += 1;
    }
    let (head_seq, head_hash) = head(connection)?;
    if head_seq >= expected_seq {
        // Records at the end were removed: the first missing one is named.
        return Ok(Err(AuditViolation::Removed { seq: expected_seq }));
    }
    if head_seq == count && head_hash != prev_hash && count > 0 {
        return Ok(Err(AuditViolation::Altered { seq: count }));
    }
    Ok(Ok(count))
}

/// Checks the whole chain of the store.
pub fn verify(store: &Store) -> Result<VerifyReport, StoreError> {
    let connection = store.lock();
    Ok(match verify_connection(&connection)? {
        Ok(records) => VerifyReport { records, intact: true, problem: None },
        Err(violation) => {
            let records = connection.query_row("SELECT COUNT(*) FROM audit", [], |row| row.get(0))?;
            VerifyReport { records, intact: false, problem: Some(violation.to_string()) }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str) -> NewRecord {
        NewRecord {
            user: "u".into(),
            role: "admin".into(),
            centre: "C1".into(),
            action: action.into(),
            resource: "/x".into(),
            outcome: "200".into(),
            ..Default::default()
        }
    }

    #[test]
    fn chain_detects_alteration_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..5 {
            append(&store, &record(&format!("a{i}"))).unwrap();
        }
        assert!(verify(&store).unwrap().intact);
        // Updates through SQL are refused by the trigger.
        assert!(store.lock().execute("UPDATE audit SET outcome = '500' WHERE seq = 2", []).is_err());
        let connection = store.lock();
        connection.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
        connection.execute("UPDATE audit SET outcome = '403' WHERE seq = 3", []).unwrap();
        assert_eq!(verify_connection(&connection).unwrap(), Err(AuditViolation::Altered { seq: 3 }));
        connection.execute("UPDATE audit SET outcome = '200' WHERE seq = 3", []).unwrap();
        assert_eq!(verify_connection(&connection).unwrap(), Ok(5));
        connection.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        assert_eq!(verify_connection(&connection).unwrap(), Err(AuditViolation::Removed { seq: 2 }));
        drop(connection);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..3 {
            append(&store, &record(&format!("a{i}"))).unwrap();
        }
        let connection = store.lock();
        connection.execute_batch("DROP TRIGGER audit_no_delete;").unwrap();
        connection.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
        assert_eq!(verify_connection(&connection).unwrap(), Err(AuditViolation::Removed { seq: 3 }));
    }
}
