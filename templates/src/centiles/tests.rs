//! Fits on measures drawn from a known, deliberately non-SHASH population (gamma-skewed,
//! heteroscedastic growth with a sex difference and site gains), checked on held-out draws.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, Gamma};

use super::*;

/// A brain-volume-like measure: steep growth in the first two years, larger in boys, spread
/// growing with age, right-skewed noise, multiplied by a site gain.
/// Gamma shape of the noise: skewness 2/√9 = 0.67 on the log scale.
const SHAPE: f64 = 9.0;

struct Population {
    gamma: Gamma,
}

impl Population {
    fn new() -> Self {
        Population { gamma: Gamma::new(SHAPE, 1.0).unwrap() }
    }

    fn median_free_curve(age: f64, sex: Sex) -> f64 {
        let growth = 1200.0 - 800.0 * (-age / 1.6).exp();
        growth * if sex == Sex::Male { 1.08 } else { 1.0 }
    }

    fn spread(age: f64) -> f64 {
        0.05 + 0.004 * age
    }

    /// Standardized gamma noise (mean 0, SD 1, right-skewed).
    fn noise(&self, rng: &mut ChaCha8Rng) -> f64 {
        let u: f64 = rng.random_range(1e-12..1.0);
        (self.gamma.inverse_cdf(u) - SHAPE) / SHAPE.sqrt()
    }

    fn draw(&self, rng: &mut ChaCha8Rng, site: &str, gain: f64) -> (f64, Covariates) {
        let age = 18.0 * rng.random::<f64>().powf(1.3);
        let sex = if rng.random::<bool>() { Sex::Male } else { Sex::Female };
        let value = Self::median_free_curve(age, sex) * (Self::spread(age) * self.noise(rng)).exp() * gain;
        (value, Covariates { age, sex: Some(sex), site: Some(site.to_owned()) })
    }

    fn table(&self, rng: &mut ChaCha8Rng, sites: &[(&str, f64, usize)]) -> MeasureTable {
        let mut covariates = Vec::new();
        let mut values = Vec::new();
        for &(site, gain, n) in sites {
            for _ in 0..n {
                let (value, c) = self.draw(rng, site, gain);
                values.push(value);
                covariates.push(c);
            }
        }
        MeasureTable { measures: vec!["total_brain".into()], covariates, values: vec![values] }
    }
}

fn tails(model: &CentileModel, table: &MeasureTable) -> (f64, f64) {
    let placed: Vec<f64> = table.values[0]
        .iter()
        .zip(&table.covariates)
        .map(|(&v, c)| model.place(v, c).unwrap().centile)
        .collect();
    let n = placed.len() as f64;
    (
        100.0 * placed.iter().filter(|&&c| c < 2.5).count() as f64 / n,
        100.0 * placed.iter().filter(|&&c| c > 97.5).count() as f64 / n,
    )
}

#[test]
fn held_out_normals_fall_outside_the_95_percent_band_as_often_as_they_should() {
    // A 2.5 % tail estimated from 1,000 normals varies from sample to sample: each of four
    // independent training sets must be near nominal, and their mean close to it.
    let population = Population::new();
    let sites = [("S1", 1.0, 400), ("S2", 1.06, 300), ("S3", 0.95, 300)];
    let mut fractions = Vec::new();
    for seed in 0..4 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let training = population.table(&mut rng, &sites);
        let held_out =
            population.table(&mut rng, &[("S1", 1.0, 1000), ("S2", 1.06, 1000), ("S3", 0.95, 1000)]);
        let models = fit_all(&training, &FitOptions::default()).unwrap();
        let (below, above) = tails(&models[0], &held_out);
        assert!(
            (1.0..=5.0).contains(&below) && (1.0..=5.0).contains(&above),
            "seed {seed}: {below:.2} / {above:.2} %"
        );
        fractions.push((below, above));
        if seed == 0 {
            // The model finds the sex difference (boys 8 % larger) and the site gains.
            let model = &models[0];
            let median =
                |sex| model.centiles(&Covariates { age: 10.0, sex: Some(sex), site: None }, &[50.0])[0];
            let ratio = median(Sex::Male) / median(Sex::Female);
            assert!((ratio - 1.08).abs() < 0.02, "boys/girls {ratio:.3}");
            let gain = |name: &str| model.site(name).unwrap().location * model.spread;
            assert!((gain("S2") - gain("S1") - 1.06f64.ln()).abs() < 0.015);
        }
    }
    let mean =
        |pick: fn(&(f64, f64)) -> f64| fractions.iter().map(pick).sum::<f64>() / fractions.len() as f64;
    let (below, above) = (mean(|f| f.0), mean(|f| f.1));
    assert!((1.5..=3.5).contains(&below), "mean below 2.5th: {below:.2} %");
    assert!((1.5..=3.5).contains(&above), "mean above 97.5th: {above:.2} %");
}

#[test]
fn median_follows_the_steep_first_years() {
    let population = Population::new();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let training = population.table(&mut rng, &[("S1", 1.0, 1000)]);
    let model = fit_measure("total_brain", &training.values[0], &training.covariates, &FitOptions::default())
        .unwrap();
    for age in [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 16.0] {
        let c = Covariates { age, sex: Some(Sex::Female), site: Some("S1".into()) };
        let median = model.centiles(&c, &[50.0])[0];
        // The truth's median: the gamma's median noise is slightly below its mean.
        let median_noise = (population.gamma.inverse_cdf(0.5) - SHAPE) / SHAPE.sqrt();
        let truth =
            Population::median_free_curve(age, Sex::Female) * (Population::spread(age) * median_noise).exp();
        assert!((median / truth - 1.0).abs() < 0.02, "age {age}: median {median:.0} truth {truth:.0}");
    }
}

#[test]
fn a_new_site_is_adapted_from_few_normals_without_refitting() {
    let population = Population::new();
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let training = population.table(&mut rng, &[("S1", 1.0, 500), ("S2", 1.04, 500)]);
    let mut models = fit_all(&training, &FitOptions::default()).unwrap();
    let curves_before = models[0].location.clone();
    // A new scanner reads volumes 12 % larger; 50 of its normals are available.
    let new_site_normals = population.table(&mut rng, &[("NEW", 1.12, 50)]);
    let held_out = population.table(&mut rng, &[("NEW", 1.12, 3000)]);
    let (_, above_before) = tails(&models[0], &held_out);
    adapt_all(&mut models, "NEW", &new_site_normals, &FitOptions::default()).unwrap();
    let (below, above) = tails(&models[0], &held_out);
    assert!(above_before > 10.0, "without adaptation the new site looks large: {above_before:.1} %");
    assert!((1.0..=4.5).contains(&below) && (1.0..=4.5).contains(&above), "after: {below:.2} / {above:.2} %");
    assert_eq!(models[0].location, curves_before, "the population curves are held");
    let site = models[0].site("NEW").unwrap();
    assert!(site.adapted && site.subjects == 50);
    let placement = models[0].place(held_out.values[0][0], &held_out.covariates[0]).unwrap();
    assert!(placement.site_known);
}

#[test]
fn centiles_are_ordered_and_placement_inverts_them() {
    let population = Population::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let training = population.table(&mut rng, &[("S1", 1.0, 200)]);
    let model = &fit_all(&training, &FitOptions::default()).unwrap()[0];
    for age in [0.3, 3.0, 17.0] {
        let c = Covariates { age, sex: None, site: None };
        let values = model.centiles(&c, &STANDARD_CENTILES);
        assert!(values.windows(2).all(|w| w[0] < w[1]));
        for (&centile, &value) in STANDARD_CENTILES.iter().zip(&values) {
            let placed = model.place(value, &c).unwrap();
            assert!((placed.centile - centile).abs() < 1e-6);
            assert!(!placed.site_known);
        }
    }
    assert!(model.place(-1.0, &Covariates { age: 3.0, sex: None, site: None }).is_none());
}

#[test]
fn unusable_tables_are_refused_with_the_measure_named() {
    let covariates: Vec<Covariates> =
        (0..30).map(|i| Covariates { age: i as f64 * 0.5, sex: None, site: None }).collect();
    let few = fit_measure("hippocampus", &[1.0; 5], &covariates[..5], &FitOptions::default());
    assert!(
        matches!(few, Err(CentileError::TooFewSubjects { ref measure, subjects: 5, .. }) if measure == "hippocampus")
    );
    let constant = fit_measure("icv", &[3.0; 30], &covariates, &FitOptions::default());
    assert_eq!(constant, Err(CentileError::Constant { measure: "icv".into() }));
    let table = MeasureTable {
        measures: vec!["a".into(), "a".into()],
        covariates: covariates.clone(),
        values: vec![vec![1.0; 30], vec![1.0; 30]],
    };
    assert!(fit_all(&table, &FitOptions::default()).unwrap_err().to_string().contains("appears twice"));
}

#[test]
fn fits_are_the_same_at_any_thread_count() {
    let population = Population::new();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut table = population.table(&mut rng, &[("S1", 1.0, 300)]);
    table.measures.push("scaled".into());
    let scaled: Vec<f64> = table.values[0].iter().map(|v| v * 0.3).collect();
    table.values.push(scaled);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let a = one.install(|| fit_all(&table, &FitOptions::default())).unwrap();
    let b = fit_all(&table, &FitOptions::default()).unwrap();
    assert_eq!(a, b);
}
