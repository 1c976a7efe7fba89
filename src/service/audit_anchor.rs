//! What makes the audit log tamper-evident beyond its own file: the secret key that seals each
//! record's chain hash, and the checkpoint file that anchors the chain.
//!
//! The key lives outside the SQLite state (like the pseudonym key): whoever can rewrite the
//! state file but not read the key cannot recompute valid seals after an edit. A checkpoint is
//! one line `v1 SEQ HEAD TIME KEYED_FROM MAC` appended to a second, append-only file, where
//! `MAC = HMAC-SHA-256(key, "pedinorm-audit-checkpoint" NUL SEQ NUL HEAD NUL TIME NUL
//! KEYED_FROM)`: the log must still hold record `SEQ` with hash `HEAD`, so removing the newest
//! records (even together with the stored head) or every record is detected. `KEYED_FROM` is
//! the first sealed record; records before it were written before the key existed and are
//! checked with the original unkeyed chain.

use super::layout::StateEntry;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Environment variable naming the audit key file when no path is configured.
pub const KEY_FILE_ENV: &str = "PEDINORM_AUDIT_KEY_FILE";
/// Shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

const CHECKPOINT_DOMAIN: &[u8] = b"pedinorm-audit-checkpoint";
const RECORD_DOMAIN: &[u8] = b"pedinorm-audit-record";

/// Errors of the key and checkpoint files (never carrying the key).
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// A file could not be read or written.
    #[error("audit {what} {path}: {source}")]
    Io {
        /// `key file` or `checkpoint file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The key file holds fewer than [`MIN_KEY_BYTES`] bytes.
    #[error("audit key file {path}: key shorter than {MIN_KEY_BYTES} bytes")]
    KeyTooShort {
        /// The key file.
        path: PathBuf,
    },
    /// The log holds sealed records but no checkpoint: the checkpoint file was removed or
    /// emptied, and starting again would anchor whatever the log now holds.
    #[error(
        "the audit log holds sealed records but the checkpoint file {path} holds no checkpoint: restore it before starting (see `pedinorm audit verify`)"
    )]
    Unanchored {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// No checkpoint is signed with this key: it is not the key the log was sealed with.
    #[error("no checkpoint in {path} is signed with this audit key: give the key the service uses")]
    WrongKey {
        /// The checkpoint file.
        path: PathBuf,
    },
    /// No key file was given and the default one does not exist.
    #[error(
        "no audit key: pass --audit-key-file, set {KEY_FILE_ENV}, or start the service once to create {path}"
    )]
    KeyMissing {
        /// The default key file that was looked for.
        path: PathBuf,
    },
}

/// The secret key sealing the audit chain and its checkpoints. Its bytes are never printed.
#[derive(Clone)]
pub struct AuditKey {
    bytes: Vec<u8>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl AuditKey {
    /// Reads a key file (its contents without surrounding ASCII whitespace).
    pub fn from_file(path: &Path) -> Result<Self, AnchorError> {
        let contents = std::fs::read(path).map_err(|source| AnchorError::Io {
            what: "key file",
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = contents.trim_ascii();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(AnchorError::KeyTooShort { path: path.to_path_buf() });
        }
        crate::ingest::pseudonym::warn_if_readable_by_others(path, "audit key file");
        Ok(AuditKey { bytes: bytes.to_vec() })
    }

    /// The configured key file, else the file named by [`KEY_FILE_ENV`], else
    /// `DATA_DIR/audit.key`; that default is created (random, mode 0600) when `create` is set
    /// and it does not exist yet.
    pub fn locate(configured: Option<&Path>, data_dir: &Path, create: bool) -> Result<Self, AnchorError> {
        if let Some(path) = configured {
            return Self::from_file(path);
        }
        if let Some(path) = std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
            return Self::from_file(Path::new(&path));
        }
        let path = StateEntry::AuditKey.under(data_dir);
        if path.exists() || !create {
            return Self::from_file(&path).map_err(|error| match error {
                AnchorError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    AnchorError::KeyMissing { path: path.clone() }
                }
                other => other,
            });
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let text = hex::encode(secret);
        let io = |source| AnchorError::Io { what: "key file", path: path.clone(), source };
        let mut file = private_file(&path, true).map_err(io)?;
        file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(io)?;
        tracing::warn!(
            key_file = %path.display(),
            "created an audit key inside the data directory; keep it elsewhere (audit.key_file) so \
             that whoever can rewrite the state cannot reseal the audit log"
        );
        Ok(AuditKey { bytes: text.into_bytes() })
    }

    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.bytes).expect("HMAC accepts any key length");
        mac.update(domain);
        for part in parts {
            mac.update(&[0]);
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The sealed chain hash of a record: HMAC over the previous hash and the record's
    /// canonical encoding.
    pub fn seal_record(&self, prev_hash: &str, canonical: &[u8]) -> String {
        self.mac(RECORD_DOMAIN, &[prev_hash.as_bytes(), canonical])
    }
}

fn private_file(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    if create_new {
        options.write(true).create_new(true);
    } else {
        options.append(true).create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// One signed checkpoint of the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// Sequence number of the newest record covered (0: the log was empty).
    pub seq: i64,
    /// Chain hash of that record.
    pub head: String,
    /// UTC time the checkpoint was written (RFC 3339).
    pub time: String,
    /// First record sealed with the key (earlier ones predate it).
    pub keyed_from: i64,
}

impl Checkpoint {
    fn signature(&self, key: &AuditKey) -> String {
        key.mac(
            CHECKPOINT_DOMAIN,
            &[
                self.seq.to_string().as_bytes(),
                self.head.as_bytes(),
                self.time.as_bytes(),
                self.keyed_from.to_string().as_bytes(),
            ],
        )
    }

    fn line(&self, key: &AuditKey) -> String {
        format!("v1 {} {} {} {} {}\n", self.seq, self.head, self.time, self.keyed_from, self.signature(key))
    }

    fn parse(line: &str, key: &AuditKey) -> Option<Checkpoint> {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["v1", seq, head, time, keyed_from, mac] = fields[..] else { return None };
        let checkpoint = Checkpoint {
            seq: seq.parse().ok()?,
            head: head.to_string(),
            time: time.to_string(),
            keyed_from: keyed_from.parse().ok()?,
        };
        let expected = checkpoint.signature(key);
        // Constant-time comparison through the MAC type is not needed here: the verifier
        // holds the key, there is no oracle to time.
        (expected == mac).then_some(checkpoint)
    }
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointFile {
    /// The checkpoints signed with the key, in file order.
    pub checkpoints: Vec<Checkpoint>,
    /// Lines (from 1) that are not checkpoints signed with the key.
    pub forged: Vec<usize>,
}

/// Marks the end of a line cut short by a crash (closed by the next append).
const TORN: &str = " torn";

/// Reads the checkpoint file; a missing file holds no checkpoints. A line cut short by a crash
/// (the last line without its newline, or a line the next append closed as torn) is skipped.
pub fn read_checkpoints(path: &Path, key: &AuditKey) -> Result<CheckpointFile, AnchorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(AnchorError::Io { what: "checkpoint file", path: path.to_path_buf(), source });
        }
    };
    let mut file = CheckpointFile::default();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let Some(line) = line.strip_suffix('\n') else { break };
        if line.ends_with(TORN) {
            continue;
        }
        match Checkpoint::parse(line, key) {
            Some(checkpoint) => file.checkpoints.push(checkpoint),
            None => file.forged.push(index + 1),
        }
    }
    Ok(file)
}

/// Appends one signed checkpoint (one `write` on a file opened for appending, then fsync).
pub fn append_checkpoint(path: &Path, key: &AuditKey, checkpoint: &Checkpoint) -> Result<(), AnchorError> {
    let io = |source| AnchorError::Io { what: "checkpoint file", path: path.to_path_buf(), source };
    let mut line = checkpoint.line(key);
    // A line cut short by a crash is closed (as torn) so the new one stays whole.
    if let Ok(existing) = std::fs::read(path)
        && existing.last().is_some_and(|&b| b != b'\n')
    {
        line.insert_str(0, &format!("{TORN}\n"));
    }
    let mut file = private_file(path, false).map_err(io)?;
    file.write_all(line.as_bytes()).and_then(|_| file.sync_data()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_forgeries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::locate(None, dir.path(), true).unwrap();
        let again = AuditKey::locate(None, dir.path(), false).unwrap();
        assert_eq!(key.seal_record("a", b"b"), again.seal_record("a", b"b"));
        let path = StateEntry::AuditCheckpoints.under(dir.path());
        assert_eq!(read_checkpoints(&path, &key).unwrap(), CheckpointFile::default());
        let first =
            Checkpoint { seq: 3, head: "ab".into(), time: "2026-01-01T00:00:00Z".into(), keyed_from: 1 };
        append_checkpoint(&path, &key, &first).unwrap();
        // A torn line is ignored, and the next checkpoint starts on a line of its own.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"v1 4 cd").unwrap();
        assert_eq!(read_checkpoints(&path, &key).unwrap().checkpoints, vec![first.clone()]);
        let second = Checkpoint { seq: 5, ..first.clone() };
        append_checkpoint(&path, &key, &second).unwrap();
        assert_eq!(read_checkpoints(&path, &key).unwrap().checkpoints, vec![first.clone(), second]);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"v1 9 ef x y z\n").unwrap();
        assert_eq!(read_checkpoints(&path, &key).unwrap().forged, vec![4]);
        // Another key does not accept the lines.
        let other_dir = tempfile::tempdir().unwrap();
        let other = AuditKey::locate(None, other_dir.path(), true).unwrap();
        assert_eq!(read_checkpoints(&path, &other).unwrap().forged, vec![1, 3, 4]);
        assert!(matches!(
            AuditKey::locate(None, other_dir.path().join("none").as_path(), false),
            Err(AnchorError::KeyMissing { .. })
        ));
        assert!(!format!("{key:?}").contains(&String::from_utf8_lossy(&key.bytes).to_string()));
    }
}
