//! The demo's unseen site: normals and cases imaged at a scanner site the database has never
//! seen, scored as cases would be.

use super::outcome::{CaseOutcome, compare_with_truth};
use super::{DemoConfig, DemoError, DemoProgress, OnProgress};
use crate::pipeline::deviation::{DeviationOptions, compute_deviation};
use crate::pipeline::held_out::{HeldOutFigures, HeldOutNormal, score_held_out};
use pedinorm_templates::age::AgeBracket;
use pedinorm_templates::model::NormativeDb;
use pedinorm_validation::{AgeSpec, BaseBrain, CohortSpec, Generator, Site, cohort_plan};
use std::path::PathBuf;
use std::time::Instant;

/// Generates `held_out_normals` normals (one per bracket in turn, another anatomy seed) and
/// `held_out_cases` cases at the site after the database's last, scores the normals for false
/// positives and compares the cases with their truth.
pub(super) fn held_out_site(
    config: &DemoConfig,
    base: &BaseBrain,
    brackets: &[AgeBracket],
    db: &NormativeDb,
    progress: OnProgress<'_>,
) -> Result<(Option<HeldOutFigures>, Vec<CaseOutcome>), DemoError> {
    let n = config.held_out_normals;
    let seed = config.seed ^ 0x0048_454c_444f_5554; // a different anatomy for every held-out subject
    let (min_age, max_age) = config.age_range;
    let mut spec = CohortSpec::new(n, min_age, max_age, config.held_out_cases, seed);
    spec.resolution_mm = config.resolution_mm;
    spec.abnormalities = config.abnormalities.clone();
    spec.ages = AgeSpec::List(
        (0..n)
            .map(|i| {
                let b = &brackets[i % brackets.len()];
                let (lo, hi) = (b.min_years.max(min_age), b.max_years.min(max_age));
                // Cycle through the brackets, a different age within each on every round.
                let round = (i / brackets.len()) as f64;
                lo + (hi - lo) * ((0.5 + 0.382 * round) % 1.0)
            })
            .collect(),
    );
    spec.sites = Site::numbered(config.sites + 1, 1, config.seed);
    let plan = cohort_plan(&spec)?;
    let generator = Generator::new(base, config.resolution_mm)?;
    progress(DemoProgress::Started { task: "held-out site", total: plan.len() });
    let mut subjects = Vec::with_capacity(n);
    let mut cases = Vec::new();
    for member in &plan {
        let mut subject = generator.subject(&member.spec)?;
        subject.id = member.id.replace("sub-", "held-");
        if member.spec.abnormality.is_some() {
            let start = Instant::now();
            let options = DeviationOptions {
                age_years: subject.age_years,
                sex: Some(subject.sex),
                max_regions: 0,
                site: Some(subject.site.clone()),
            };
            let result = compute_deviation(db, &subject.image, &options)
                .map_err(|error| DemoError::HeldOut(error.into()))?;
            cases.push(compare_with_truth(&subject, &result, PathBuf::new(), start.elapsed().as_secs_f64()));
            progress(DemoProgress::Step);
        } else {
            subjects.push(subject);
        }
    }
    if subjects.is_empty() {
        progress(DemoProgress::Finished);
        return Ok((None, cases));
    }
    let normals: Vec<HeldOutNormal> = subjects
        .iter()
        .map(|s| HeldOutNormal {
            id: s.id.clone(),
            age_years: s.age_years,
            sex: Some(s.sex),
            site: s.site.clone(),
            image: &s.image,
        })
        .collect();
    let options = DeviationOptions { age_years: 0.0, sex: None, max_regions: 0, site: None };
    let figures = score_held_out(db, &normals, &options, &|_| progress(DemoProgress::Step))?;
    progress(DemoProgress::Finished);
    Ok((Some(figures), cases))
}
