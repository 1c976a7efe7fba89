//! Brain growth with age: total brain volume as a fraction of the adult volume, the sex
//! effect, and a mild age-dependent change of shape.
//!
//! The curve is a monotone cubic (PCHIP) interpolation through published anchor values; see
//! `docs/synthetic-cohort.md` for the sources. It is a smooth, plausible curve for a synthetic
//! cohort, not a growth chart.

/// Sex of a synthetic subject: the normative model's own (`F`/`M` in files).
pub use pedinorm_templates::stats::Sex;

/// Oldest age the model covers (years); older subjects are treated as adults.
pub const ADULT_AGE_YEARS: f64 = 18.0;

/// Anchor points (age in years, total brain volume as a fraction of the adult volume).
///
/// Birth ≈ 36 %, 1 year ≈ 72 %, 2 years ≈ 83 % (Knickmeyer et al. 2008); ≈ 90 % by 6 years and
/// close to the adult value in early adolescence (Dekaban & Sadowsky 1978 brain weights;
/// Bethlehem et al. 2022 brain charts, total cerebrum volume peaking near 12–13 years).
const VOLUME_ANCHORS: [(f64, f64); 10] = [
    (0.0, 0.36),
    (0.25, 0.47),
    (0.5, 0.56),
    (1.0, 0.72),
    (2.0, 0.83),
    (4.0, 0.88),
    (6.0, 0.91),
    (10.0, 0.96),
    (13.0, 0.99),
    (18.0, 1.0),
];

/// Relative total brain volume of males and females around the sex-averaged curve: boys'
/// brains are on average about 9 % larger than girls' throughout childhood.
const SEX_VOLUME_FACTOR: f64 = 0.045;

/// Total brain volume at `age_years` as a fraction of the (sex-averaged) adult volume.
/// Ages below 0 are clamped to 0 and above [`ADULT_AGE_YEARS`] to the adult value.
pub fn brain_volume_fraction(age_years: f64) -> f64 {
    pchip(&VOLUME_ANCHORS, age_years.clamp(0.0, ADULT_AGE_YEARS))
}

/// Multiplicative volume factor of a sex (1 ± 4.5 %).
pub fn sex_volume_factor(sex: Sex) -> f64 {
    match sex {
        Sex::Female => 1.0 - SEX_VOLUME_FACTOR,
        Sex::Male => 1.0 + SEX_VOLUME_FACTOR,
    }
}

/// Linear scale factors (left-right, posterior-anterior, inferior-superior) that map the
/// adult base brain to a brain of the given age, sex and individual volume factor.
///
/// The volume is `brain_volume_fraction(age) · sex_volume_factor(sex) · individual`, and the
/// shape changes mildly with age: a young brain is relatively wider and shorter front-to-back
/// than an adult one (a few %), at the same volume.
pub fn scale_factors(age_years: f64, sex: Sex, individual_volume_factor: f64) -> [f64; 3] {
    let volume = brain_volume_fraction(age_years) * sex_volume_factor(sex) * individual_volume_factor;
    let linear = volume.cbrt();
    // Immaturity goes from 1 at birth to 0 in adulthood, following the volume curve.
    let immaturity = ((1.0 - brain_volume_fraction(age_years)) / (1.0 - VOLUME_ANCHORS[0].1)).clamp(0.0, 1.0);
    let left_right = 1.0 + 0.03 * immaturity;
    let anterior = 1.0 - 0.04 * immaturity;
    // The third axis keeps the volume unchanged by the shape term.
    let superior = 1.0 / (left_right * anterior);
    [linear * left_right, linear * anterior, linear * superior]
}

/// Monotone piecewise-cubic Hermite interpolation (Fritsch–Carlson) through `points` sorted by
/// x; constant beyond the ends. Monotone data give a monotone curve without overshoot.
fn pchip(points: &[(f64, f64)], x: f64) -> f64 {
    let n = points.len();
    if x <= points[0].0 {
        return points[0].1;
    }
    if x >= points[n - 1].0 {
        return points[n - 1].1;
    }
    let secant = |i: usize| (points[i + 1].1 - points[i].1) / (points[i + 1].0 - points[i].0);
    let slope = |i: usize| -> f64 {
        if i == 0 {
            return secant(0);
        }
        if i == n - 1 {
            return secant(n - 2);
        }
        let (d0, d1) = (secant(i - 1), secant(i));
        if d0 * d1 <= 0.0 {
            return 0.0;
        }
        let (h0, h1) = (points[i].0 - points[i - 1].0, points[i + 1].0 - points[i].0);
        let (w0, w1) = (2.0 * h1 + h0, h1 + 2.0 * h0);
        (w0 + w1) / (w0 / d0 + w1 / d1)
    };
    let i = points.windows(2).position(|w| x < w[1].0).expect("x inside the range");
    let (x0, y0) = points[i];
    let (x1, y1) = points[i + 1];
    let h = x1 - x0;
    let t = (x - x0) / h;
    let (m0, m1) = (slope(i) * h, slope(i + 1) * h);
    let t2 = t * t;
    let t3 = t2 * t;
    (2.0 * t3 - 3.0 * t2 + 1.0) * y0 + (t3 - 2.0 * t2 + t) * m0 + (-2.0 * t3 + 3.0 * t2) * y1 + (t3 - t2) * m1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_curve_passes_anchors_and_is_monotone() {
        for (age, fraction) in VOLUME_ANCHORS {
            assert!((brain_volume_fraction(age) - fraction).abs() < 1e-12);
        }
        let mut previous = 0.0;
        for step in 0..=400 {
            let v = brain_volume_fraction(step as f64 * 0.05);
            assert!(v >= previous, "not monotone at {}", step as f64 * 0.05);
            previous = v;
        }
        assert!((brain_volume_fraction(2.0) - 0.83).abs() < 1e-9);
        assert!(brain_volume_fraction(6.0) > 0.88 && brain_volume_fraction(6.0) < 0.93);
        assert_eq!(brain_volume_fraction(40.0), 1.0);
    }

    #[test]
    fn scale_factors_give_the_volume_and_boys_are_larger() {
        let s = scale_factors(1.0, Sex::Female, 1.0);
        let volume = s[0] * s[1] * s[2];
        assert!((volume - 0.72 * (1.0 - SEX_VOLUME_FACTOR)).abs() < 1e-9);
        let boy = scale_factors(1.0, Sex::Male, 1.0);
        assert!(boy.iter().zip(s.iter()).all(|(b, g)| b > g));
        // An infant brain is relatively wider than long; an adult one keeps the base shape.
        let newborn = scale_factors(0.0, Sex::Female, 1.0);
        assert!(newborn[0] / newborn[1] > 1.05 && s[0] / s[1] > 1.02);
        let adult = scale_factors(17.9, Sex::Male, 1.0);
        assert!((adult[0] / adult[1] - 1.0).abs() < 0.01);
    }
}
