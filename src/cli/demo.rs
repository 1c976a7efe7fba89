//! `pedinorm demo`: run the whole job on built-in synthetic data.
//!
//! Generates a synthetic paediatric cohort (normals imaged at several scanner sites, and cases
//! with known abnormalities) from the MNI152 brain over 0–17 years, builds one template per
//! default age bracket with the local batch executor, builds the HDF5 normative database with
//! leave-one-out calibration (and the JHU atlas carried to every template when available),
//! computes deviation maps of the cases and compares their significant clusters with the known
//! truth, and scores normals of a site the database has never seen to report the false
//! positives a new centre would meet. `DIR/normdb.h5` is then ready for `pedinorm deviation`
//! on any other case.

use crate::batch::{LocalExecutor, ProgressEvent};
use crate::cli::progress;
use crate::normdb::NormDbFile;
use crate::pipeline::database::{
    AtlasInput, BracketTemplate, MIN_TEMPLATE_SUBJECTS, build_database, load_atlas,
};
use crate::pipeline::deviation::{ClusterReport, DeviationOptions, compute_deviation, run_case};
use crate::pipeline::held_out::{HeldOutFigures, HeldOutNormal, score_held_out};
use crate::pipeline::steps::default_program;
use crate::pipeline::template_build::{SubjectInput, SubjectSource, build_template};
use crate::synth_io::{WriteOptions, csv_row, load_base, write_cohort_csv, write_subject};
use anyhow::{Context, bail};
use pedinorm_registration::{Grid, Image};
use pedinorm_templates::age::{AgeBracket, AgeBrackets};
use pedinorm_templates::model::{BuildOptions, Channel, NormalSubject, NormativeDb};
use pedinorm_templates::stats::Sex;
use pedinorm_templates::template::{RegistrationSettings, TemplateConfig, TemplateTarget};
use pedinorm_validation::scoring::lesion_auc;
use pedinorm_validation::{
    Abnormality, AgeSpec, BaseBrain, CohortSpec, Generator, Site, SyntheticSubject, cohort_plan,
};
use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `pedinorm demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (cohort, templates, normdb.h5, case results).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Normal subjects of the database (spread evenly over the brackets).
    #[arg(long, default_value_t = 56)]
    pub normals: usize,
    /// Cases with known abnormalities.
    #[arg(long, default_value_t = 4)]
    pub cases: usize,
    /// Voxel size of the synthetic images (mm).
    #[arg(long, default_value_t = 2.0)]
    pub resolution: f64,
    /// Youngest normal (years).
    #[arg(long, default_value_t = 0.0)]
    pub min_age: f64,
    /// Upper end of the age range (years, exclusive).
    #[arg(long, default_value_t = 18.0)]
    pub max_age: f64,
    /// Age brackets, one template each: `default` (the paediatric brackets 0–1, 1–2, 2–4, 4–7,
    /// 7–11, 11–14, 14–18 years that meet the age range, with the same number of normals each)
    /// or a number of equal splits of the age range.
    #[arg(long, default_value = "default")]
    pub brackets: DemoBrackets,
    /// Scanner sites of the database's normals (`S1`, `S2`, …, drawn from the seed); 0 images
    /// every subject at the reference site.
    #[arg(long, default_value_t = 3)]
    pub sites: usize,
    /// Normals of one further site the database has never seen, scored as cases to measure
    /// false positives (0: none).
    #[arg(long, default_value_t = 7)]
    pub held_out_normals: usize,
    /// Cases of that unseen site, scored and compared with their truth like the others.
    #[arg(long, default_value_t = 0)]
    pub held_out_cases: usize,
    /// Pool every site as one (no site effects in the database): for comparison.
    #[arg(long)]
    pub no_site_model: bool,
    /// Deformable iterations of each template build.
    #[arg(long, default_value_t = 2)]
    pub template_iterations: usize,
    /// Seed of the synthetic cohort.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Concurrent template-build tasks.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Folder with the MNI base brain (`mni/`) and atlases (`atlases/`).
    #[arg(long, default_value = ".data")]
    pub data_dir: PathBuf,
}

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
    fn ages(&self, brackets: &[AgeBracket], normals: usize, min_age: f64, max_age: f64) -> AgeSpec {
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

/// Where the base brain comes from.
#[derive(Debug, Clone)]
pub enum BaseSource {
    /// `t1.nii.gz`, `gm.nii.gz`, `wm.nii.gz` in this folder.
    Mni(PathBuf),
    /// The procedural phantom on an axis-aligned grid of this spacing (tests).
    Phantom {
        /// Voxel size (mm).
        spacing_mm: f64,
    },
}

/// Everything a demo run needs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Output folder.
    pub out_dir: PathBuf,
    /// Base brain.
    pub base: BaseSource,
    /// Atlas files (labels, names, reference T1), when available.
    pub atlas: Option<(PathBuf, PathBuf, PathBuf)>,
    /// Normals.
    pub normals: usize,
    /// Cases.
    pub cases: usize,
    /// Abnormalities of the cases (empty: the validation crate's default palette).
    pub abnormalities: Vec<Abnormality>,
    /// Image resolution (mm).
    pub resolution_mm: f64,
    /// Age range of the cohort.
    pub age_range: (f64, f64),
    /// Age brackets.
    pub brackets: DemoBrackets,
    /// Scanner sites of the database's normals (0: the reference site only).
    pub sites: usize,
    /// Normals of an unseen site scored for false positives (0: none).
    pub held_out_normals: usize,
    /// Cases of the unseen site (0: none).
    pub held_out_cases: usize,
    /// Template iterations.
    pub template_iterations: usize,
    /// Template registration iterations per level (affine, deformable).
    pub template_schedule: (Vec<usize>, Vec<usize>),
    /// Cohort seed.
    pub seed: u64,
    /// Concurrent template tasks.
    pub jobs: usize,
    /// Database build options.
    pub build: BuildOptions,
}

/// The outcome of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    /// Synthetic id.
    pub id: String,
    /// Kind of abnormality.
    pub kind: String,
    /// Age (years).
    pub age_years: f64,
    /// Scanner site of the case.
    pub site: String,
    /// Truth volume (ml) on the case grid.
    pub truth_volume_ml: f64,
    /// Voxelwise AUC of the larger |z| of the two channels for the truth region against the
    /// rest of the brain (case grid).
    pub voxel_auc: f64,
    /// A significant cluster overlaps the truth region.
    pub detected: bool,
    /// The largest significant cluster overlapping the truth.
    pub matching_cluster: Option<ClusterReport>,
    /// Channels (and directions) of every significant cluster overlapping the truth.
    pub matching_channels: Vec<String>,
    /// Significant clusters not overlapping the truth.
    pub other_significant_clusters: usize,
    /// Folder of the outputs.
    pub out_dir: PathBuf,
    /// Wall time of the deviation computation (s).
    pub seconds: f64,
}

/// The outcome of a demo run.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The database.
    pub normdb: PathBuf,
    /// Cases.
    pub cases: Vec<CaseOutcome>,
    /// Calibration per channel.
    pub calibration: Vec<ChannelCalibrationSummary>,
    /// False positives on normals of a site the database has never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOutFigures>,
    /// Cases of that unseen site.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_out_cases: Vec<CaseOutcome>,
    /// Seconds per phase.
    pub timings: Vec<(String, f64)>,
}

/// What the demo reports of one channel's calibration.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelCalibrationSummary {
    /// Channel name.
    pub channel: String,
    /// Voxel |z| threshold.
    pub z_threshold: f64,
    /// Nominal voxel false-positive rate.
    pub nominal_voxel_rate: f64,
    /// Achieved voxel rate on held-out normals.
    pub achieved_voxel_rate: f64,
    /// A cluster is significant when its mass Σ(|z| − t) exceeds this.
    pub cluster_mass_threshold: f64,
    /// Share of held-out normals with a significant cluster.
    pub achieved_cluster_rate: f64,
}

impl DemoConfig {
    /// The configuration of the README's demo from the command line.
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let mni = args.data_dir.join("mni");
        let atlases = args.data_dir.join("atlases");
        if !mni.join("t1.nii.gz").is_file() {
            bail!("{}: the MNI base brain is missing; run scripts/setup.sh first", mni.display());
        }
        let atlas_res = if args.resolution >= 1.5 { "2mm" } else { "1mm" };
        let labels = atlases.join(format!("JHU-WhiteMatter-labels-{atlas_res}.nii.gz"));
        let names = atlases.join(format!("JHU-WhiteMatter-labels-{atlas_res}.nii.txt"));
        let atlas = (labels.is_file() && names.is_file()).then(|| (labels, names, mni.join("t1.nii.gz")));
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Self {
            out_dir: args.out_dir.clone(),
            base: BaseSource::Mni(mni),
            atlas,
            normals: args.normals,
            cases: args.cases,
            abnormalities: Vec::new(),
            resolution_mm: args.resolution,
            age_range: (args.min_age, args.max_age),
            brackets: args.brackets.clone(),
            sites: args.sites,
            held_out_normals: args.held_out_normals,
            held_out_cases: args.held_out_cases,
            template_iterations: args.template_iterations,
            template_schedule: (vec![100, 50, 25], vec![40, 20, 10]),
            seed: args.seed,
            jobs: args.jobs.unwrap_or(cores).max(1),
            build: BuildOptions { site_effects: !args.no_site_model, ..BuildOptions::default() },
        })
    }
}

/// Runs `pedinorm demo`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = DemoConfig::from_args(&args)?;
    let summary = run_demo(&config)?;
    print_summary(&config, &summary);
    Ok(())
}

fn phase<T>(
    timings: &mut Vec<(String, f64)>,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let result = f()?;
    timings.push((name.to_owned(), start.elapsed().as_secs_f64()));
    Ok(result)
}

fn to_sex(sex: pedinorm_validation::growth::Sex) -> Sex {
    Sex::parse(sex.code()).expect("F or M")
}

/// Runs the whole job; see the module documentation.
pub fn run_demo(config: &DemoConfig) -> anyhow::Result<DemoSummary> {
    let mut timings = Vec::new();
    std::fs::create_dir_all(&config.out_dir)
        .with_context(|| format!("{}: cannot create", config.out_dir.display()))?;
    let out_dir = config.out_dir.canonicalize()?;
    let (min_age, max_age) = config.age_range;
    if !(min_age >= 0.0 && max_age > min_age && max_age <= 18.0) {
        bail!("age range {min_age}–{max_age} must lie within 0–18 years");
    }
    let brackets = config.brackets.over(min_age, max_age);
    if brackets.is_empty() {
        bail!("no age bracket meets the age range {min_age}–{max_age} years");
    }
    if config.normals < MIN_TEMPLATE_SUBJECTS * brackets.len() {
        bail!(
            "{} normals are too few for {} brackets (at least {MIN_TEMPLATE_SUBJECTS} per bracket)",
            config.normals,
            brackets.len()
        );
    }

    // 1. Synthetic cohort.
    let base = phase(&mut timings, "load base brain", || -> anyhow::Result<BaseBrain> {
        Ok(match &config.base {
            BaseSource::Mni(dir) => load_base(dir)?,
            BaseSource::Phantom { spacing_mm } => {
                let n = |extent: f64| (extent / spacing_mm).round() as usize;
                let grid = Grid::axis_aligned(
                    [n(140.0), n(170.0), n(130.0)],
                    [*spacing_mm; 3],
                    [-70.0, -100.0, -60.0],
                )?;
                BaseBrain::phantom(&grid)
            }
        })
    })?;
    let mut spec = CohortSpec::new(config.normals, min_age, max_age, config.cases, config.seed);
    spec.resolution_mm = config.resolution_mm;
    spec.abnormalities = config.abnormalities.clone();
    spec.ages = config.brackets.ages(&brackets, config.normals, min_age, max_age);
    spec.sites = Site::numbered(1, config.sites, config.seed);
    let plan = cohort_plan(&spec)?;
    let cohort_dir = out_dir.join("cohort");
    let (normals, cases) = phase(&mut timings, "synthetic cohort", || {
        let generator = Generator::new(&base, config.resolution_mm)?;
        let bar = progress::bar(plan.len() as u64, "synthetic cohort");
        // Subjects are independent (each has its own seed), so they are made in parallel and
        // the result does not depend on the thread count.
        let made: Vec<(SyntheticSubject, PathBuf, String, bool)> = plan
            .par_iter()
            .enumerate()
            .map(|(index, member)| -> anyhow::Result<_> {
                let mut subject = generator.subject(&member.spec)?;
                subject.id = member.id.clone();
                let options = WriteOptions { warps: false, dicom: false, national_id: false };
                let files = write_subject(&cohort_dir, &subject, index + 1, member.spec.seed, options)?;
                let row = csv_row(&subject, &files);
                bar.inc(1);
                Ok((subject, cohort_dir.join(&files.image), row, member.spec.abnormality.is_some()))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut rows = Vec::new();
        let mut normals: Vec<(SyntheticSubject, PathBuf)> = Vec::new();
        let mut cases: Vec<(SyntheticSubject, PathBuf)> = Vec::new();
        for (subject, path, row, is_case) in made {
            rows.push(row);
            if is_case { cases.push((subject, path)) } else { normals.push((subject, path)) }
        }
        bar.finish();
        write_cohort_csv(&cohort_dir.join("cohort.csv"), &rows)?;
        Ok((normals, cases))
    })?;

    // 2. One template per bracket (local batch executor, resumable build folders).
    let mut template_members = std::collections::BTreeSet::new();
    let templates = phase(&mut timings, "templates", || {
        let executor = LocalExecutor {
            threads_per_task: Some(
                1.max(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) / config.jobs),
            ),
            ..LocalExecutor::new(default_program(), config.jobs)
        };
        let mut templates = Vec::new();
        for bracket in &brackets {
            let in_bracket: Vec<&(SyntheticSubject, PathBuf)> =
                normals.iter().filter(|(s, _)| bracket.contains(s.age_years)).collect();
            let subjects: Vec<SubjectInput> = template_half(&in_bracket)
                .into_iter()
                .map(|(s, path)| SubjectInput {
                    id: s.id.clone(),
                    source: SubjectSource::Path(path.clone()),
                    age_years: s.age_years,
                })
                .collect();
            if subjects.len() < MIN_TEMPLATE_SUBJECTS {
                bail!(
                    "bracket {} has {} normals; at least {MIN_TEMPLATE_SUBJECTS} are needed",
                    bracket.name,
                    subjects.len()
                );
            }
            let template_config = TemplateConfig {
                target: TemplateTarget::Bracket(bracket.clone()),
                iterations: config.template_iterations,
                template_spacing_mm: Some(config.resolution_mm),
                registration: RegistrationSettings {
                    spacing_mm: config.resolution_mm,
                    affine_iterations: config.template_schedule.0.clone(),
                    deformable_iterations: config.template_schedule.1.clone(),
                },
                ..TemplateConfig::default()
            };
            let steps = 1 + (config.template_iterations + 1) * (subjects.len() + 1);
            let bar = progress::bar(steps as u64, &format!("template {}", bracket.name));
            let result = build_template(
                &subjects,
                &template_config,
                &out_dir.join("templates").join(&bracket.name),
                &executor,
                1,
                &|event| {
                    if let ProgressEvent::StageProgress { .. } = event {
                        bar.inc(1);
                    }
                },
            )
            .with_context(|| format!("template of bracket {}", bracket.name))?;
            bar.finish();
            templates.push(BracketTemplate {
                name: bracket.name.clone(),
                min_years: bracket.min_years,
                max_years: bracket.max_years,
                template: result.template,
            });
            template_members.extend(subjects.iter().map(|s| s.id.clone()));
        }
        Ok(templates)
    })?;

    // 3. Normative database with calibration (and the atlas carried to each template),
    //    calibrated on the normals the templates were not built from.
    let normdb_path = out_dir.join("normdb.h5");
    let build = BuildOptions { template_members, ..config.build.clone() };
    let db = phase(&mut timings, "normative database", || {
        let atlas: Option<AtlasInput> = match &config.atlas {
            Some((labels, names, reference)) => Some(load_atlas(labels, names, reference)?),
            None => None,
        };
        let subjects: Vec<NormalSubject> = normals
            .iter()
            .map(|(s, _)| NormalSubject {
                pseudonym: s.id.clone(),
                age_years: s.age_years,
                sex: to_sex(s.sex),
                scanner: site_label(config, s),
                image: s.image.clone(),
            })
            .collect();
        let bar = progress::bar(subjects.len() as u64, "normals to templates");
        let db = build_database(&subjects, templates, atlas.as_ref(), &build, &|_| bar.inc(1))?;
        bar.finish();
        db.write(&normdb_path)?;
        Ok(db)
    })?;
    // Read back what was written: the cases are scored against the file users will have.
    let db = NormativeDb::read(&normdb_path).inspect(|read| {
        debug_assert_eq!(read.subjects.len(), db.subjects.len());
    })?;

    // 4. Deviation maps of the cases, compared with the truth.
    let outcomes = phase(&mut timings, "deviation maps", || {
        let bar = progress::bar(cases.len() as u64, "deviation maps");
        let mut outcomes = Vec::new();
        for (subject, path) in &cases {
            let start = Instant::now();
            let case_dir = out_dir.join("cases").join(&subject.id);
            let options = DeviationOptions {
                age_years: subject.age_years,
                sex: Some(to_sex(subject.sex)),
                max_regions: 15,
                site: Some(site_label(config, subject)),
            };
            let case_name = path.display().to_string();
            let normdb_name = normdb_path.display().to_string();
            let result = run_case(&db, &subject.image, &options, &case_name, &normdb_name, &case_dir)
                .with_context(|| format!("case {}", path.display()))?;
            let seconds = start.elapsed().as_secs_f64();
            outcomes.push(compare_with_truth(subject, &result, case_dir, seconds));
            bar.inc(1);
        }
        bar.finish();
        Ok(outcomes)
    })?;

    // 5. Normals of a site the database has never seen, scored as cases.
    let (held_out, held_out_cases) = if config.held_out_normals + config.held_out_cases == 0 {
        (None, Vec::new())
    } else {
        phase(&mut timings, "held-out site", || held_out_site(config, &base, &brackets, &db))?
    };

    let calibration = db
        .calibration
        .as_ref()
        .map(|c| {
            Channel::ALL
                .iter()
                .map(|&ch| {
                    let cc = c.channel(ch);
                    ChannelCalibrationSummary {
                        channel: ch.name().to_owned(),
                        z_threshold: cc.voxel.z_threshold,
                        nominal_voxel_rate: cc.voxel.nominal_rate,
                        achieved_voxel_rate: cc.voxel.achieved_rate,
                        cluster_mass_threshold: cc.cluster.mass_threshold,
                        achieved_cluster_rate: cc.cluster.achieved_rate,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let summary =
        DemoSummary { normdb: normdb_path, cases: outcomes, calibration, held_out, held_out_cases, timings };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    crate::atomic::write_bytes(&out_dir.join("summary.json"), &json)?;
    Ok(summary)
}

/// The scanner label recorded for a normal: its synthetic site, or one label for all when the
/// cohort has no sites.
fn site_label(config: &DemoConfig, subject: &SyntheticSubject) -> String {
    if config.sites == 0 { "synthetic-3T".into() } else { subject.site.clone() }
}

/// Generates `held_out_normals` normals (one per bracket in turn, another anatomy seed) and
/// `held_out_cases` cases at the site after the database's last, scores the normals for false
/// positives and compares the cases with their truth.
fn held_out_site(
    config: &DemoConfig,
    base: &BaseBrain,
    brackets: &[AgeBracket],
    db: &NormativeDb,
) -> anyhow::Result<(Option<HeldOutFigures>, Vec<CaseOutcome>)> {
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
    let bar = progress::bar(plan.len() as u64, "held-out site");
    let mut subjects = Vec::with_capacity(n);
    let mut cases = Vec::new();
    for member in &plan {
        let mut subject = generator.subject(&member.spec)?;
        subject.id = member.id.replace("sub-", "held-");
        if member.spec.abnormality.is_some() {
            let start = Instant::now();
            let options = DeviationOptions {
                age_years: subject.age_years,
                sex: Some(to_sex(subject.sex)),
                max_regions: 0,
                site: Some(subject.site.clone()),
            };
            let result = compute_deviation(db, &subject.image, &options)?;
            cases.push(compare_with_truth(&subject, &result, PathBuf::new(), start.elapsed().as_secs_f64()));
            bar.inc(1);
        } else {
            subjects.push(subject);
        }
    }
    if subjects.is_empty() {
        bar.finish();
        return Ok((None, cases));
    }
    let normals: Vec<HeldOutNormal> = subjects
        .iter()
        .map(|s| HeldOutNormal {
            id: s.id.clone(),
            age_years: s.age_years,
            sex: Some(to_sex(s.sex)),
            site: s.site.clone(),
            image: &s.image,
        })
        .collect();
    let options = DeviationOptions { age_years: 0.0, sex: None, max_regions: 0, site: None };
    let figures = score_held_out(db, &normals, &options, &|_| bar.inc(1))?;
    bar.finish();
    Ok((Some(figures), cases))
}

/// The normals of a bracket a template is built from: every other one in age order when the
/// bracket has at least 8, so the rest stay outside the template and calibrate the thresholds
/// as new cases would be scored (a normal inside the template is closer to it than a case).
fn template_half<'a>(in_bracket: &[&'a (SyntheticSubject, PathBuf)]) -> Vec<&'a (SyntheticSubject, PathBuf)> {
    let mut by_age = in_bracket.to_vec();
    by_age.sort_by(|a, b| a.0.age_years.total_cmp(&b.0.age_years).then_with(|| a.0.id.cmp(&b.0.id)));
    if by_age.len() < 8 {
        return by_age;
    }
    by_age.into_iter().step_by(2).collect()
}

/// Compares the significant clusters of a case (on its own grid) with its truth region.
pub fn compare_with_truth(
    subject: &SyntheticSubject,
    result: &crate::pipeline::deviation::DeviationResult,
    out_dir: PathBuf,
    seconds: f64,
) -> CaseOutcome {
    let truth: Option<&Image<f32>> = subject.truth.lesion_mask.as_ref();
    let labels = result.clusters_native.as_slice();
    let mut overlapping = std::collections::BTreeSet::new();
    let mut truth_voxels = 0usize;
    if let Some(t) = truth {
        for (&l, &m) in labels.iter().zip(t.as_slice()) {
            if m > 0.5 {
                truth_voxels += 1;
                if l > 0.5 {
                    overlapping.insert(l.round() as u32);
                }
            }
        }
    }
    let voxel_ml = subject.image.grid().linear().determinant().abs() / 1000.0;
    let score: Vec<f32> = result.z_native[0]
        .as_slice()
        .iter()
        .zip(result.z_native[1].as_slice())
        .map(|(a, b)| a.abs().max(b.abs()))
        .collect();
    let voxel_auc = match truth {
        Some(t) => lesion_auc(&score, t.as_slice(), subject.truth.labels.as_slice()),
        None => f64::NAN,
    };
    let significant: Vec<&ClusterReport> = result.clusters.iter().filter(|c| c.significant).collect();
    let matching = significant
        .iter()
        .filter(|c| overlapping.contains(&c.label))
        .max_by_key(|c| c.size_voxels)
        .map(|c| (*c).clone());
    CaseOutcome {
        id: subject.id.clone(),
        kind: subject.truth.kind.as_str().to_owned(),
        age_years: subject.age_years,
        site: subject.site.clone(),
        truth_volume_ml: truth_voxels as f64 * voxel_ml,
        voxel_auc,
        detected: matching.is_some(),
        other_significant_clusters: significant.iter().filter(|c| !overlapping.contains(&c.label)).count(),
        matching_cluster: matching,
        matching_channels: significant
            .iter()
            .filter(|c| overlapping.contains(&c.label))
            .map(|c| format!("{} {}", c.channel, c.direction))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        out_dir,
        seconds,
    }
}

fn print_cases(cases: &[CaseOutcome]) {
    println!(
        "{:<10} {:<22} {:>4} {:>6} {:>9} {:>9} {:>10} {:>6} {:>8} {:>6}",
        "case", "truth", "site", "age", "truth ml", "detected", "peak z", "AUC", "others", "s"
    );
    for c in cases {
        let peak = c
            .matching_cluster
            .as_ref()
            .map(|m| format!("{} {:+.1}", m.channel, m.peak_z))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<22} {:>4} {:>6.1} {:>9.2} {:>9} {:>10} {:>6.3} {:>8} {:>6.1}",
            c.id,
            c.kind,
            c.site,
            c.age_years,
            c.truth_volume_ml,
            if c.detected { "yes" } else { "no" },
            peak,
            c.voxel_auc,
            c.other_significant_clusters,
            c.seconds
        );
    }
    let detected = cases.iter().filter(|c| c.detected).count();
    println!(
        "{detected} of {} abnormalities detected by a significant cluster overlapping the truth",
        cases.len()
    );
}

fn print_summary(config: &DemoConfig, summary: &DemoSummary) {
    let out = &config.out_dir;
    println!();
    println!("pedinorm demo — synthetic data only (a generated cohort, not real patients)");
    println!("results in {}", out.display());
    println!("  cohort:            {}", out.join("cohort/cohort.csv").display());
    println!("  templates:         {}", out.join("templates").display());
    println!("  normative database {}", summary.normdb.display());
    println!("  case results:      {}", out.join("cases").display());
    println!();
    for c in &summary.calibration {
        println!(
            "calibration {:9}: |z| > {:.2} (nominal voxel FPR {}, achieved on held-out normals {:.5}); \
             cluster mass > {:.1} (held-out normals with a cluster: {:.1} %)",
            c.channel,
            c.z_threshold,
            c.nominal_voxel_rate,
            c.achieved_voxel_rate,
            c.cluster_mass_threshold,
            100.0 * c.achieved_cluster_rate
        );
    }
    println!();
    print_cases(&summary.cases);
    if !summary.held_out_cases.is_empty() {
        println!();
        println!("cases of a site the database has never seen:");
        print_cases(&summary.held_out_cases);
    }
    if let Some(held_out) = &summary.held_out {
        println!();
        println!(
            "false positives on {} normals of site {} (not in the database), scored as cases:",
            held_out.normals.len(),
            held_out.sites.join(", ")
        );
        for rate in &held_out.voxel_rates {
            println!(
                "  {:9} voxels beyond threshold {:.5} (nominal {}, {:.1}x)",
                rate.channel,
                rate.achieved,
                rate.nominal,
                rate.achieved / rate.nominal
            );
        }
        println!(
            "  normals with a significant cluster {:.0} % (nominal {:.0} %); flagged unreliable {:.0} %",
            100.0 * held_out.cluster_rate,
            100.0 * held_out.nominal_cluster_rate,
            100.0 * held_out.flagged_rate
        );
    }
    for (name, s) in &summary.timings {
        println!("  {name:22} {s:7.1} s");
    }
    println!();
    println!(
        "try: pedinorm deviation --normdb {} --case <image.nii.gz> --age <years> --sex F --out-dir <dir>",
        summary.normdb.display()
    );
}
