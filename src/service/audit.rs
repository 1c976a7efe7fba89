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

use super::audit_anchor::{
    AnchorError, AuditKey, Checkpoint, CheckpointFile, append_checkpoint, read_checkpoints,
};
use super::config::AuditConfig;
use super::layout::StateEntry;
use super::store::{Store, StoreError, now};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// A record's content does not match its hash (it was altered, or its hash was recomputed
    /// without the key).
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
    /// The log ends before the newest signed checkpoint.
    #[error(
        "the audit log ends at record {last} but the signed checkpoint of {time} covers record {checkpoint}: records were removed"
    )]
    Truncated {
        /// Last record found (0: none).
        last: i64,
        /// Record the checkpoint covers.
        checkpoint: i64,
        /// Time of the checkpoint.
        time: String,
    },
    /// A record is not the one a signed checkpoint covers.
    #[error(
        "audit record {seq} is not the record the signed checkpoint of {time} covers: the log was rewritten"
    )]
    Diverged {
        /// Sequence number.
        seq: i64,
        /// Time of the checkpoint.
        time: String,
    },
    /// A line of the checkpoint file is not signed with the key.
    #[error("line {line} of the audit checkpoint file is not signed with the audit key")]
    ForgedCheckpoint {
        /// Line number (from 1).
        line: usize,
    },
    /// The checkpoint file holds no checkpoint.
    #[error(
        "the audit checkpoint file holds no checkpoint: the log cannot be anchored (was the file removed?)"
    )]
    NoCheckpoint,
    /// Checkpoints name different first sealed records.
    #[error("the audit checkpoints disagree on the first sealed record")]
    InconsistentCheckpoints,
}

/// Result of a verification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// Records checked.
    pub records: i64,
    /// `true` when the chain is intact and reaches the newest checkpoint.
    pub intact: bool,
    /// The first problem, naming the record.
    pub problem: Option<String>,
    /// Records written before the audit key existed: their chain is checked, but it is not
    /// sealed, so it proves less (see `docs/service.md`).
    pub unkeyed_records: i64,
    /// The newest signed checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: i64,
    /// Records before the first sealed one.
    pub unkeyed_records: i64,
    /// The newest signed checkpoint.
    pub checkpoint: Checkpoint,
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

/// The chain hash of records written before the audit key existed.
fn unkeyed_hash(prev_hash: &str, canonical: &[u8]) -> String {
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

/// Appends records in order in one transaction (one commit, so one disk sync for all of
/// them), sealed with `key`; returns their sequence numbers.
pub fn append_batch(
    connection: &mut Connection,
    records: &[NewRecord],
    key: &AuditKey,
) -> Result<Vec<i64>, StoreError> {
    let transaction = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (mut seq, mut prev_hash) = last_record(&transaction)?;
    let mut seqs = Vec::with_capacity(records.len());
    for record in records {
        seq += 1;
        let time = now();
        let hash = key.seal_record(&prev_hash, &canonical(seq, record, &time));
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

/// Sequence number and hash of the newest record (0 and [`GENESIS`] when there is none).
fn last_record(connection: &Connection) -> rusqlite::Result<(i64, String)> {
    Ok(connection
        .query_row("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?
        .unwrap_or((0, GENESIS.to_string())))
}

/// The audit key and the checkpoint file of one data directory.
#[derive(Debug)]
pub struct Anchor {
    /// Key sealing records and checkpoints.
    pub key: AuditKey,
    /// The append-only checkpoint file.
    pub checkpoint_file: PathBuf,
}

impl Anchor {
    /// The key (see [`AuditKey::locate`]; created in the data directory only when
    /// `create_key`) and the checkpoint file (default `DATA_DIR/audit.checkpoints`).
    pub fn open(
        key_file: Option<&Path>,
        checkpoint_file: Option<&Path>,
        data_dir: &Path,
        create_key: bool,
    ) -> Result<Anchor, AnchorError> {
        Ok(Anchor {
            key: AuditKey::locate(key_file, data_dir, create_key)?,
            checkpoint_file: checkpoint_file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| StateEntry::AuditCheckpoints.under(data_dir)),
        })
    }

    /// The first sealed record and the newest checkpointed one. A log that was never anchored
    /// (written before the key existed, or new) is anchored now: sealing starts with the next
    /// record. A log that holds sealed records but no checkpoint is refused.
    pub fn establish(&self, connection: &Connection) -> Result<(i64, i64), StoreError> {
        let file = read_checkpoints(&self.checkpoint_file, &self.key)?;
        if let Some(first) = file.checkpoints.first() {
            let newest = file.checkpoints.iter().map(|c| c.seq).max().unwrap_or(0);
            let (last, _) = last_record(connection)?;
            if last < newest {
                tracing::error!(last, checkpoint = newest, "the audit log ends before its newest checkpoint");
            }
            return Ok((first.keyed_from, newest));
        }
        if !file.forged.is_empty() {
            return Err(AnchorError::WrongKey { path: self.checkpoint_file.clone() }.into());
        }
        if self.holds_sealed_records(connection)? {
            return Err(AnchorError::Unanchored { path: self.checkpoint_file.clone() }.into());
        }
        let (last, head) = last_record(connection)?;
        let checkpoint = Checkpoint { seq: last, head, time: now(), keyed_from: last + 1 };
        append_checkpoint(&self.checkpoint_file, &self.key, &checkpoint)?;
        Ok((last + 1, last))
    }

    fn holds_sealed_records(&self, connection: &Connection) -> Result<bool, StoreError> {
        let mut statement = connection.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let record = row_to_record(row)?;
            let canonical = canonical(record.seq, &record.content(), &record.time);
            if self.key.seal_record(&record.prev_hash, &canonical) == record.hash {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Appends a checkpoint of the log's newest record unless it is `unless_at`; returns the
    /// newest record's sequence number.
    pub fn checkpoint(
        &self,
        connection: &Connection,
        keyed_from: i64,
        unless_at: i64,
    ) -> Result<i64, StoreError> {
        let (seq, head) = last_record(connection)?;
        if seq != unless_at {
            append_checkpoint(
                &self.checkpoint_file,
                &self.key,
                &Checkpoint { seq, head, time: now(), keyed_from },
            )?;
        }
        Ok(seq)
    }

    /// Checks the chain under the key and against the checkpoints.
    pub fn verify(&self, connection: &Connection) -> Result<VerifyReport, StoreError> {
        let file = read_checkpoints(&self.checkpoint_file, &self.key)?;
        Ok(match verify_connection(connection, &self.key, &file)? {
            Ok(verified) => VerifyReport {
                records: verified.records,
                intact: true,
                problem: None,
                unkeyed_records: verified.unkeyed_records,
                checkpoint: Some(verified.checkpoint),
            },
            Err(violation) => {
                let records = connection.query_row("SELECT COUNT(*) FROM audit", [], |row| row.get(0))?;
                let keyed_from = file.checkpoints.first().map_or(1, |c| c.keyed_from);
                VerifyReport {
                    records,
                    intact: false,
                    problem: Some(violation.to_string()),
                    unkeyed_records: (keyed_from - 1).clamp(0, records),
                    checkpoint: file.checkpoints.iter().max_by_key(|c| c.seq).cloned(),
                }
            }
        })
    }

    /// Appends one record outside the service (the command line) and checkpoints it.
    pub fn append_offline(&self, store: &Store, record: &NewRecord) -> Result<i64, StoreError> {
        let mut connection = store.lock();
        let (keyed_from, _) = self.establish(&connection)?;
        let seq = append_batch(&mut connection, std::slice::from_ref(record), &self.key)?[0];
        self.checkpoint(&connection, keyed_from, -1)?;
        Ok(seq)
    }
}

enum Message {
    Append(NewRecord, tokio::sync::oneshot::Sender<Result<i64, String>>),
    Checkpoint(std::sync::mpsc::Sender<()>),
}

/// Group commit of the request path's audit records: one writer thread with its own SQLite
/// connection takes every record waiting, appends them in one transaction and answers each
/// caller once that transaction is on disk. Requests arriving together share one disk sync
/// instead of queueing behind one sync each, and readers (own connection, WAL) never wait for
/// it; a request still gets its answer only after its record is durable. The thread also
/// writes the checkpoints: every `checkpoint_every_records` records, every
/// `checkpoint_every_seconds` while records arrive, and when the writer stops.
pub struct AuditWriter {
    sender: std::sync::mpsc::Sender<Message>,
    anchor: Arc<Anchor>,
}

impl AuditWriter {
    /// Most records committed together.
    const MAX_BATCH: usize = 256;

    /// Opens the writer's connection on the state file of `data_dir`, anchors the log and
    /// starts its thread (which ends, after a last checkpoint, when the writer is dropped).
    pub fn start(data_dir: &Path, config: &AuditConfig) -> Result<AuditWriter, StoreError> {
        let anchor = Arc::new(Anchor::open(
            config.key_file.as_deref(),
            config.checkpoint_file.as_deref(),
            data_dir,
            true,
        )?);
        let mut connection = super::store::open_connection(&StateEntry::Database.under(data_dir))?;
        let (keyed_from, mut checkpointed) = anchor.establish(&connection)?;
        let every_records = config.checkpoint_every_records.max(1) as i64;
        let every = std::time::Duration::from_secs(config.checkpoint_every_seconds.max(1));
        let (sender, receiver) = std::sync::mpsc::channel::<Message>();
        let thread_anchor = anchor.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let anchor = thread_anchor;
                let mut last_time = std::time::Instant::now();
                let mut head = checkpointed;
                loop {
                    let first = match receiver.recv_timeout(every) {
                        Ok(message) => Some(message),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    let mut records = Vec::new();
                    let mut replies = Vec::new();
                    let mut flushes = Vec::new();
                    let mut next = first;
                    while let Some(message) = next.take() {
                        match message {
                            Message::Append(record, reply) => {
                                records.push(record);
                                replies.push(reply);
                            }
                            Message::Checkpoint(done) => flushes.push(done),
                        }
                        if records.len() < Self::MAX_BATCH {
                            next = receiver.try_recv().ok();
                        }
                    }
                    if !records.is_empty() {
                        match append_batch(&mut connection, &records, &anchor.key) {
                            Ok(seqs) => {
                                head = *seqs.last().expect("one per record");
                                for (reply, seq) in replies.into_iter().zip(seqs) {
                                    let _ = reply.send(Ok(seq));
                                }
                            }
                            Err(error) => {
                                for reply in replies {
                                    let _ = reply.send(Err(error.to_string()));
                                }
                            }
                        }
                    }
                    let due = head - checkpointed >= every_records
                        || (head > checkpointed && last_time.elapsed() >= every)
                        || !flushes.is_empty();
                    if due {
                        match anchor.checkpoint(&connection, keyed_from, checkpointed) {
                            Ok(seq) => {
                                checkpointed = seq;
                                head = head.max(seq);
                                last_time = std::time::Instant::now();
                            }
                            Err(error) => tracing::error!("audit checkpoint: {error}"),
                        }
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
                if let Err(error) = anchor.checkpoint(&connection, keyed_from, checkpointed) {
                    tracing::error!("audit checkpoint: {error}");
                }
            })
            .map_err(|source| StoreError::Io { path: "audit writer thread".into(), source })?;
        Ok(AuditWriter { sender, anchor })
    }

    /// Appends one record; resolves once it is committed.
    pub async fn append(&self, record: NewRecord) -> Result<i64, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.sender
            .send(Message::Append(record, reply))
            .map_err(|_| "the audit writer has stopped".to_string())?;
        answer.await.map_err(|_| "the audit writer has stopped".to_string())?
    }

    /// Writes a checkpoint of every record committed so far and waits for it (blocking).
    pub fn checkpoint_now(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.sender.send(Message::Checkpoint(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Checks the chain under the key and against the checkpoints.
    pub fn verify(&self, store: &Store) -> Result<VerifyReport, StoreError> {
        self.anchor.verify(&store.lock())
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

/// Checks the whole chain: records from the first sealed one on under `key`, earlier ones
/// with the unkeyed chain; every signed checkpoint must name a record of the log, and the log
/// must reach the newest. `Err` names the first problem.
pub fn verify_connection(
    connection: &Connection,
    key: &AuditKey,
    file: &CheckpointFile,
) -> Result<Result<Verified, AuditViolation>, StoreError> {
    if let Some(&line) = file.forged.first() {
        return Ok(Err(AuditViolation::ForgedCheckpoint { line }));
    }
    let Some(newest) = file.checkpoints.iter().max_by_key(|c| c.seq) else {
        return Ok(Err(AuditViolation::NoCheckpoint));
    };
    let keyed_from = file.checkpoints[0].keyed_from;
    if file.checkpoints.iter().any(|c| c.keyed_from != keyed_from) {
        return Ok(Err(AuditViolation::InconsistentCheckpoints));
    }
    let mut anchors: std::collections::BTreeMap<i64, Vec<&Checkpoint>> = Default::default();
    for checkpoint in &file.checkpoints {
        anchors.entry(checkpoint.seq).or_default().push(checkpoint);
    }
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
        let canonical = canonical(record.seq, &record.content(), &record.time);
        let recomputed = if record.seq < keyed_from {
            unkeyed_hash(&record.prev_hash, &canonical)
        } else {
            key.seal_record(&record.prev_hash, &canonical)
        };
        if recomputed != record.hash {
            return Ok(Err(AuditViolation::Altered { seq: record.seq }));
        }
        if record.prev_hash != prev_hash {
            return Ok(Err(AuditViolation::Broken { seq: record.seq, previous: record.seq - 1 }));
        }
        if let Some(checkpoint) =
            anchors.get(&record.seq).and_then(|list| list.iter().find(|c| c.head != record.hash))
        {
            return Ok(Err(AuditViolation::Diverged { seq: record.seq, time: checkpoint.time.clone() }));
        }
        prev_hash = record.hash;
        expected_seq += 1;
        count += 1;
    }
    if newest.seq > count {
        return Ok(Err(AuditViolation::Truncated {
            last: count,
            checkpoint: newest.seq,
            time: newest.time.clone(),
        }));
    }
    let (head_seq, head_hash) = head(connection)?;
    if head_seq >= expected_seq {
        // Records at the end were removed: the first missing one is named.
        return Ok(Err(AuditViolation::Removed { seq: expected_seq }));
    }
    if head_seq == count && head_hash != prev_hash && count > 0 {
        return Ok(Err(AuditViolation::Altered { seq: count }));
    }
    Ok(Ok(Verified {
        records: count,
        unkeyed_records: (keyed_from - 1).clamp(0, count),
        checkpoint: newest.clone(),
    }))
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

    fn anchored_store(records: usize) -> (tempfile::TempDir, Store, Anchor) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let anchor = Anchor::open(None, None, dir.path(), true).unwrap();
        for i in 0..records {
            anchor.append_offline(&store, &record(&format!("a{i}"))).unwrap();
        }
        (dir, store, anchor)
    }

    fn check(store: &Store, anchor: &Anchor) -> Result<Verified, AuditViolation> {
        let file = read_checkpoints(&anchor.checkpoint_file, &anchor.key).unwrap();
        verify_connection(&store.lock(), &anchor.key, &file).unwrap()
    }

    #[test]
    fn chain_detects_alteration_and_removal() {
        let (_dir, store, anchor) = anchored_store(5);
        assert_eq!(check(&store, &anchor).unwrap().records, 5);
        // Updates through SQL are refused by the trigger.
        assert!(store.lock().execute("UPDATE audit SET outcome = '500' WHERE seq = 2", []).is_err());
        let connection = store.lock();
        connection.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
        connection.execute("UPDATE audit SET outcome = '403' WHERE seq = 3", []).unwrap();
        drop(connection);
        assert_eq!(check(&store, &anchor), Err(AuditViolation::Altered { seq: 3 }));
        store.lock().execute("UPDATE audit SET outcome = '200' WHERE seq = 3", []).unwrap();
        assert_eq!(check(&store, &anchor).unwrap().records, 5);
        store.lock().execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        assert_eq!(check(&store, &anchor), Err(AuditViolation::Removed { seq: 2 }));
    }

    #[test]
    fn truncation_with_the_head_and_rehashing_are_detected() {
        let (_dir, store, anchor) = anchored_store(4);
        let connection = store.lock();
        connection.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;").unwrap();
        // The newest records and the stored head removed together.
        let kept: String =
            connection.query_row("SELECT hash FROM audit WHERE seq = 2", [], |r| r.get(0)).unwrap();
        connection.execute("DELETE FROM audit WHERE seq > 2", []).unwrap();
        connection
            .execute("UPDATE meta SET value = ?1 WHERE key = 'audit_head'", [format!("2 {kept}")])
            .unwrap();
        drop(connection);
        assert!(matches!(
            check(&store, &anchor),
            Err(AuditViolation::Truncated { last: 2, checkpoint: 4, .. })
        ));
        // Every record removed.
        store.lock().execute_batch("DELETE FROM audit; DELETE FROM meta WHERE key = 'audit_head';").unwrap();
        assert!(matches!(check(&store, &anchor), Err(AuditViolation::Truncated { last: 0, .. })));

        // An edit followed by recomputing every later hash without the key.
        let (_dir, store, anchor) = anchored_store(4);
        let connection = store.lock();
        connection.execute_batch("DROP TRIGGER audit_no_update;").unwrap();
        connection.execute("UPDATE audit SET outcome = '403' WHERE seq = 2", []).unwrap();
        let records: Vec<AuditRecord> = {
            let mut statement =
                connection.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq")).unwrap();
            statement.query_map([], row_to_record).unwrap().map(Result::unwrap).collect()
        };
        let mut prev = records[0].hash.clone();
        for record in &records[1..] {
            let hash = unkeyed_hash(&prev, &canonical(record.seq, &record.content(), &record.time));
            connection
                .execute(
                    "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                    params![prev, hash, record.seq],
                )
                .unwrap();
            prev = hash;
        }
        connection
            .execute("UPDATE meta SET value = ?1 WHERE key = 'audit_head'", [format!("4 {prev}")])
            .unwrap();
        drop(connection);
        assert_eq!(check(&store, &anchor), Err(AuditViolation::Altered { seq: 2 }));
    }

    #[test]
    fn records_before_the_key_are_checked_unkeyed_and_stay_anchored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Three records as written before the key existed.
        {
            let connection = store.lock();
            let mut prev = GENESIS.to_string();
            for seq in 1..=3 {
                let time = now();
                let hash = unkeyed_hash(&prev, &canonical(seq, &record("old"), &time));
                connection
                    .execute(
                        "INSERT INTO audit VALUES (?1, ?2, 'u', 'admin', 'C1', '', 'old', '/x', '200', ?3, ?4)",
                        params![seq, time, prev, hash],
                    )
                    .unwrap();
                prev = hash;
            }
            connection.execute("INSERT INTO meta VALUES ('audit_head', ?1)", [format!("3 {prev}")]).unwrap();
        }
        let anchor = Anchor::open(None, None, dir.path(), true).unwrap();
        anchor.append_offline(&store, &record("new")).unwrap();
        let verified = check(&store, &anchor).unwrap();
        assert_eq!((verified.records, verified.unkeyed_records), (4, 3));
        // Once sealed records exist, a removed checkpoint file is not silently re-anchored.
        std::fs::remove_file(&anchor.checkpoint_file).unwrap();
        assert_eq!(check(&store, &anchor), Err(AuditViolation::NoCheckpoint));
        assert!(anchor.establish(&store.lock()).is_err());
    }
}
