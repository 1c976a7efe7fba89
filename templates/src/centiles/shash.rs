//! The sinh–arcsinh (SHASH) distribution of Jones and Pewsey (2009), as Brain Charts and
//! PCNtoolkit use it for skewed, heavy- or light-tailed measures.
//!
//! With location `mu`, scale `sigma`, skewness `epsilon` and tail weight `delta > 0`, a value
//! `y` is normal after `z = sinh(delta · asinh((y − mu)/sigma) − epsilon)`. `epsilon = 0`,
//! `delta = 1` is the normal distribution.

use statrs::distribution::{ContinuousCDF, Normal};

/// Shape of a SHASH distribution (location and scale are given separately).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Skewness (0: symmetric; positive: right tail longer).
    pub epsilon: f64,
    /// Tail weight (1: normal tails; below 1: heavier).
    pub delta: f64,
}

impl Shape {
    /// The normal distribution.
    pub const NORMAL: Shape = Shape { epsilon: 0.0, delta: 1.0 };

    /// The standard-normal deviate of a standardized value `x = (y − mu)/sigma`.
    pub fn z_of(self, x: f64) -> f64 {
        (self.delta * x.asinh() - self.epsilon).sinh()
    }

    /// The standardized value whose standard-normal deviate is `z` (inverse of `z_of`).
    pub fn x_of(self, z: f64) -> f64 {
        ((z.asinh() + self.epsilon) / self.delta).sinh()
    }
}

/// Negative log-density of one standardized observation and its derivatives.
#[derive(Debug, Clone, Copy)]
pub struct Term {
    /// `−log f(y)` up to the constant `½ log 2π`.
    pub value: f64,
    /// Derivative with respect to the location.
    pub d_mu: f64,
    /// Derivative with respect to `ln sigma`.
    pub d_log_sigma: f64,
    /// Derivative with respect to epsilon.
    pub d_epsilon: f64,
    /// Derivative with respect to `ln delta`.
    pub d_log_delta: f64,
}

/// `−log f(y | mu, sigma, shape)` (without `½ log 2π`) and its gradient.
pub fn negative_log_density(y: f64, mu: f64, log_sigma: f64, shape: Shape) -> Term {
    let sigma = log_sigma.exp();
    let x = (y - mu) / sigma;
    let a = x.asinh();
    let s = shape.delta * a - shape.epsilon;
    let (sinh_s, cosh_s) = (s.sinh(), s.cosh());
    let one_plus_x2 = 1.0 + x * x;
    let value = log_sigma - shape.delta.ln() - log_cosh(s) + 0.5 * one_plus_x2.ln() + 0.5 * sinh_s * sinh_s;
    let d_s = sinh_s * cosh_s - s.tanh();
    let d_x = d_s * shape.delta / one_plus_x2.sqrt() + x / one_plus_x2;
    Term {
        value,
        d_mu: -d_x / sigma,
        d_log_sigma: 1.0 - d_x * x,
        d_epsilon: -d_s,
        d_log_delta: -1.0 + d_s * a * shape.delta,
    }
}

/// `ln cosh s` without overflow for large `|s|`.
fn log_cosh(s: f64) -> f64 {
    let a = s.abs();
    a + (-2.0 * a).exp().ln_1p() - std::f64::consts::LN_2
}

/// The standard normal distribution.
pub fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("the standard normal is valid")
}

/// Centile (0–100) of a standard-normal deviate.
pub fn centile_of(z: f64) -> f64 {
    100.0 * standard_normal().cdf(z)
}

/// Standard-normal deviate of a centile (0–100, exclusive).
pub fn z_of_centile(centile: f64) -> f64 {
    standard_normal().inverse_cdf(centile / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_shape_is_the_normal_density() {
        let term = negative_log_density(1.3, 0.5, 0.2f64.ln(), Shape::NORMAL);
        let x: f64 = (1.3 - 0.5) / 0.2;
        let expected = 0.2f64.ln() + 0.5 * x * x;
        assert!((term.value - expected).abs() < 1e-12);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let shape = Shape { epsilon: 0.4, delta: 0.8 };
        let (y, mu, ls) = (2.1, 1.5, -0.3);
        let term = negative_log_density(y, mu, ls, shape);
        let h = 1e-6;
        let f = |mu: f64, ls: f64, e: f64, ld: f64| {
            negative_log_density(y, mu, ls, Shape { epsilon: e, delta: ld.exp() }).value
        };
        let ld = shape.delta.ln();
        let numeric = [
            (f(mu + h, ls, 0.4, ld) - f(mu - h, ls, 0.4, ld)) / (2.0 * h),
            (f(mu, ls + h, 0.4, ld) - f(mu, ls - h, 0.4, ld)) / (2.0 * h),
            (f(mu, ls, 0.4 + h, ld) - f(mu, ls, 0.4 - h, ld)) / (2.0 * h),
            (f(mu, ls, 0.4, ld + h) - f(mu, ls, 0.4, ld - h)) / (2.0 * h),
        ];
        let analytic = [term.d_mu, term.d_log_sigma, term.d_epsilon, term.d_log_delta];
        for (n, a) in numeric.iter().zip(analytic) {
            assert!((n - a).abs() < 1e-6, "numeric {n} analytic {a}");
        }
    }

    #[test]
    fn deviate_and_value_are_inverse() {
        let shape = Shape { epsilon: -0.7, delta: 1.4 };
        for z in [-3.0, -1.0, 0.0, 0.5, 2.5] {
            assert!((shape.z_of(shape.x_of(z)) - z).abs() < 1e-10);
        }
        assert!((centile_of(z_of_centile(97.5)) - 97.5).abs() < 1e-9);
    }

    #[test]
    fn density_integrates_to_one() {
        let shape = Shape { epsilon: 0.6, delta: 0.7 };
        let step = 0.001;
        let total: f64 = (-40_000..40_000)
            .map(|i| {
                let y = i as f64 * step;
                let term = negative_log_density(y, 0.0, 0.0, shape);
                (-term.value).exp() / (2.0 * std::f64::consts::PI).sqrt() * step
            })
            .sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
    }
}
