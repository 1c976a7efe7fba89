//! The data directory's layout: the one place that names its files and folders (the table in
//! `docs/service.md`, "Data directory"). Code asks for a path by its role, never joins a name
//! to the data directory by hand.

use std::path::{Path, PathBuf};

/// A file or folder of the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateEntry {
    /// The SQLite state: users, audit log, jobs, studies, consent, cases.
    Database,
    /// Identified objects as received, one folder per study, until ingest decides.
    Incoming,
    /// Ingest's store and index of admitted studies.
    Archive,
    /// One folder per finished job with its outputs.
    Jobs,
    /// The audit key, when none is configured.
    AuditKey,
    /// The signed checkpoints of the audit chain, when no other file is configured.
    AuditCheckpoints,
    /// The normative database, when no other file is configured.
    Normdb,
}

impl StateEntry {
    /// Its name in the data directory.
    pub fn name(self) -> &'static str {
        match self {
            StateEntry::Database => "service.sqlite",
            StateEntry::Incoming => "incoming",
            StateEntry::Archive => "archive",
            StateEntry::Jobs => "jobs",
            StateEntry::AuditKey => "audit.key",
            StateEntry::AuditCheckpoints => "audit.checkpoints",
            StateEntry::Normdb => "normdb.h5",
        }
    }

    /// Its path in the data directory `data_dir`.
    pub fn under(self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.name())
    }
}
