//! The voxelwise normative model: `z = (x − μ(age, sex)) / σ(age, sex)`.
//!
//! `μ` and `σ²` come from the age-node statistics of [`crate::stats`]: at each node a local
//! linear fit in age (kernel-weighted, so the age trend inside the kernel does not inflate the
//! variance) evaluated at the target age, then interpolated linearly between the two nearest
//! nodes. With a known sex and enough subjects of that sex at the
//! node (effective sample ≥ `min_sex_effective_n`) the mean is the sex-specific one and the
//! variance the *pooled within-sex* variance, which is more stable than either sex's alone;
//! otherwise both sexes are pooled. Voxel variances are small-sample noisy, so they are shrunk
//! toward the median variance of the volume (a pseudo-count prior of `shrinkage_strength`
//! subjects), floored at a fraction of that median, and widened by the predictive factor
//! `√(1 + 1/n + leverage)` of a single new subject compared against `n` controls (Crawford & Howell 1998).
//! Remaining miscalibration is measured and corrected empirically by [`crate::calibration`].

use crate::stats::{GroupMoments, NormativeAccumulator, Sex};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Why a normative model cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NormativeError {
    /// No subject has weight at the nodes used for this age.
    #[error("no normal subjects near age {age_years:.2} years (nodes used: {nodes:?})")]
    NoSubjects {
        /// Target age.
        age_years: f64,
        /// Node indices consulted.
        nodes: Vec<usize>,
    },
    /// The age is not a finite number.
    #[error("target age must be finite, got {0}")]
    InvalidAge(f64),
    /// A value vector has the wrong length.
    #[error("expected {expected} voxel values, got {found}")]
    VoxelCount {
        /// Voxels in the model.
        expected: usize,
        /// Values given.
        found: usize,
    },
}

/// Parameters of the normative model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormativeParams {
    /// Prior strength, in subjects, pulling each voxel's variance toward the volume's median.
    pub shrinkage_strength: f64,
    /// Lower bound of the variance as a fraction of the volume's median variance.
    pub variance_floor_fraction: f64,
    /// Minimum effective sample of one sex at a node for a sex-specific mean.
    pub min_sex_effective_n: f64,
    /// Widen σ by `√(1 + 1/n + leverage)` (a new subject against `n` controls).
    pub predictive: bool,
    /// Minimum standard deviation of the ages at a node (years) for fitting a local age
    /// slope; below it the node's mean is used as is.
    pub min_age_sd_years: f64,
    /// Floor under the voxelwise SD of each channel (absent in databases written before it:
    /// no floor), see [`crate::safeguards::SdFloor`].
    #[serde(default)]
    pub sd_floor: Option<crate::safeguards::SdFloor>,
}

impl Default for NormativeParams {
    fn default() -> Self {
        Self {
            shrinkage_strength: 4.0,
            variance_floor_fraction: 0.1,
            min_sex_effective_n: 6.0,
            predictive: true,
            min_age_sd_years: 0.1,
            sd_floor: Some(crate::safeguards::SdFloor::STANDARD),
        }
    }
}

/// Mean and standard deviation maps at one age (and sex), ready to score a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct NormativeModel {
    /// Target age in years.
    pub age_years: f64,
    /// Sex used, `None` when both were pooled.
    pub sex: Option<Sex>,
    /// Expected value per voxel.
    pub mean: Vec<f32>,
    /// Standard deviation per voxel (after shrinkage, floor and predictive widening).
    pub sd: Vec<f32>,
    /// Effective sample size behind the estimate (interpolated between nodes).
    pub effective_n: f64,
    /// Median variance of the volume before shrinkage (the prior's centre).
    pub median_variance: f64,
}

impl NormativeModel {
    /// The model at `age_years` for `sex` (or both sexes pooled when `None` or too few).
    pub fn at_age(
        accumulator: &NormativeAccumulator,
        age_years: f64,
        sex: Option<Sex>,
        params: &NormativeParams,
    ) -> Result<Self, NormativeError> {
        if !age_years.is_finite() {
            return Err(NormativeError::InvalidAge(age_years));
        }
        let weights = accumulator.node_weights(age_years);
        // A sex-specific mean needs enough subjects of that sex at every node used.
        let sex_used = sex.filter(|s| {
            weights
                .iter()
                .filter(|(_, w)| *w > 0.0)
                .all(|&(n, _)| accumulator.group(n, *s).effective_n() >= params.min_sex_effective_n)
        });
        let voxels = accumulator.voxel_count();
        let mut mean = vec![0f64; voxels];
        let mut variance = vec![0f64; voxels];
        let mut effective_n = 0.0;
        let mut predictive = 0.0;
        let min_sd = params.min_age_sd_years;
        for &(node, w) in &weights {
            if w == 0.0 {
                continue;
            }
            let combined = accumulator.node_combined(node);
            if combined.weight_sum <= 0.0 {
                return Err(NormativeError::NoSubjects {
                    age_years,
                    nodes: weights.iter().map(|p| p.0).collect(),
                });
            }
            // Residual variance around the local age trend: pooled within-sex when a sex is
            // used (each sex its own line), around the pooled line otherwise.
            let (mean_group, residual_groups): (&GroupMoments, Vec<&GroupMoments>) = match sex_used {
                Some(s) => (
                    accumulator.group(node, s),
                    Sex::ALL
                        .iter()
                        .map(|&x| accumulator.group(node, x))
                        .filter(|g| g.weight_sum > 0.0)
                        .collect(),
                ),
                None => (&combined, vec![&combined]),
            };
            let n = mean_group.effective_n();
            let total_weight: f64 = residual_groups.iter().map(|g| g.weight_sum).sum();
            let n_total: f64 = residual_groups.iter().map(|g| g.effective_n()).sum();
            let parameters: f64 = residual_groups
                .iter()
                .map(|g| if g.age_variance() >= min_sd * min_sd { 2.0 } else { 1.0 })
                .sum();
            // Small-sample correction of weighted residual variances with Kish's effective n.
            let dof =
                if n_total - parameters >= 1.0 { n_total / (n_total - parameters) } else { n_total.max(1.0) };
            mean.par_iter_mut().zip(variance.par_iter_mut()).enumerate().for_each(|(i, (m, v))| {
                *m += w * mean_group.linear_fit(i, age_years, min_sd).0;
                let residual: f64 =
                    residual_groups.iter().map(|g| g.linear_fit(i, age_years, min_sd).1).sum();
                *v += w * dof * residual / total_weight;
            });
            effective_n += w * n;
            // Leverage of a new subject at the target age under the local linear fit.
            let slope_used = mean_group.age_variance() >= min_sd * min_sd;
            let leverage = if slope_used {
                (age_years - mean_group.age_mean).powi(2) / (n * mean_group.age_variance())
            } else {
                0.0
            };
            predictive += w * (1.0 / n.max(1e-12) + leverage);
        }
        let median_variance = median_positive(&variance);
        let floor = params.variance_floor_fraction * median_variance;
        let predictive = if params.predictive { 1.0 + predictive } else { 1.0 };
        let k = params.shrinkage_strength;
        let sd: Vec<f32> = variance
            .par_iter()
            .map(|&v| {
                let shrunk = (effective_n * v + k * median_variance) / (effective_n + k);
                ((shrunk.max(floor).max(f64::MIN_POSITIVE)) * predictive).sqrt() as f32
            })
            .collect();
        Ok(Self {
            age_years,
            sex: sex_used,
            mean: mean.into_iter().map(|m| m as f32).collect(),
            sd,
            effective_n,
            median_variance,
        })
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.mean.len()
    }

    /// z-scores of one subject's values.
    pub fn z_scores(&self, values: &[f32]) -> Result<Vec<f32>, NormativeError> {
        if values.len() != self.mean.len() {
            return Err(NormativeError::VoxelCount { expected: self.mean.len(), found: values.len() });
        }
        Ok(values.par_iter().zip(&self.mean).zip(&self.sd).map(|((&x, &m), &s)| (x - m) / s).collect())
    }
}

/// Median of the positive values (1.0 when there are none, so a constant volume scores 0).
fn median_positive(values: &[f64]) -> f64 {
    let mut positive: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
    if positive.is_empty() {
        return 1.0;
    }
    let mid = positive.len() / 2;
    let (_, median, _) = positive.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *median
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::AgeNode;

    fn gaussian(rng: &mut crate::stats::tests::Uniform) -> f64 {
        // Box–Muller.
        let u1 = rng.next().max(1e-300);
        let u2 = rng.next();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Cohort whose mean grows 10 per year with sd 5, males +20.
    fn cohort(voxels: usize, n: usize, seed: u64) -> (NormativeAccumulator, Vec<(f64, Sex, Vec<f32>)>) {
        let nodes =
            vec![AgeNode { age_years: 4.0, sigma_years: 1.5 }, AgeNode { age_years: 8.0, sigma_years: 1.5 }];
        let mut acc = NormativeAccumulator::new(nodes, voxels).unwrap();
        let mut rng = crate::stats::tests::Uniform(seed);
        let mut subjects = Vec::new();
        let mut age = 0.0;
        for s in 0..n {
            if s % 2 == 0 {
                age = 3.0 + 6.0 * rng.next();
            }
            let sex = if s % 2 == 0 { Sex::Female } else { Sex::Male };
            let offset = if sex == Sex::Male { 20.0 } else { 0.0 };
            let values: Vec<f32> = (0..voxels)
                .map(|_| (100.0 + 10.0 * age + offset + 5.0 * gaussian(&mut rng)) as f32)
                .collect();
            acc.add_subject(age, sex, &values).unwrap();
            subjects.push((age, sex, values));
        }
        (acc, subjects)
    }

    #[test]
    fn recovers_mean_and_sd_at_node() {
        let (acc, _) = cohort(2000, 200, 11);
        let model =
            NormativeModel::at_age(&acc, 6.0, Some(Sex::Female), &NormativeParams::default()).unwrap();
        assert_eq!(model.sex, Some(Sex::Female));
        let mean: f64 = model.mean.iter().map(|&m| m as f64).sum::<f64>() / 2000.0;
        // Local linear fits at 4 and 8 years evaluated at 6 give the true 160 for females.
        assert!((mean - 160.0).abs() < 1.0, "mean {mean}");
        let sd: f64 = model.sd.iter().map(|&s| s as f64).sum::<f64>() / 2000.0;
        // The age trend is removed: σ ≈ 5, slightly widened for prediction.
        assert!(sd > 4.5 && sd < 6.0, "sd {sd}");
    }

    #[test]
    fn sex_specific_mean_differs_and_pooled_when_unknown() {
        let (acc, _) = cohort(200, 200, 12);
        let params = NormativeParams::default();
        let female = NormativeModel::at_age(&acc, 4.0, Some(Sex::Female), &params).unwrap();
        let male = NormativeModel::at_age(&acc, 4.0, Some(Sex::Male), &params).unwrap();
        let pooled = NormativeModel::at_age(&acc, 4.0, None, &params).unwrap();
        let avg = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let diff = avg(&male.mean) - avg(&female.mean);
        assert!((diff - 20.0).abs() < 3.0, "sex difference {diff}");
        assert!(avg(&pooled.sd) > avg(&female.sd), "pooled variance includes the sex difference");
    }

    #[test]
    fn z_scores_of_new_normals_are_roughly_standard() {
        let (acc, _) = cohort(500, 120, 13);
        let (_, fresh) = cohort(500, 40, 99);
        let params = NormativeParams::default();
        let mut sum = 0.0;
        let mut sum2 = 0.0;
        let mut count = 0.0;
        for (age, sex, values) in fresh.iter().filter(|(a, _, _)| (4.0..=8.0).contains(a)) {
            let model = NormativeModel::at_age(&acc, *age, Some(*sex), &params).unwrap();
            for z in model.z_scores(values).unwrap() {
                sum += z as f64;
                sum2 += (z * z) as f64;
                count += 1.0;
            }
        }
        let mean = sum / count;
        let sd = (sum2 / count - mean * mean).sqrt();
        assert!(mean.abs() < 0.3, "z mean {mean}");
        assert!(sd > 0.85 && sd < 1.15, "z sd {sd}");
    }

    #[test]
    fn constant_background_scores_zero_and_lesion_scores_high() {
        let nodes = vec![AgeNode { age_years: 5.0, sigma_years: 2.0 }];
        let mut acc = NormativeAccumulator::new(nodes, 3).unwrap();
        let mut rng = crate::stats::tests::Uniform(5);
        for s in 0..20 {
            let sex = if s % 2 == 0 { Sex::Female } else { Sex::Male };
            acc.add_subject(5.0, sex, &[0.0, (100.0 + 3.0 * gaussian(&mut rng)) as f32, 50.0]).unwrap();
        }
        let model = NormativeModel::at_age(&acc, 5.0, None, &NormativeParams::default()).unwrap();
        let z = model.z_scores(&[0.0, 130.0, 50.0]).unwrap();
        assert_eq!(z[0], 0.0);
        assert_eq!(z[2], 0.0);
        assert!(z[1] > 5.0, "lesion z {}", z[1]);
        assert!(z.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn empty_node_is_an_error() {
        let nodes = vec![AgeNode { age_years: 5.0, sigma_years: 1.0 }];
        let acc = NormativeAccumulator::new(nodes, 3).unwrap();
        assert!(matches!(
            NormativeModel::at_age(&acc, 5.0, None, &NormativeParams::default()),
            Err(NormativeError::NoSubjects { .. })
        ));
        assert!(matches!(
            NormativeModel::at_age(&acc, f64::NAN, None, &NormativeParams::default()),
            Err(NormativeError::InvalidAge(_))
        ));
    }
}
