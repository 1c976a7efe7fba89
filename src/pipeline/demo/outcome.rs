//! What a demo run reports: each case compared with its known truth, the calibration of every
//! channel, and the false positives at a site the database has never seen.

use crate::pipeline::deviation::{ClusterReport, DeviationResult};
use crate::pipeline::held_out::HeldOutFigures;
use pedinorm_registration::Image;
use pedinorm_templates::model::{Channel, NormativeDb};
use pedinorm_validation::SyntheticSubject;
use pedinorm_validation::scoring::lesion_auc;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    /// Synthetic id.
    pub id: String,
    /// Kind of abnormality.
    pub kind: String,
    /// Age (years).
    pub age_years: f64,
    /// Scanner site of the case.
    pub site: String,
    /// Truth volume (ml) on the case grid.
    pub truth_volume_ml: f64,
    /// Voxelwise AUC of the larger |z| of the two channels for the truth region against the
    /// rest of the brain (case grid).
    pub voxel_auc: f64,
    /// A significant cluster overlaps the truth region.
    pub detected: bool,
    /// The largest significant cluster overlapping the truth.
    pub matching_cluster: Option<ClusterReport>,
    /// Channels (and directions) of every significant cluster overlapping the truth.
    pub matching_channels: Vec<String>,
    /// Significant clusters not overlapping the truth.
    pub other_significant_clusters: usize,
    /// Folder of the outputs.
    pub out_dir: PathBuf,
    /// Wall time of the deviation computation (s).
    pub seconds: f64,
}

/// The outcome of a demo run.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The database.
    pub normdb: PathBuf,
    /// Cases.
    pub cases: Vec<CaseOutcome>,
    /// Calibration per channel.
    pub calibration: Vec<ChannelCalibrationSummary>,
    /// False positives on normals of a site the database has never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOutFigures>,
    /// Cases of that unseen site.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_out_cases: Vec<CaseOutcome>,
    /// Seconds per phase.
    pub timings: Vec<(String, f64)>,
}

/// What the demo reports of one channel's calibration.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelCalibrationSummary {
    /// Channel name.
    pub channel: String,
    /// Voxel |z| threshold.
    pub z_threshold: f64,
    /// Nominal voxel false-positive rate.
    pub nominal_voxel_rate: f64,
    /// Achieved voxel rate on held-out normals.
    pub achieved_voxel_rate: f64,
    /// A cluster is significant when its mass Σ(|z| − t) exceeds this.
    pub cluster_mass_threshold: f64,
    /// Share of held-out normals with a significant cluster.
    pub achieved_cluster_rate: f64,
}

/// The calibration of every channel of `db` (none when it has no calibration).
pub(super) fn calibration_summary(db: &NormativeDb) -> Vec<ChannelCalibrationSummary> {
    let Some(calibration) = db.calibration.as_ref() else { return Vec::new() };
    Channel::ALL
        .iter()
        .map(|&channel| {
            let thresholds = calibration.channel(channel);
            ChannelCalibrationSummary {
                channel: channel.name().to_owned(),
                z_threshold: thresholds.voxel.z_threshold,
                nominal_voxel_rate: thresholds.voxel.nominal_rate,
                achieved_voxel_rate: thresholds.voxel.achieved_rate,
                cluster_mass_threshold: thresholds.cluster.mass_threshold,
                achieved_cluster_rate: thresholds.cluster.achieved_rate,
            }
        })
        .collect()
}

/// Compares the significant clusters of a case (on its own grid) with its truth region.
pub fn compare_with_truth(
    subject: &SyntheticSubject,
    result: &DeviationResult,
    out_dir: PathBuf,
    seconds: f64,
) -> CaseOutcome {
    let truth: Option<&Image<f32>> = subject.truth.lesion_mask.as_ref();
    let labels = result.clusters_native.as_slice();
    let mut overlapping = BTreeSet::new();
    let mut truth_voxels = 0usize;
    if let Some(t) = truth {
        for (&l, &m) in labels.iter().zip(t.as_slice()) {
            if m > 0.5 {
                truth_voxels += 1;
                if l > 0.5 {
                    overlapping.insert(l.round() as u32);
                }
            }
        }
    }
    let voxel_ml = subject.image.grid().linear().determinant().abs() / 1000.0;
    let score: Vec<f32> = result.z_native[0]
        .as_slice()
        .iter()
        .zip(result.z_native[1].as_slice())
        .map(|(a, b)| a.abs().max(b.abs()))
        .collect();
    let voxel_auc = match truth {
        Some(t) => lesion_auc(&score, t.as_slice(), subject.truth.labels.as_slice()),
        None => f64::NAN,
    };
    let significant: Vec<&ClusterReport> = result.clusters.iter().filter(|c| c.significant).collect();
    let matching = significant
        .iter()
        .filter(|c| overlapping.contains(&c.label))
        .max_by_key(|c| c.size_voxels)
        .map(|c| (*c).clone());
    CaseOutcome {
        id: subject.id.clone(),
        kind: subject.truth.kind.as_str().to_owned(),
        age_years: subject.age_years,
        site: subject.site.clone(),
        truth_volume_ml: truth_voxels as f64 * voxel_ml,
        voxel_auc,
        detected: matching.is_some(),
        other_significant_clusters: significant.iter().filter(|c| !overlapping.contains(&c.label)).count(),
        matching_cluster: matching,
        matching_channels: significant
            .iter()
            .filter(|c| overlapping.contains(&c.label))
            .map(|c| format!("{} {}", c.channel, c.direction))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        out_dir,
        seconds,
    }
}
