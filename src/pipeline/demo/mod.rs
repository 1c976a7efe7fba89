//! The whole job on built-in synthetic data (`pedinorm demo`).
//!
//! Generates a synthetic paediatric cohort (normals imaged at several scanner sites, and cases
//! with known abnormalities) from the MNI152 brain over 0–17 years, builds one template per
//! age bracket with the local batch executor, builds the HDF5 normative database with
//! leave-one-out calibration (and the JHU atlas carried to every template when available),
//! computes deviation maps of the cases and compares their significant clusters with the known
//! truth, and scores normals of a site the database has never seen to report the false
//! positives a new centre would meet. `DIR/normdb.h5` is then ready for `pedinorm deviation`
//! on any other case.

mod brackets;
mod held_out_site;
mod outcome;

pub use brackets::DemoBrackets;
pub use outcome::{CaseOutcome, ChannelCalibrationSummary, DemoSummary, compare_with_truth};

use crate::batch::{LocalExecutor, ProgressEvent};
use crate::normdb::{NormDbError, NormDbFile};
use crate::pipeline::database::{
    AtlasInput, BracketTemplate, MIN_TEMPLATE_SUBJECTS, build_database, load_atlas,
};
use crate::pipeline::deviation::{CaseError, DeviationError, DeviationOptions, run_case};
use crate::pipeline::normdb_build::{AtlasFiles, NormdbBuildError};
use crate::pipeline::steps::default_program;
use crate::pipeline::template_build::{SubjectInput, SubjectSource, TemplateBuildError, build_template};
use crate::synth_io::{SynthIoError, WriteOptions, csv_row, load_base, write_cohort_csv, write_subject};
use pedinorm_registration::{Grid, GridError};
use pedinorm_templates::age::AgeBracket;
use pedinorm_templates::model::{BuildOptions, NormalSubject, NormativeDb};
use pedinorm_templates::template::{RegistrationSettings, TemplateConfig, TemplateTarget};
use pedinorm_validation::{
    Abnormality, BaseBrain, CohortSpec, Generator, Site, SynthError, SyntheticSubject, base_of_subject,
    cohort_plan,
};
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a demo run stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The configuration cannot give a database (age range, brackets, too few normals).
    #[error("{0}")]
    Config(String),
    /// The synthetic cohort could not be generated.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// A synthetic subject or the base brain could not be read or written.
    #[error(transparent)]
    SynthFiles(#[from] SynthIoError),
    /// The phantom's grid is invalid.
    #[error(transparent)]
    Grid(#[from] GridError),
    /// A bracket's template could not be built.
    #[error("template of bracket {bracket}: {error}")]
    Template {
        /// Bracket name.
        bracket: String,
        /// What failed.
        error: TemplateBuildError,
    },
    /// The normative database could not be built.
    #[error(transparent)]
    Database(#[from] NormdbBuildError),
    /// The database file could not be written or read back.
    #[error(transparent)]
    NormDb(#[from] NormDbError),
    /// A case could not be scored or its outputs written.
    #[error(transparent)]
    Case(#[from] CaseError),
    /// The unseen site's subjects could not be scored.
    #[error("held-out site: {0}")]
    HeldOut(#[from] DeviationError),
    /// A folder or the summary could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What a demo run reports while it works: one task after another, each a number of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoProgress<'a> {
    /// A task of `total` steps starts.
    Started {
        /// What the task does.
        task: &'a str,
        /// Its steps.
        total: usize,
    },
    /// One step of the current task is done (steps may be reported from several threads).
    Step,
    /// The current task is done.
    Finished,
}

/// The callback a demo run reports its [`DemoProgress`] to (from several threads).
pub type OnProgress<'a> = &'a (dyn Fn(DemoProgress<'_>) + Sync);

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
    /// Further base brains (`t1.nii.gz`, `gm.nii.gz`, `wm.nii.gz` per folder, in the space of
    /// the first): the normals and cases are drawn from every base in turn (see
    /// [`pedinorm_validation::base_of_subject`]), so the population holds several individuals' anatomy.
    pub extra_bases: Vec<PathBuf>,
    /// Atlas files (labels, names, reference T1), when available.
    pub atlas: Option<AtlasFiles>,
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

/// The MNI base brain of a data folder (`DATA/mni/`) and, when installed, the JHU white-matter
/// atlas at the resolution nearest `resolution_mm` (`DATA/atlases/`, labels, names and the MNI
/// T1 it is drawn on).
pub fn data_dir_inputs(
    data_dir: &Path,
    resolution_mm: f64,
) -> Result<(BaseSource, Option<AtlasFiles>), DemoError> {
    let mni = data_dir.join("mni");
    let atlases = data_dir.join("atlases");
    if !mni.join("t1.nii.gz").is_file() {
        return Err(DemoError::Config(format!(
            "{}: the MNI base brain is missing; run scripts/setup.sh first",
            mni.display()
        )));
    }
    let atlas_res = if resolution_mm >= 1.5 { "2mm" } else { "1mm" };
    let labels = atlases.join(format!("JHU-WhiteMatter-labels-{atlas_res}.nii.gz"));
    let names = atlases.join(format!("JHU-WhiteMatter-labels-{atlas_res}.nii.txt"));
    let atlas = (labels.is_file() && names.is_file()).then(|| AtlasFiles {
        labels,
        names,
        reference: mni.join("t1.nii.gz"),
    });
    Ok((BaseSource::Mni(mni), atlas))
}

fn phase<T>(
    timings: &mut Vec<(String, f64)>,
    name: &str,
    f: impl FnOnce() -> Result<T, DemoError>,
) -> Result<T, DemoError> {
    let start = Instant::now();
    let result = f()?;
    timings.push((name.to_owned(), start.elapsed().as_secs_f64()));
    Ok(result)
}

fn create_dir(path: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(path).map_err(|source| DemoError::Io { path: path.to_owned(), source })
}

/// Runs the whole job without reporting progress; see the module documentation.
pub fn run_demo(config: &DemoConfig) -> Result<DemoSummary, DemoError> {
    run_demo_with_progress(config, &|_| {})
}

/// Runs the whole job, reporting each task's steps to `progress`.
pub fn run_demo_with_progress(
    config: &DemoConfig,
    progress: OnProgress<'_>,
) -> Result<DemoSummary, DemoError> {
    let mut timings = Vec::new();
    create_dir(&config.out_dir)?;
    let out_dir = config
        .out_dir
        .canonicalize()
        .map_err(|source| DemoError::Io { path: config.out_dir.clone(), source })?;
    let (min_age, max_age) = config.age_range;
    if !(min_age >= 0.0 && max_age > min_age && max_age <= 18.0) {
        return Err(DemoError::Config(format!("age range {min_age}–{max_age} must lie within 0–18 years")));
    }
    let brackets = config.brackets.over(min_age, max_age);
    if brackets.is_empty() {
        return Err(DemoError::Config(format!(
            "no age bracket meets the age range {min_age}–{max_age} years"
        )));
    }
    if config.normals < MIN_TEMPLATE_SUBJECTS * brackets.len() {
        return Err(DemoError::Config(format!(
            "{} normals are too few for {} brackets (at least {MIN_TEMPLATE_SUBJECTS} per bracket)",
            config.normals,
            brackets.len()
        )));
    }

    // 1. Synthetic cohort.
    let base = phase(&mut timings, "load base brain", || load_base_brain(&config.base))?;
    let extra_bases = phase(&mut timings, "load further base brains", || {
        config.extra_bases.iter().map(|dir| Ok(load_base(dir)?)).collect::<Result<Vec<_>, DemoError>>()
    })?;
    let (normals, cases) = phase(&mut timings, "synthetic cohort", || {
        let bases: Vec<&BaseBrain> = std::iter::once(&base).chain(&extra_bases).collect();
        synthetic_cohort(config, &bases, &brackets, &out_dir, progress)
    })?;
    drop(extra_bases);

    // 2. One template per bracket (local batch executor, resumable build folders).
    let mut template_members = BTreeSet::new();
    let templates = phase(&mut timings, "templates", || {
        bracket_templates(config, &brackets, &normals, &out_dir, &mut template_members, progress)
    })?;

    // 3. Normative database with calibration (and the atlas carried to each template),
    //    calibrated on the normals the templates were not built from.
    let normdb_path = out_dir.join("normdb.h5");
    let build = BuildOptions { template_members, ..config.build.clone() };
    let db = phase(&mut timings, "normative database", || {
        let atlas: Option<AtlasInput> = match &config.atlas {
            Some(files) => Some(load_atlas(&files.labels, &files.names, &files.reference)?),
            None => None,
        };
        let subjects: Vec<NormalSubject> = normals
            .iter()
            .map(|(s, _)| NormalSubject {
                pseudonym: s.id.clone(),
                age_years: s.age_years,
                sex: s.sex,
                scanner: site_label(config, s),
                image: s.image.clone(),
            })
            .collect();
        progress(DemoProgress::Started { task: "normals to templates", total: subjects.len() });
        let db =
            build_database(&subjects, templates, atlas.as_ref(), &build, &|_| progress(DemoProgress::Step))?;
        progress(DemoProgress::Finished);
        db.write(&normdb_path)?;
        Ok(db)
    })?;
    // Read back what was written: the cases are scored against the file users will have.
    let db = NormativeDb::read(&normdb_path).inspect(|read| {
        debug_assert_eq!(read.subjects.len(), db.subjects.len());
    })?;

    // 4. Deviation maps of the cases, compared with the truth.
    let outcomes = phase(&mut timings, "deviation maps", || {
        progress(DemoProgress::Started { task: "deviation maps", total: cases.len() });
        let mut outcomes = Vec::new();
        for (subject, path) in &cases {
            let start = Instant::now();
            let case_dir = out_dir.join("cases").join(&subject.id);
            let options = DeviationOptions {
                age_years: subject.age_years,
                sex: Some(subject.sex),
                max_regions: 15,
                site: Some(site_label(config, subject)),
            };
            let case_name = path.display().to_string();
            let normdb_name = normdb_path.display().to_string();
            let result = run_case(&db, &subject.image, &options, &case_name, &normdb_name, &case_dir)
                .map_err(|error| CaseError { case: path.clone(), error })?;
            let seconds = start.elapsed().as_secs_f64();
            outcomes.push(compare_with_truth(subject, &result, case_dir, seconds));
            progress(DemoProgress::Step);
        }
        progress(DemoProgress::Finished);
        Ok(outcomes)
    })?;

    // 5. Normals of a site the database has never seen, scored as cases.
    let (held_out, held_out_cases) = if config.held_out_normals + config.held_out_cases == 0 {
        (None, Vec::new())
    } else {
        phase(&mut timings, "held-out site", || {
            held_out_site::held_out_site(config, &base, &brackets, &db, progress)
        })?
    };

    let calibration = outcome::calibration_summary(&db);
    let summary =
        DemoSummary { normdb: normdb_path, cases: outcomes, calibration, held_out, held_out_cases, timings };
    let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    let summary_path = out_dir.join("summary.json");
    crate::atomic::write_bytes(&summary_path, &json)
        .map_err(|source| DemoError::Io { path: summary_path, source })?;
    Ok(summary)
}

/// The base brain: the MNI files, or the procedural phantom on an MNI-like field of view.
fn load_base_brain(base: &BaseSource) -> Result<BaseBrain, DemoError> {
    Ok(match base {
        BaseSource::Mni(dir) => load_base(dir)?,
        BaseSource::Phantom { spacing_mm } => {
            let n = |extent: f64| (extent / spacing_mm).round() as usize;
            let grid =
                Grid::axis_aligned([n(140.0), n(170.0), n(130.0)], [*spacing_mm; 3], [-70.0, -100.0, -60.0])?;
            BaseBrain::phantom(&grid)
        }
    })
}

/// A synthetic subject and the file its image was written to.
type SubjectOnDisk = (SyntheticSubject, PathBuf);

/// Generates the cohort, writes it under `OUT/cohort/` with its `cohort.csv`, and returns its
/// normals and its cases.
fn synthetic_cohort(
    config: &DemoConfig,
    bases: &[&BaseBrain],
    brackets: &[AgeBracket],
    out_dir: &Path,
    progress: OnProgress<'_>,
) -> Result<(Vec<SubjectOnDisk>, Vec<SubjectOnDisk>), DemoError> {
    let (min_age, max_age) = config.age_range;
    let mut spec = CohortSpec::new(config.normals, min_age, max_age, config.cases, config.seed);
    spec.resolution_mm = config.resolution_mm;
    spec.abnormalities = config.abnormalities.clone();
    spec.ages = config.brackets.ages(brackets, config.normals, min_age, max_age);
    spec.sites = Site::numbered(1, config.sites, config.seed);
    let plan = cohort_plan(&spec)?;
    let cohort_dir = out_dir.join("cohort");
    let generators =
        bases.iter().map(|base| Generator::new(base, config.resolution_mm)).collect::<Result<Vec<_>, _>>()?;
    progress(DemoProgress::Started { task: "synthetic cohort", total: plan.len() });
    // Subjects are independent (each has its own seed), so they are made in parallel and
    // the result does not depend on the thread count.
    let made: Vec<(SyntheticSubject, PathBuf, String, bool)> = plan
        .par_iter()
        .enumerate()
        .map(|(index, member)| -> Result<_, DemoError> {
            let generator = &generators[base_of_subject(index, generators.len())];
            let mut subject = generator.subject(&member.spec)?;
            subject.id = member.id.clone();
            let options = WriteOptions { warps: false, dicom: false, national_id: false };
            let files = write_subject(&cohort_dir, &subject, index + 1, member.spec.seed, options)?;
            let row = csv_row(&subject, &files);
            progress(DemoProgress::Step);
            Ok((subject, cohort_dir.join(&files.image), row, member.spec.abnormality.is_some()))
        })
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    let mut normals = Vec::new();
    let mut cases = Vec::new();
    for (subject, path, row, is_case) in made {
        rows.push(row);
        if is_case { cases.push((subject, path)) } else { normals.push((subject, path)) }
    }
    progress(DemoProgress::Finished);
    write_cohort_csv(&cohort_dir.join("cohort.csv"), &rows)?;
    Ok((normals, cases))
}

/// Builds one template per bracket from half of its normals (see [`template_half`]) and adds
/// their ids to `template_members`.
fn bracket_templates(
    config: &DemoConfig,
    brackets: &[AgeBracket],
    normals: &[SubjectOnDisk],
    out_dir: &Path,
    template_members: &mut BTreeSet<String>,
    progress: OnProgress<'_>,
) -> Result<Vec<BracketTemplate>, DemoError> {
    let executor = LocalExecutor {
        threads_per_task: Some(
            1.max(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2) / config.jobs),
        ),
        ..LocalExecutor::new(default_program(), config.jobs)
    };
    let mut templates = Vec::new();
    for bracket in brackets {
        let in_bracket: Vec<&SubjectOnDisk> =
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
            return Err(DemoError::Config(format!(
                "bracket {} has {} normals; at least {MIN_TEMPLATE_SUBJECTS} are needed",
                bracket.name,
                subjects.len()
            )));
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
        let task = format!("template {}", bracket.name);
        progress(DemoProgress::Started { task: &task, total: steps });
        let result = build_template(
            &subjects,
            &template_config,
            &out_dir.join("templates").join(&bracket.name),
            &executor,
            1,
            &|event| {
                if let ProgressEvent::StageProgress { .. } = event {
                    progress(DemoProgress::Step);
                }
            },
        )
        .map_err(|error| DemoError::Template { bracket: bracket.name.clone(), error })?;
        progress(DemoProgress::Finished);
        templates.push(BracketTemplate {
            name: bracket.name.clone(),
            min_years: bracket.min_years,
            max_years: bracket.max_years,
            template: result.template,
        });
        template_members.extend(subjects.iter().map(|s| s.id.clone()));
    }
    Ok(templates)
}

/// The scanner label recorded for a normal: its synthetic site, or one label for all when the
/// cohort has no sites.
fn site_label(config: &DemoConfig, subject: &SyntheticSubject) -> String {
    if config.sites == 0 { "synthetic-3T".into() } else { subject.site.clone() }
}

/// The normals of a bracket a template is built from: every other one in age order when the
/// bracket has at least 8, so the rest stay outside the template and calibrate the thresholds
/// as new cases would be scored (a normal inside the template is closer to it than a case).
fn template_half<'a>(in_bracket: &[&'a SubjectOnDisk]) -> Vec<&'a SubjectOnDisk> {
    let mut by_age = in_bracket.to_vec();
    by_age.sort_by(|a, b| a.0.age_years.total_cmp(&b.0.age_years).then_with(|| a.0.id.cmp(&b.0.id)));
    if by_age.len() < 8 {
        return by_age;
    }
    by_age.into_iter().step_by(2).collect()
}
