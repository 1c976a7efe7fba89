//! The study index: a SQLite file (`index.sqlite` in the data directory) listing patients (by
//! pseudonym only), studies and series. Its consent columns stay `unrecorded` at ingest: consent
//! is recorded and enforced per study by the service (`service::consent`).
//!
//! Rows are only ever inserted: ingesting a study that is already there adds nothing.
//!
//! Schema versions (`PRAGMA user_version`): 1 the first; 2 adds each series' class and the
//! rule that decided it (`series_class`, `series_class_rule`, see [`super::series_class`]).
//! Opening a version-1 index for writing migrates it in place (the new columns stay NULL for
//! the series already there); a read-only open reads it as it is.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};

/// File name of the index inside the data directory.
pub const INDEX_FILE_NAME: &str = "index.sqlite";

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// SQLite failed.
    #[error("study index {path}: {source}")]
    Sqlite {
        /// The index file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS patients (
    pseudonym TEXT PRIMARY KEY NOT NULL,
    linked INTEGER NOT NULL,
    first_ingested_at TEXT NOT NULL,
    consent_status TEXT NOT NULL DEFAULT 'unrecorded',
    consent_recorded_at TEXT,
    consent_reference TEXT
);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY NOT NULL,
    pseudonym TEXT NOT NULL REFERENCES patients(pseudonym),
    database TEXT NOT NULL CHECK (database IN ('A', 'B')),
    class TEXT CHECK (class IS NULL OR class IN ('A1', 'A2')),
    age_years REAL,
    patient_sex TEXT,
    path TEXT NOT NULL,
    ingested_at TEXT NOT NULL,
    consent_status TEXT NOT NULL DEFAULT 'unrecorded',
    consent_recorded_at TEXT
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY NOT NULL,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT,
    body_part_examined TEXT,
    magnetic_field_strength REAL,
    dimensions TEXT NOT NULL,
    voxel_size_mm TEXT NOT NULL,
    file_count INTEGER NOT NULL,
    path TEXT NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_by_pseudonym ON studies(pseudonym);
CREATE INDEX IF NOT EXISTS series_by_study ON series(study_uid);
PRAGMA user_version = 1;
";

/// Version 1 → 2: the series class and its rule.
const MIGRATION_2: &str = "
ALTER TABLE series ADD COLUMN series_class TEXT;
ALTER TABLE series ADD COLUMN series_class_rule TEXT;
PRAGMA user_version = 2;
";

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 2;

/// A study row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StudyRecord {
    /// De-identified StudyInstanceUID.
    pub study_uid: String,
    /// The patient's pseudonym.
    pub pseudonym: String,
    /// Whether the pseudonym comes from a national identifier.
    pub linked: bool,
    /// `"A"` or `"B"`.
    pub database: String,
    /// `"A1"`/`"A2"` for database A.
    pub class: Option<String>,
    /// Age at the study in years.
    pub age_years: Option<f64>,
    /// Patient's sex (M, F, O).
    pub patient_sex: Option<String>,
    /// Study directory relative to the data directory.
    pub path: String,
}

/// A series row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesRecord {
    /// De-identified SeriesInstanceUID.
    pub series_uid: String,
    /// Modality.
    pub modality: Option<String>,
    /// Body part examined.
    pub body_part_examined: Option<String>,
    /// Field strength in tesla.
    pub magnetic_field_strength: Option<f64>,
    /// Volume dimensions `i×j×k`.
    pub dimensions: String,
    /// Voxel size in mm, `x×y×z`.
    pub voxel_size_mm: String,
    /// De-identified DICOM files stored.
    pub file_count: usize,
    /// Series directory relative to the data directory.
    pub path: String,
    /// The series class (`T1w`, `T2w`, `FLAIR`, `DWI`, `localizer`, `other`).
    pub series_class: Option<String>,
    /// The code of the rule that decided the class.
    pub series_class_rule: Option<String>,
}

/// An open study index.
pub struct StudyIndex {
    path: PathBuf,
    connection: Connection,
}

impl std::fmt::Debug for StudyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StudyIndex").field("path", &self.path).finish()
    }
}

impl StudyIndex {
    /// Opens (creating if needed) the index of a data directory.
    pub fn open(data_dir: &Path) -> Result<Self, IndexError> {
        let path = data_dir.join(INDEX_FILE_NAME);
        let error = |source| IndexError::Sqlite { path: path.clone(), source };
        let connection = Connection::open(&path).map_err(error)?;
        connection.busy_timeout(std::time::Duration::from_secs(30)).map_err(error)?;
        connection.execute_batch("PRAGMA foreign_keys = ON;").map_err(error)?;
        let version: i64 =
            connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(error)?;
        // Only a new index gets the schema and only an old one a migration: opening a current
        // one writes nothing.
        if version < 1 {
            connection.execute_batch(SCHEMA).map_err(error)?;
        }
        if version < 2 {
            // Under the write lock, looking again: another process may have migrated meanwhile.
            let mut connection = connection;
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
            let version: i64 =
                transaction.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(error)?;
            if version < 2 {
                transaction.execute_batch(MIGRATION_2).map_err(error)?;
            }
            transaction.commit().map_err(error)?;
            return Ok(Self { path, connection });
        }
        Ok(Self { path, connection })
    }

    /// Opens the index of a data directory read-only, only if it exists (so that looking
    /// never creates or changes anything).
    pub fn open_existing(data_dir: &Path) -> Result<Option<Self>, IndexError> {
        let path = data_dir.join(INDEX_FILE_NAME);
        if !path.is_file() {
            return Ok(None);
        }
        let error = |source| IndexError::Sqlite { path: path.clone(), source };
        let connection =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(error)?;
        connection.busy_timeout(std::time::Duration::from_secs(30)).map_err(error)?;
        Ok(Some(Self { path, connection }))
    }

    fn error(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Sqlite { path: self.path.clone(), source }
    }

    /// The database (`"A"`/`"B"`) a study was ingested into, if it was.
    pub fn study_database(&self, study_uid: &str) -> Result<Option<String>, IndexError> {
        self.connection
            .query_row("SELECT database FROM studies WHERE study_uid = ?1", [study_uid], |row| row.get(0))
            .optional()
            .map_err(|e| self.error(e))
    }

    /// The series UIDs recorded for a study.
    pub fn series_of(&self, study_uid: &str) -> Result<Vec<String>, IndexError> {
        let mut statement = self
            .connection
            .prepare("SELECT series_uid FROM series WHERE study_uid = ?1 ORDER BY series_uid")
            .map_err(|e| self.error(e))?;
        let rows = statement.query_map([study_uid], |row| row.get(0)).map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<String>, _>>().map_err(|e| self.error(e))
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, IndexError> {
        self.connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| self.error(e))
    }

    /// The series of a study with their class (`None` for series recorded before classes were,
    /// or in a version-1 index), ordered by UID.
    pub fn series_classes(&self, study_uid: &str) -> Result<Vec<(String, Option<String>)>, IndexError> {
        let query = if self.schema_version()? >= 2 {
            "SELECT series_uid, series_class FROM series WHERE study_uid = ?1 ORDER BY series_uid"
        } else {
            "SELECT series_uid, NULL FROM series WHERE study_uid = ?1 ORDER BY series_uid"
        };
        let mut statement = self.connection.prepare(query).map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([study_uid], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.error(e))
    }

    /// All studies, in ingest order.
    pub fn studies(&self) -> Result<Vec<StudyRecord>, IndexError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT s.study_uid, s.pseudonym, p.linked, s.database, s.class, s.age_years, s.patient_sex, s.path
                 FROM studies s JOIN patients p ON p.pseudonym = s.pseudonym ORDER BY s.rowid",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(StudyRecord {
                    study_uid: row.get(0)?,
                    pseudonym: row.get(1)?,
                    linked: row.get(2)?,
                    database: row.get(3)?,
                    class: row.get(4)?,
                    age_years: row.get(5)?,
                    patient_sex: row.get(6)?,
                    path: row.get(7)?,
                })
            })
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.error(e))
    }

    /// Number of series rows.
    pub fn series_count(&self) -> Result<usize, IndexError> {
        self.connection
            .query_row("SELECT COUNT(*) FROM series", [], |row| row.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.error(e))
    }

    /// Records a study and the series not yet recorded, in one transaction, running `publish`
    /// (which moves the files into place) before committing. Returns the UIDs of the series
    /// that were new. If `publish` fails nothing is recorded.
    pub fn record<E>(
        &mut self,
        study: &StudyRecord,
        series: &[SeriesRecord],
        publish: impl FnOnce(&[&SeriesRecord]) -> Result<(), E>,
    ) -> Result<Result<Vec<String>, E>, IndexError> {
        let path = self.path.clone();
        let error = |source| IndexError::Sqlite { path: path.clone(), source };
        let now = now_utc();
        // IMMEDIATE takes the write lock first, so two concurrent ingests of one study cannot
        // both decide the study is new.
        let transaction =
            self.connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(error)?;
        transaction
            .execute(
                "INSERT OR IGNORE INTO patients (pseudonym, linked, first_ingested_at) VALUES (?1, ?2, ?3)",
                params![study.pseudonym, study.linked, now],
            )
            .map_err(error)?;
        transaction
            .execute(
                "INSERT OR IGNORE INTO studies (study_uid, pseudonym, database, class, age_years, patient_sex, path, ingested_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    study.study_uid,
                    study.pseudonym,
                    study.database,
                    study.class,
                    study.age_years,
                    study.patient_sex,
                    study.path,
                    now
                ],
            )
            .map_err(error)?;
        let mut new_series = Vec::new();
        for record in series {
            let inserted = transaction
                .execute(
                    "INSERT OR IGNORE INTO series (series_uid, study_uid, modality, body_part_examined,
                        magnetic_field_strength, dimensions, voxel_size_mm, file_count, path, ingested_at,
                        series_class, series_class_rule)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        record.series_uid,
                        study.study_uid,
                        record.modality,
                        record.body_part_examined,
                        record.magnetic_field_strength,
                        record.dimensions,
                        record.voxel_size_mm,
                        record.file_count as i64,
                        record.path,
                        now,
                        record.series_class,
                        record.series_class_rule
                    ],
                )
                .map_err(error)?;
            if inserted == 1 {
                new_series.push(record);
            }
        }
        if let Err(publish_error) = publish(&new_series) {
            transaction.rollback().map_err(error)?;
            return Ok(Err(publish_error));
        }
        transaction.commit().map_err(error)?;
        Ok(Ok(new_series.iter().map(|record| record.series_uid.clone()).collect()))
    }
}

fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study() -> StudyRecord {
        StudyRecord {
            study_uid: "2.25.1".into(),
            pseudonym: "ab".repeat(32),
            linked: true,
            database: "B".into(),
            class: None,
            age_years: Some(7.0),
            patient_sex: Some("F".into()),
            path: "B/abab/2.25.1".into(),
        }
    }

    fn series(uid: &str) -> SeriesRecord {
        SeriesRecord {
            series_uid: uid.into(),
            modality: Some("MR".into()),
            body_part_examined: Some("HEAD".into()),
            magnetic_field_strength: Some(3.0),
            dimensions: "4×4×3".into(),
            voxel_size_mm: "1×1×1".into(),
            file_count: 3,
            path: format!("B/abab/2.25.1/{uid}"),
            series_class: Some("T1w".into()),
            series_class_rule: Some("prepared-gradient-echo".into()),
        }
    }

    #[test]
    fn a_version_1_index_is_read_as_it_is_and_migrated_when_opened_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        {
            // The version-1 schema with one series, as an earlier release left it.
            let connection = Connection::open(dir.path().join(INDEX_FILE_NAME)).unwrap();
            connection.execute_batch(SCHEMA).unwrap();
            connection
                .execute_batch(
                    "INSERT INTO patients VALUES ('p', 1, 't', 'unrecorded', NULL, NULL);
                     INSERT INTO studies (study_uid, pseudonym, database, path, ingested_at)
                         VALUES ('2.25.1', 'p', 'B', 'B/p/2.25.1', 't');
                     INSERT INTO series (series_uid, study_uid, dimensions, voxel_size_mm, file_count, path, ingested_at)
                         VALUES ('2.25.2', '2.25.1', '4×4×3', '1×1×1', 3, 'B/p/2.25.1/2.25.2', 't');",
                )
                .unwrap();
        }
        let read_only = StudyIndex::open_existing(dir.path()).unwrap().unwrap();
        assert_eq!(read_only.schema_version().unwrap(), 1);
        assert_eq!(read_only.series_classes("2.25.1").unwrap(), [("2.25.2".to_owned(), None)]);
        drop(read_only);
        let mut index = StudyIndex::open(dir.path()).unwrap();
        assert_eq!(index.schema_version().unwrap(), SCHEMA_VERSION);
        let mut study = study();
        study.study_uid = "2.25.1".into();
        study.pseudonym = "p".into();
        let mut record = series("2.25.3");
        record.series_class = Some("FLAIR".into());
        index.record(&study, &[record], |_| Ok::<_, ()>(())).unwrap().unwrap();
        assert_eq!(
            index.series_classes("2.25.1").unwrap(),
            [("2.25.2".to_owned(), None), ("2.25.3".to_owned(), Some("FLAIR".to_owned()))]
        );
        // Opening a current index again changes nothing.
        drop(index);
        assert_eq!(StudyIndex::open(dir.path()).unwrap().schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn recording_twice_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StudyIndex::open_existing(dir.path()).unwrap().is_none());
        let mut index = StudyIndex::open(dir.path()).unwrap();
        let first = index.record(&study(), &[series("2.25.2")], |_| Ok::<_, ()>(())).unwrap().unwrap();
        assert_eq!(first, ["2.25.2"]);
        let second = index.record(&study(), &[series("2.25.2")], |new| {
            assert!(new.is_empty());
            Ok::<_, ()>(())
        });
        assert!(second.unwrap().unwrap().is_empty());
        let third = index.record(&study(), &[series("2.25.2"), series("2.25.3")], |_| Ok::<_, ()>(()));
        assert_eq!(third.unwrap().unwrap(), ["2.25.3"]);
        assert_eq!(index.studies().unwrap().len(), 1);
        assert_eq!(index.series_count().unwrap(), 2);
        assert_eq!(index.study_database("2.25.1").unwrap().as_deref(), Some("B"));
    }

    #[test]
    fn failed_publish_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = StudyIndex::open(dir.path()).unwrap();
        let result = index.record(&study(), &[series("2.25.2")], |_| Err("disk full")).unwrap();
        assert_eq!(result, Err("disk full"));
        assert!(index.studies().unwrap().is_empty());
        assert_eq!(index.series_count().unwrap(), 0);
    }
}
