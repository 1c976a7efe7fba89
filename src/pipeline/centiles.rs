//! `pedinorm centiles`: fit centile models to the normals' measures, adapt them to a new site,
//! score subjects against them and show the curves; models are kept in a JSON file.

use crate::formats::measures::{MeasuresError, SubjectMeasures};
use crate::report::growth_chart::{GrowthChart, growth_chart_svg};
use pedinorm_templates::centiles::{
    CentileError, CentileModel, CentileSet, Covariates, FitOptions, STANDARD_CENTILES,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the models file layout.
pub const MODELS_FORMAT: u32 = 1;

/// The models file: the centile set and its layout version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentileModels {
    /// Layout version ([`MODELS_FORMAT`]).
    pub format: u32,
    /// The models, their options and flag limit.
    #[serde(flatten)]
    pub set: CentileSet,
}

impl CentileModels {
    /// The model of a measure.
    pub fn model(&self, measure: &str) -> Option<&CentileModel> {
        self.set.model(measure)
    }
}

/// Why a centile command failed.
#[derive(Debug, thiserror::Error)]
pub enum CentilesError {
    /// The measures table is unreadable or invalid.
    #[error(transparent)]
    Measures(#[from] MeasuresError),
    /// A model could not be fitted or adapted.
    #[error("{path}: {source}")]
    Fit {
        /// The measures table.
        path: PathBuf,
        /// The cause.
        source: CentileError,
    },
    /// The models file is unreadable or invalid.
    #[error("{path}: {message}")]
    Models {
        /// The models file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The request names something the models do not have.
    #[error("{0}")]
    Request(String),
    /// An output could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Fits a model per measure of the table read from `path`.
pub fn fit(
    measures: &SubjectMeasures,
    path: &Path,
    options: &FitOptions,
) -> Result<CentileModels, CentilesError> {
    let set = CentileSet::fit(&measures.table, options)
        .map_err(|source| CentilesError::Fit { path: path.to_owned(), source })?;
    Ok(CentileModels { format: MODELS_FORMAT, set })
}

/// Adapts every model to `site` from that site's normals (the table read from `path`).
pub fn adapt(
    models: &mut CentileModels,
    site: &str,
    normals: &SubjectMeasures,
    path: &Path,
) -> Result<(), CentilesError> {
    models
        .set
        .adapt(site, &normals.table)
        .map_err(|source| CentilesError::Fit { path: path.to_owned(), source })
}

/// Reads a models file.
pub fn read_models(path: &Path) -> Result<CentileModels, CentilesError> {
    let fail = |message: String| CentilesError::Models { path: path.to_owned(), message };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let models: CentileModels =
        serde_json::from_str(&text).map_err(|e| fail(format!("not a centile models file: {e}")))?;
    if models.format != MODELS_FORMAT {
        return Err(fail(format!(
            "field `format`: version {} is not the supported version {MODELS_FORMAT}",
            models.format
        )));
    }
    Ok(models)
}

/// Writes a models file atomically.
pub fn write_models(path: &Path, models: &CentileModels) -> Result<(), CentilesError> {
    let text = serde_json::to_string_pretty(models).expect("models serialize");
    crate::atomic::write_bytes(path, text.as_bytes())
        .map_err(|source| CentilesError::Write { path: path.to_owned(), source })
}

/// One subject's value of one measure against its model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// The subject.
    pub subject: String,
    /// The measure.
    pub measure: String,
    /// The value.
    pub value: f64,
    /// Centile (0–100).
    pub centile: f64,
    /// Standard-normal deviate.
    pub z: f64,
    /// Below the 2.5th or above the 97.5th centile.
    pub outside_95: bool,
    /// Beyond the set's calibrated family-wise limit.
    pub flagged: bool,
    /// Whether the subject's site has an estimated effect.
    pub site_known: bool,
    /// Whether the age lies in the model's training range.
    pub age_covered: bool,
    /// `−ln` density of the value (log loss; lower is better).
    pub negative_log_likelihood: f64,
}

/// Scores every value of the table whose measure has a model (missing values are skipped).
pub fn score(models: &CentileModels, measures: &SubjectMeasures) -> Result<Vec<Score>, CentilesError> {
    let table = &measures.table;
    if let Some(missing) = table.measures.iter().find(|m| models.model(m).is_none()) {
        return Err(CentilesError::Request(format!(
            "measure `{missing}` has no model (models: {})",
            models.set.models.iter().map(|m| m.measure.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut scores = Vec::new();
    for (row, subject) in measures.subjects.iter().enumerate() {
        let covariates = &table.covariates[row];
        for (column, measure) in table.measures.iter().enumerate() {
            let model = models.model(measure).expect("checked above");
            let value = table.values[column][row];
            let (Some(placement), Some(nll)) =
                (model.place(value, covariates), model.negative_log_likelihood(value, covariates))
            else {
                continue;
            };
            scores.push(Score {
                subject: subject.clone(),
                measure: measure.clone(),
                value,
                centile: placement.centile,
                z: placement.z,
                outside_95: !(2.5..=97.5).contains(&placement.centile),
                flagged: placement.z.abs() > models.set.limit.z,
                site_known: placement.site_known,
                age_covered: placement.age_covered,
                negative_log_likelihood: nll,
            });
        }
    }
    Ok(scores)
}

/// The text of a scores table (TSV).
pub fn format_scores(scores: &[Score]) -> String {
    let mut text = String::from(
        "subject\tmeasure\tvalue\tcentile\tz\toutside_95\tflagged\tsite_known\tage_covered\tnegative_log_likelihood\n",
    );
    for s in scores {
        text.push_str(&format!(
            "{}\t{}\t{:.6}\t{:.3}\t{:.4}\t{}\t{}\t{}\t{}\t{:.6}\n",
            s.subject,
            s.measure,
            s.value,
            s.centile,
            s.z,
            s.outside_95,
            s.flagged,
            s.site_known,
            s.age_covered,
            s.negative_log_likelihood
        ));
    }
    text
}

/// The centiles of one measure at each age, for a sex and site (TSV: age then one column per
/// standard centile).
pub fn centile_table(
    model: &CentileModel,
    ages: &[f64],
    sex: Option<pedinorm_templates::stats::Sex>,
    site: Option<&str>,
) -> String {
    let mut text = String::from("age");
    for c in STANDARD_CENTILES {
        text.push_str(&format!("\tp{c}"));
    }
    text.push('\n');
    for &age in ages {
        let covariates = Covariates { age, sex, site: site.map(str::to_owned) };
        text.push_str(&format!("{age}"));
        for value in model.centiles(&covariates, &STANDARD_CENTILES) {
            text.push_str(&format!("\t{value:.4}"));
        }
        text.push('\n');
    }
    text
}

/// Writes a growth chart (SVG) of one measure.
pub fn write_chart(path: &Path, chart: &GrowthChart<'_>) -> Result<(), CentilesError> {
    crate::atomic::write_bytes(path, growth_chart_svg(chart).as_bytes())
        .map_err(|source| CentilesError::Write { path: path.to_owned(), source })
}
