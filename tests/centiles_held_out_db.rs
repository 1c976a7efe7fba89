//! Held-out false alarms of the regional centile flag on a database's own stored measures: the
//! normals are split into five sets spread over age; each set in turn is held out, the centile
//! models are fitted to the others and the held-out normals are placed. Compared, on the same
//! splits: the earlier fit (every shape freedom at any size, limit from the fitted normals' own
//! in-sample z, capped at Bonferroni) and the current one (shape freedom by the number of
//! normals, limit from held-out z). An experiment, not a unit test: ignored by default. Run:
//!
//! ```sh
//! PEDINORM_NORMDB=out/demo/normdb.h5 cargo test --test centiles_held_out_db -- --ignored --nocapture
//! ```

use pedinorm::normdb::NormDbFile;
use pedinorm_templates::centiles::shash::z_of_centile;
use pedinorm_templates::centiles::{CentileSet, FitOptions, FlagLimit, MeasureTable, fit_all};
use pedinorm_templates::model::NormativeDb;
use std::path::PathBuf;

/// The earlier limit: the 95 % quantile of the fitted normals' own largest |z|, within
/// 1.96 and the Bonferroni limit.
fn in_sample_limit(set: &CentileSet, table: &MeasureTable) -> f64 {
    let bonferroni = z_of_centile(100.0 * (1.0 - 0.05 / (2.0 * set.models.len() as f64)));
    let mut largest: Vec<f64> = (0..table.covariates.len())
        .filter_map(|row| {
            let measures = row_measures(table, row);
            set.place(&measures, &table.covariates[row]).iter().map(|p| p.z.abs()).reduce(f64::max)
        })
        .collect();
    largest.sort_by(f64::total_cmp);
    let index = (0.95 * largest.len() as f64).ceil() as usize;
    largest[index.clamp(1, largest.len()) - 1].clamp(1.96, bonferroni)
}

fn row_measures(table: &MeasureTable, row: usize) -> Vec<(String, f64)> {
    table.measures.iter().cloned().zip(table.values.iter().map(|c| c[row])).collect()
}

#[test]
#[ignore = "experiment: needs a database with regional measures (PEDINORM_NORMDB)"]
fn held_out_false_alarms_on_the_stored_measures() {
    let path: PathBuf =
        std::env::var_os("PEDINORM_NORMDB").map(PathBuf::from).unwrap_or_else(|| "out/demo/normdb.h5".into());
    let db = NormativeDb::read(&path).unwrap();
    let table = db.regional.as_ref().expect("a database with regional measures").measure_table();
    let n = table.covariates.len();
    let mut by_age: Vec<usize> = (0..n).collect();
    by_age.sort_by(|&a, &b| table.covariates[a].age.total_cmp(&table.covariates[b].age));
    let earlier_options =
        FitOptions { heteroscedastic_from: 0, skew_from: 0, tail_from: 0, ..FitOptions::default() };
    let (mut earlier_alarms, mut current_alarms, mut placed) = (0, 0, 0);
    for split in 0..5 {
        let held: Vec<usize> = by_age.iter().copied().skip(split).step_by(5).collect();
        let kept: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
        let training = table.select(&kept);
        let models = fit_all(&training, &earlier_options).unwrap();
        let mut earlier = CentileSet {
            options: earlier_options.clone(),
            models,
            limit: FlagLimit { z: 0.0, family_rate: 0.05, normals: kept.len(), folds: 0 },
        };
        earlier.limit.z = in_sample_limit(&earlier, &training);
        let current = CentileSet::fit(&training, &FitOptions::default()).unwrap();
        let flagged = |set: &CentileSet, row: usize| {
            set.place(&row_measures(&table, row), &table.covariates[row]).iter().filter(|p| p.flagged).count()
        };
        for &row in &held {
            let (e, c) = (flagged(&earlier, row), flagged(&current, row));
            println!(
                "split {split} normal age {:.2}: earlier {e} measures flagged (limit {:.2}), current {c} (limit {:.2}, {})",
                table.covariates[row].age,
                earlier.limit.z,
                current.limit.z,
                current.limit.calibration()
            );
            earlier_alarms += usize::from(e > 0);
            current_alarms += usize::from(c > 0);
            placed += 1;
        }
    }
    println!(
        "{} measures, {n} normals: held-out normals with a flag: earlier {earlier_alarms}/{placed}, current {current_alarms}/{placed}",
        table.measures.len()
    );
}
