//! How the demo divides its age range into brackets and spreads its normals over them.

use pedinorm_templates::age::{AgeBracket, AgeBrackets};
use pedinorm_validation::AgeSpec;

/// How the demo divides its age range into brackets.
#[derive(Debug, Clone, PartialEq)]
pub enum DemoBrackets {
    /// The default paediatric brackets that meet the age range, normals stratified by bracket.
    Paediatric,
    /// This many equal splits of the age range, normals spread evenly over it.
    Equal(usize),
}

impl std::str::FromStr for DemoBrackets {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text == "default" {
            return Ok(Self::Paediatric);
        }
        match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Self::Equal(n)),
            _ => Err(format!("--brackets {text:?}: must be `default` or a positive number of equal splits")),
        }
    }
}

impl DemoBrackets {
    /// The brackets over `[min_age, max_age)`.
    pub fn over(&self, min_age: f64, max_age: f64) -> Vec<AgeBracket> {
        match *self {
            Self::Paediatric => AgeBrackets::default_paediatric()
                .brackets()
                .iter()
                .filter(|b| b.max_years > min_age && b.min_years < max_age)
                .cloned()
                .collect(),
            Self::Equal(count) => {
                let width = (max_age - min_age) / count as f64;
                (0..count)
                    .map(|b| {
                        let lo = min_age + width * b as f64;
                        // The last bracket is closed at the top so the oldest normal belongs to it.
                        let hi =
                            if b + 1 == count { max_age + 1e-6 } else { min_age + width * (b + 1) as f64 };
                        let mut bracket = AgeBracket::new(lo, hi);
                        bracket.name = format!("{:.1}-{:.1}y", lo, min_age + width * (b + 1) as f64);
                        bracket
                    })
                    .collect()
            }
        }
    }

    /// Ages of `normals` normals: evenly within each paediatric bracket (so the infant
    /// brackets get as many as the wide ones), or spread over the whole range for equal splits.
    pub(super) fn ages(
        &self,
        brackets: &[AgeBracket],
        normals: usize,
        min_age: f64,
        max_age: f64,
    ) -> AgeSpec {
        match self {
            Self::Equal(_) => AgeSpec::Range { min: min_age, max: max_age },
            Self::Paediatric => {
                let mut ages = Vec::with_capacity(normals);
                for (b, bracket) in brackets.iter().enumerate() {
                    let (lo, hi) = (bracket.min_years.max(min_age), bracket.max_years.min(max_age));
                    // Later brackets take the remainder.
                    let count = normals / brackets.len()
                        + usize::from(brackets.len() - b <= normals % brackets.len());
                    ages.extend((0..count).map(|i| lo + (hi - lo) * (i as f64 + 0.5) / count as f64));
                }
                AgeSpec::List(ages)
            }
        }
    }
}
