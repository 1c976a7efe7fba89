//! The age model: age brackets (hard, possibly overlapping intervals) and continuous-age
//! subject weights by Gaussian kernel regression over age with an adaptive width.
//!
//! # Default brackets and why
//! The default brackets are 0–1, 1–2, 2–4, 4–7, 7–11, 11–14 and 14–18 years. They are finest
//! where the brain changes fastest: during the first year brain volume roughly doubles and T1
//! grey/white contrast inverts (infantile pattern, isointense around 6–12 months, adult-like
//! afterwards), the second year still sees rapid myelination, and growth then slows to a
//! nearly adult size and contrast by late childhood. Each bracket is therefore wide enough to
//! hold a useful sample but narrow enough that subjects within it share anatomy and contrast,
//! as in the Neurodevelopmental MRI Database (monthly to half-yearly templates early, coarser
//! later) and the NIHPD objective-2 brackets (4.5–8.5, 7–11, 7.5–13.5, 10–14, 13–18.5 years).
//! Brackets are configuration: users may pass their own, and brackets may overlap.
//!
//! # Continuous age
//! Templates at any target age use kernel regression over age (Serag et al. 2012): subject
//! `i` gets weight `exp(−(ageᵢ − t)² / 2σ²)`. The base width grows with age
//! (`σ₀ = max(minimum, relative × t)`), again because the brain changes fastest early; when
//! data are sparse the width is widened until the *effective sample size*
//! `(Σw)² / Σw²` reaches a minimum, so no template rests on one or two subjects.

use serde::{Deserialize, Serialize};

/// Why an age model or a weighting request is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgeModelError {
    /// A bracket's bounds break a rule.
    #[error("age bracket {name:?}: {rule}")]
    InvalidBracket {
        /// The bracket's name.
        name: String,
        /// The rule it breaks.
        rule: String,
    },
    /// No bracket was given.
    #[error("the list of age brackets is empty")]
    NoBrackets,
    /// An age is not a finite number in the plausible range.
    #[error(
        "age {age} years is implausible: ages must be finite and within 0–{MAX_PLAUSIBLE_AGE_YEARS} years"
    )]
    ImplausibleAge {
        /// The offending age.
        age: f64,
    },
    /// The kernel parameters break a rule.
    #[error("age kernel: {rule}")]
    InvalidKernel {
        /// The rule broken.
        rule: String,
    },
    /// Fewer subjects than the minimum effective sample: no width can reach it.
    #[error("{available} subjects cannot give an effective sample of {required}")]
    TooFewSubjects {
        /// Number of subjects with an age.
        available: usize,
        /// The configured minimum effective sample size.
        required: f64,
    },
}

/// Ages above this (years) are rejected as implausible for a paediatric cohort.
pub const MAX_PLAUSIBLE_AGE_YEARS: f64 = 25.0;

/// Checks that an age is finite and within `0..=MAX_PLAUSIBLE_AGE_YEARS`.
pub fn check_age(age: f64) -> Result<(), AgeModelError> {
    if age.is_finite() && (0.0..=MAX_PLAUSIBLE_AGE_YEARS).contains(&age) {
        Ok(())
    } else {
        Err(AgeModelError::ImplausibleAge { age })
    }
}

/// One age bracket: the half-open interval `[min_years, max_years)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeBracket {
    /// A short name used in file names (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Lower bound in years (inclusive).
    pub min_years: f64,
    /// Upper bound in years (exclusive).
    pub max_years: f64,
}

impl AgeBracket {
    /// A bracket named `"{min}-{max}y"`.
    pub fn new(min_years: f64, max_years: f64) -> Self {
        Self { name: format!("{min_years}-{max_years}y"), min_years, max_years }
    }

    /// Whether `age` lies in `[min_years, max_years)`.
    pub fn contains(&self, age: f64) -> bool {
        age >= self.min_years && age < self.max_years
    }

    /// The centre of the bracket (years), the natural target age of its template.
    pub fn centre(&self) -> f64 {
        0.5 * (self.min_years + self.max_years)
    }

    fn validate(&self) -> Result<(), AgeModelError> {
        let fail =
            |rule: &str| Err(AgeModelError::InvalidBracket { name: self.name.clone(), rule: rule.into() });
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return fail("name must be non-empty and use only letters, digits, '-', '_' or '.'");
        }
        if !self.min_years.is_finite() || !self.max_years.is_finite() {
            return fail("bounds must be finite");
        }
        if self.min_years < 0.0 {
            return fail("min_years must be ≥ 0");
        }
        if self.max_years <= self.min_years {
            return fail("max_years must be greater than min_years");
        }
        Ok(())
    }
}

/// Anything with an age range `[min_years, max_years)` that a bracket is chosen among: the
/// bracket of a configuration, of a build, of a database.
pub trait AgeRange {
    /// Lower bound in years (inclusive).
    fn min_years(&self) -> f64;
    /// Upper bound in years (exclusive).
    fn max_years(&self) -> f64;
}

impl AgeRange for AgeBracket {
    fn min_years(&self) -> f64 {
        self.min_years
    }
    fn max_years(&self) -> f64 {
        self.max_years
    }
}

/// The bracket a normal of `age` belongs to: among the brackets containing it, the one whose
/// centre is nearest (ties go to the earlier); `None` when no bracket contains it.
pub fn containing_bracket<B: AgeRange>(brackets: &[B], age: f64) -> Option<usize> {
    let contains = |b: &B| age >= b.min_years() && age < b.max_years();
    let distance = |b: &B| (age - 0.5 * (b.min_years() + b.max_years())).abs();
    brackets
        .iter()
        .enumerate()
        .filter(|(_, b)| contains(b))
        .min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)))
        .map(|(i, _)| i)
}

/// The bracket a case of `age` is compared with: the [`containing_bracket`], else the bracket
/// with the nearest bound (ties go to the earlier); `None` only without brackets.
pub fn nearest_bracket<B: AgeRange>(brackets: &[B], age: f64) -> Option<usize> {
    containing_bracket(brackets, age).or_else(|| {
        let distance = |b: &B| (age - b.min_years()).abs().min((age - b.max_years()).abs());
        brackets.iter().enumerate().min_by(|a, b| distance(a.1).total_cmp(&distance(b.1))).map(|(i, _)| i)
    })
}

/// A validated list of age brackets (overlap allowed, names unique).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<AgeBracket>", into = "Vec<AgeBracket>")]
pub struct AgeBrackets {
    brackets: Vec<AgeBracket>,
}

impl TryFrom<Vec<AgeBracket>> for AgeBrackets {
    type Error = AgeModelError;
    fn try_from(brackets: Vec<AgeBracket>) -> Result<Self, Self::Error> {
        Self::new(brackets)
    }
}

impl From<AgeBrackets> for Vec<AgeBracket> {
    fn from(value: AgeBrackets) -> Self {
        value.brackets
    }
}

impl Default for AgeBrackets {
    fn default() -> Self {
        Self::default_paediatric()
    }
}

impl AgeBrackets {
    /// Validates brackets: bounds finite, `0 ≤ min < max`, names unique and file-safe.
    pub fn new(brackets: Vec<AgeBracket>) -> Result<Self, AgeModelError> {
        if brackets.is_empty() {
            return Err(AgeModelError::NoBrackets);
        }
        for (index, bracket) in brackets.iter().enumerate() {
            bracket.validate()?;
            if brackets[..index].iter().any(|other| other.name == bracket.name) {
                return Err(AgeModelError::InvalidBracket {
                    name: bracket.name.clone(),
                    rule: "names must be unique".into(),
                });
            }
        }
        Ok(Self { brackets })
    }

    /// The default paediatric brackets: 0–1, 1–2, 2–4, 4–7, 7–11, 11–14, 14–18 years (see the
    /// module documentation for the rationale).
    pub fn default_paediatric() -> Self {
        let bounds =
            [(0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 7.0), (7.0, 11.0), (11.0, 14.0), (14.0, 18.0)];
        Self { brackets: bounds.iter().map(|&(lo, hi)| AgeBracket::new(lo, hi)).collect() }
    }

    /// The brackets in configuration order.
    pub fn brackets(&self) -> &[AgeBracket] {
        &self.brackets
    }

    /// Indices of every bracket containing `age` (several when brackets overlap).
    pub fn brackets_for(&self, age: f64) -> Vec<usize> {
        self.brackets.iter().enumerate().filter(|(_, b)| b.contains(age)).map(|(i, _)| i).collect()
    }

    /// Index of the bracket whose centre is nearest to `age` among those containing it, or
    /// the nearest bracket overall when none contains it (for choosing a case's template).
    pub fn nearest(&self, age: f64) -> usize {
        nearest_bracket(&self.brackets, age).expect("brackets non-empty")
    }
}

/// Parameters of the Gaussian age kernel with adaptive width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgeKernel {
    /// Smallest base width σ₀ (years).
    pub minimum_width_years: f64,
    /// Base width as a fraction of the target age: `σ₀ = max(minimum, relative × age)`.
    pub relative_width: f64,
    /// Largest width the adaptation may reach (years).
    pub maximum_width_years: f64,
    /// Minimum effective sample size `(Σw)²/Σw²` the width is widened to reach.
    pub minimum_effective_sample: f64,
    /// Subjects whose weight is below this fraction of the largest weight get weight 0 (so
    /// they need not be registered at all).
    pub negligible_fraction: f64,
}

impl Default for AgeKernel {
    fn default() -> Self {
        Self {
            minimum_width_years: 0.25,
            relative_width: 0.15,
            maximum_width_years: 10.0,
            minimum_effective_sample: 8.0,
            negligible_fraction: 1e-3,
        }
    }
}

/// Subject weights for one target age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelWeights {
    /// One weight per subject (same order as the ages), normalized to sum 1.
    pub weights: Vec<f64>,
    /// The width σ used (years).
    pub width_years: f64,
    /// The effective sample size reached.
    pub effective_sample: f64,
}

impl AgeKernel {
    fn validate(&self) -> Result<(), AgeModelError> {
        let fail = |rule: &str| Err(AgeModelError::InvalidKernel { rule: rule.into() });
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.minimum_width_years) {
            return fail("minimum_width_years must be > 0");
        }
        if !(self.relative_width.is_finite() && self.relative_width >= 0.0) {
            return fail("relative_width must be ≥ 0");
        }
        if !(self.maximum_width_years.is_finite() && self.maximum_width_years >= self.minimum_width_years) {
            return fail("maximum_width_years must be ≥ minimum_width_years");
        }
        if !(self.minimum_effective_sample.is_finite() && self.minimum_effective_sample >= 1.0) {
            return fail("minimum_effective_sample must be ≥ 1");
        }
        if !(self.negligible_fraction.is_finite() && (0.0..1.0).contains(&self.negligible_fraction)) {
            return fail("negligible_fraction must be in [0, 1)");
        }
        Ok(())
    }

    /// The base width σ₀ at a target age.
    pub fn base_width(&self, target_age: f64) -> f64 {
        (self.relative_width * target_age).max(self.minimum_width_years).min(self.maximum_width_years)
    }

    /// Normalized weights of subjects with `ages` for a template at `target_age`, with the
    /// smallest width ≥ σ₀ whose effective sample reaches the minimum (found by doubling, then
    /// bisection), capped at the maximum width.
    pub fn weights(&self, ages: &[f64], target_age: f64) -> Result<KernelWeights, AgeModelError> {
        self.validate()?;
        check_age(target_age)?;
        for &age in ages {
            check_age(age)?;
        }
        if (ages.len() as f64) < self.minimum_effective_sample {
            return Err(AgeModelError::TooFewSubjects {
                available: ages.len(),
                required: self.minimum_effective_sample,
            });
        }
        let target = self.minimum_effective_sample;
        let mut low = self.base_width(target_age);
        let mut width = low;
        if effective_sample(ages, target_age, width) < target {
            // Grow geometrically until the target is met or the cap is reached, then bisect.
            let mut high = low;
            while high < self.maximum_width_years && effective_sample(ages, target_age, high) < target {
                low = high;
                high = (high * 2.0).min(self.maximum_width_years);
            }
            if effective_sample(ages, target_age, high) >= target {
                for _ in 0..40 {
                    let mid = 0.5 * (low + high);
                    if effective_sample(ages, target_age, mid) >= target {
                        high = mid;
                    } else {
                        low = mid;
                    }
                }
            }
            width = high;
        }
        let mut weights = raw_weights(ages, target_age, width);
        let largest = weights.iter().cloned().fold(0.0, f64::max);
        for w in &mut weights {
            if *w < self.negligible_fraction * largest {
                *w = 0.0;
            }
        }
        let sum: f64 = weights.iter().sum();
        for w in &mut weights {
            *w /= sum;
        }
        let effective = effective_sample_of(&weights);
        Ok(KernelWeights { weights, width_years: width, effective_sample: effective })
    }
}

fn raw_weights(ages: &[f64], target_age: f64, width: f64) -> Vec<f64> {
    // Relative to the nearest subject, so that far targets do not underflow to all-zero weights.
    let nearest = ages.iter().map(|a| (a - target_age).abs()).fold(f64::INFINITY, f64::min);
    let shift = nearest * nearest / (2.0 * width * width);
    ages.iter().map(|&a| (-(a - target_age).powi(2) / (2.0 * width * width) + shift).exp()).collect()
}

fn effective_sample(ages: &[f64], target_age: f64, width: f64) -> f64 {
    effective_sample_of(&raw_weights(ages, target_age, width))
}

/// Kish's effective sample size `(Σw)² / Σw²` of non-negative weights (0 when all are 0).
pub fn effective_sample_of(weights: &[f64]) -> f64 {
    let sum: f64 = weights.iter().sum();
    let squares: f64 = weights.iter().map(|w| w * w).sum();
    if squares > 0.0 { sum * sum / squares } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_brackets_cover_childhood_and_are_finest_early() {
        let brackets = AgeBrackets::default_paediatric();
        assert_eq!(brackets.brackets().len(), 7);
        for age in [0.0, 0.5, 0.99, 1.0, 3.0, 6.9, 10.0, 13.0, 17.99] {
            assert_eq!(brackets.brackets_for(age).len(), 1, "age {age}");
        }
        assert!(brackets.brackets_for(18.0).is_empty());
        let widths: Vec<f64> = brackets.brackets().iter().map(|b| b.max_years - b.min_years).collect();
        assert!(widths.iter().all(|&w| w >= widths[0]) && widths[6] > widths[0], "{widths:?}");
        assert_eq!(brackets.brackets()[0].name, "0-1y");
    }

    #[test]
    fn overlapping_brackets_return_every_match() {
        let brackets = AgeBrackets::new(vec![
            AgeBracket::new(4.5, 8.5),
            AgeBracket::new(7.0, 11.0),
            AgeBracket::new(7.5, 13.5),
        ])
        .unwrap();
        assert_eq!(brackets.brackets_for(8.0), vec![0, 1, 2]);
        assert_eq!(brackets.brackets_for(5.0), vec![0]);
        // 9.0 lies in brackets 1 (centre 9) and 2 (centre 10.5): the nearer centre wins.
        assert_eq!(brackets.nearest(9.0), 1);
        assert_eq!(brackets.nearest(20.0), 2);
        assert_eq!(brackets.nearest(1.0), 0);
    }

    #[test]
    fn invalid_brackets_are_rejected_by_name() {
        let error = AgeBrackets::new(vec![AgeBracket::new(2.0, 1.0)]).unwrap_err();
        assert!(error.to_string().contains("2-1y"), "{error}");
        let duplicate = AgeBrackets::new(vec![AgeBracket::new(0.0, 1.0), AgeBracket::new(0.0, 1.0)]);
        assert!(matches!(duplicate, Err(AgeModelError::InvalidBracket { .. })));
        let bad_name = AgeBracket { name: "a/b".into(), min_years: 0.0, max_years: 1.0 };
        assert!(AgeBrackets::new(vec![bad_name]).is_err());
        assert_eq!(AgeBrackets::new(vec![]), Err(AgeModelError::NoBrackets));
    }

    #[test]
    fn brackets_round_trip_through_json_and_validate() {
        let brackets = AgeBrackets::default_paediatric();
        let json = serde_json::to_string(&brackets).unwrap();
        let back: AgeBrackets = serde_json::from_str(&json).unwrap();
        assert_eq!(back, brackets);
        let invalid = r#"[{"name":"x","min_years":3,"max_years":1}]"#;
        assert!(serde_json::from_str::<AgeBrackets>(invalid).is_err());
    }

    #[test]
    fn dense_data_keep_the_base_width() {
        let ages: Vec<f64> = (0..200).map(|i| i as f64 * 0.05).collect(); // 0–10 y, dense
        let kernel = AgeKernel::default();
        let result = kernel.weights(&ages, 6.0).unwrap();
        assert!((result.width_years - 0.9).abs() < 1e-12, "{}", result.width_years);
        assert!(result.effective_sample >= kernel.minimum_effective_sample);
        assert!((result.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Weights peak at the target and fall symmetrically.
        let at = |age: f64| result.weights[(age / 0.05).round() as usize];
        assert!(at(6.0) > at(5.5) && (at(5.5) - at(6.5)).abs() < 1e-12);
    }

    #[test]
    fn sparse_data_widen_the_kernel_to_the_minimum_effective_sample() {
        // Few subjects near the target: the width must grow until ESS ≥ 8.
        let ages = [0.1, 0.2, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 12.0];
        let kernel = AgeKernel::default();
        let result = kernel.weights(&ages, 0.15).unwrap();
        assert!(result.width_years > kernel.base_width(0.15));
        assert!(result.effective_sample >= 8.0 - 1e-6, "{}", result.effective_sample);
        // Minimal: a slightly narrower kernel would not reach the minimum.
        let narrower = effective_sample(&ages, 0.15, result.width_years * 0.99);
        assert!(narrower < 8.0, "{narrower}");
        // The subjects nearest the target keep the largest weights.
        assert!(result.weights[0] > result.weights[5] && result.weights[1] > result.weights[11]);
    }

    #[test]
    fn too_few_subjects_and_bad_ages_are_errors() {
        let kernel = AgeKernel::default();
        assert!(matches!(kernel.weights(&[1.0, 2.0], 1.0), Err(AgeModelError::TooFewSubjects { .. })));
        let ages = [1.0; 10];
        assert!(matches!(kernel.weights(&ages, f64::NAN), Err(AgeModelError::ImplausibleAge { .. })));
        let mut bad = ages.to_vec();
        bad[3] = -1.0;
        assert!(matches!(kernel.weights(&bad, 1.0), Err(AgeModelError::ImplausibleAge { .. })));
    }

    #[test]
    fn negligible_weights_are_zeroed() {
        let mut ages: Vec<f64> = (0..20).map(|i| 2.0 + i as f64 * 0.02).collect();
        ages.push(17.0);
        let result = AgeKernel::default().weights(&ages, 2.2).unwrap();
        assert_eq!(result.weights[20], 0.0);
        assert!(result.weights[..20].iter().all(|&w| w > 0.0));
    }
}
