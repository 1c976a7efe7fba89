//! HDF5 layout of the calibration's scanner-site effects (`/calibration/site_effects`, one
//! group per channel) and the per-normal moments they are estimated from
//! (`/calibration/site_moments`); see `docs/normdb.md`.

use super::hdf5_io::Ctx;
use super::{Channel, NormDbError};
use hdf5::Group;
use pedinorm_templates::site_effects::{NormalMoments, SiteEffect, SiteEffects, SiteMoments};

/// Writes `effects` (one per channel) under `calibration`.
pub(super) fn write(ctx: &Ctx, calibration: &Group, effects: &[SiteEffects]) -> Result<(), NormDbError> {
    let g = ctx.h5("/calibration/site_effects", calibration.create_group("site_effects"))?;
    ctx.set_str(
        &g,
        "method",
        "ComBat-style location and scale of each site's leave-one-out z per tissue class (equal-share bins \
         of the template intensity), shrunk towards the pool; unseen sites: pooled model, z divided by unseen_scale",
    )?;
    for channel in Channel::ALL {
        let e = &effects[channel.index()];
        let cg = ctx.h5(channel.name(), g.create_group(channel.name()))?;
        ctx.set_u64(&cg, "classes", e.classes() as u64)?;
        ctx.set_u64(&cg, "min_site_normals", e.min_site_normals as u64)?;
        ctx.write_strings(&cg, "site", &e.sites.iter().map(|s| s.site.clone()).collect::<Vec<_>>())?;
        ctx.write_1d(&cg, "normals", &e.sites.iter().map(|s| s.normals as u64).collect::<Vec<_>>())?;
        ctx.write_1d(&cg, "location", &e.sites.iter().flat_map(|s| s.location.clone()).collect::<Vec<_>>())?;
        ctx.write_1d(&cg, "scale", &e.sites.iter().flat_map(|s| s.scale.clone()).collect::<Vec<_>>())?;
        ctx.write_1d(&cg, "unseen_scale", &e.unseen_scale)?;
        ctx.write_strings(&cg, "sparse_site", &e.sparse_sites)?;
    }
    Ok(())
}

/// Reads the site effects under `calibration`, `None` when the database has none.
pub(super) fn read(ctx: &Ctx, calibration: &Group) -> Result<Option<Vec<SiteEffects>>, NormDbError> {
    if !calibration.link_exists("site_effects") {
        return Ok(None);
    }
    let g = ctx.group(calibration, "site_effects")?;
    let mut effects = Vec::with_capacity(2);
    for channel in Channel::ALL {
        let cg = ctx.group(&g, channel.name())?;
        let field = |name: &str| format!("/calibration/site_effects/{}/{name}", channel.name());
        let classes = ctx.get_u64(&cg, "classes")? as usize;
        let sites = ctx.read_strings(&cg, "site")?;
        let normals: Vec<u64> = ctx.read_1d(&cg, "normals")?;
        let location: Vec<f64> = ctx.read_1d(&cg, "location")?;
        let scale: Vec<f64> = ctx.read_1d(&cg, "scale")?;
        let unseen_scale: Vec<f64> = ctx.read_1d(&cg, "unseen_scale")?;
        if classes == 0 || unseen_scale.len() != classes {
            return Err(ctx.schema(field("unseen_scale"), format!("must hold `classes` = {classes} values")));
        }
        let rows = sites.len();
        if normals.len() != rows || location.len() != rows * classes || scale.len() != rows * classes {
            return Err(ctx.schema(
                field("location"),
                "site, normals, location and scale must describe the same sites",
            ));
        }
        if scale.iter().chain(&unseen_scale).any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(ctx.schema(field("scale"), "every scale must be finite and positive"));
        }
        effects.push(SiteEffects {
            sites: (0..rows)
                .map(|r| SiteEffect {
                    site: sites[r].clone(),
                    normals: normals[r] as usize,
                    location: location[r * classes..(r + 1) * classes].to_vec(),
                    scale: scale[r * classes..(r + 1) * classes].to_vec(),
                })
                .collect(),
            unseen_scale,
            sparse_sites: ctx.read_strings(&cg, "sparse_site")?,
            min_site_normals: ctx.get_u64(&cg, "min_site_normals")? as usize,
        });
    }
    Ok(Some(effects))
}

/// Writes the per-normal site moments (one per channel) under `calibration`; nothing when the
/// calibration keeps none.
pub(super) fn write_moments(
    ctx: &Ctx,
    calibration: &Group,
    moments: &[SiteMoments],
) -> Result<(), NormDbError> {
    if moments.is_empty() {
        return Ok(());
    }
    let g = ctx.h5("/calibration/site_moments", calibration.create_group("site_moments"))?;
    for channel in Channel::ALL {
        let m = &moments[channel.index()];
        let cg = ctx.h5(channel.name(), g.create_group(channel.name()))?;
        ctx.set_u64(&cg, "classes", m.classes as u64)?;
        ctx.set_u64(&cg, "min_site_normals", m.min_site_normals as u64)?;
        let column =
            |f: fn(&NormalMoments) -> &Vec<f64>| m.normals.iter().flat_map(f).copied().collect::<Vec<_>>();
        ctx.write_strings(
            &cg,
            "pseudonym",
            &m.normals.iter().map(|n| n.pseudonym.clone()).collect::<Vec<_>>(),
        )?;
        ctx.write_strings(&cg, "site", &m.normals.iter().map(|n| n.site.clone()).collect::<Vec<_>>())?;
        ctx.write_1d(&cg, "mean", &column(|n| &n.mean))?;
        ctx.write_1d(&cg, "square", &column(|n| &n.square))?;
    }
    Ok(())
}

/// Reads the per-normal site moments under `calibration` (empty when the file keeps none).
pub(super) fn read_moments(ctx: &Ctx, calibration: &Group) -> Result<Vec<SiteMoments>, NormDbError> {
    if !calibration.link_exists("site_moments") {
        return Ok(Vec::new());
    }
    let g = ctx.group(calibration, "site_moments")?;
    let mut moments = Vec::with_capacity(2);
    for channel in Channel::ALL {
        let cg = ctx.group(&g, channel.name())?;
        let field = |name: &str| format!("/calibration/site_moments/{}/{name}", channel.name());
        let classes = ctx.get_u64(&cg, "classes")? as usize;
        let pseudonyms = ctx.read_strings(&cg, "pseudonym")?;
        let sites = ctx.read_strings(&cg, "site")?;
        let mean: Vec<f64> = ctx.read_1d(&cg, "mean")?;
        let square: Vec<f64> = ctx.read_1d(&cg, "square")?;
        let rows = pseudonyms.len();
        if classes == 0
            || sites.len() != rows
            || mean.len() != rows * classes
            || square.len() != rows * classes
        {
            return Err(ctx.schema(
                field("mean"),
                format!(
                    "pseudonym, site, mean and square must describe the same normals ({classes} classes each)"
                ),
            ));
        }
        let normals = (0..rows)
            .map(|r| NormalMoments {
                pseudonym: pseudonyms[r].clone(),
                site: sites[r].clone(),
                mean: mean[r * classes..(r + 1) * classes].to_vec(),
                square: square[r * classes..(r + 1) * classes].to_vec(),
            })
            .collect();
        let min_site_normals = ctx.get_u64(&cg, "min_site_normals")? as usize;
        moments.push(
            SiteMoments::new(classes, min_site_normals, normals)
                .map_err(|e| ctx.schema(field("pseudonym"), e.to_string()))?,
        );
    }
    Ok(moments)
}
