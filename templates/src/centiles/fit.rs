//! Penalized maximum-likelihood fit of a centile model, and the adaptation of a new site from
//! its normals with everything else held (PCNtoolkit's "transfer" without refitting).

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use nalgebra::{DMatrix, DVector};
use serde::{Deserialize, Serialize};

use super::CentileError;
use super::basis::{AgeBasis, second_difference_penalty};
use super::model::{CentileModel, Covariates, SiteEffect, Transform, sex_code};
use super::shash::negative_log_density;

/// Settings of a fit. The defaults suit 0–18 years with tens to thousands of normals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Interior knots of the location curve (fewer when subjects are few: one per 15).
    pub location_knots: usize,
    /// Interior knots of the log-scale curve.
    pub scale_knots: usize,
    /// Roughness penalty of the location curve.
    pub location_smoothness: f64,
    /// Roughness penalty of the log-scale curve.
    pub scale_smoothness: f64,
    /// Prior SD of a site's location shift (standardized units).
    pub site_location_sd: f64,
    /// Prior SD of a site's log-scale shift.
    pub site_scale_sd: f64,
    /// Prior SD of the skewness and of `ln delta` (towards the normal distribution).
    pub shape_sd: f64,
    /// Fewest normals a measure needs.
    pub min_subjects: usize,
    /// Optimizer iterations at most.
    pub max_iterations: u64,
    /// Fewest normals for a spread that changes with age (below: one spread for all ages).
    #[serde(default = "default_heteroscedastic_from")]
    pub heteroscedastic_from: usize,
    /// Fewest normals for a free skewness (below: symmetric).
    #[serde(default = "default_skew_from")]
    pub skew_from: usize,
    /// Fewest normals for a free tail weight (below: normal tails).
    #[serde(default = "default_tail_from")]
    pub tail_from: usize,
}

fn default_heteroscedastic_from() -> usize {
    50
}

fn default_skew_from() -> usize {
    100
}

fn default_tail_from() -> usize {
    400
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            location_knots: 6,
            scale_knots: 2,
            location_smoothness: 1.0,
            scale_smoothness: 10.0,
            site_location_sd: 1.0,
            site_scale_sd: 0.5,
            shape_sd: 1.0,
            min_subjects: 20,
            max_iterations: 3000,
            heteroscedastic_from: default_heteroscedastic_from(),
            skew_from: default_skew_from(),
            tail_from: default_tail_from(),
        }
    }
}

/// How much of the model's shape a fit may use. Every added freedom is estimated from the same
/// normals, and with few of them a free shape bends towards the sample (a spline knot per
/// outlier, a skewness from two extreme values): the centile bands then hug the normals and new
/// normals fall outside them far more often than the nominal rate. So freedom grows with the
/// number of normals `n` (see `docs/centiles.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freedom {
    /// Interior knots of the location curve: the option's number, at most one per 15 normals.
    pub location_knots: usize,
    /// Interior knots of the log-scale curve: the option's number, at most one per 100 normals.
    pub scale_knots: usize,
    /// Whether the spread follows age (otherwise one spread for all ages).
    pub heteroscedastic: bool,
    /// Whether the skewness is free (otherwise 0).
    pub skew: bool,
    /// Whether the tail weight is free (otherwise normal tails).
    pub tail: bool,
}

impl FitOptions {
    /// The shape freedom a fit to `subjects` normals gets.
    pub fn freedom(&self, subjects: usize) -> Freedom {
        let heteroscedastic = subjects >= self.heteroscedastic_from;
        Freedom {
            location_knots: self.location_knots.min(subjects / 15),
            scale_knots: if heteroscedastic { self.scale_knots.min(subjects / 100) } else { 0 },
            heteroscedastic,
            skew: subjects >= self.skew_from,
            tail: subjects >= self.tail_from,
        }
    }
}

/// Where each parameter sits in the optimizer's vector.
#[derive(Debug, Clone, Copy)]
struct Layout {
    location: usize,
    scale: usize,
    sites: usize,
}

impl Layout {
    fn location_sex(&self) -> usize {
        self.location
    }
    fn scale_start(&self) -> usize {
        self.location + 1
    }
    fn scale_sex(&self) -> usize {
        self.scale_start() + self.scale
    }
    fn epsilon(&self) -> usize {
        self.scale_sex() + 1
    }
    fn log_delta(&self) -> usize {
        self.epsilon() + 1
    }
    fn site_location(&self, site: usize) -> usize {
        self.log_delta() + 1 + site
    }
    fn site_scale(&self, site: usize) -> usize {
        self.log_delta() + 1 + self.sites + site
    }
    fn len(&self) -> usize {
        self.log_delta() + 1 + 2 * self.sites
    }
}

/// One training row, with its basis values computed once.
struct Row {
    y: f64,
    location_basis: Vec<f64>,
    scale_basis: Vec<f64>,
    sex: f64,
    site: Option<usize>,
}

/// The penalized negative log-likelihood over the free parameters.
struct Objective<'a> {
    rows: &'a [&'a Row],
    layout: Layout,
    options: &'a FitOptions,
    location_penalty: Vec<Vec<f64>>,
    scale_penalty: Vec<Vec<f64>>,
    /// The full parameter vector; the optimizer moves only the `free` entries, each group of
    /// entries by one shared value (a constant spread ties the log-scale coefficients).
    base: Vec<f64>,
    free: Vec<Vec<usize>>,
}

impl Objective<'_> {
    fn full(&self, free_values: &[f64]) -> Vec<f64> {
        set_free(self.base.clone(), &self.free, free_values)
    }

    /// Value and gradient with respect to every parameter.
    fn evaluate(&self, params: &[f64]) -> (f64, Vec<f64>) {
        let layout = self.layout;
        let mut gradient = vec![0.0; params.len()];
        let shape = super::shash::Shape {
            epsilon: params[layout.epsilon()],
            delta: params[layout.log_delta()].exp(),
        };
        let mut value = 0.0;
        for row in self.rows {
            let mut mu = row.sex * params[layout.location_sex()];
            for (k, b) in row.location_basis.iter().enumerate() {
                mu += b * params[k];
            }
            let mut log_sigma = row.sex * params[layout.scale_sex()];
            for (k, c) in row.scale_basis.iter().enumerate() {
                log_sigma += c * params[layout.scale_start() + k];
            }
            if let Some(site) = row.site {
                mu += params[layout.site_location(site)];
                log_sigma += params[layout.site_scale(site)];
            }
            let term = negative_log_density(row.y, mu, log_sigma, shape);
            value += term.value;
            for (k, b) in row.location_basis.iter().enumerate() {
                gradient[k] += term.d_mu * b;
            }
            gradient[layout.location_sex()] += term.d_mu * row.sex;
            for (k, c) in row.scale_basis.iter().enumerate() {
                gradient[layout.scale_start() + k] += term.d_log_sigma * c;
            }
            gradient[layout.scale_sex()] += term.d_log_sigma * row.sex;
            gradient[layout.epsilon()] += term.d_epsilon;
            gradient[layout.log_delta()] += term.d_log_delta;
            if let Some(site) = row.site {
                gradient[layout.site_location(site)] += term.d_mu;
                gradient[layout.site_scale(site)] += term.d_log_sigma;
            }
        }
        value += quadratic_penalty(
            params,
            0,
            &self.location_penalty,
            self.options.location_smoothness,
            &mut gradient,
        );
        value += quadratic_penalty(
            params,
            layout.scale_start(),
            &self.scale_penalty,
            self.options.scale_smoothness,
            &mut gradient,
        );
        let mut ridge = |index: usize, sd: f64| {
            let precision = 1.0 / (sd * sd);
            value += 0.5 * precision * params[index] * params[index];
            gradient[index] += precision * params[index];
        };
        ridge(layout.epsilon(), self.options.shape_sd);
        ridge(layout.log_delta(), self.options.shape_sd);
        for site in 0..layout.sites {
            ridge(layout.site_location(site), self.options.site_location_sd);
            ridge(layout.site_scale(site), self.options.site_scale_sd);
        }
        (value, gradient)
    }
}

/// `½ λ θᵀPθ` over the block of `params` starting at `start`, adding its gradient.
fn quadratic_penalty(
    params: &[f64],
    start: usize,
    penalty: &[Vec<f64>],
    weight: f64,
    gradient: &mut [f64],
) -> f64 {
    let mut value = 0.0;
    for (i, row) in penalty.iter().enumerate() {
        let mut p_theta = 0.0;
        for (j, p) in row.iter().enumerate() {
            p_theta += p * params[start + j];
        }
        value += 0.5 * weight * params[start + i] * p_theta;
        gradient[start + i] += weight * p_theta;
    }
    value
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, free: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.guarded(free).0)
    }
}

impl Gradient for Objective<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, free: &Self::Param) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.guarded(free).1)
    }
}

/// What the objective reports where it overflows: far above any reachable value, so a line
/// search that stepped too far backs off instead of computing with infinities.
const OVERFLOW_COST: f64 = 1e100;

impl Objective<'_> {
    /// Value and gradient over the free parameters, finite everywhere: an overflow (a first
    /// quasi-Newton step far out of range) reports [`OVERFLOW_COST`] with no slope.
    fn guarded(&self, free: &[f64]) -> (f64, Vec<f64>) {
        let (value, full_gradient) = self.evaluate(&self.full(free));
        let gradient: Vec<f64> =
            self.free.iter().map(|group| group.iter().map(|&i| full_gradient[i]).sum()).collect();
        if value.is_finite() && gradient.iter().all(|g| g.is_finite()) {
            (value, gradient)
        } else {
            (OVERFLOW_COST, vec![0.0; free.len()])
        }
    }
}

/// `params` with each group of `free` entries set to its value.
fn set_free(mut params: Vec<f64>, free: &[Vec<usize>], values: &[f64]) -> Vec<f64> {
    for (group, &value) in free.iter().zip(values) {
        for &index in group {
            params[index] = value;
        }
    }
    params
}

/// When the optimizer stops: gradient norm and relative cost change.
#[derive(Debug, Clone, Copy)]
struct Tolerance {
    gradient: f64,
    cost: f64,
}

/// A fit that is kept.
const FIT: Tolerance = Tolerance { gradient: 1e-7, cost: 1e-12 };

/// A held-out refit, started at the full fit's optimum: only its z are kept, and parameters
/// this close to the optimum move them by far less than the z are read to.
const REFIT: Tolerance = Tolerance { gradient: 1e-4, cost: 1e-9 };

/// Minimizes the objective over its free parameters from their base values (a group starts
/// at its first entry's base value).
fn minimize(objective: Objective<'_>, max_iterations: u64, tolerance: Tolerance) -> Result<Vec<f64>, String> {
    let start: Vec<f64> = objective.free.iter().map(|group| objective.base[group[0]]).collect();
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 7)
        .with_tolerance_grad(tolerance.gradient)
        .and_then(|s| s.with_tolerance_cost(tolerance.cost))
        .map_err(|e| e.to_string())?;
    let base = objective.base.clone();
    let free = objective.free.clone();
    let result = Executor::new(objective, solver)
        .configure(|state| state.param(start).max_iters(max_iterations))
        .run()
        .map_err(|e| e.to_string())?;
    let best = result.state().get_best_param().ok_or("the optimizer returned no parameters")?;
    Ok(set_free(base, &free, best))
}

/// Fits the model of one measure to the normals' `values` with their `covariates`
/// (values that are missing — not finite — are left out).
pub fn fit_measure(
    measure: &str,
    values: &[f64],
    covariates: &[Covariates],
    options: &FitOptions,
) -> Result<CentileModel, CentileError> {
    let problem = Problem::new(measure, values, covariates, options)?;
    let params = problem.solve(&problem.rows, problem.initial(options), options, FIT)?;
    Ok(problem.model(&params))
}

/// Fits the model of one measure as [`fit_measure`] does, and the z of each normal under the
/// same model refitted without that normal's fold (`folds[i]` is normal `i`'s fold; NaN where
/// the value is missing): what the model says of normals it has not seen.
///
/// The refits keep the full fit's transform, standardization, knots and shape freedom (the
/// deployed model's family) and start from its parameters, so they converge in a few steps.
pub fn fit_measure_with_held_out(
    measure: &str,
    values: &[f64],
    covariates: &[Covariates],
    folds: &[usize],
    options: &FitOptions,
) -> Result<(CentileModel, Vec<f64>), CentileError> {
    assert_eq!(folds.len(), values.len(), "one fold per value");
    let problem = Problem::new(measure, values, covariates, options)?;
    let full = problem.solve(&problem.rows, problem.initial(options), options, FIT)?;
    let model = problem.model(&full);
    let mut held_out = vec![f64::NAN; values.len()];
    let fold_count = folds.iter().max().map_or(0, |&k| k + 1);
    for fold in 0..fold_count {
        let (out, kept): (Vec<usize>, Vec<usize>) =
            (0..problem.rows.len()).partition(|&r| folds[problem.input[r]] == fold);
        if out.is_empty() {
            continue;
        }
        let rows: Vec<&Row> = kept.iter().map(|&r| &problem.rows[r]).collect();
        let params = problem.solve(&rows, full.clone(), options, REFIT)?;
        let refitted = problem.model(&params);
        for r in out {
            let i = problem.input[r];
            if let Some(placement) = refitted.place(values[i], &covariates[i]) {
                held_out[i] = placement.z;
            }
        }
    }
    Ok((model, held_out))
}

/// One measure's fitting problem: the normals with a value, transformed, standardized and
/// evaluated on the age bases once.
struct Problem {
    measure: String,
    transform: Transform,
    centre: f64,
    spread: f64,
    location_basis: AgeBasis,
    scale_basis: AgeBasis,
    freedom: Freedom,
    rows: Vec<Row>,
    /// Each row's index among the input values.
    input: Vec<usize>,
    site_names: Vec<String>,
    layout: Layout,
    age_range: (f64, f64),
}

impl Problem {
    fn new(
        measure: &str,
        values: &[f64],
        covariates: &[Covariates],
        options: &FitOptions,
    ) -> Result<Problem, CentileError> {
        assert_eq!(values.len(), covariates.len(), "one covariate row per value");
        let input: Vec<usize> =
            (0..values.len()).filter(|&i| values[i].is_finite() && covariates[i].age.is_finite()).collect();
        if input.len() < options.min_subjects {
            return Err(CentileError::TooFewSubjects {
                measure: measure.to_owned(),
                subjects: input.len(),
                needed: options.min_subjects,
            });
        }
        let transform =
            if input.iter().all(|&i| values[i] > 0.0) { Transform::Log } else { Transform::Identity };
        let transformed: Vec<f64> = input.iter().map(|&i| transform.forward(values[i])).collect();
        let centre = transformed.iter().sum::<f64>() / transformed.len() as f64;
        let spread = (transformed.iter().map(|t| (t - centre).powi(2)).sum::<f64>()
            / (transformed.len() - 1) as f64)
            .sqrt();
        // Relative to the values' size: a constant measure still shows rounding-level spread.
        if spread.is_nan() || spread <= 1e-9 * (1.0 + centre.abs()) {
            return Err(CentileError::Constant { measure: measure.to_owned() });
        }
        let ages: Vec<f64> = input.iter().map(|&i| covariates[i].age).collect();
        let freedom = options.freedom(input.len());
        let location_basis = AgeBasis::from_ages(&ages, freedom.location_knots);
        let scale_basis = AgeBasis::from_ages(&ages, freedom.scale_knots);
        let mut site_names: Vec<String> = Vec::new();
        let rows: Vec<Row> = input
            .iter()
            .zip(&transformed)
            .map(|(&i, t)| {
                let c = &covariates[i];
                Row {
                    y: (t - centre) / spread,
                    location_basis: location_basis.evaluate(c.age),
                    scale_basis: scale_basis.evaluate(c.age),
                    sex: sex_code(c.sex),
                    site: c.site.as_ref().map(|name| {
                        site_names.iter().position(|s| s == name).unwrap_or_else(|| {
                            site_names.push(name.clone());
                            site_names.len() - 1
                        })
                    }),
                }
            })
            .collect();
        let layout =
            Layout { location: location_basis.len(), scale: scale_basis.len(), sites: site_names.len() };
        let age_range =
            ages.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &a| (lo.min(a), hi.max(a)));
        Ok(Problem {
            measure: measure.to_owned(),
            transform,
            centre,
            spread,
            location_basis,
            scale_basis,
            freedom,
            rows,
            input,
            site_names,
            layout,
            age_range,
        })
    }

    fn initial(&self, options: &FitOptions) -> Vec<f64> {
        let rows: Vec<&Row> = self.rows.iter().collect();
        initial_parameters(&rows, self.layout, options.location_smoothness)
    }

    /// The parameters the optimizer moves, grouped: a constant spread moves every log-scale
    /// coefficient together (the basis sums to one); a shape held at the normal is not moved.
    fn free(&self) -> Vec<Vec<usize>> {
        let layout = self.layout;
        let mut free: Vec<Vec<usize>> = (0..=layout.location_sex()).map(|i| vec![i]).collect();
        if self.freedom.heteroscedastic {
            free.extend((layout.scale_start()..=layout.scale_sex()).map(|i| vec![i]));
        } else {
            free.push((layout.scale_start()..layout.scale_sex()).collect());
        }
        if self.freedom.skew {
            free.push(vec![layout.epsilon()]);
        }
        if self.freedom.tail {
            free.push(vec![layout.log_delta()]);
        }
        free.extend(
            (0..layout.sites).flat_map(|k| [vec![layout.site_location(k)], vec![layout.site_scale(k)]]),
        );
        free
    }

    /// The penalized maximum-likelihood parameters on `rows`, starting from `start`.
    fn solve<R: std::borrow::Borrow<Row>>(
        &self,
        rows: &[R],
        start: Vec<f64>,
        options: &FitOptions,
        tolerance: Tolerance,
    ) -> Result<Vec<f64>, CentileError> {
        let rows: Vec<&Row> = rows.iter().map(|r| r.borrow()).collect();
        let objective = Objective {
            rows: &rows,
            layout: self.layout,
            options,
            location_penalty: second_difference_penalty(self.layout.location),
            scale_penalty: second_difference_penalty(self.layout.scale),
            free: self.free(),
            base: start,
        };
        minimize(objective, options.max_iterations, tolerance)
            .map_err(|message| CentileError::Optimizer { measure: self.measure.clone(), message })
    }

    fn model(&self, params: &[f64]) -> CentileModel {
        let layout = self.layout;
        let sites = self
            .site_names
            .iter()
            .enumerate()
            .map(|(k, name)| SiteEffect {
                subjects: self.rows.iter().filter(|r| r.site == Some(k)).count(),
                name: name.clone(),
                location: params[layout.site_location(k)],
                log_scale: params[layout.site_scale(k)],
                adapted: false,
            })
            .collect();
        CentileModel {
            measure: self.measure.clone(),
            transform: self.transform,
            centre: self.centre,
            spread: self.spread,
            location: params[..layout.location].to_vec(),
            location_sex: params[layout.location_sex()],
            log_scale: params[layout.scale_start()..layout.scale_sex()].to_vec(),
            log_scale_sex: params[layout.scale_sex()],
            epsilon: params[layout.epsilon()],
            log_delta: params[layout.log_delta()],
            location_basis: self.location_basis.clone(),
            scale_basis: self.scale_basis.clone(),
            sites,
            subjects: self.rows.len(),
            age_range: self.age_range,
            freedom: Some(self.freedom),
        }
    }
}

/// Starting point: the location curve and sex effect by penalized least squares, the scale
/// from the residual SD, a normal shape and no site effects.
fn initial_parameters(rows: &[&Row], layout: Layout, smoothness: f64) -> Vec<f64> {
    let columns = layout.location + 1;
    let design = DMatrix::from_fn(rows.len(), columns, |i, j| {
        if j < layout.location { rows[i].location_basis[j] } else { rows[i].sex }
    });
    let y = DVector::from_iterator(rows.len(), rows.iter().map(|r| r.y));
    let mut normal = design.transpose() * &design;
    let penalty = second_difference_penalty(layout.location);
    for (i, row) in penalty.iter().enumerate() {
        for (j, p) in row.iter().enumerate() {
            normal[(i, j)] += smoothness * p;
        }
    }
    for i in 0..columns {
        normal[(i, i)] += 1e-6;
    }
    let coefficients = normal
        .cholesky()
        .map(|c| c.solve(&(design.transpose() * &y)))
        .unwrap_or_else(|| DVector::zeros(columns));
    let residuals = &y - &design * &coefficients;
    let residual_sd = (residuals.norm_squared() / rows.len() as f64).sqrt().max(1e-3);
    let mut params = vec![0.0; layout.len()];
    params[..columns].copy_from_slice(coefficients.as_slice());
    // The scale basis sums to one, so equal coefficients give a constant scale.
    for k in 0..layout.scale {
        params[layout.scale_start() + k] = residual_sd.ln();
    }
    params
}

/// Smallest prior SD of a new site's log-scale shift.
const MIN_ADAPTED_SCALE_SD: f64 = 0.1;

/// Estimates the effect of a site the model has not seen from its normals (values and
/// covariates), holding every other parameter, and adds it to the model. A site the model
/// already has is re-estimated from these normals.
///
/// A spread estimated from ten normals is itself uncertain by about a quarter, so the new
/// site's log-scale shift is shrunk towards what the fitted sites show, ComBat's empirical-Bayes
/// step: its prior SD is the root mean square of the fitted sites' log-scale shifts (at least
/// 0.1, at most the fit's own prior). The location keeps the fit's prior, since a new scanner's
/// gain may lie well outside those of the sites seen.
pub fn adapt_site(
    model: &mut CentileModel,
    site: &str,
    values: &[f64],
    covariates: &[Covariates],
    options: &FitOptions,
) -> Result<(), CentileError> {
    assert_eq!(values.len(), covariates.len(), "one covariate row per value");
    let rows: Vec<Row> = values
        .iter()
        .zip(covariates)
        .filter_map(|(&v, c)| {
            let y = model.standardize(v)?;
            Some(Row {
                y,
                location_basis: model.location_basis.evaluate(c.age),
                scale_basis: model.scale_basis.evaluate(c.age),
                sex: sex_code(c.sex),
                site: Some(0),
            })
        })
        .collect();
    if rows.is_empty() {
        return Err(CentileError::TooFewSubjects { measure: model.measure.clone(), subjects: 0, needed: 1 });
    }
    let layout = Layout { location: model.location.len(), scale: model.log_scale.len(), sites: 1 };
    let mut base = vec![0.0; layout.len()];
    base[..layout.location].copy_from_slice(&model.location);
    base[layout.location_sex()] = model.location_sex;
    base[layout.scale_start()..layout.scale_sex()].copy_from_slice(&model.log_scale);
    base[layout.scale_sex()] = model.log_scale_sex;
    base[layout.epsilon()] = model.epsilon;
    base[layout.log_delta()] = model.log_delta;
    let fitted: Vec<f64> = model.sites.iter().filter(|s| !s.adapted).map(|s| s.log_scale).collect();
    let spread = if fitted.is_empty() {
        options.site_scale_sd
    } else {
        (fitted.iter().map(|s| s * s).sum::<f64>() / fitted.len() as f64).sqrt()
    };
    let options = &FitOptions {
        site_scale_sd: spread.clamp(MIN_ADAPTED_SCALE_SD, options.site_scale_sd.max(MIN_ADAPTED_SCALE_SD)),
        ..options.clone()
    };
    let rows: Vec<&Row> = rows.iter().collect();
    let objective = Objective {
        rows: &rows,
        layout,
        options,
        // The curves are held, so their penalties are constants: leave them out.
        location_penalty: Vec::new(),
        scale_penalty: Vec::new(),
        free: vec![vec![layout.site_location(0)], vec![layout.site_scale(0)]],
        base,
    };
    let params = minimize(objective, options.max_iterations, FIT)
        .map_err(|message| CentileError::Optimizer { measure: model.measure.clone(), message })?;
    let effect = SiteEffect {
        name: site.to_owned(),
        location: params[layout.site_location(0)],
        log_scale: params[layout.site_scale(0)],
        subjects: rows.len(),
        adapted: true,
    };
    match model.sites.iter_mut().find(|s| s.name == site) {
        Some(existing) => *existing = effect,
        None => model.sites.push(effect),
    }
    Ok(())
}
