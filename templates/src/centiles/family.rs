//! A case's measures against a set of centile models, flagged beyond a limit calibrated for the
//! whole table: with a hundred regions, a normal case would show about five values outside the
//! 95 % band by chance, so the flag uses the |z| that only 5 % of normals exceed in *any* of
//! their measures (the family-wise false-alarm rate of the table, as the voxelwise maps
//! calibrate their cluster threshold).
//!
//! The normals' z are taken *held out*: each normal placed on models refitted without it (or
//! without its fold of normals when they are many). Placed on the models they were fitted to,
//! normals sit closer to the curves than any new child does — with tens of normals much closer
//! — and a limit taken from them is far too low for new cases.

use serde::{Deserialize, Serialize};

use super::model::{CentileModel, Covariates};
use super::shash::z_of_centile;

/// Share of normals allowed to show a flag anywhere in their table.
pub const FAMILY_RATE: f64 = 0.05;

/// Up to this many normals, each normal is held out alone (leave-one-out); beyond, in
/// [`HELD_OUT_FOLDS`] folds, which keeps the refits to ten per measure.
pub const LEAVE_ONE_OUT_UP_TO: usize = 100;

/// Folds of the held-out calibration beyond [`LEAVE_ONE_OUT_UP_TO`] normals.
pub const HELD_OUT_FOLDS: usize = 10;

/// The calibrated flag limit of a set of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagLimit {
    /// |z| beyond which a measure is flagged.
    pub z: f64,
    /// Family-wise rate it was calibrated for.
    pub family_rate: f64,
    /// Normals it was calibrated on.
    pub normals: usize,
    /// Folds the normals were held out in: equal to `normals` for leave-one-out; 0 for a limit
    /// taken from the normals' own in-sample z (databases written before held-out calibration).
    #[serde(default)]
    pub folds: usize,
}

/// Each normal's fold for the held-out calibration: its own up to [`LEAVE_ONE_OUT_UP_TO`]
/// normals, else one of [`HELD_OUT_FOLDS`] dealt in order of age, so every fold spans the ages.
/// Deterministic: the same table gives the same folds.
pub fn held_out_folds(covariates: &[Covariates]) -> Vec<usize> {
    let n = covariates.len();
    if n <= LEAVE_ONE_OUT_UP_TO {
        return (0..n).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| covariates[a].age.total_cmp(&covariates[b].age).then(a.cmp(&b)));
    let mut folds = vec![0; n];
    for (rank, &row) in order.iter().enumerate() {
        folds[row] = rank % HELD_OUT_FOLDS;
    }
    folds
}

impl FlagLimit {
    /// The limit from the normals' held-out z (`z[measure][normal]`, NaN where missing; folds as
    /// [`held_out_folds`] gave them): the `1 − FAMILY_RATE` quantile over normals of their
    /// largest |z|, never below the single-measure 95 % limit (1.96). It is not capped at the
    /// Bonferroni limit: held-out z of a model fitted to few normals have heavier tails than
    /// the normal distribution, which is exactly what the limit has to see.
    pub fn from_held_out(z: &[Vec<f64>], folds: &[usize]) -> FlagLimit {
        let single = z_of_centile(97.5);
        let mut largest: Vec<f64> = (0..folds.len())
            .filter_map(|row| {
                z.iter().map(|column| column[row].abs()).filter(|v| v.is_finite()).reduce(f64::max)
            })
            .collect();
        largest.sort_by(f64::total_cmp);
        let empirical = if largest.is_empty() {
            z_of_centile(100.0 * (1.0 - FAMILY_RATE / (2.0 * z.len().max(1) as f64)))
        } else {
            let index = ((1.0 - FAMILY_RATE) * largest.len() as f64).ceil() as usize;
            largest[index.clamp(1, largest.len()) - 1]
        };
        FlagLimit {
            z: empirical.max(single),
            family_rate: FAMILY_RATE,
            normals: largest.len(),
            folds: folds.iter().max().map_or(0, |&k| k + 1),
        }
    }

    /// How the limit was calibrated, in words (`leave-one-out`, `10-fold`, `in-sample`).
    pub fn calibration(&self) -> String {
        match self.folds {
            0 => "in-sample".to_owned(),
            k if k >= self.normals => "leave-one-out".to_owned(),
            k => format!("{k}-fold"),
        }
    }
}

/// One measure of a case, placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedMeasure {
    /// The measure.
    pub measure: String,
    /// The case's value.
    pub value: f64,
    /// Centile (0–100).
    pub centile: f64,
    /// Standard-normal deviate.
    pub z: f64,
    /// The 2.5th, 50th and 97.5th centiles at the case's covariates.
    pub normal_range: [f64; 3],
    /// Beyond the calibrated limit.
    pub flagged: bool,
    /// Whether the case's site has an estimated effect.
    pub site_known: bool,
    /// Whether the age lies in the training range.
    pub age_covered: bool,
}

/// Places each of a case's measures (name, value) that has a model.
pub fn place_case(
    models: &[CentileModel],
    measures: &[(String, f64)],
    covariates: &Covariates,
    limit: &FlagLimit,
) -> Vec<PlacedMeasure> {
    measures
        .iter()
        .filter_map(|(name, value)| {
            let model = models.iter().find(|m| m.measure == *name)?;
            let placement = model.place(*value, covariates)?;
            let range = model.centiles(covariates, &[2.5, 50.0, 97.5]);
            Some(PlacedMeasure {
                measure: name.clone(),
                value: *value,
                centile: placement.centile,
                z: placement.z,
                normal_range: [range[0], range[1], range[2]],
                flagged: placement.z.abs() > limit.z,
                site_known: placement.site_known,
                age_covered: placement.age_covered,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::centiles::{CentileSet, FitOptions, MeasureTable};
    use crate::stats::Sex;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `measures` independent normal measures of `n` subjects growing with age.
    fn normals(rng: &mut ChaCha8Rng, n: usize, measures: usize) -> MeasureTable {
        let covariates: Vec<Covariates> = (0..n)
            .map(|_| Covariates { age: rng.random_range(0.0..18.0), sex: Some(Sex::Female), site: None })
            .collect();
        let values = (0..measures)
            .map(|m| {
                covariates
                    .iter()
                    .map(|c| {
                        let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                        let noise = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                        (10.0 + m as f64 + c.age) * (0.1 * noise).exp()
                    })
                    .collect()
            })
            .collect();
        MeasureTable { measures: (0..measures).map(|m| format!("m{m}")).collect(), covariates, values }
    }

    #[test]
    fn limit_keeps_the_family_wise_rate_on_new_normals() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let training = normals(&mut rng, 600, 20);
        let CentileSet { models, limit, .. } = CentileSet::fit(&training, &FitOptions::default()).unwrap();
        // 20 independent measures: Bonferroni at 5 % is 3.02; the normals' limit sits near it.
        assert!(limit.z > 2.6 && limit.z <= 3.4, "{limit:?}");
        assert_eq!((limit.folds, limit.calibration().as_str()), (10, "10-fold"));
        let held_out = normals(&mut rng, 1000, 20);
        let flagged_normals = (0..1000)
            .filter(|&row| {
                let measures: Vec<(String, f64)> =
                    held_out.measures.iter().cloned().zip(held_out.values.iter().map(|c| c[row])).collect();
                place_case(&models, &measures, &held_out.covariates[row], &limit).iter().any(|p| p.flagged)
            })
            .count();
        assert!((20..=90).contains(&flagged_normals), "{flagged_normals} of 1000 normals flagged");
    }

    #[test]
    fn a_case_far_below_is_flagged_with_its_normal_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let training = normals(&mut rng, 300, 3);
        let CentileSet { models, limit, .. } = CentileSet::fit(&training, &FitOptions::default()).unwrap();
        let covariates = Covariates { age: 8.0, sex: Some(Sex::Female), site: None };
        let placed = place_case(
            &models,
            &[("m1".into(), 12.0), ("m2".into(), 20.0), ("unknown".into(), 1.0)],
            &covariates,
            &limit,
        );
        assert_eq!(placed.len(), 2);
        assert!(placed[0].flagged && placed[0].centile < 0.1);
        assert!(!placed[1].flagged);
        let [low, median, high] = placed[1].normal_range;
        assert!(low < median && median < high && (median - 20.0).abs() < 1.0);
    }

    #[test]
    fn a_set_stored_before_held_out_calibration_still_reads() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let set = CentileSet::fit(&normals(&mut rng, 40, 2), &FitOptions::default()).unwrap();
        let mut json = serde_json::to_value(&set).unwrap();
        // What older databases hold: no folds, no shape freedom, options without the thresholds.
        json["limit"].as_object_mut().unwrap().remove("folds");
        for model in json["models"].as_array_mut().unwrap() {
            model.as_object_mut().unwrap().remove("freedom");
        }
        for key in ["heteroscedastic_from", "skew_from", "tail_from"] {
            json["options"].as_object_mut().unwrap().remove(key);
        }
        let old: CentileSet = serde_json::from_value(json).unwrap();
        assert_eq!((old.limit.folds, old.limit.calibration().as_str()), (0, "in-sample"));
        assert_eq!(old.options, FitOptions::default());
        assert!(old.models.iter().all(|m| m.freedom.is_none()));
        assert_eq!(set.limit.calibration(), "leave-one-out");
        assert_eq!(set.models[0].freedom, Some(FitOptions::default().freedom(40)));
    }
}
