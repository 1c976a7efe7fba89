//! False positives on normals the database has never seen: each is scored exactly as a case
//! would be, and every voxel beyond the calibrated threshold, every significant cluster and
//! every "unreliable" verdict is a false alarm. Run on normals of another scanner site, this is
//! the figure a network adding a new centre needs, and the leave-one-out calibration inside
//! the database cannot give it.

use super::deviation::{DeviationError, DeviationOptions, compute_deviation};
use pedinorm_registration::Image;
use pedinorm_templates::model::{Channel, NormativeDb};
use pedinorm_templates::stats::Sex;
use serde::Serialize;

/// A normal subject held out of the database.
pub struct HeldOutNormal<'a> {
    /// Label used in the figures (a pseudonym).
    pub id: String,
    /// Age at scan (years).
    pub age_years: f64,
    /// Sex, when known.
    pub sex: Option<Sex>,
    /// Scanner or site label.
    pub site: String,
    /// The image on its own grid.
    pub image: &'a Image<f32>,
}

/// What one held-out normal produced.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOutOutcome {
    /// Label of the normal.
    pub id: String,
    /// Age (years).
    pub age_years: f64,
    /// Site label.
    pub site: String,
    /// Bracket whose template scored it.
    pub bracket: String,
    /// Share of template-mask voxels beyond the calibrated |z| threshold, per channel
    /// ([`Channel::ALL`] order).
    pub voxel_rate: Vec<f64>,
    /// Significant clusters (any channel); every one is a false positive.
    pub significant_clusters: usize,
    /// The safeguards called the comparison unreliable.
    pub flagged_unreliable: bool,
}

/// False-positive figures over a set of held-out normals.
#[derive(Debug, Clone, Serialize)]
pub struct HeldOutFigures {
    /// Sites of the held-out normals.
    pub sites: Vec<String>,
    /// Per channel: name, nominal voxel rate, mean achieved voxel rate.
    pub voxel_rates: Vec<ChannelRate>,
    /// Nominal per-image cluster rate of the database's calibration.
    pub nominal_cluster_rate: f64,
    /// Share of held-out normals with at least one significant cluster.
    pub cluster_rate: f64,
    /// Share of held-out normals the safeguards flagged as unreliable.
    pub flagged_rate: f64,
    /// Every normal's outcome.
    pub normals: Vec<HeldOutOutcome>,
}

/// Nominal and achieved voxelwise false-positive rate of one channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelRate {
    /// `intensity` or `logjac`.
    pub channel: String,
    /// The rate the thresholds were calibrated for.
    pub nominal: f64,
    /// Mean share of voxels beyond threshold over the held-out normals.
    pub achieved: f64,
}

impl HeldOutFigures {
    /// Achieved over nominal voxel rate of `channel` (1: as calibrated).
    pub fn voxel_ratio(&self, channel: Channel) -> f64 {
        let rate = &self.voxel_rates[channel.index()];
        rate.achieved / rate.nominal
    }
}

/// Scores every normal of `normals` against `db` with `options` (age and sex are taken from
/// each normal) and gathers the false-positive figures. `on_done` is called after each normal.
pub fn score_held_out(
    db: &NormativeDb,
    normals: &[HeldOutNormal<'_>],
    options: &DeviationOptions,
    on_done: &dyn Fn(&HeldOutOutcome),
) -> Result<HeldOutFigures, DeviationError> {
    if normals.is_empty() {
        return Err(DeviationError::Model("no held-out normals to score".into()));
    }
    let mut outcomes = Vec::with_capacity(normals.len());
    let mut nominal_voxel = vec![f64::NAN; Channel::ALL.len()];
    let mut nominal_cluster = f64::NAN;
    for normal in normals {
        let options = DeviationOptions {
            age_years: normal.age_years,
            sex: normal.sex,
            site: Some(normal.site.clone()),
            ..options.clone()
        };
        let result = compute_deviation(db, normal.image, &options)?;
        let bracket = db
            .brackets
            .iter()
            .find(|b| b.name == result.bracket)
            .ok_or_else(|| DeviationError::Model(format!("bracket {} vanished", result.bracket)))?;
        let mask = bracket.mask.as_slice();
        let inside = mask.iter().filter(|&&m| m > 0.5).count().max(1) as f64;
        let mut voxel_rate = Vec::with_capacity(Channel::ALL.len());
        for channel in Channel::ALL {
            let threshold = &result.thresholds[channel.index()];
            nominal_voxel[channel.index()] = threshold.nominal_voxel_rate;
            nominal_cluster = threshold.nominal_cluster_rate;
            let z = result.z_template[channel.index()].as_slice();
            let beyond = z
                .iter()
                .zip(mask)
                .filter(|&(&v, &m)| m > 0.5 && f64::from(v.abs()) > threshold.z_threshold)
                .count();
            voxel_rate.push(beyond as f64 / inside);
        }
        let outcome = HeldOutOutcome {
            id: normal.id.clone(),
            age_years: normal.age_years,
            site: normal.site.clone(),
            bracket: result.bracket.clone(),
            voxel_rate,
            significant_clusters: result.clusters.iter().filter(|c| c.significant).count(),
            flagged_unreliable: !result.reliability.reliable,
        };
        on_done(&outcome);
        outcomes.push(outcome);
    }
    let n = outcomes.len() as f64;
    let share =
        |pred: &dyn Fn(&HeldOutOutcome) -> bool| outcomes.iter().filter(|o| pred(o)).count() as f64 / n;
    let mut sites: Vec<String> = outcomes.iter().map(|o| o.site.clone()).collect();
    sites.sort();
    sites.dedup();
    Ok(HeldOutFigures {
        sites,
        voxel_rates: Channel::ALL
            .iter()
            .map(|&channel| ChannelRate {
                channel: channel.name().to_owned(),
                nominal: nominal_voxel[channel.index()],
                achieved: outcomes.iter().map(|o| o.voxel_rate[channel.index()]).sum::<f64>() / n,
            })
            .collect(),
        nominal_cluster_rate: nominal_cluster,
        cluster_rate: share(&|o| o.significant_clusters > 0),
        flagged_rate: share(&|o| o.flagged_unreliable),
        normals: outcomes,
    })
}
