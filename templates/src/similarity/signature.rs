//! A case's signature: what its deviation result says, reduced to numbers that can be compared
//! between cases of any age.
//!
//! Every number comes from the template space of the case's own age: z-scores against the
//! age- and sex-matched normals, per atlas region (the atlas is carried to each bracket's
//! template, so a region means the same anatomy at two years and at twelve), cluster peaks in
//! template millimetres, and regional volumes as centile z at the case's age. Age itself is
//! kept only to be shown and for the age-only baseline; it takes no part in the similarity.

use crate::centiles::PlacedMeasure;
use crate::model::case_local_volume::LocalVolumeFinding;
use crate::model::score::{ClusterReport, DeviationResult, RegionReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The four numbers kept per atlas region, in this order. A fraction of voxels beyond threshold
/// carries the sign of the region's mean z, so a region beyond the normals in opposite
/// directions in two cases counts against their similarity rather than for it.
pub const REGION_FEATURES: [&str; 4] = [
    "intensity_mean_z",
    "intensity_signed_fraction_beyond",
    "logjac_mean_z",
    "logjac_signed_fraction_beyond",
];

/// Significant clusters kept per channel and direction (the heaviest): a handful describe a
/// pattern, and a bound keeps a query over many signatures fast.
pub const MAX_CLUSTERS_PER_KIND: usize = 6;

/// A channel and a direction of deviation: the four kinds of cluster, and the two kinds of
/// local volume finding (focal atrophy shows as these, seldom as voxel clusters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ClusterKind {
    /// Brighter than the normals.
    IntensityAbove,
    /// Darker than the normals.
    IntensityBelow,
    /// Locally larger (e.g. enlarged ventricles).
    LogjacAbove,
    /// Locally smaller (e.g. atrophy).
    LogjacBelow,
    /// Local volume above the calibrated limit over a neighbourhood (e.g. enlarged CSF spaces).
    LocalVolumeGain,
    /// Local volume below the calibrated limit over a neighbourhood (focal atrophy).
    LocalVolumeLoss,
}

impl ClusterKind {
    /// The kind of a reported cluster; `None` for a channel this version does not know.
    pub fn of(cluster: &ClusterReport) -> Option<ClusterKind> {
        let above = cluster.peak_z > 0.0;
        match (cluster.channel.as_str(), above) {
            ("intensity", true) => Some(ClusterKind::IntensityAbove),
            ("intensity", false) => Some(ClusterKind::IntensityBelow),
            ("logjac", true) => Some(ClusterKind::LogjacAbove),
            ("logjac", false) => Some(ClusterKind::LogjacBelow),
            _ => None,
        }
    }
}

/// A significant cluster or a local volume finding as the signature keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClusterPoint {
    /// Channel and direction.
    pub kind: ClusterKind,
    /// Peak position in template world coordinates (mm, RAS+).
    pub peak_template_mm: [f64; 3],
    /// Weight: `ln(1 + mass)` with a cluster's mass `Σ(|z| − threshold)`, or
    /// `ln(1 + |peak score| · volume ml)` for a local volume finding, so extent and height both
    /// count and one huge finding does not drown every other.
    pub weight: f64,
}

/// A case's signature (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Age at scan (years): shown with a match, not compared.
    pub age_years: f64,
    /// Per atlas region (by name) the [`REGION_FEATURES`].
    pub regions: BTreeMap<String, [f64; 4]>,
    /// The heaviest significant clusters and local volume findings of each kind.
    pub clusters: Vec<ClusterPoint>,
    /// Regional measures (by name) as centile z; empty when the database has no centile models.
    pub centiles: BTreeMap<String, f64>,
}

/// Why a signature cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    /// A number of the result is not finite.
    #[error("{field}: {value} is not a finite number")]
    NotFinite {
        /// The field, e.g. `regions[Genu of corpus callosum].logjac_mean_z`.
        field: String,
        /// The value.
        value: f64,
    },
}

impl Signature {
    /// The signature of a deviation result: its age, region table, clusters (significant ones
    /// only), local volume findings and placed regional measures.
    pub fn from_findings(
        age_years: f64,
        regions: &[RegionReport],
        clusters: &[ClusterReport],
        local_volume: &[LocalVolumeFinding],
        centiles: &[PlacedMeasure],
    ) -> Result<Signature, SignatureError> {
        finite("age_years", age_years)?;
        let mut region_map = BTreeMap::new();
        for region in regions {
            let signed = |fraction: f64, mean_z: f64| if mean_z < 0.0 { -fraction } else { fraction };
            let values = [
                region.intensity_mean_z,
                signed(region.intensity_fraction_beyond, region.intensity_mean_z),
                region.logjac_mean_z,
                signed(region.logjac_fraction_beyond, region.logjac_mean_z),
            ];
            for (name, value) in REGION_FEATURES.iter().zip(values) {
                finite(&format!("regions[{}].{name}", region.name), value)?;
            }
            region_map.insert(region.name.clone(), values);
        }
        let mut points = Vec::new();
        for (i, cluster) in clusters.iter().enumerate().filter(|(_, c)| c.significant) {
            let Some(kind) = ClusterKind::of(cluster) else { continue };
            let weight = cluster.mass.max(0.0).ln_1p();
            let numbers = [("mass", cluster.mass)];
            points.push(checked_point(
                &format!("clusters[{i}]"),
                kind,
                cluster.peak_template_mm,
                &numbers,
                weight,
            )?);
        }
        for (i, finding) in local_volume.iter().enumerate() {
            let kind = if finding.peak_score < 0.0 {
                ClusterKind::LocalVolumeLoss
            } else {
                ClusterKind::LocalVolumeGain
            };
            let weight = (finding.peak_score.abs() * finding.volume_ml.max(0.0)).ln_1p();
            let numbers = [("peak_score", finding.peak_score), ("volume_ml", finding.volume_ml)];
            let field = format!("local_volume.findings[{i}]");
            points.push(checked_point(&field, kind, finding.peak_template_mm, &numbers, weight)?);
        }
        // Heaviest first within each kind, then keep the bound.
        points.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.weight.total_cmp(&a.weight)));
        let mut kept: Vec<ClusterPoint> = Vec::with_capacity(points.len());
        for point in points {
            if kept.iter().filter(|p| p.kind == point.kind).count() < MAX_CLUSTERS_PER_KIND {
                kept.push(point);
            }
        }
        let mut centile_map = BTreeMap::new();
        for measure in centiles {
            finite(&format!("regional.centiles[{}].z", measure.measure), measure.z)?;
            centile_map.insert(measure.measure.clone(), measure.z);
        }
        Ok(Signature { age_years, regions: region_map, clusters: kept, centiles: centile_map })
    }

    /// The signature of a deviation result in memory (what `report.json` holds of it).
    pub fn of_result(result: &DeviationResult) -> Result<Signature, SignatureError> {
        let centiles = result.regional.as_ref().map_or(&[][..], |r| &r.centiles[..]);
        let local_volume = result.local_volume.as_ref().map_or(&[][..], |l| &l.findings[..]);
        Signature::from_findings(result.age_years, &result.regions, &result.clusters, local_volume, centiles)
    }
}

/// A point of `kind` at `peak` once its numbers are checked (named under `field`).
fn checked_point(
    field: &str,
    kind: ClusterKind,
    peak: [f64; 3],
    numbers: &[(&str, f64)],
    weight: f64,
) -> Result<ClusterPoint, SignatureError> {
    for (name, value) in numbers {
        finite(&format!("{field}.{name}"), *value)?;
    }
    for (axis, value) in peak.iter().enumerate() {
        finite(&format!("{field}.peak_template_mm[{axis}]"), *value)?;
    }
    Ok(ClusterPoint { kind, peak_template_mm: peak, weight })
}

fn finite(field: &str, value: f64) -> Result<(), SignatureError> {
    if value.is_finite() { Ok(()) } else { Err(SignatureError::NotFinite { field: field.to_owned(), value }) }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn region(name: &str, intensity_z: f64, logjac_z: f64) -> RegionReport {
        RegionReport {
            label: 1,
            name: name.into(),
            voxels: 100,
            intensity_mean_z: intensity_z,
            intensity_fraction_beyond: (intensity_z.abs() / 10.0).min(1.0),
            logjac_mean_z: logjac_z,
            logjac_fraction_beyond: (logjac_z.abs() / 10.0).min(1.0),
        }
    }

    pub(crate) fn cluster(
        channel: &str,
        peak_z: f32,
        mass: f64,
        at: [f64; 3],
        significant: bool,
    ) -> ClusterReport {
        ClusterReport {
            channel: channel.into(),
            label: 1,
            direction: if peak_z > 0.0 { "above" } else { "below" }.into(),
            size_voxels: 10,
            volume_mm3: 80.0,
            peak_z,
            mean_z: peak_z / 2.0,
            mass,
            peak_template_mm: at,
            peak_native_mm: at,
            region: None,
            significant,
            caveat: None,
        }
    }

    #[test]
    fn keeps_significant_clusters_by_kind_heaviest_first() {
        let mut clusters: Vec<ClusterReport> =
            (0..9).map(|i| cluster("intensity", 5.0, 10.0 + i as f64, [i as f64, 0.0, 0.0], true)).collect();
        clusters.push(cluster("logjac", -4.0, 50.0, [0.0, 1.0, 0.0], true));
        clusters.push(cluster("logjac", 4.0, 500.0, [0.0, 2.0, 0.0], false));
        let s = Signature::from_findings(6.5, &[region("A", 1.0, -2.0)], &clusters, &[], &[]).unwrap();
        let intensity: Vec<&ClusterPoint> =
            s.clusters.iter().filter(|p| p.kind == ClusterKind::IntensityAbove).collect();
        assert_eq!(intensity.len(), MAX_CLUSTERS_PER_KIND);
        assert_eq!(intensity[0].weight, 18f64.ln_1p());
        assert!(intensity.windows(2).all(|w| w[0].weight >= w[1].weight));
        assert_eq!(s.clusters.iter().filter(|p| p.kind == ClusterKind::LogjacBelow).count(), 1);
        assert!(s.clusters.iter().all(|p| p.kind != ClusterKind::LogjacAbove), "not significant: left out");
        assert_eq!(s.regions["A"], [1.0, 0.1, -2.0, -0.2]);
    }

    #[test]
    fn local_volume_findings_are_points_of_their_own_kind() {
        let finding = |score: f64| LocalVolumeFinding {
            direction: if score < 0.0 { "loss" } else { "gain" }.into(),
            peak_score: score,
            volume_ml: 3.0,
            peak_template_mm: [0.0, -50.0, -20.0],
            peak_native_mm: [0.0; 3],
            region: None,
            caveat: None,
        };
        let s = Signature::from_findings(9.0, &[], &[], &[finding(-4.0), finding(5.0)], &[]).unwrap();
        let kinds: Vec<ClusterKind> = s.clusters.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec![ClusterKind::LocalVolumeGain, ClusterKind::LocalVolumeLoss]);
        assert_eq!(s.clusters[1].weight, 12f64.ln_1p());
    }

    #[test]
    fn a_number_that_is_not_finite_is_named() {
        let error =
            Signature::from_findings(3.0, &[region("Fornix", f64::NAN, 0.0)], &[], &[], &[]).unwrap_err();
        assert!(error.to_string().starts_with("regions[Fornix].intensity_mean_z"), "{error}");
        let error = Signature::from_findings(f64::INFINITY, &[], &[], &[], &[]).unwrap_err();
        assert!(error.to_string().starts_with("age_years"), "{error}");
    }
}
