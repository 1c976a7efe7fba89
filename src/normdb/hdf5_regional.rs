//! HDF5 layout of the tissue priors of each template (`/templates/<bracket>/priors`; see
//! `docs/normdb.md`). Files written before priors were kept have none and still open.

use super::NormDbError;
use super::hdf5_io::Ctx;
use hdf5::Group;
use pedinorm_registration::{Grid, Image};
use pedinorm_templates::model::{TISSUES, TissuePriors};

/// Writes `priors` under the bracket's template group `template`.
pub(super) fn write_priors(ctx: &Ctx, template: &Group, priors: &TissuePriors) -> Result<(), NormDbError> {
    let g = ctx.h5(format!("{}/priors", template.name()), template.create_group("priors"))?;
    ctx.set_u64(&g, "members", priors.members)?;
    ctx.set_str(
        &g,
        "method",
        "mean tissue probability of the bracket's QC-passed normals, each warped image segmented in template \
         space (Gaussian mixture, EM, MRF) with the template's own three-class segmentation as priors",
    )?;
    for (name, map) in TISSUES.iter().zip(&priors.maps) {
        ctx.write_volume(&g, name, map.data())?;
    }
    Ok(())
}

/// Reads the priors under `template` (on the template's `grid`), `None` when it has none.
pub(super) fn read_priors(
    ctx: &Ctx,
    template: &Group,
    grid: &Grid,
) -> Result<Option<TissuePriors>, NormDbError> {
    if !template.link_exists("priors") {
        return Ok(None);
    }
    let g = ctx.group(template, "priors")?;
    let members = ctx.get_u64(&g, "members")?;
    if members == 0 {
        return Err(ctx.schema(format!("{}@members", g.name()), "must be at least 1"));
    }
    let mut maps = Vec::with_capacity(TISSUES.len());
    for name in TISSUES {
        let data = ctx.read_volume::<f32>(&g, name, grid.dims())?;
        if data.iter().any(|v| !(v.is_finite() && (0.0..=1.0 + 1e-5).contains(v))) {
            return Err(ctx.schema(format!("{}/{name}", g.name()), "probabilities must lie in [0, 1]"));
        }
        maps.push(Image::new(data, grid.clone()).expect("shape checked"));
    }
    Ok(Some(TissuePriors { members, maps: maps.try_into().expect("three tissues") }))
}
