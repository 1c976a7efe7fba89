//! HDF5 layout of the regional centile models (`/regional/centiles`; see `docs/normdb.md`):
//! the fitted models whole as a JSON attribute (what pedinorm reads back), and the centile
//! curves of every measure on an age grid for each sex, for readers outside pedinorm.

use super::NormDbError;
use super::hdf5_io::Ctx;
use hdf5::Group;
use ndarray::Array3;
use pedinorm_templates::centiles::{CentileSet, STANDARD_CENTILES, curves};
use pedinorm_templates::stats::Sex;

/// Ages of the stored curves: 0–18 years every quarter year.
pub(super) fn curve_ages() -> Vec<f64> {
    (0..=72).map(|i| i as f64 * 0.25).collect()
}

/// Writes `set` as the group `centiles` under `regional`.
pub(super) fn write(ctx: &Ctx, regional: &Group, set: &CentileSet) -> Result<(), NormDbError> {
    let g = ctx.h5("/regional/centiles", regional.create_group("centiles"))?;
    ctx.set_str(
        &g,
        "method",
        "per measure: sinh-arcsinh distribution, location and log-scale cubic B-splines in ln(1+age) with sex \
         and site effects, penalized maximum likelihood, shape freedom by the number of normals; curves at \
         the population site; flag limit from the normals' held-out z",
    )?;
    let json =
        serde_json::to_string(set).map_err(|e| ctx.schema("/regional/centiles@model", e.to_string()))?;
    ctx.set_str(&g, "model", &json)?;
    ctx.set_f64(&g, "flag_limit_z", set.limit.z)?;
    // Older databases lack it: their limit was taken from the normals' in-sample z.
    ctx.set_str(&g, "flag_limit_calibration", &set.limit.calibration())?;
    let ages = curve_ages();
    ctx.write_1d(&g, "ages", &ages)?;
    ctx.write_1d(&g, "centile_levels", &STANDARD_CENTILES)?;
    ctx.write_strings(&g, "measures", &set.models.iter().map(|m| m.measure.clone()).collect::<Vec<_>>())?;
    for (sex, name) in [(Sex::Female, "curves_female"), (Sex::Male, "curves_male")] {
        let mut data = Array3::<f64>::zeros((set.models.len(), STANDARD_CENTILES.len(), ages.len()));
        for (m, model) in set.models.iter().enumerate() {
            for (c, row) in curves(model, Some(sex), &ages, &STANDARD_CENTILES).iter().enumerate() {
                for (a, &value) in row.iter().enumerate() {
                    data[[m, c, a]] = value;
                }
            }
        }
        ctx.write_volume(&g, name, &data)?;
    }
    Ok(())
}

/// Reads the centile models under `regional`, `None` when the database has none.
pub(super) fn read(ctx: &Ctx, regional: &Group) -> Result<Option<CentileSet>, NormDbError> {
    if !regional.link_exists("centiles") {
        return Ok(None);
    }
    let g = ctx.group(regional, "centiles")?;
    let json = ctx.get_str(&g, "model")?;
    let set: CentileSet = serde_json::from_str(&json)
        .map_err(|e| ctx.schema("/regional/centiles@model", format!("not a centile model set: {e}")))?;
    let measures = ctx.read_strings(&g, "measures")?;
    if measures.len() != set.models.len() || measures.iter().zip(&set.models).any(|(a, m)| *a != m.measure) {
        return Err(ctx.schema("/regional/centiles/measures", "must list the models' measures in order"));
    }
    Ok(Some(set))
}
