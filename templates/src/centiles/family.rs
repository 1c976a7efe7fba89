//! A case's measures against a set of centile models, flagged beyond a limit calibrated for the
//! whole table: with a hundred regions, a normal case would show about five values outside the
//! 95 % band by chance, so the flag uses the |z| that only 5 % of the normals exceed in *any*
//! of their measures (the family-wise false-alarm rate of the table, as the voxelwise maps
//! calibrate their cluster threshold).

use serde::{Deserialize, Serialize};

use super::MeasureTable;
use super::model::{CentileModel, Covariates};
use super::shash::z_of_centile;

/// Share of normals allowed to show a flag anywhere in their table.
pub const FAMILY_RATE: f64 = 0.05;

/// The calibrated flag limit of a set of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlagLimit {
    /// |z| beyond which a measure is flagged.
    pub z: f64,
    /// Family-wise rate it was calibrated for.
    pub family_rate: f64,
    /// Normals it was calibrated on.
    pub normals: usize,
}

impl FlagLimit {
    /// The limit from the normals' own measures: the `1 − FAMILY_RATE` quantile over normals of
    /// their largest |z|, never below the single-measure 95 % limit (1.96) nor above the
    /// Bonferroni limit for the number of measures (the normals cannot make it stricter than
    /// a correction that assumes no correlation between regions).
    pub fn calibrate(models: &[CentileModel], normals: &MeasureTable) -> FlagLimit {
        let single = z_of_centile(97.5);
        let measures = models.len().max(1) as f64;
        let bonferroni = z_of_centile(100.0 * (1.0 - FAMILY_RATE / (2.0 * measures)));
        let mut largest: Vec<f64> = (0..normals.covariates.len())
            .filter_map(|row| {
                let covariates = &normals.covariates[row];
                models
                    .iter()
                    .filter_map(|model| {
                        let column = normals.measures.iter().position(|m| *m == model.measure)?;
                        model.place(normals.values[column][row], covariates).map(|p| p.z.abs())
                    })
                    .reduce(f64::max)
            })
            .collect();
        largest.sort_by(f64::total_cmp);
        let empirical = if largest.is_empty() {
            bonferroni
        } else {
            let index = ((1.0 - FAMILY_RATE) * largest.len() as f64).ceil() as usize;
            largest[index.clamp(1, largest.len()) - 1]
        };
        FlagLimit {
            z: empirical.clamp(single, bonferroni.max(single)),
            family_rate: FAMILY_RATE,
            normals: largest.len(),
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
    use crate::centiles::{FitOptions, fit_all};
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
        let models = fit_all(&training, &FitOptions::default()).unwrap();
        let limit = FlagLimit::calibrate(&models, &training);
        // 20 independent measures: Bonferroni at 5 % is 3.02; the normals' limit sits near it.
        assert!(limit.z > 2.6 && limit.z <= 3.03, "{limit:?}");
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
        let models = fit_all(&training, &FitOptions::default()).unwrap();
        let limit = FlagLimit::calibrate(&models, &training);
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
}
