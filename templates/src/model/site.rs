//! The site-aware part of the normative model (see [`crate::site_effects`]): estimated at calibration from the calibration
//! normals' leave-one-out z-maps and their scanner labels (kept as per-normal moments, so
//! added and merged normals re-estimate them), applied to every z-map scored
//! against the database — the calibration normals' own (so the thresholds are calibrated on
//! site-corrected values) and every case's.

use super::accumulate::MappedNormal;
use super::database::Channel;
use super::space::{TemplateSpace, gather};
use crate::site_effects::{
    DEFAULT_CLASSES, DEFAULT_MIN_SITE_NORMALS, SiteAdjustment, SiteEffectError, SiteEffects, SiteMoments,
    SiteNull, TissueClasses, moments_of,
};

/// Tissue class of every mask voxel of a template space.
pub fn tissue_classes(space: &TemplateSpace) -> Result<Vec<u8>, SiteEffectError> {
    let values = gather(&space.template, &space.indices);
    Ok(TissueClasses::from_template(&values, DEFAULT_CLASSES)?.assign(&values))
}

/// The site moments per channel ([`Channel::index`] order) of the calibration normals
/// (`members`, their leave-one-out z per channel in `z`, `classes` per bracket).
pub fn moments(
    members: &[&MappedNormal],
    z: &[[Vec<f32>; 2]],
    classes: &[Vec<u8>],
) -> Result<Vec<SiteMoments>, SiteEffectError> {
    let pseudonyms: Vec<&str> = members.iter().map(|m| m.record.pseudonym.as_str()).collect();
    Channel::ALL
        .iter()
        .map(|channel| {
            let nulls: Vec<SiteNull> = members
                .iter()
                .zip(z)
                .map(|(m, z)| SiteNull {
                    site: &m.record.scanner,
                    classes: &classes[m.bracket],
                    z: &z[channel.index()],
                })
                .collect();
            let normals = moments_of(&nulls, Some(&pseudonyms), DEFAULT_CLASSES)?;
            SiteMoments::new(DEFAULT_CLASSES, DEFAULT_MIN_SITE_NORMALS, normals)
        })
        .collect()
}

/// The site effects per channel that `moments` give, or `None` when the normals come from
/// fewer than two sites (there is nothing to tell apart) or no site has enough normals.
pub fn effects(moments: &[SiteMoments]) -> Option<Vec<SiteEffects>> {
    if moments.is_empty() || moments.iter().any(|m| m.site_count() < 2) {
        return None;
    }
    let effects: Vec<SiteEffects> = moments.iter().map(SiteMoments::effects).collect();
    if effects.iter().all(|e| e.sites.is_empty()) {
        return None;
    }
    Some(effects)
}

/// The union of two databases' moments per channel; empty when either keeps none (the
/// site model was off, or a database written before moments were kept).
pub fn union(a: &[SiteMoments], b: &[SiteMoments]) -> Result<Vec<SiteMoments>, SiteEffectError> {
    if a.len() != b.len() || a.is_empty() {
        return Ok(Vec::new());
    }
    a.iter().zip(b).map(|(a, b)| a.union(b)).collect()
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
