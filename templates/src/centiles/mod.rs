//! Growth-chart centiles of regional measures: for each measure (a regional volume, total brain
//! volume, …) a model of its distribution by age and sex with scanner-site effects, skewed and
//! heteroscedastic, from which centile curves and a case's centile and z follow.
//!
//! `basis` (the age B-spline), `shash` (the sinh–arcsinh distribution), `model` (a fitted model
//! and what it answers), `fit` (penalized maximum likelihood, site adaptation).

pub mod basis;
pub mod family;
pub mod fit;
pub mod model;
pub mod shash;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use family::{FlagLimit, PlacedMeasure, held_out_folds, place_case};
pub use fit::{FitOptions, Freedom, adapt_site, fit_measure, fit_measure_with_held_out};
pub use model::{CentileModel, Covariates, Placement, STANDARD_CENTILES, SiteEffect, Transform};

use crate::stats::Sex;

/// Why a centile model could not be fitted or adapted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CentileError {
    /// Too few normals have a value of the measure.
    #[error("measure `{measure}`: {subjects} normals have a value, at least {needed} are needed")]
    TooFewSubjects {
        /// The measure.
        measure: String,
        /// Normals with a value.
        subjects: usize,
        /// Normals needed.
        needed: usize,
    },
    /// Every normal has the same value.
    #[error("measure `{measure}`: every normal has the same value, so no spread can be modelled")]
    Constant {
        /// The measure.
        measure: String,
    },
    /// The table's shape is inconsistent.
    #[error("measure table: {0}")]
    Table(String),
    /// The optimizer failed.
    #[error("measure `{measure}`: the fit failed: {message}")]
    Optimizer {
        /// The measure.
        measure: String,
        /// What the optimizer said.
        message: String,
    },
}

/// Measures of a set of subjects: one column per measure, one row per subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureTable {
    /// Measure names, one per column.
    pub measures: Vec<String>,
    /// Each subject's covariates, one per row.
    pub covariates: Vec<Covariates>,
    /// `values[measure][subject]`; a missing value is NaN.
    pub values: Vec<Vec<f64>>,
}

impl MeasureTable {
    /// Checks that every measure has one value per subject and names are unique.
    pub fn validate(&self) -> Result<(), CentileError> {
        if self.values.len() != self.measures.len() {
            return Err(CentileError::Table(format!(
                "{} measure names but {} value columns",
                self.measures.len(),
                self.values.len()
            )));
        }
        for (name, column) in self.measures.iter().zip(&self.values) {
            if column.len() != self.covariates.len() {
                return Err(CentileError::Table(format!(
                    "measure `{name}` has {} values for {} subjects",
                    column.len(),
                    self.covariates.len()
                )));
            }
        }
        let mut names: Vec<&String> = self.measures.iter().collect();
        names.sort();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(CentileError::Table(format!("measure `{}` appears twice", pair[0])));
        }
        Ok(())
    }

    /// The rows of one site.
    pub fn site_rows(&self, site: &str) -> Vec<usize> {
        (0..self.covariates.len()).filter(|&i| self.covariates[i].site.as_deref() == Some(site)).collect()
    }

    /// A table of the given rows only.
    pub fn select(&self, rows: &[usize]) -> MeasureTable {
        MeasureTable {
            measures: self.measures.clone(),
            covariates: rows.iter().map(|&i| self.covariates[i].clone()).collect(),
            values: self.values.iter().map(|column| rows.iter().map(|&i| column[i]).collect()).collect(),
        }
    }
}

/// Fits every measure of the table (in parallel; each fit is independent, so the result does
/// not depend on the thread count).
pub fn fit_all(table: &MeasureTable, options: &FitOptions) -> Result<Vec<CentileModel>, CentileError> {
    table.validate()?;
    table
        .measures
        .par_iter()
        .zip(&table.values)
        .map(|(name, column)| fit_measure(name, column, &table.covariates, options))
        .collect()
}

/// One measure's model and its normals' held-out z, or why it cannot be modelled.
pub type HeldOutFit = Result<(CentileModel, Vec<f64>), CentileError>;

/// Fits every measure of the table (in parallel) and places each normal on its measure's
/// model refitted without the normal's fold (folds from [`held_out_folds`]): per measure, the
/// model and the normals' held-out z, or why the measure cannot be modelled.
pub fn fit_all_with_held_out(
    table: &MeasureTable,
    options: &FitOptions,
) -> Result<(Vec<usize>, Vec<HeldOutFit>), CentileError> {
    table.validate()?;
    let folds = held_out_folds(&table.covariates);
    let fits = table
        .measures
        .par_iter()
        .zip(&table.values)
        .map(|(name, column)| fit_measure_with_held_out(name, column, &table.covariates, &folds, options))
        .collect();
    Ok((folds, fits))
}

/// Adapts every model to a new site from that site's normals (a table of the same measures).
pub fn adapt_all(
    models: &mut [CentileModel],
    site: &str,
    normals: &MeasureTable,
    options: &FitOptions,
) -> Result<(), CentileError> {
    normals.validate()?;
    models.par_iter_mut().try_for_each(|model| {
        let column = normals.measures.iter().position(|m| *m == model.measure).ok_or_else(|| {
            CentileError::Table(format!("the new site's table has no measure `{}`", model.measure))
        })?;
        adapt_site(model, site, &normals.values[column], &normals.covariates, options)
    })
}

/// The models of every measure of a database, with the options they were fitted with and the
/// calibrated flag limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentileSet {
    /// Options of the fit (site adaptation uses the same priors).
    pub options: FitOptions,
    /// One model per measure.
    pub models: Vec<CentileModel>,
    /// |z| beyond which a case's measure is flagged.
    pub limit: FlagLimit,
}

impl CentileSet {
    /// Fits every measure of the normals' table and calibrates the flag limit on their
    /// held-out z.
    pub fn fit(normals: &MeasureTable, options: &FitOptions) -> Result<CentileSet, CentileError> {
        let (folds, fits) = fit_all_with_held_out(normals, options)?;
        let (models, held_out): (Vec<CentileModel>, Vec<Vec<f64>>) =
            fits.into_iter().collect::<Result<Vec<_>, _>>()?.into_iter().unzip();
        let limit = FlagLimit::from_held_out(&held_out, &folds);
        Ok(CentileSet { options: options.clone(), models, limit })
    }

    /// The model of a measure.
    pub fn model(&self, measure: &str) -> Option<&CentileModel> {
        self.models.iter().find(|m| m.measure == measure)
    }

    /// Adapts every model to a new site from that site's normals.
    pub fn adapt(&mut self, site: &str, normals: &MeasureTable) -> Result<(), CentileError> {
        adapt_all(&mut self.models, site, normals, &self.options)
    }

    /// Places a case's measures and flags them beyond the limit.
    pub fn place(&self, measures: &[(String, f64)], covariates: &Covariates) -> Vec<PlacedMeasure> {
        place_case(&self.models, measures, covariates, &self.limit)
    }
}

/// Centile curves of a model for one sex on an age grid: `curves[c][a]` is centile
/// `centiles[c]` at `ages[a]` (population site).
pub fn curves(model: &CentileModel, sex: Option<Sex>, ages: &[f64], centiles: &[f64]) -> Vec<Vec<f64>> {
    let at_ages: Vec<Vec<f64>> =
        ages.iter().map(|&age| model.centiles(&Covariates { age, sex, site: None }, centiles)).collect();
    (0..centiles.len()).map(|c| at_ages.iter().map(|row| row[c]).collect()).collect()
}

#[cfg(test)]
mod small_sample_tests;
#[cfg(test)]
mod tests;
