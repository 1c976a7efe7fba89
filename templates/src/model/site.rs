//! The site-aware part of the normative model (see [`crate::site_effects`]): estimated at calibration from the calibration
//! normals' leave-one-out z-maps and their scanner labels, applied to every z-map scored
//! against the database — the calibration normals' own (so the thresholds are calibrated on
//! site-corrected values) and every case's.

use super::accumulate::MappedNormal;
use super::database::Channel;
use super::space::{TemplateSpace, gather};
use crate::site_effects::{
    DEFAULT_CLASSES, DEFAULT_MIN_SITE_NORMALS, SiteAdjustment, SiteEffectError, SiteEffects, SiteNull,
    TissueClasses,
};

/// Tissue class of every mask voxel of a template space.
pub fn tissue_classes(space: &TemplateSpace) -> Result<Vec<u8>, SiteEffectError> {
    let values = gather(&space.template, &space.indices);
    Ok(TissueClasses::from_template(&values, DEFAULT_CLASSES)?.assign(&values))
}

/// Site effects per channel ([`Channel::index`] order) from the calibration normals (`members`,
/// their leave-one-out z per channel in `z`, `classes` per bracket), or `None` when the normals
/// come from fewer than two sites (there is nothing to tell apart) or no site has enough
/// normals.
pub fn estimate(
    members: &[&MappedNormal],
    z: &[[Vec<f32>; 2]],
    classes: &[Vec<u8>],
) -> Result<Option<Vec<SiteEffects>>, SiteEffectError> {
    let mut sites: Vec<&str> = members.iter().map(|m| m.record.scanner.as_str()).collect();
    sites.sort_unstable();
    sites.dedup();
    if sites.len() < 2 {
        return Ok(None);
    }
    let mut effects = Vec::with_capacity(2);
    for channel in Channel::ALL {
        let nulls: Vec<SiteNull> = members
            .iter()
            .zip(z)
            .map(|(m, z)| SiteNull {
                site: &m.record.scanner,
                classes: &classes[m.bracket],
                z: &z[channel.index()],
            })
            .collect();
        effects.push(SiteEffects::estimate(&nulls, DEFAULT_CLASSES, DEFAULT_MIN_SITE_NORMALS)?);
    }
    if effects.iter().all(|e| e.sites.is_empty()) {
        return Ok(None);
    }
    Ok(Some(effects))
}

/// Corrects one channel's z of a subject of `site` in place; returns what was applied.
pub fn adjust(
    effects: &[SiteEffects],
    channel: Channel,
    classes: &[u8],
    site: Option<&str>,
    z: &mut [f32],
) -> SiteAdjustment {
    let effects = &effects[channel.index()];
    let adjustment = effects.adjustment(site.filter(|s| !s.is_empty()));
    effects.apply(&adjustment, classes, z);
    adjustment
}
