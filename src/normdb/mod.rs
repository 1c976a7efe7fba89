//! The HDF5 normative database: templates, voxelwise statistics, subjects and calibration.
//!
//! One file holds everything a deviation map needs, in the layout documented in
//! `docs/normdb.md` (schema `pedinorm-normdb`, version [`SCHEMA_VERSION`]). The in-memory
//! form is [`NormDb`]; [`NormDb::write`] writes a new file next to the destination and renames
//! it into place, so an existing database is never left half-written, and [`NormDb::read`]
//! checks the schema before trusting any field.

mod hdf5_io;
mod hdf5_site_effects;
mod safeguards;

use pedinorm_registration::Image;
use pedinorm_templates::calibration::{
    CalibrationError, ClusterCalibration, NullSummary, VoxelCalibration, calibrate_channel,
};
use pedinorm_templates::normative::NormativeParams;
use pedinorm_templates::site_effects::SiteEffects;
use pedinorm_templates::stats::{NormativeAccumulator, Sex, StatsError};
use serde::{Deserialize, Serialize};
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
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// A statistics update failed.
    #[error("statistics: {0}")]
    Stats(#[from] StatsError),
}

impl From<std::io::Error> for NormDbError {
    fn from(source: std::io::Error) -> Self {
        NormDbError::Io { path: PathBuf::new(), source }
    }
}

/// The voxelwise measures modelled per subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Normalized intensity in template space.
    Intensity,
    /// Log-Jacobian determinant of the deformable part of the template → subject mapping
    /// (positive: the subject is locally larger than the template).
    LogJacobian,
}

impl Channel {
    /// Both channels in storage order.
    pub const ALL: [Channel; 2] = [Channel::Intensity, Channel::LogJacobian];

    /// Name used in files (`intensity`, `logjac`).
    pub fn name(self) -> &'static str {
        match self {
            Channel::Intensity => "intensity",
            Channel::LogJacobian => "logjac",
        }
    }

    /// Index in storage order.
    pub fn index(self) -> usize {
        match self {
            Channel::Intensity => 0,
            Channel::LogJacobian => 1,
        }
    }
}

/// Parameters the statistics were built with (stored as JSON in the root attribute
/// `parameters`); two databases merge only when these agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildParameters {
    /// Gaussian smoothing of each subject's maps before accumulation (FWHM, mm; 0 = none).
    pub smoothing_fwhm_mm: f64,
    /// Gaussian σ (mm) of the deformation field mapping subjects to templates (4 mm in
    /// databases written before the field was recorded; stored under its former name).
    #[serde(rename = "deformation_smoothness_mm", default = "legacy_field_sigma_mm")]
    pub field_sigma_mm: f64,
    /// The finer registration the log-Jacobian channel is measured with (absent: the
    /// log-Jacobian of the coarse deformation).
    #[serde(default)]
    pub jacobian_refinement: Option<crate::pipeline::normative::JacobianRefinement>,
    /// Differential bias correction of the intensity channel (σ, mm; absent: none).
    #[serde(default)]
    pub differential_bias_sigma_mm: Option<f64>,
    /// The normative model's parameters used when scoring.
    pub normative: NormativeParams,
    /// Nominal two-sided voxelwise false-positive rate of the calibration.
    pub voxel_rate: f64,
    /// Nominal per-image rate of a false cluster.
    pub cluster_rate: f64,
    /// How subject intensities were normalized before accumulation.
    pub intensity_normalization: String,
    /// How subjects were registered to their template.
    pub registration: String,
}

fn legacy_field_sigma_mm() -> f64 {
    4.0
}

/// Root metadata and provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// Software that wrote the file (`pedinorm <version>`).
    pub software: String,
    /// Creation time of the database (UTC, RFC 3339).
    pub created_utc: String,
    /// Time of the last change (UTC, RFC 3339).
    pub modified_utc: String,
    /// Build parameters.
    pub parameters: BuildParameters,
    /// One line per operation (build, add, merge), oldest first.
    pub history: Vec<String>,
}

impl Metadata {
    /// Metadata of a new database built now.
    pub fn new(parameters: BuildParameters, first_entry: &str) -> Self {
        let now = now_utc();
        Self {
            software: software(),
            created_utc: now.clone(),
            modified_utc: now.clone(),
            parameters,
            history: vec![format!("{now} {first_entry}")],
        }
    }

    /// Records an operation in the history and the modification time.
    pub fn touch(&mut self, entry: &str) {
        let now = now_utc();
        self.history.push(format!("{now} {entry}"));
        self.modified_utc = now;
        self.software = software();
    }
}

/// `pedinorm <version>`.
pub fn software() -> String {
    format!("pedinorm {}", env!("CARGO_PKG_VERSION"))
}

/// The current time, UTC, RFC 3339.
pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// One age bracket: its template and the statistics of its normals.
#[derive(Debug, Clone, PartialEq)]
pub struct BracketDb {
    /// Bracket name (file-safe).
    pub name: String,
    /// Lower age bound (years, inclusive).
    pub min_years: f64,
    /// Upper age bound (years, exclusive).
    pub max_years: f64,
    /// Template image.
    pub template: Image<f32>,
    /// Brain mask of the template (1 inside, 0 outside): statistics cover these voxels.
    pub mask: Image<f32>,
    /// Atlas labels in template space, when an atlas was carried to the template.
    pub labels: Option<Image<f32>>,
    /// Statistics per channel ([`Channel::index`] order) over the mask voxels in C order.
    pub stats: [NormativeAccumulator; 2],
}

impl BracketDb {
    /// Flat C-order indices of the mask voxels, the order of the statistics' voxels.
    pub fn mask_indices(&self) -> Vec<usize> {
        mask_indices(&self.mask)
    }

    /// The statistics of one channel.
    pub fn channel(&self, channel: Channel) -> &NormativeAccumulator {
        &self.stats[channel.index()]
    }

    /// Whether `age` is inside the bracket.
    pub fn contains(&self, age: f64) -> bool {
        age >= self.min_years && age < self.max_years
    }
}

/// Flat C-order indices of the voxels of `mask` above 0.5.
pub fn mask_indices(mask: &Image<f32>) -> Vec<usize> {
    mask.as_slice().iter().enumerate().filter(|(_, v)| **v > 0.5).map(|(i, _)| i).collect()
}

/// One normal subject in the database: no identities, only the pseudonym.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectRecord {
    /// Pseudonym (never a name or national identifier).
    pub pseudonym: String,
    /// Age at scan (years).
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Scanner or site label (may be empty).
    pub scanner: String,
    /// Bracket whose template the subject was registered to.
    pub bracket: String,
    /// Correlation of the warped subject with its template (registration QC).
    pub qc_similarity: f64,
    /// Intensity-histogram distance of the warped subject to its template (NaN: unknown,
    /// databases written before it), see `pedinorm_templates::safeguards::histogram_distance`.
    #[serde(default = "unknown")]
    pub qc_histogram_distance: f64,
    /// Dice of the subject's brain mask carried to the template with the template mask (NaN:
    /// unknown).
    #[serde(default = "unknown")]
    pub qc_mask_dice: f64,
    /// Whether the subject passed QC (failed subjects are recorded but not accumulated).
    pub qc_passed: bool,
}

fn unknown() -> f64 {
    f64::NAN
}

/// Calibrated thresholds of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelCalibration {
    /// Voxelwise threshold and achieved rates.
    pub voxel: VoxelCalibration,
    /// Cluster-size threshold and achieved rates.
    pub cluster: ClusterCalibration,
}

/// The leave-one-out null of one normal, per channel ([`Channel::index`] order): what it
/// contributes to the calibration, without any image.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectNull {
    /// The normal's pseudonym (a row of the subjects table).
    pub pseudonym: String,
    /// Null summary per channel.
    pub channels: [NullSummary; 2],
}

/// Calibration of all channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// Method description.
    pub method: String,
    /// True when subjects were added or databases merged after calibration and the thresholds
    /// could not be recomputed (a database of schema version 1 keeps no null summaries): they
    /// still apply but were computed on fewer normals.
    pub stale: bool,
    /// Per channel, [`Channel::index`] order.
    pub channels: Vec<ChannelCalibration>,
    /// The null summaries the thresholds were computed from, one per calibrated normal, in
    /// pseudonym order (empty for databases of schema version 1).
    #[serde(skip)]
    pub nulls: Vec<SubjectNull>,
    /// Scanner-site effects per channel ([`Channel::index`] order), when the calibration
    /// normals came from several sites; the null summaries are then of site-corrected z.
    #[serde(default)]
    pub site_effects: Option<Vec<SiteEffects>>,
}

impl CalibrationRecord {
    /// The calibration of one channel.
    pub fn channel(&self, channel: Channel) -> &ChannelCalibration {
        &self.channels[channel.index()]
    }

    /// Thresholds and achieved rates from the normals' null summaries. The summaries are
    /// pooled in pseudonym order, so the result does not depend on the order in which normals
    /// were added or databases merged.
    pub fn from_nulls(
        mut nulls: Vec<SubjectNull>,
        voxel_rate: f64,
        cluster_rate: f64,
    ) -> Result<CalibrationRecord, CalibrationError> {
        nulls.sort_by(|a, b| a.pseudonym.cmp(&b.pseudonym));
        let mut channels = Vec::new();
        for channel in Channel::ALL {
            let summaries: Vec<NullSummary> =
                nulls.iter().map(|n| n.channels[channel.index()].clone()).collect();
            let (voxel, cluster) = calibrate_channel(&summaries, voxel_rate, cluster_rate)?;
            channels.push(ChannelCalibration { voxel, cluster });
        }
        Ok(CalibrationRecord {
            method: format!(
                "leave-one-out over {} normals (each scored against the other normals of the database it was calibrated in): \
                 voxel threshold from the pooled null of |z|, cluster-mass threshold from the largest null cluster mass per normal; \
                 achieved rates by a second (outer) leave-one-out",
                nulls.len()
            ),
            stale: false,
            channels,
            nulls,
            site_effects: None,
        })
    }

    /// The calibration after adding `null` (a new normal scored against the database without
    /// it), or `None` when the calibration keeps no null summaries to pool with.
    pub fn with_null(
        &self,
        null: SubjectNull,
        voxel_rate: f64,
        cluster_rate: f64,
    ) -> Option<CalibrationRecord> {
        if self.nulls.is_empty() {
            return None;
        }
        let mut nulls = self.nulls.clone();
        nulls.push(null);
        // The site effects stay those estimated at the build: re-estimating them needs every
        // calibration normal's z-map, which the database does not keep.
        let mut record = CalibrationRecord::from_nulls(nulls, voxel_rate, cluster_rate).ok()?;
        record.site_effects = self.site_effects.clone();
        Some(record)
    }
}

/// Names of atlas labels carried into template space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtlasTable {
    /// Atlas name.
    pub name: String,
    /// Source and licence.
    pub source: String,
    /// Label value and name.
    pub labels: Vec<(i32, String)>,
}

impl AtlasTable {
    /// Name of a label value, if known.
    pub fn label_name(&self, value: i32) -> Option<&str> {
        self.labels.iter().find(|(v, _)| *v == value).map(|(_, n)| n.as_str())
    }
}

/// A whole normative database in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct NormDb {
    /// Root metadata.
    pub metadata: Metadata,
    /// Brackets in configuration order.
    pub brackets: Vec<BracketDb>,
    /// Normal subjects.
    pub subjects: Vec<SubjectRecord>,
    /// Calibration, when computed.
    pub calibration: Option<CalibrationRecord>,
    /// Atlas label names, when labels are present.
    pub atlas: Option<AtlasTable>,
}

impl NormDb {
    /// Reads and validates a database.
    pub fn read(path: &std::path::Path) -> Result<NormDb, NormDbError> {
        hdf5_io::read(path)
    }

    /// Writes the database to `path` through a temporary sibling and a rename.
    pub fn write(&self, path: &std::path::Path) -> Result<(), NormDbError> {
        crate::atomic::write_atomically(path, |tmp| hdf5_io::write(self, tmp))
    }

    /// The bracket named `name`.
    pub fn bracket(&self, name: &str) -> Option<&BracketDb> {
        self.brackets.iter().find(|b| b.name == name)
    }

    /// Index of the bracket for a case of `age`: among brackets containing it the one whose
    /// centre is nearest, else the nearest bracket overall.
    pub fn bracket_for_age(&self, age: f64) -> usize {
        let distance = |b: &BracketDb| {
            let centre = 0.5 * (b.min_years + b.max_years);
            if b.contains(age) {
                (age - centre).abs()
            } else {
                1e6 + (age - b.min_years).abs().min((age - b.max_years).abs())
            }
        };
        (0..self.brackets.len())
            .min_by(|&a, &b| distance(&self.brackets[a]).total_cmp(&distance(&self.brackets[b])))
            .unwrap_or(0)
    }

    /// Merges `other` into a copy of `self`: same templates, masks, nodes and parameters are
    /// required; statistics are combined exactly (Chan), subjects concatenated (a pseudonym in
    /// both is refused, it would count twice) and the calibration recomputed from the union of
    /// both databases' null summaries (marked stale when either keeps none).
    pub fn merged(&self, other: &NormDb) -> Result<NormDb, NormDbError> {
        if self.metadata.parameters != other.metadata.parameters {
            return Err(NormDbError::Incompatible(format!(
                "build parameters differ: {:?} against {:?}",
                self.metadata.parameters, other.metadata.parameters
            )));
        }
        if self.brackets.len() != other.brackets.len() {
            return Err(NormDbError::Incompatible("different numbers of age brackets".into()));
        }
        for subject in &other.subjects {
            if self.subjects.iter().any(|s| s.pseudonym == subject.pseudonym) {
                return Err(NormDbError::Incompatible(format!(
                    "subject {} is in both databases",
                    subject.pseudonym
                )));
            }
        }
        let mut merged = self.clone();
        for (mine, theirs) in merged.brackets.iter_mut().zip(&other.brackets) {
            if mine.name != theirs.name || mine.template != theirs.template || mine.mask != theirs.mask {
                return Err(NormDbError::Incompatible(format!(
                    "bracket {} against {}: templates must be identical to merge statistics",
                    mine.name, theirs.name
                )));
            }
            for c in 0..2 {
                mine.stats[c].merge(&theirs.stats[c])?;
            }
        }
        merged.subjects.extend(other.subjects.iter().cloned());
        // Pool the null summaries of both; without them (schema version 1) the first
        // database's thresholds are kept and marked stale.
        let calibrated = |db: &NormDb| {
            db.calibration.as_ref().is_some_and(|c| {
                c.nulls.len() == db.subjects.iter().filter(|s| s.qc_passed).count() && !c.stale
            })
        };
        if calibrated(self) && calibrated(other) {
            let nulls = [self, other]
                .iter()
                .flat_map(|db| db.calibration.as_ref().expect("checked").nulls.iter().cloned())
                .collect();
            let p = &self.metadata.parameters;
            merged.calibration =
                Some(CalibrationRecord::from_nulls(nulls, p.voxel_rate, p.cluster_rate).map_err(|e| {
                    NormDbError::Incompatible(format!("calibration of the merged database: {e}"))
                })?);
        } else if let Some(calibration) = merged.calibration.as_mut() {
            calibration.stale = true;
        }
        merged.metadata.history.extend(other.metadata.history.iter().map(|h| format!("(merged) {h}")));
        merged.metadata.touch(&format!("merged {} + {} subjects", self.subjects.len(), other.subjects.len()));
        Ok(merged)
    }

    /// A human-readable summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let m = &self.metadata;
        let _ = writeln!(out, "schema {SCHEMA_NAME} v{SCHEMA_VERSION}, written by {}", m.software);
        let _ = writeln!(out, "created {}, modified {}", m.created_utc, m.modified_utc);
        let _ = writeln!(
            out,
            "smoothing FWHM {} mm, nominal voxel rate {}, cluster rate {}",
            m.parameters.smoothing_fwhm_mm, m.parameters.voxel_rate, m.parameters.cluster_rate
        );
        let _ = writeln!(out, "subjects: {}", self.subjects.len());
        for b in &self.brackets {
            let dims = b.template.grid().dims();
            let spacing = b.template.grid().spacing();
            let n = self.subjects.iter().filter(|s| s.bracket == b.name && s.qc_passed).count();
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
        match &self.calibration {
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
            }
            None => {
                let _ = writeln!(out, "calibration: none");
            }
        }
        if let Some(atlas) = &self.atlas {
            let _ = writeln!(out, "atlas: {} ({} labels)", atlas.name, atlas.labels.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_registration::Grid;
    use pedinorm_templates::stats::AgeNode;

    /// A tiny database: one 6×7×5 bracket, a box mask, a few subjects.
    pub(crate) fn tiny(seed: u32, subjects: usize) -> NormDb {
        let grid = Grid::axis_aligned([6, 7, 5], [2.0; 3], [-6.0, -7.0, -5.0]).unwrap();
        let template = Image::filled(grid.clone(), 0.0f32).map(|_| 0.0);
        let mut template = template;
        for (i, v) in template.as_mut_slice().iter_mut().enumerate() {
            *v = (i % 13) as f32 * 10.0;
        }
        let mut mask = Image::filled(grid.clone(), 0.0f32);
        for i in 1..5 {
            for j in 1..6 {
                for k in 1..4 {
                    mask.data_mut()[[i, j, k]] = 1.0;
                }
            }
        }
        let n = mask_indices(&mask).len();
        let nodes =
            vec![AgeNode { age_years: 5.0, sigma_years: 1.5 }, AgeNode { age_years: 8.0, sigma_years: 1.5 }];
        let mut stats = [
            NormativeAccumulator::new(nodes.clone(), n).unwrap(),
            NormativeAccumulator::new(nodes, n).unwrap(),
        ];
        let mut records = Vec::new();
        for s in 0..subjects {
            let age = 4.0 + (s as f64 * 0.37 + seed as f64) % 5.0;
            let sex = if s % 2 == 0 { Sex::Female } else { Sex::Male };
            let values: Vec<f32> =
                (0..n).map(|v| 100.0 + ((v * 7 + s * 13 + seed as usize) % 17) as f32).collect();
            let logjac: Vec<f32> = values.iter().map(|v| (v - 108.0) / 100.0).collect();
            stats[0].add_subject(age, sex, &values).unwrap();
            stats[1].add_subject(age, sex, &logjac).unwrap();
            records.push(SubjectRecord {
                pseudonym: format!("P{seed}-{s:03}"),
                age_years: age,
                sex,
                scanner: "synthetic-3T".into(),
                bracket: "4-9y".into(),
                qc_similarity: 0.9,
                qc_histogram_distance: 0.02,
                qc_mask_dice: 0.95,
                qc_passed: true,
            });
        }
        // Null summaries of small made-up z-maps, one per subject.
        let nulls: Vec<SubjectNull> = records
            .iter()
            .enumerate()
            .map(|(s, r)| {
                let z = ndarray::Array3::from_shape_fn((4, 4, 3), |(i, j, k)| {
                    ((i * 5 + j * 3 + k + s + seed as usize) % 9) as f32 * 0.6 - 2.4
                });
                let summary = NullSummary::from_map(&z, None);
                SubjectNull { pseudonym: r.pseudonym.clone(), channels: [summary.clone(), summary] }
            })
            .collect();
        let parameters = BuildParameters {
            smoothing_fwhm_mm: 4.0,
            field_sigma_mm: 4.0,
            jacobian_refinement: Some(crate::pipeline::normative::JacobianRefinement::standard()),
            differential_bias_sigma_mm: Some(15.0),
            normative: NormativeParams::default(),
            voxel_rate: 0.01,
            cluster_rate: 0.2,
            intensity_normalization: "test".into(),
            registration: "test".into(),
        };
        let mut labels = Image::filled(grid, 0.0f32);
        labels.data_mut()[[2, 2, 2]] = 7.0;
        NormDb {
            metadata: Metadata::new(parameters, "built for a test"),
            brackets: vec![BracketDb {
                name: "4-9y".into(),
                min_years: 4.0,
                max_years: 9.0,
                template,
                mask,
                labels: Some(labels),
                stats,
            }],
            subjects: records,
            calibration: Some(CalibrationRecord::from_nulls(nulls, 0.01, 0.2).unwrap()),
            atlas: Some(AtlasTable {
                name: "toy".into(),
                source: "test".into(),
                labels: vec![(7, "seven".into())],
            }),
        }
    }

    #[test]
    fn write_read_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.h5");
        let db = tiny(1, 9);
        db.write(&path).unwrap();
        let back = NormDb::read(&path).unwrap();
        assert_eq!(back, db);
        // Only the database is left in the folder (no temporary file).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(db.summary().contains("bracket 4-9y"));
    }

    #[test]
    fn merge_refuses_duplicates_and_different_templates() {
        let a = tiny(1, 5);
        assert!(matches!(a.merged(&a), Err(NormDbError::Incompatible(_))));
        let mut b = tiny(2, 5);
        b.brackets[0].template.as_mut_slice()[0] = 99.0;
        assert!(matches!(a.merged(&b), Err(NormDbError::Incompatible(_))));
        let c = tiny(2, 5);
        let merged = a.merged(&c).unwrap();
        assert_eq!(merged.subjects.len(), 10);
        // Both keep null summaries: the merged calibration is recomputed from all ten, in
        // pseudonym order, whichever database comes first.
        let calibration = merged.calibration.as_ref().unwrap();
        assert!(!calibration.stale);
        assert_eq!(calibration.nulls.len(), 10);
        assert_eq!(calibration.channels[0].cluster.max_mass_per_subject.len(), 10);
        assert_eq!(c.merged(&a).unwrap().calibration, merged.calibration);
        // Without null summaries (schema version 1) the thresholds are kept, marked stale.
        let mut old = tiny(3, 5);
        old.calibration.as_mut().unwrap().nulls.clear();
        assert!(old.merged(&c).unwrap().calibration.unwrap().stale);
    }

    #[test]
    fn unreadable_or_foreign_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.h5");
        assert!(NormDb::read(&missing).unwrap_err().to_string().contains("none.h5"));
        let junk = dir.path().join("junk.h5");
        std::fs::write(&junk, b"not hdf5").unwrap();
        assert!(NormDb::read(&junk).unwrap_err().to_string().contains("junk.h5"));
        // A valid HDF5 file without the schema attribute.
        let foreign = dir.path().join("foreign.h5");
        hdf5::File::create(&foreign).unwrap();
        let error = NormDb::read(&foreign).unwrap_err().to_string();
        assert!(error.contains("schema"), "{error}");
    }

    #[test]
    fn failed_write_keeps_the_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.h5");
        let db = tiny(1, 4);
        db.write(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let mut bad = tiny(1, 4);
        // A NUL byte cannot be stored in an HDF5 string: the write fails midway.
        bad.subjects[0].pseudonym = "bad\0name".into();
        assert!(bad.write(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
