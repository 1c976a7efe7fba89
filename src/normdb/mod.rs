//! The HDF5 normative database: reading and writing a [`NormativeDb`] (the value and
//! everything computed on it live in `pedinorm_templates::model`).
//!
//! One file holds everything a deviation map needs, in the layout documented in
//! `docs/normdb.md` (schema `pedinorm-normdb`, version [`SCHEMA_VERSION`]).
//! [`NormDbFile::write`] writes a new file next to the destination and renames it into place,
//! so an existing database is never left half-written, and [`NormDbFile::read`] checks the
//! schema before trusting any field.

mod hdf5_centiles;
mod hdf5_io;
mod hdf5_regional;
mod hdf5_site_effects;

use pedinorm_templates::model::{Channel, DatabaseError, NormativeDb};
use pedinorm_templates::stats::StatsError;
use std::path::PathBuf;

/// Name stored in the root attribute `schema`.
pub const SCHEMA_NAME: &str = "pedinorm-normdb";
/// Version stored in the root attribute `schema_version`; readers refuse newer versions.
pub const SCHEMA_VERSION: u32 = 2;

/// Why a normative database cannot be read, written or combined.
#[derive(Debug, thiserror::Error)]
pub enum NormDbError {
    /// The HDF5 library reported an error.
    #[error("{path}: {context}: {source}")]
    Hdf5 {
        /// The database file.
        path: PathBuf,
        /// What was being done (object path).
        context: String,
        /// The library's error.
        source: hdf5::Error,
    },
    /// The file does not follow the schema.
    #[error("{path}: {field}: {rule}")]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The HDF5 object or attribute.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Two databases or a database and a subject do not fit together.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// A statistics update failed.
    #[error("statistics: {0}")]
    Stats(#[from] StatsError),
}

impl From<std::io::Error> for NormDbError {
    fn from(source: std::io::Error) -> Self {
        NormDbError::Io { path: PathBuf::new(), source }
    }
}

/// A [`NormativeDb`] stored as an HDF5 file.
pub trait NormDbFile: Sized {
    /// Reads and validates a database.
    fn read(path: &std::path::Path) -> Result<Self, NormDbError>;

    /// Writes the database to `path` through a temporary sibling and a rename.
    fn write(&self, path: &std::path::Path) -> Result<(), NormDbError>;
}

impl NormDbFile for NormativeDb {
    fn read(path: &std::path::Path) -> Result<NormativeDb, NormDbError> {
        hdf5_io::read(path)
    }

    fn write(&self, path: &std::path::Path) -> Result<(), NormDbError> {
        crate::atomic::write_atomically(path, |tmp| hdf5_io::write(self, tmp))
    }
}

/// The current time, UTC, RFC 3339: the time database operations are recorded at.
pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// A human-readable summary of a database.
pub fn summary(db: &NormativeDb) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &db.metadata;
    let _ = writeln!(out, "schema {SCHEMA_NAME} v{SCHEMA_VERSION}, written by {}", m.software);
    let _ = writeln!(out, "created {}, modified {}", m.created_utc, m.modified_utc);
    let _ = writeln!(
        out,
        "smoothing FWHM {} mm, nominal voxel rate {}, cluster rate {}",
        m.parameters.mapping.smoothing_fwhm_mm, m.parameters.voxel_rate, m.parameters.cluster_rate
    );
    let _ = writeln!(out, "subjects: {}", db.subjects.len());
    for b in &db.brackets {
        let dims = b.template.grid().dims();
        let spacing = b.template.grid().spacing();
        let n = db.subjects.iter().filter(|s| s.bracket == b.name && s.qc_passed).count();
        let nodes: Vec<String> = b.stats[0]
            .nodes()
            .iter()
            .map(|node| format!("{:.2}±{:.2}y", node.age_years, node.sigma_years))
            .collect();
        let _ = writeln!(
            out,
            "bracket {} [{}, {}) y: template {}x{}x{} at {:.2} mm, {} mask voxels, {} subjects, nodes {}",
            b.name,
            b.min_years,
            b.max_years,
            dims[0],
            dims[1],
            dims[2],
            spacing[0],
            b.stats[0].voxel_count(),
            n,
            nodes.join(", ")
        );
    }
    match &db.calibration {
        Some(c) => {
            for channel in Channel::ALL {
                let cc = c.channel(channel);
                let _ = writeln!(
                    out,
                    "calibration {}: |z| > {:.2} (nominal voxel rate {}, achieved {:.5}; Gaussian |z| > {:.2} would give {:.5}); cluster mass > {:.1} (largest null cluster {} voxels; nominal {}, achieved {:.3}); {} null summaries{}",
                    channel.name(),
                    cc.voxel.z_threshold,
                    cc.voxel.nominal_rate,
                    cc.voxel.achieved_rate,
                    cc.voxel.gaussian_threshold,
                    cc.voxel.gaussian_achieved_rate,
                    cc.cluster.mass_threshold,
                    cc.cluster.size_threshold_voxels,
                    cc.cluster.nominal_rate,
                    cc.cluster.achieved_rate,
                    c.nulls.len(),
                    if c.stale { " [stale]" } else { "" }
                );
            }
            for shortfall in c.shortfalls() {
                let _ = writeln!(out, "warning: {shortfall}");
            }
        }
        None => {
            let _ = writeln!(out, "calibration: none");
        }
    }
    if let Some(atlas) = &db.atlas {
        let _ = writeln!(out, "atlas: {} ({} labels)", atlas.name, atlas.labels.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_templates::model::testing::tiny;

    /// `db` written as `db.h5` into a fresh folder: the folder and the file.
    fn written(db: &NormativeDb) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.h5");
        db.write(&path).unwrap();
        (dir, path)
    }

    #[test]
    fn write_read_round_trip_is_exact() {
        let db = tiny(1, 9);
        let (dir, path) = written(&db);
        let back = NormativeDb::read(&path).unwrap();
        assert_eq!(back, db);
        // Only the database is left in the folder (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(summary(&db).contains("bracket 4-9y"));
        // Databases written before tissue priors were kept still open.
        let mut older = db.clone();
        older.brackets[0].priors = None;
        older.regional = None;
        older.write(&path).unwrap();
        assert_eq!(NormativeDb::read(&path).unwrap(), older);
    }

    #[test]
    fn centile_models_round_trip_with_their_curves() {
        let mut db = tiny(1, 30);
        db.refit_centiles();
        let set = db.centiles.clone().expect("30 normals give models");
        let (_dir, path) = written(&db);
        assert_eq!(NormativeDb::read(&path).unwrap(), db);
        // The curves readers outside pedinorm use: [measure, centile, age] per sex, the median
        // of the first measure at the first age equal to the model's.
        let file = hdf5::File::open(&path).unwrap();
        let g = file.group("regional/centiles").unwrap();
        let female = g.dataset("curves_female").unwrap().read::<f64, ndarray::Ix3>().unwrap();
        assert_eq!(female.dim(), (set.models.len(), 11, 73));
        let median = set.models[0].centiles(
            &pedinorm_templates::centiles::Covariates {
                age: 0.0,
                sex: Some(pedinorm_templates::stats::Sex::Female),
                site: None,
            },
            &[50.0],
        )[0];
        assert_eq!(female[[0, 5, 0]], median);
    }

    #[test]
    fn stored_mapping_parameters_map_later_cases() {
        use pedinorm_templates::model::TemplateSpace;
        let mut db = tiny(2, 5);
        let mapping = &mut db.metadata.parameters.mapping;
        mapping.affine_iterations = vec![7, 5, 3];
        mapping.deformable_iterations = vec![4, 2, 1];
        mapping.bias_correction = false;
        let (_dir, path) = written(&db);
        let back = NormativeDb::read(&path).unwrap();
        assert_eq!(back.metadata.parameters.mapping, db.metadata.parameters.mapping);
        // A case is mapped with the database's parameters: its plan has the quick schedule.
        let bracket = &back.brackets[0];
        let space = TemplateSpace::new(bracket.template.clone(), Some(bracket.mask.clone())).unwrap();
        let plan = back.metadata.parameters.mapping.registration_plan(&space).unwrap();
        assert_eq!(plan.affine.unwrap().schedule.iterations(), vec![7, 5, 3]);
        assert_eq!(plan.deformable.unwrap().schedule.iterations(), vec![4, 2, 1]);
    }

    #[test]
    fn unreadable_or_foreign_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.h5");
        assert!(NormativeDb::read(&missing).unwrap_err().to_string().contains("none.h5"));
        let junk = dir.path().join("junk.h5");
        std::fs::write(&junk, b"not hdf5").unwrap();
        assert!(NormativeDb::read(&junk).unwrap_err().to_string().contains("junk.h5"));
        // A valid HDF5 file without the schema attribute.
        let foreign = dir.path().join("foreign.h5");
        hdf5::File::create(&foreign).unwrap();
        let error = NormativeDb::read(&foreign).unwrap_err().to_string();
        assert!(error.contains("schema"), "{error}");
    }

    #[test]
    fn failed_write_keeps_the_existing_database() {
        let db = tiny(1, 4);
        let (dir, path) = written(&db);
        let before = std::fs::read(&path).unwrap();
        let mut bad = tiny(1, 4);
        // A NUL byte cannot be stored in an HDF5 string: the write fails midway.
        bad.subjects[0].pseudonym = "bad\0name".into();
        assert!(bad.write(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
