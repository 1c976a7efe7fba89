//! Verification of the audit chain: every record's hash and sequence, every signed checkpoint.

use super::chain::{canonical, head, unkeyed_hash};
use super::*;
use rusqlite::Connection;
use serde::Serialize;

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
