//! The database's growth-chart centile models: fitted on the normals' regional volumes, refitted
//! whenever the normals change (build, add, merge), so they always describe the stored table.

use super::database::NormativeDb;
use super::regional::RegionalTable;
use crate::centiles::{
    CentileError, CentileSet, Covariates, FitOptions, FlagLimit, MeasureTable, fit_all_with_held_out,
};

impl RegionalTable {
    /// The table as the centile model reads it (an empty site label is an unknown site).
    pub fn measure_table(&self) -> MeasureTable {
        MeasureTable {
            measures: self.names.clone(),
            covariates: self
                .rows
                .iter()
                .map(|r| Covariates {
                    age: r.age_years,
                    sex: Some(r.sex),
                    site: (!r.site.is_empty()).then(|| r.site.clone()),
                })
                .collect(),
            values: (0..self.names.len())
                .map(|m| self.rows.iter().map(|r| r.values_ml[m]).collect())
                .collect(),
        }
    }
}

/// Centile models of every measure of `table` that can have one, and why the others cannot
/// (too few normals with a value, or a measure that never varies, e.g. a region the template
/// does not contain). `None` when no measure can be modelled.
pub fn fit_centiles(table: &RegionalTable, options: &FitOptions) -> (Option<CentileSet>, Vec<CentileError>) {
    let all = table.measure_table();
    // Each measure once, in parallel; the order of the results is the table's.
    let (folds, results) = match fit_all_with_held_out(&all, options) {
        Ok(fitted) => fitted,
        Err(reason) => return (None, vec![reason]),
    };
    let mut models = Vec::new();
    let mut held_out = Vec::new();
    let mut skipped = Vec::new();
    for result in results {
        match result {
            Ok((model, z)) => {
                models.push(model);
                held_out.push(z);
            }
            Err(reason) => skipped.push(reason),
        }
    }
    if models.is_empty() {
        return (None, skipped);
    }
    let limit = FlagLimit::from_held_out(&held_out, &folds);
    (Some(CentileSet { options: options.clone(), models, limit }), skipped)
}

impl NormativeDb {
    /// Refits the centile models from the stored regional table (none without one). Measures
    /// that cannot be modelled are logged and left out.
    pub fn refit_centiles(&mut self) {
        self.centiles = self.regional.as_ref().and_then(|table| {
            let (set, skipped) = fit_centiles(table, &FitOptions::default());
            for reason in skipped {
                tracing::info!(%reason, "regional measure without a centile model");
            }
            set
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::tiny;

    #[test]
    fn models_follow_the_regional_table() {
        let mut db = tiny(1, 30);
        db.refit_centiles();
        let set = db.centiles.as_ref().expect("30 normals are enough");
        let table = db.regional.as_ref().unwrap();
        assert!(!set.models.is_empty() && set.models.len() <= table.names.len());
        assert!(set.models.iter().all(|m| m.subjects == 30));
        // Too few normals: no models, and the reason is kept.
        let mut small = tiny(2, 5);
        small.refit_centiles();
        assert!(small.centiles.is_none());
        let (_, skipped) = fit_centiles(small.regional.as_ref().unwrap(), &FitOptions::default());
        assert!(matches!(skipped[0], CentileError::TooFewSubjects { subjects: 5, .. }));
    }
}
