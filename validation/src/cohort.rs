//! A cohort of synthetic subjects: normals spread over an age range, plus cases with known
//! abnormalities, each with its own derived seed.

use crate::SynthError;
use crate::abnormality::{Abnormality, LesionTissue};
use crate::base::BaseBrain;
use crate::growth::Sex;
use crate::rng::{derive_seed, stream, streams, uniform};
use crate::site::Site;
use crate::subject::{Generator, GeneratorOptions, SubjectSpec, SyntheticSubject};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Ages of the normal subjects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgeSpec {
    /// Stratified over `[min, max]` years: subject `i` of `n` is drawn uniformly from the
    /// `i`-th of `n` equal sub-intervals, so every part of the range is covered.
    Range {
        /// Youngest age (years).
        min: f64,
        /// Oldest age (years).
        max: f64,
    },
    /// Exactly these ages (one per normal subject).
    List(Vec<f64>),
}

impl AgeSpec {
    fn bounds(&self) -> (f64, f64) {
        match self {
            AgeSpec::Range { min, max } => (*min, *max),
            AgeSpec::List(ages) => (
                ages.iter().cloned().fold(f64::INFINITY, f64::min),
                ages.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            ),
        }
    }
}

/// What cohort to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortSpec {
    /// Number of normal subjects.
    pub n_normals: usize,
    /// Ages of the normals; cases get uniform ages within the same bounds.
    pub ages: AgeSpec,
    /// Number of cases.
    pub n_cases: usize,
    /// Cohort seed; each subject's seed is derived from it and the subject's index.
    pub seed: u64,
    /// Output voxel size (mm).
    pub resolution_mm: f64,
    /// Abnormalities given to the cases in turn; empty means [`default_abnormalities`].
    pub abnormalities: Vec<Abnormality>,
    /// Anatomy knobs shared by all subjects.
    pub options: GeneratorOptions,
    /// Scanner sites; subject `i` (normals first, then cases) is imaged at site
    /// `i mod sites.len()`. Empty means the reference site only.
    pub sites: Vec<Site>,
}

impl CohortSpec {
    /// `n_normals` normals over `min`–`max` years and `n_cases` cases at 2 mm, default options.
    pub fn new(n_normals: usize, min_age: f64, max_age: f64, n_cases: usize, seed: u64) -> Self {
        Self {
            n_normals,
            ages: AgeSpec::Range { min: min_age, max: max_age },
            n_cases,
            seed,
            resolution_mm: 2.0,
            abnormalities: Vec::new(),
            options: GeneratorOptions::default(),
            sites: Vec::new(),
        }
    }
}

/// The abnormalities cases cycle through by default: white-matter lesions bright and dark,
/// a cortical lesion, focal atrophy, enlarged ventricles, and a small bright lesion.
pub fn default_abnormalities() -> Vec<Abnormality> {
    vec![
        Abnormality::Lesion { tissue: LesionTissue::WhiteMatter, radius_mm: 7.0, contrast: 0.35 },
        Abnormality::Lesion { tissue: LesionTissue::WhiteMatter, radius_mm: 7.0, contrast: -0.35 },
        Abnormality::Atrophy { radius_mm: 10.0, volume_loss: 0.4 },
        Abnormality::EnlargedVentricles { dilation_mm: 4.0 },
        Abnormality::Lesion { tissue: LesionTissue::GreyMatter, radius_mm: 6.0, contrast: -0.3 },
        Abnormality::Lesion { tissue: LesionTissue::WhiteMatter, radius_mm: 4.0, contrast: 0.5 },
    ]
}

/// The base brain that member `index` of a cohort plan is drawn from, when the cohort has
/// `bases` base brains: consecutive pairs share a base and the pairs go through the bases in
/// turn. A template is built from every other normal of its bracket in age order and
/// calibrated on the rest, so pairing puts every base on both sides of that split.
pub fn base_of_subject(index: usize, bases: usize) -> usize {
    (index / 2) % bases.max(1)
}

/// One planned member of a cohort: its synthetic identifier and full specification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohortMember {
    /// Synthetic identifier `sub-0001`, `sub-0002`, … (normals first, then cases).
    pub id: String,
    /// What to generate.
    pub spec: SubjectSpec,
}

/// The cohort's members without generating any image: ages, sexes, seeds and abnormalities.
/// Generate them one at a time with a [`Generator`] to keep memory bounded.
pub fn cohort_plan(spec: &CohortSpec) -> Result<Vec<CohortMember>, SynthError> {
    let invalid = |field: &'static str, rule: String| Err(SynthError::InvalidSpec { field, rule });
    let (min, max) = spec.ages.bounds();
    if !(min.is_finite() && max.is_finite() && min >= 0.0 && max <= 18.0 && min <= max) {
        return invalid("ages", format!("{min}–{max} must be a range within 0–18 years"));
    }
    if let AgeSpec::List(ages) = &spec.ages {
        if ages.len() != spec.n_normals {
            return invalid("ages", format!("{} ages listed for {} normals", ages.len(), spec.n_normals));
        }
    }
    if spec.n_normals + spec.n_cases == 0 {
        return invalid("n_normals", "the cohort must have at least one subject".into());
    }
    if spec.n_normals + spec.n_cases > 9999 {
        return invalid("n_normals", "at most 9999 subjects".into());
    }
    for site in &spec.sites {
        site.validate()?;
    }
    let palette =
        if spec.abnormalities.is_empty() { default_abnormalities() } else { spec.abnormalities.clone() };
    let mut rng = stream(spec.seed, streams::COHORT);
    let first_sex_is_female = rng.random_bool(0.5);
    let sex_of = |index: usize| if (index % 2 == 0) == first_sex_is_female { Sex::Female } else { Sex::Male };
    let mut members = Vec::with_capacity(spec.n_normals + spec.n_cases);
    for index in 0..spec.n_normals {
        let age = match &spec.ages {
            AgeSpec::List(ages) => ages[index],
            AgeSpec::Range { min, max } => {
                let width = (max - min) / spec.n_normals as f64;
                min + width * (index as f64 + rng.random::<f64>())
            }
        };
        members.push(member(spec, index, age, sex_of(index), None));
    }
    for case in 0..spec.n_cases {
        let index = spec.n_normals + case;
        let age = uniform(&mut rng, min, max);
        let abnormality = palette[case % palette.len()];
        members.push(member(spec, index, age, sex_of(index), Some(abnormality)));
    }
    Ok(members)
}

fn member(
    spec: &CohortSpec,
    index: usize,
    age: f64,
    sex: Sex,
    abnormality: Option<Abnormality>,
) -> CohortMember {
    CohortMember {
        id: format!("sub-{:04}", index + 1),
        spec: SubjectSpec {
            age_years: age,
            sex,
            seed: derive_seed(spec.seed, index as u64),
            resolution_mm: spec.resolution_mm,
            abnormality,
            abnormality_site: None,
            options: spec.options.clone(),
            site: if spec.sites.is_empty() {
                Site::reference()
            } else {
                spec.sites[index % spec.sites.len()].clone()
            },
        },
    }
}

/// Generates the whole cohort in memory (normals first, then cases). At 2 mm each subject
/// holds about 50 MB (image, masks, labels, bias and two deformation fields): for large
/// cohorts use [`cohort_plan`] with a [`Generator`] and write each subject as it is made.
pub fn generate_cohort(base: &BaseBrain, spec: &CohortSpec) -> Result<Vec<SyntheticSubject>, SynthError> {
    let plan = cohort_plan(spec)?;
    let generator = Generator::new(base, spec.resolution_mm)?;
    plan.iter()
        .map(|member| {
            let mut subject = generator.subject(&member.spec)?;
            subject.id = member.id.clone();
            Ok(subject)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_base_lands_on_both_sides_of_the_template_split() {
        // A bracket's normals in age order alternate between template and calibration.
        for bases in 1..=4 {
            for start in [0, 1, 8, 9] {
                let members: Vec<usize> = (start..start + 4 * bases).collect();
                for half in [0, 1] {
                    let mut seen: Vec<usize> = members
                        .iter()
                        .skip(half)
                        .step_by(2)
                        .map(|&i| super::base_of_subject(i, bases))
                        .collect();
                    seen.sort_unstable();
                    seen.dedup();
                    assert_eq!(seen.len(), bases, "{bases} bases from member {start}, half {half}");
                }
            }
        }
        assert_eq!(super::base_of_subject(5, 0), 0);
    }

    use super::*;

    #[test]
    fn plan_is_stratified_balanced_and_reproducible() {
        let spec = CohortSpec::new(10, 0.0, 10.0, 3, 42);
        let plan = cohort_plan(&spec).unwrap();
        assert_eq!(plan.len(), 13);
        for (i, member) in plan.iter().take(10).enumerate() {
            assert!(member.spec.age_years >= i as f64 && member.spec.age_years < i as f64 + 1.0);
            assert!(member.spec.abnormality.is_none());
        }
        assert!(plan[10..].iter().all(|m| m.spec.abnormality.is_some()));
        let females = plan.iter().filter(|m| m.spec.sex == Sex::Female).count();
        assert!((6..=7).contains(&females));
        assert_eq!(plan, cohort_plan(&spec).unwrap());
        assert_eq!(plan[12].id, "sub-0013");
        let seeds: std::collections::HashSet<u64> = plan.iter().map(|m| m.spec.seed).collect();
        assert_eq!(seeds.len(), 13);
    }

    #[test]
    fn cohort_is_identical_at_one_and_two_threads() {
        let grid =
            pedinorm_registration::Grid::axis_aligned([40, 48, 36], [4.0; 3], [-78.0, -94.0, -70.0]).unwrap();
        let base = BaseBrain::phantom(&grid);
        let mut spec = CohortSpec::new(2, 0.0, 17.0, 2, 5);
        spec.resolution_mm = 4.0;
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| generate_cohort(&base, &spec).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one.len(), 4);
        for (a, b) in one.iter().zip(&two) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.image.as_slice(), b.image.as_slice());
            assert_eq!(a.truth.lesion_mask, b.truth.lesion_mask);
            assert_eq!(a.truth.inverse_deformation, b.truth.inverse_deformation);
        }
        assert!(one[2].truth.kind.is_case() && !one[0].truth.kind.is_case());
        assert_ne!(one[0].image.as_slice(), one[1].image.as_slice());
    }

    #[test]
    fn subjects_cycle_through_the_sites() {
        let mut spec = CohortSpec::new(5, 0.0, 10.0, 2, 3);
        spec.sites = Site::numbered(1, 3, 3);
        let plan = cohort_plan(&spec).unwrap();
        let ids: Vec<&str> = plan.iter().map(|m| m.spec.site.id.as_str()).collect();
        assert_eq!(ids, ["S1", "S2", "S3", "S1", "S2", "S3", "S1"]);
        assert_eq!(cohort_plan(&CohortSpec::new(1, 0.0, 1.0, 0, 3)).unwrap()[0].spec.site, Site::reference());
        spec.sites[1].snr = 0.0;
        assert!(cohort_plan(&spec).unwrap_err().to_string().contains("site.snr"));
    }

    #[test]
    fn bad_cohorts_are_refused() {
        assert!(cohort_plan(&CohortSpec::new(3, 5.0, 2.0, 0, 1)).is_err());
        assert!(cohort_plan(&CohortSpec::new(3, 0.0, 30.0, 0, 1)).is_err());
        let mut spec = CohortSpec::new(3, 0.0, 2.0, 0, 1);
        spec.ages = AgeSpec::List(vec![1.0, 2.0]);
        let error = cohort_plan(&spec).unwrap_err().to_string();
        assert!(error.contains("ages"), "{error}");
    }
}
