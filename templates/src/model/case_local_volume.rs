//! A case's local volume change: its log-Jacobian z-map averaged over neighbourhoods of focal
//! atrophy's size and read against the limit calibrated on the leave-one-out normals (see
//! [`crate::calibration::LocalVolumeCalibration`]). Each connected region beyond the limit is
//! one finding: a loss (atrophy) or a gain (enlarged CSF spaces), with its peak and volume.

use serde::{Deserialize, Serialize};

use super::database::{BracketDb, NormativeDb};
use crate::calibration::{LocalVolumeCalibration, find_clusters};
use pedinorm_registration::{Image, SpatialTransform};

/// One region whose local volume lies beyond the calibrated limit (read back from `report.json`
/// by the similar-case signature).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalVolumeFinding {
    /// `loss` (less volume than the normals: atrophy) or `gain`.
    pub direction: String,
    /// Standardized neighbourhood mean at the peak (negative for a loss).
    pub peak_score: f64,
    /// Volume beyond the limit (ml, template space).
    pub volume_ml: f64,
    /// Peak in template world coordinates (mm).
    pub peak_template_mm: [f64; 3],
    /// Peak in the case's world coordinates (mm).
    pub peak_native_mm: [f64; 3],
    /// Atlas region at the peak, if any.
    pub region: Option<String>,
    /// Why the finding may not be trusted (an unreliable comparison).
    #[serde(default)]
    pub caveat: Option<String>,
}

/// The local-volume part of a deviation result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseLocalVolume {
    /// |standardized mean| beyond which a neighbourhood is called.
    pub limit: f64,
    /// Share of normals with a call anywhere that the limit was calibrated for.
    pub family_rate: f64,
    /// Neighbourhood widths (σ, mm).
    pub sigmas_mm: Vec<f64>,
    /// The case's lowest standardized neighbourhood mean (its strongest local loss).
    pub lowest_score: f64,
    /// The case's highest standardized neighbourhood mean (its strongest local gain).
    pub highest_score: f64,
    /// Regions beyond the limit, strongest first.
    pub findings: Vec<LocalVolumeFinding>,
    /// The standardized map on the template grid.
    #[serde(skip)]
    pub map_template: Image<f32>,
}

impl CaseLocalVolume {
    /// The strongest loss called, if any.
    pub fn strongest_loss(&self) -> Option<&LocalVolumeFinding> {
        self.findings.iter().find(|f| f.direction == "loss")
    }
}

/// Reads the case's (site-corrected) log-Jacobian z-map on the template grid against the
/// calibration; `to_case` carries template world points to the case's.
pub fn case_local_volume(
    db: &NormativeDb,
    bracket: &BracketDb,
    calibration: &LocalVolumeCalibration,
    logjac_z: &Image<f32>,
    to_case: &dyn SpatialTransform,
) -> CaseLocalVolume {
    let map = calibration.score_map(logjac_z, &bracket.mask);
    let grid = map.grid();
    let spacing = grid.spacing();
    let voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0;
    let mask = bracket.mask.data().mapv(|v| v > 0.5);
    let (lowest, highest) = map.as_slice().iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (found, _) = find_clusters(map.data(), Some(&mask), calibration.limit as f32);
    let mut findings: Vec<LocalVolumeFinding> = found
        .iter()
        .map(|c| {
            let peak_template = grid.voxel_to_world(c.peak_voxel.map(|v| v as f64));
            let region = bracket.labels.as_ref().and_then(|l| {
                let value = l.data()[c.peak_voxel].round() as i32;
                db.atlas.as_ref().and_then(|a| a.label_name(value)).map(str::to_owned)
            });
            LocalVolumeFinding {
                direction: if c.sign < 0 { "loss".into() } else { "gain".into() },
                peak_score: f64::from(c.peak_z),
                volume_ml: c.size_voxels as f64 * voxel_ml,
                peak_template_mm: peak_template,
                peak_native_mm: to_case.transform_point(peak_template),
                region,
                caveat: None,
            }
        })
        .collect();
    findings.sort_by(|a, b| b.peak_score.abs().total_cmp(&a.peak_score.abs()));
    CaseLocalVolume {
        limit: calibration.limit,
        family_rate: calibration.family_rate,
        sigmas_mm: calibration.sigmas_mm.clone(),
        lowest_score: f64::from(lowest),
        highest_score: f64::from(highest),
        findings,
        map_template: map,
    }
}
