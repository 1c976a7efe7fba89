//! A case's regional volumes in its deviation result, and where they fall on the database's
//! growth-chart centiles: whole-brain measures first (total brain, intracranial volume, grey
//! matter, white matter, CSF), then regions, most deviant first.

use serde::Serialize;

use super::database::{BracketDb, NormativeDb};
use super::mapping::SubjectMaps;
use super::regional::{RegionalMeasures, regional_volumes};
use crate::centiles::{CentileModel, Covariates, PlacedMeasure};
use crate::stats::Sex;

/// Whole-brain measures in the order a reader expects them.
const WHOLE_BRAIN: [&str; 5] = ["total_brain", "icv", "gm", "wm", "csf"];

/// The regional part of a deviation result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseRegional {
    /// The case's volumes (ml), every measure.
    pub volumes: RegionalMeasures,
    /// The measures with a centile model, placed (whole brain first, then by |z|).
    pub centiles: Vec<PlacedMeasure>,
    /// |z| beyond which a measure is flagged (None: the database has no centile models).
    pub flag_limit_z: Option<f64>,
    /// Why centiles are missing or limited, for the reader.
    pub note: Option<String>,
    /// The models of the measures worth a growth chart: total brain, intracranial volume and
    /// every flagged measure.
    #[serde(skip)]
    pub chart_models: Vec<CentileModel>,
}

/// The case's volumes and centiles, or why there are none (a database without tissue priors,
/// a segmentation that failed).
pub fn case_regional(
    db: &NormativeDb,
    bracket: &BracketDb,
    maps: &SubjectMaps,
    age_years: f64,
    sex: Option<Sex>,
    site: Option<&str>,
) -> Result<CaseRegional, String> {
    let volumes = regional_volumes(&maps.native(), bracket, db.atlas.as_ref(), "case")
        .map_err(|e| e.to_string())?
        .measures;
    let Some(set) = &db.centiles else {
        return Ok(CaseRegional {
            volumes,
            centiles: Vec::new(),
            flag_limit_z: None,
            note: Some("the database has no centile models (too few normals with regional volumes)".into()),
            chart_models: Vec::new(),
        });
    };
    let covariates = Covariates { age: age_years, sex, site: site.map(str::to_owned) };
    let mut centiles = set.place(&volumes.pairs(), &covariates);
    let rank =
        |p: &PlacedMeasure| WHOLE_BRAIN.iter().position(|w| *w == p.measure).unwrap_or(WHOLE_BRAIN.len());
    centiles.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.z.abs().total_cmp(&a.z.abs())));
    let mut notes = Vec::new();
    if centiles.iter().any(|p| !p.site_known) && site.is_some() {
        notes.push(
            "the case's site has no estimated effect: centiles are read on the population curves".to_owned(),
        );
    }
    if centiles.iter().any(|p| !p.age_covered) {
        notes
            .push("the case's age is outside the normals' ages: the curves are held at their end".to_owned());
    }
    let chart_models = centiles
        .iter()
        .filter(|p| p.flagged || p.measure == "total_brain" || p.measure == "icv")
        .filter_map(|p| set.model(&p.measure).cloned())
        .collect();
    Ok(CaseRegional {
        volumes,
        centiles,
        chart_models,
        flag_limit_z: Some(set.limit.z),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}
