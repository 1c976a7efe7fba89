//! HDF5 layout of the tissue priors of each template (`/templates/<bracket>/priors`) and of the
//! normals' regional volumes (`/regional`); see `docs/normdb.md`. Files written before either
//! was kept have none and still open.

use super::NormDbError;
use super::hdf5_io::{Ctx, member_path};
use hdf5::Group;
use pedinorm_registration::{Grid, Image};
use pedinorm_templates::model::{RegionalRow, RegionalTable, TISSUES, TissuePriors};
use pedinorm_templates::stats::Sex;

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
            return Err(ctx.schema(member_path(&g, name), "probabilities must lie in [0, 1]"));
        }
        maps.push(Image::new(data, grid.clone()).expect("shape checked"));
    }
    Ok(Some(TissuePriors { members, maps: maps.try_into().expect("three tissues") }))
}

/// Writes the normals' regional volumes as `/regional/subjects`: the covariate columns and one
/// column per measure, named by `/regional/measures`.
pub(super) fn write_table(ctx: &Ctx, file: &hdf5::File, table: &RegionalTable) -> Result<(), NormDbError> {
    let g = ctx.h5("/regional", file.create_group("regional"))?;
    ctx.set_str(&g, "units", "ml")?;
    ctx.set_str(
        &g,
        "method",
        "each QC-passed normal's bias-corrected image segmented on its own grid with the bracket's tissue priors \
         and atlas labels pulled through the inverse mapping; volume = Σ tissue probability × region × voxel volume",
    )?;
    ctx.write_strings(&g, "measures", &table.names)?;
    let s = ctx.h5("/regional/subjects", g.create_group("subjects"))?;
    let rows = &table.rows;
    ctx.set_u64(&s, "count", rows.len() as u64)?;
    ctx.write_strings(&s, "pseudonym", &rows.iter().map(|r| r.pseudonym.clone()).collect::<Vec<_>>())?;
    ctx.write_1d(&s, "age_years", &rows.iter().map(|r| r.age_years).collect::<Vec<_>>())?;
    ctx.write_strings(&s, "sex", &rows.iter().map(|r| r.sex.code().to_owned()).collect::<Vec<_>>())?;
    ctx.write_strings(&s, "site", &rows.iter().map(|r| r.site.clone()).collect::<Vec<_>>())?;
    for (m, name) in table.names.iter().enumerate() {
        ctx.write_1d(&s, name, &rows.iter().map(|r| r.values_ml[m]).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Reads `/regional`, `None` when the file has none.
pub(super) fn read_table(ctx: &Ctx, file: &hdf5::File) -> Result<Option<RegionalTable>, NormDbError> {
    if !file.link_exists("regional") {
        return Ok(None);
    }
    let g = ctx.group(file, "regional")?;
    let names = ctx.read_strings(&g, "measures")?;
    let s = ctx.group(&g, "subjects")?;
    let pseudonym = ctx.read_strings(&s, "pseudonym")?;
    let age: Vec<f64> = ctx.read_1d(&s, "age_years")?;
    let sex = ctx.read_strings(&s, "sex")?;
    let site = ctx.read_strings(&s, "site")?;
    let n = pseudonym.len();
    let columns: Vec<Vec<f64>> = names.iter().map(|name| ctx.read_1d(&s, name)).collect::<Result<_, _>>()?;
    if age.len() != n || sex.len() != n || site.len() != n || columns.iter().any(|c| c.len() != n) {
        return Err(ctx.schema("/regional/subjects", "all columns must have the same length"));
    }
    let rows = (0..n)
        .map(|i| {
            Ok(RegionalRow {
                pseudonym: pseudonym[i].clone(),
                age_years: age[i],
                sex: Sex::parse(&sex[i]).ok_or_else(|| {
                    ctx.schema("/regional/subjects/sex", format!("row {i}: {:?} is not F or M", sex[i]))
                })?,
                site: site[i].clone(),
                values_ml: columns.iter().map(|c| c[i]).collect(),
            })
        })
        .collect::<Result<_, NormDbError>>()?;
    Ok(Some(RegionalTable { names, rows }))
}
