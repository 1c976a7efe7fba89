//! The normative database as a value: templates, voxelwise statistics, subjects, calibration
//! and provenance of every age bracket. `pedinorm`'s `normdb` module reads and writes it as
//! HDF5 (layout in `docs/normdb.md`); everything here is in memory.

use crate::age::{AgeRange, nearest_bracket};
use crate::calibration::{
    CalibrationError, ClusterCalibration, LocalVolumeCalibration, LocalVolumeNull, NullSummary,
    VoxelCalibration, calibrate_channel,
};
use crate::normative::NormativeParams;
use crate::site_effects::{SiteEffects, SiteMoments};
use crate::stats::{NormativeAccumulator, Sex, StatsError};
use pedinorm_registration::Image;
use serde::{Deserialize, Serialize};

/// Why two databases, or a database and a subject, cannot be combined.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// Two databases or a database and a subject do not fit together.
    #[error("incompatible: {0}")]
    Incompatible(String),
    /// A statistics update failed.
    #[error("statistics: {0}")]
    Stats(#[from] StatsError),
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
    /// How every subject was mapped to its template; a case or a new normal is mapped with
    /// exactly these settings. Stored flat beside the other fields (files written before the
    /// registration settings and the bias correction were recorded get their standard values).
    #[serde(flatten)]
    pub mapping: super::mapping::MappingParams,
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
    /// Metadata of a new database built at `now_utc` (RFC 3339; the caller reads the clock).
    pub fn new(parameters: BuildParameters, first_entry: &str, now_utc: &str) -> Self {
        Self {
            software: software(),
            created_utc: now_utc.to_owned(),
            modified_utc: now_utc.to_owned(),
            parameters,
            history: vec![format!("{now_utc} {first_entry}")],
        }
    }

    /// Records an operation done at `now_utc` in the history and the modification time.
    pub fn touch(&mut self, entry: &str, now_utc: &str) {
        self.history.push(format!("{now_utc} {entry}"));
        self.modified_utc = now_utc.to_owned();
        self.software = software();
    }
}

/// `pedinorm <version>`.
pub fn software() -> String {
    format!("pedinorm {}", env!("CARGO_PKG_VERSION"))
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
    /// Tissue prior maps built from the bracket's normals (`None`: no QC-passed normal, or a
    /// database written before priors were kept).
    pub priors: Option<super::tissue_priors::TissuePriors>,
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

impl AgeRange for BracketDb {
    fn min_years(&self) -> f64 {
        self.min_years
    }
    fn max_years(&self) -> f64 {
        self.max_years
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
    /// Extremes of the log-Jacobian z averaged over neighbourhoods (None: the database was
    /// calibrated before local volume change was read).
    pub local_volume: Option<LocalVolumeNull>,
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
    /// Per channel, the calibration normals' site moments the effects were estimated from
    /// (empty: the site model was off, or the database predates them); an added normal or a
    /// merged database re-estimates the effects from them.
    #[serde(skip)]
    pub site_moments: Vec<SiteMoments>,
    /// The limit on local volume change (the log-Jacobian z averaged over neighbourhoods),
    /// when every calibration normal has its summary.
    #[serde(default)]
    pub local_volume: Option<LocalVolumeCalibration>,
}

impl CalibrationRecord {
    /// The calibration of one channel.
    pub fn channel(&self, channel: Channel) -> &ChannelCalibration {
        &self.channels[channel.index()]
    }

    /// What the family-wise limits cannot promise because the calibration normals are too few
    /// (cluster thresholds per channel, the local-volume limit), one sentence each.
    pub fn shortfalls(&self) -> Vec<String> {
        Channel::ALL
            .iter()
            .filter_map(|&channel| self.channel(channel).cluster.shortfall(channel.name()))
            .chain(self.local_volume.as_ref().and_then(|l| l.shortfall()))
            .collect()
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
        let local_volume = nulls
            .iter()
            .map(|n| n.local_volume.as_ref())
            .collect::<Option<Vec<_>>>()
            .and_then(|summaries| LocalVolumeCalibration::calibrate(&summaries));
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
            site_moments: Vec::new(),
            local_volume,
        })
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
pub struct NormativeDb {
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
    /// Regional volumes of the QC-passed normals (`None`: a database written before they were
    /// kept, or merged from one).
    pub regional: Option<super::regional::RegionalTable>,
    /// Growth-chart centile models of the regional measures, fitted on `regional` (`None`
    /// without a table or with too few normals).
    pub centiles: Option<crate::centiles::CentileSet>,
}

impl NormativeDb {
    /// The bracket named `name`.
    pub fn bracket(&self, name: &str) -> Option<&BracketDb> {
        self.brackets.iter().find(|b| b.name == name)
    }

    /// Index of the bracket for a case of `age`: among brackets containing it the one whose
    /// centre is nearest, else the nearest bracket overall.
    pub fn bracket_for_age(&self, age: f64) -> usize {
        nearest_bracket(&self.brackets, age).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::MappingParams;
    use super::super::testing::tiny;
    use super::BuildParameters;

    #[test]
    fn parameters_without_the_mapping_fields_read_as_older_databases_were_built() {
        let stored = tiny(1, 3).metadata.parameters;
        let mut json = serde_json::to_value(&stored).unwrap();
        // Files written before the registration settings were recorded.
        for key in ["bias_correction", "affine_iterations", "deformable_iterations"] {
            json.as_object_mut().unwrap().remove(key).expect(key);
        }
        let read: BuildParameters = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read, stored);
        assert_eq!(read.mapping.affine_iterations, MappingParams::standard().affine_iterations);
        assert!(read.mapping.bias_correction);
        // Files written before the field smoothness, the refinement and the differential bias.
        for key in ["deformation_smoothness_mm", "jacobian_refinement", "differential_bias_sigma_mm"] {
            json.as_object_mut().unwrap().remove(key).expect(key);
        }
        let oldest: BuildParameters = serde_json::from_value(json).unwrap();
        assert_eq!(oldest.mapping.field_sigma_mm, 4.0);
        assert_eq!(oldest.mapping.jacobian_refinement, None);
        assert_eq!(oldest.mapping.differential_bias_sigma_mm, None);
        assert_eq!(oldest.mapping.smoothing_fwhm_mm, stored.mapping.smoothing_fwhm_mm);
    }

    #[test]
    fn the_mapping_parameters_are_stored_whole() {
        let mut stored = tiny(1, 3).metadata.parameters;
        stored.mapping.affine_iterations = vec![3, 2, 1];
        stored.mapping.deformable_iterations = vec![2, 1, 0];
        stored.mapping.bias_correction = false;
        let json = serde_json::to_string(&stored).unwrap();
        let read: BuildParameters = serde_json::from_str(&json).unwrap();
        assert_eq!(read, stored);
    }
}
