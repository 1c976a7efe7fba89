//! Appending to the audit chain: the canonical form of a record, its keyed or unkeyed hash,
//! and the anchor (key and checkpoint file) that seals the chain.

use super::*;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub(super) fn canonical(seq: i64, record: &NewRecord, time: &str) -> Vec<u8> {
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
pub(super) fn unkeyed_hash(prev_hash: &str, canonical: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical);
    hex::encode(hasher.finalize())
}

pub(super) fn head(connection: &Connection) -> rusqlite::Result<(i64, String)> {
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
pub(super) fn last_record(connection: &Connection) -> rusqlite::Result<(i64, String)> {
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
