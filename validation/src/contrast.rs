//! T1-weighted tissue contrast as a function of age.
//!
//! Unmyelinated white matter is darker than grey matter on T1-weighted images in the first
//! months of life (inverted contrast), the two are nearly isointense around 6–12 months, and
//! the adult pattern (white brighter than grey) is reached by about 2 years as myelination
//! proceeds. Here the white-minus-grey contrast is `c(age) = c_adult · (−0.8 + 1.8 · m(age))`
//! with a myelination maturity `m(age) = 1 − exp(−(age/τ)^p)`, τ = 1.033 years, p = 1.663,
//! chosen so that `c` crosses zero at 9 months and reaches 93 % of the adult contrast at
//! 2 years (91 %). Grey matter and CSF keep their adult intensities.

use serde::{Deserialize, Serialize};

/// Mean T1-weighted intensities of the three tissue classes, in the base image's units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TissueIntensities {
    /// Cerebrospinal fluid.
    pub csf: f64,
    /// Grey matter.
    pub grey_matter: f64,
    /// White matter.
    pub white_matter: f64,
}

/// Scale of the myelination maturity curve (years).
const MATURITY_TAU_YEARS: f64 = 1.033;
/// Shape of the myelination maturity curve (a sigmoid in age for values above 1).
const MATURITY_SHAPE: f64 = 1.663;
/// White-minus-grey contrast at birth as a fraction of the adult contrast.
const NEONATAL_CONTRAST: f64 = -0.8;

/// Myelination maturity in [0, 1): 0 at birth, 0.44 at 9 months (isointense), 0.95 at
/// 2 years, 1 in adults.
pub fn white_matter_maturity(age_years: f64) -> f64 {
    let a = age_years.max(0.0) / MATURITY_TAU_YEARS;
    1.0 - (-a.powf(MATURITY_SHAPE)).exp()
}

/// White-minus-grey contrast at a given maturity as a fraction of the adult contrast: −0.8 at
/// birth, 0 at maturity 4/9, 1 when mature.
pub fn relative_contrast(maturity: f64) -> f64 {
    NEONATAL_CONTRAST + (1.0 - NEONATAL_CONTRAST) * maturity
}

impl TissueIntensities {
    /// The intensities at `age_years`, given the adult ones.
    pub fn at_age(&self, age_years: f64) -> TissueIntensities {
        self.at_maturity(white_matter_maturity(age_years))
    }

    /// The intensities at a white-matter maturity (see [`white_matter_maturity`]).
    pub fn at_maturity(&self, maturity: f64) -> TissueIntensities {
        let adult_contrast = self.white_matter - self.grey_matter;
        TissueIntensities {
            csf: self.csf,
            grey_matter: self.grey_matter,
            white_matter: self.grey_matter + adult_contrast * relative_contrast(maturity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADULT: TissueIntensities = TissueIntensities { csf: 68.0, grey_matter: 166.0, white_matter: 222.0 };

    #[test]
    fn contrast_inverts_in_infancy_and_matures_by_two() {
        for age in [0.0, 0.1, 0.3, 0.5] {
            let t = ADULT.at_age(age);
            assert!(t.white_matter < t.grey_matter, "age {age}: {t:?}");
        }
        let crossing = ADULT.at_age(0.75);
        assert!((crossing.white_matter - crossing.grey_matter).abs() < 2.0, "{crossing:?}");
        // Low contrast across 6–12 months.
        for age in [0.6, 0.9, 1.0] {
            let t = ADULT.at_age(age);
            assert!((t.white_matter - t.grey_matter).abs() < 0.35 * 56.0, "age {age}: {t:?}");
        }
        let two = ADULT.at_age(2.0);
        assert!(two.white_matter - two.grey_matter > 0.9 * 56.0);
        let newborn = ADULT.at_age(0.0);
        assert!((newborn.white_matter - (166.0 - 0.8 * 56.0)).abs() < 1e-9);
        let adult = ADULT.at_age(17.0);
        assert!((adult.white_matter - 222.0).abs() < 1e-6);
        assert!(ADULT.at_age(0.0).csf < ADULT.at_age(0.0).white_matter);
    }

    #[test]
    fn maturity_is_monotone() {
        let mut previous = -1.0;
        for step in 0..200 {
            let m = white_matter_maturity(step as f64 * 0.05);
            assert!(m >= previous && m <= 1.0);
            previous = m;
        }
        assert_eq!(white_matter_maturity(0.0), 0.0);
    }
}
