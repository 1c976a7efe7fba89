//! One measure's centile model: location, scale and shape of a SHASH distribution as smooth
//! functions of age, with sex and scanner-site effects (a GAMLSS-type model, fitted by
//! penalized maximum likelihood).
//!
//! On the measure's own scale (logarithm for positive measures such as volumes, so effects are
//! proportional as in Brain Charts' log link), standardized by its training mean and SD:
//! - location `mu = B(age)·β + sex·β_sex + site_location`,
//! - `ln sigma = C(age)·γ + sex·γ_sex + site_log_scale` (heteroscedastic),
//! - constant skewness `epsilon` and tail weight `delta` (held at the normal distribution's
//!   when the normals are too few to estimate them; see `fit::Freedom`).
//!
//! `B` and `C` are cubic B-splines on `ln(1 + age)` with P-spline roughness penalties; site
//! effects carry Gaussian priors (a random effect with fixed variance), so a site with few
//! subjects is shrunk towards the population and an unseen site takes the population curve.

use serde::{Deserialize, Serialize};

use super::basis::AgeBasis;
use super::fit::Freedom;
use super::shash::{Shape, centile_of, z_of_centile};
use crate::stats::Sex;

/// The centiles every report and chart shows.
pub const STANDARD_CENTILES: [f64; 11] = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0];

/// How a measure is transformed before modelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Natural logarithm (positive measures: volumes).
    Log,
    /// The value itself.
    Identity,
}

impl Transform {
    /// The modelled value.
    pub fn forward(self, value: f64) -> f64 {
        match self {
            Transform::Log => value.ln(),
            Transform::Identity => value,
        }
    }

    /// The measure's value of a modelled value.
    pub fn inverse(self, modelled: f64) -> f64 {
        match self {
            Transform::Log => modelled.exp(),
            Transform::Identity => modelled,
        }
    }

    /// `ln |d forward / d value|` (the density's change of variables).
    pub fn log_derivative(self, value: f64) -> f64 {
        match self {
            Transform::Log => -value.ln(),
            Transform::Identity => 0.0,
        }
    }
}

/// Who a value belongs to: the covariates of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Covariates {
    /// Age in years.
    pub age: f64,
    /// Sex, when known (unknown takes the midpoint of the two curves).
    pub sex: Option<Sex>,
    /// Scanner site, when known.
    pub site: Option<String>,
}

/// Sex as the model codes it: the sex coefficient is the male − female difference.
pub(crate) fn sex_code(sex: Option<Sex>) -> f64 {
    match sex {
        Some(Sex::Female) => -0.5,
        Some(Sex::Male) => 0.5,
        None => 0.0,
    }
}

/// A site's effect on the standardized location and log-scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEffect {
    /// The site's name.
    pub name: String,
    /// Shift of the location (standardized units).
    pub location: f64,
    /// Shift of `ln sigma`.
    pub log_scale: f64,
    /// Normals of this site the effect was estimated from.
    pub subjects: usize,
    /// Whether the effect was estimated after the fit from a new site's normals.
    pub adapted: bool,
}

/// The fitted model of one measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentileModel {
    /// The measure's name.
    pub measure: String,
    /// Transform applied before modelling.
    pub transform: Transform,
    /// Mean of the transformed training values (standardization).
    pub centre: f64,
    /// SD of the transformed training values (standardization).
    pub spread: f64,
    /// Age basis of the location.
    pub location_basis: AgeBasis,
    /// Location coefficients.
    pub location: Vec<f64>,
    /// Male − female difference of the location.
    pub location_sex: f64,
    /// Age basis of the log-scale.
    pub scale_basis: AgeBasis,
    /// Log-scale coefficients.
    pub log_scale: Vec<f64>,
    /// Male − female difference of the log-scale.
    pub log_scale_sex: f64,
    /// SHASH skewness.
    pub epsilon: f64,
    /// SHASH `ln delta`.
    pub log_delta: f64,
    /// Site effects, in the order sites were first met.
    pub sites: Vec<SiteEffect>,
    /// Normals the model was fitted to.
    pub subjects: usize,
    /// Youngest and oldest training age (years).
    pub age_range: (f64, f64),
    /// The shape freedom the fit had (absent in models fitted before it was chosen by the
    /// number of normals: those had every freedom).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freedom: Option<Freedom>,
}

/// A case's value against a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// Centile (0–100).
    pub centile: f64,
    /// Standard-normal deviate of the centile.
    pub z: f64,
    /// Whether the case's site has an estimated effect (otherwise the population curve).
    pub site_known: bool,
    /// Whether the age lies inside the training range.
    pub age_covered: bool,
}

/// Location and log-scale at some covariates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Predictor {
    pub mu: f64,
    pub log_sigma: f64,
    pub site_known: bool,
}

impl CentileModel {
    /// The SHASH shape.
    pub fn shape(&self) -> Shape {
        Shape { epsilon: self.epsilon, delta: self.log_delta.exp() }
    }

    /// The site effect of a named site, if estimated.
    pub fn site(&self, name: &str) -> Option<&SiteEffect> {
        self.sites.iter().find(|s| s.name == name)
    }

    pub(crate) fn predictor(&self, covariates: &Covariates) -> Predictor {
        let sex = sex_code(covariates.sex);
        let dot = |basis: &AgeBasis, coefficients: &[f64]| -> f64 {
            basis.evaluate(covariates.age).iter().zip(coefficients).map(|(b, c)| b * c).sum()
        };
        let site = covariates.site.as_deref().and_then(|name| self.site(name));
        let (site_location, site_log_scale) = site.map(|s| (s.location, s.log_scale)).unwrap_or((0.0, 0.0));
        Predictor {
            mu: dot(&self.location_basis, &self.location) + sex * self.location_sex + site_location,
            log_sigma: dot(&self.scale_basis, &self.log_scale) + sex * self.log_scale_sex + site_log_scale,
            site_known: site.is_some(),
        }
    }

    /// The measure's value at each of `centiles` (0–100) for the covariates.
    pub fn centiles(&self, covariates: &Covariates, centiles: &[f64]) -> Vec<f64> {
        let predictor = self.predictor(covariates);
        let shape = self.shape();
        centiles
            .iter()
            .map(|&c| {
                let x = shape.x_of(z_of_centile(c));
                let standardized = predictor.mu + predictor.log_sigma.exp() * x;
                self.transform.inverse(standardized * self.spread + self.centre)
            })
            .collect()
    }

    /// Where a value falls for the covariates; `None` for a value the transform cannot take
    /// (zero or negative under the logarithm) or that is not finite.
    pub fn place(&self, value: f64, covariates: &Covariates) -> Option<Placement> {
        let standardized = self.standardize(value)?;
        let predictor = self.predictor(covariates);
        let x = (standardized - predictor.mu) / predictor.log_sigma.exp();
        let z = self.shape().z_of(x);
        Some(Placement {
            centile: centile_of(z),
            z,
            site_known: predictor.site_known,
            age_covered: self.location_basis.covers(covariates.age),
        })
    }

    /// `−ln` of the density of a value on the measure's own scale (for log-loss comparisons
    /// with other models); `None` where `place` gives `None`.
    pub fn negative_log_likelihood(&self, value: f64, covariates: &Covariates) -> Option<f64> {
        let standardized = self.standardize(value)?;
        let predictor = self.predictor(covariates);
        let term =
            super::shash::negative_log_density(standardized, predictor.mu, predictor.log_sigma, self.shape());
        let half_log_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        Some(term.value + half_log_two_pi + self.spread.ln() - self.transform.log_derivative(value))
    }

    pub(crate) fn standardize(&self, value: f64) -> Option<f64> {
        let valid = value.is_finite() && (self.transform == Transform::Identity || value > 0.0);
        valid.then(|| (self.transform.forward(value) - self.centre) / self.spread)
    }
}
