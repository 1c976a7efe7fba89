//! Template builds on disk: the pure steps of `pedinorm_templates::template` (`init`, `map`,
//! `reduce`) with their state in a build directory, so each step can run as a separate
//! process or batch job and a build resumes where it stopped.
//!
//! Layout of a build directory `BUILD`:
//!
//! ```text
//! BUILD/build.json                              configuration and subjects (ids, paths, ages, weights)
//! BUILD/subjects.txt                            subject ids in build order (array index i = line i + 1)
//! BUILD/inputs/ID.nii.gz                        subjects given in memory, written once
//! BUILD/init/target.nii.gz, init/done.json      the centre-of-mass-aligned average (first target)
//! BUILD/iter-K/subject-ID/affine.txt            template → subject affine (ITK text, LPS)
//! BUILD/iter-K/subject-ID/warp.nii.gz           template → subject displacement (ANTs convention; K ≥ 1)
//! BUILD/iter-K/subject-ID/warped.nii.gz         the subject on the template grid
//! BUILD/iter-K/subject-ID/done.json             similarity, warp norm, weight, output sizes (written last)
//! BUILD/iter-K/template.nii.gz, qc.json, done.json
//! BUILD/template.nii.gz, qc.json, montage.png   the final template and QC of every iteration
//! ```
//!
//! Iteration 0 registers affinely only; iterations 1..=K affine + diffeomorphic. A step whose
//! `done.json` exists and whose outputs have the recorded sizes is skipped.

use crate::batch::{BatchError, Executor, ProgressEvent, Resources, Stage, Task};
use crate::formats::nifti::{NiftiIoError, VoxelType, read_image, write_image};
use crate::formats::png::PngError;
use crate::formats::transform::{TransformIoError, read_affine, read_field, write_affine, write_field};
use crate::pipeline::steps::{
    Manifest, PlannedStage, StepFileError, StepOutputs, absolute, completed, file_error, file_sizes,
    image_voxels, index_in_build, name_problems, read_json, run_plan, run_step, step_args, step_done,
    store_manifest, write_json,
};
use crate::report::write_template_montage;
use pedinorm_registration::{AffineTransform, Image};
use pedinorm_templates::age::AgeModelError;
use pedinorm_templates::qc::{IterationQc, SubjectFigures, iteration_qc};
use pedinorm_templates::template::{
    MapStage, PedinormRegistrar, ReduceAccumulator, Registrar, SubjectMapping, TemplateConfig, TemplateError,
    TemplateTarget, init_target, map_subject, template_grid,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod tasks;

pub use tasks::{run_init, run_map, run_map_with, run_reduce, target_of_iteration};

/// Version of the build directory layout and `build.json`.
pub const BUILD_FORMAT_VERSION: u32 = 1;

/// Why a template build step failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateBuildError {
    /// A NIfTI file could not be read or written.
    #[error(transparent)]
    Nifti(#[from] NiftiIoError),
    /// A transform file could not be read or written.
    #[error(transparent)]
    Transform(#[from] TransformIoError),
    /// A compute step failed.
    #[error("{context}: {source}")]
    Compute {
        /// Which step and subject.
        context: String,
        /// The compute error.
        source: TemplateError,
    },
    /// The age model rejected the subjects or the target.
    #[error("age model: {0}")]
    Age(#[from] AgeModelError),
    /// A file of the build could not be read, written or parsed.
    #[error(transparent)]
    File(#[from] StepFileError),
    /// The request is inconsistent (unknown subject, iteration out of range, empty cohort).
    #[error("{0}")]
    Invalid(String),
    /// The batch executor failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The montage could not be written.
    #[error(transparent)]
    Png(#[from] PngError),
}

/// Where a subject's image comes from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // few per build; boxing would only add indirection
pub enum SubjectSource {
    /// A NIfTI file.
    Path(PathBuf),
    /// An image in memory (written to `BUILD/inputs/` so batch tasks can read it).
    Image(Image<f32>),
}

/// One subject of a template build.
#[derive(Debug, Clone)]
pub struct SubjectInput {
    /// Identifier (letters, digits, `-`, `_`, `.`), unique in the build.
    pub id: String,
    /// The image.
    pub source: SubjectSource,
    /// Age in years.
    pub age_years: f64,
}

/// A subject as recorded in `build.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSubject {
    /// Identifier.
    pub id: String,
    /// Absolute path of the image.
    pub path: PathBuf,
    /// Age in years.
    pub age_years: f64,
    /// Weight in the template (> 0; subjects of weight 0 are not in the build).
    pub weight: f64,
}

/// The content of `build.json`: everything that decides the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildManifest {
    /// [`BUILD_FORMAT_VERSION`].
    pub format_version: u32,
    /// The configuration.
    pub config: TemplateConfig,
    /// Kernel width (years) used for continuous-age targets.
    pub kernel_width_years: Option<f64>,
    /// Effective sample size of the weights.
    pub effective_sample: f64,
    /// Subjects in build order (sorted by id).
    pub subjects: Vec<ManifestSubject>,
}

impl Manifest for BuildManifest {
    const FILE: &'static str = "build.json";
    const VERSION: u32 = BUILD_FORMAT_VERSION;
    const DIFFERENCES: &'static str = "other subjects or settings";
}

impl BuildManifest {
    fn subject(&self, id: &str) -> Result<&ManifestSubject, TemplateBuildError> {
        let index =
            index_in_build(&self.subjects, |s| &s.id, "subject", id).map_err(TemplateBuildError::Invalid)?;
        Ok(&self.subjects[index])
    }

    fn check_iteration(&self, iteration: usize) -> Result<(), TemplateBuildError> {
        if iteration > self.config.iterations {
            return Err(TemplateBuildError::Invalid(format!(
                "iteration {iteration} is beyond the build's last iteration {}",
                self.config.iterations
            )));
        }
        Ok(())
    }
}

/// Result figures of one map step (`done.json` of a subject).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapRecord {
    /// Subject identifier.
    pub id: String,
    /// Iteration.
    pub iteration: usize,
    /// Weight.
    pub weight: f64,
    /// Correlation with the template it was registered to.
    pub similarity: f64,
    /// Mean warp norm (mm), absent in iteration 0.
    pub warp_norm_mm: Option<f64>,
    /// Wall time of the step (s); not part of the result.
    pub seconds: f64,
    /// Sizes of the outputs (bytes), to validate them on resume.
    pub outputs: Vec<(String, u64)>,
}

/// Per-subject transforms to the final template.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectTransforms {
    /// Subject identifier.
    pub id: String,
    /// Template → subject affine (also in `affine_path`).
    pub affine: AffineTransform,
    /// ITK text file of the affine.
    pub affine_path: PathBuf,
    /// Template → subject displacement field file (applied before the affine).
    pub warp_path: Option<PathBuf>,
    /// The subject resampled on the template grid.
    pub warped_path: PathBuf,
}

/// QC of a whole build (`BUILD/qc.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildQc {
    /// One entry per iteration, 0 (affine) first.
    pub iterations: Vec<IterationQc>,
    /// Subjects flagged as outliers in the last iteration.
    pub outliers: Vec<String>,
}

/// The outcome of [`build_template`].
#[derive(Debug, Clone)]
pub struct TemplateBuildResult {
    /// The final template.
    pub template: Image<f32>,
    /// Path of the final template.
    pub template_path: PathBuf,
    /// Transforms of every subject (build order) to the final template.
    pub transforms: Vec<SubjectTransforms>,
    /// QC.
    pub qc: BuildQc,
    /// The manifest.
    pub manifest: BuildManifest,
}

/// The directory of one iteration.
pub fn iteration_dir(build_dir: &Path, iteration: usize) -> PathBuf {
    build_dir.join(format!("iter-{iteration}"))
}

/// The directory of one subject's map step.
pub fn subject_dir(build_dir: &Path, iteration: usize, id: &str) -> PathBuf {
    iteration_dir(build_dir, iteration).join(format!("subject-{id}"))
}

/// The done marker of the init step.
pub fn init_marker(build_dir: &Path) -> PathBuf {
    build_dir.join("init").join("done.json")
}

/// The done marker of a map step.
pub fn map_marker(build_dir: &Path, iteration: usize, id: &str) -> PathBuf {
    subject_dir(build_dir, iteration, id).join("done.json")
}

/// The done marker of a reduce step.
pub fn reduce_marker(build_dir: &Path, iteration: usize) -> PathBuf {
    iteration_dir(build_dir, iteration).join("done.json")
}

/// Computes subject weights from the configuration's target.
fn subject_weights(
    config: &TemplateConfig,
    ages: &[f64],
) -> Result<(Vec<f64>, Option<f64>), TemplateBuildError> {
    Ok(match &config.target {
        TemplateTarget::AllSubjects => (vec![1.0; ages.len()], None),
        TemplateTarget::Bracket(bracket) => {
            (ages.iter().map(|&a| if bracket.contains(a) { 1.0 } else { 0.0 }).collect(), None)
        }
        TemplateTarget::Age { age_years, kernel } => {
            let weights = kernel.weights(ages, *age_years)?;
            (weights.weights, Some(weights.width_years))
        }
    })
}

/// Writes `build.json` (and in-memory subjects to `BUILD/inputs/`) for a new build, or checks
/// that an existing build directory holds the same build (so it can be resumed).
pub fn prepare_build(
    subjects: &[SubjectInput],
    config: &TemplateConfig,
    build_dir: &Path,
) -> Result<BuildManifest, TemplateBuildError> {
    config
        .validate()
        .map_err(|source| TemplateBuildError::Compute { context: "configuration".into(), source })?;
    let mut problems = name_problems("subject id", subjects.iter().map(|s| s.id.as_str()));
    for subject in subjects {
        if let Err(error) = pedinorm_templates::age::check_age(subject.age_years) {
            problems.push(format!("subject {}: {error}", subject.id));
        }
    }
    if !problems.is_empty() {
        return Err(TemplateBuildError::Invalid(problems.join("; ")));
    }
    let mut order: Vec<&SubjectInput> = subjects.iter().collect();
    order.sort_by(|a, b| a.id.cmp(&b.id));
    let ages: Vec<f64> = order.iter().map(|s| s.age_years).collect();
    let (weights, kernel_width_years) = subject_weights(config, &ages)?;
    let effective_sample = pedinorm_templates::age::effective_sample_of(&weights);
    std::fs::create_dir_all(build_dir).map_err(|e| file_error(build_dir, e))?;
    let build_dir = absolute(build_dir)?;
    let mut manifest_subjects = Vec::new();
    for (subject, weight) in order.iter().zip(&weights) {
        if *weight <= 0.0 {
            continue;
        }
        let path = match &subject.source {
            SubjectSource::Path(path) => absolute(path)?,
            SubjectSource::Image(image) => {
                let path = build_dir.join("inputs").join(format!("{}.nii.gz", subject.id));
                if !path.is_file() {
                    write_image(&path, image, VoxelType::F32)?;
                }
                path
            }
        };
        manifest_subjects.push(ManifestSubject {
            id: subject.id.clone(),
            path,
            age_years: subject.age_years,
            weight: *weight,
        });
    }
    if manifest_subjects.is_empty() {
        return Err(TemplateBuildError::Invalid("no subject has a positive weight for this template".into()));
    }
    let manifest = BuildManifest {
        format_version: BUILD_FORMAT_VERSION,
        config: config.clone(),
        kernel_width_years,
        effective_sample,
        subjects: manifest_subjects,
    };
    let ids: Vec<&str> = manifest.subjects.iter().map(|s| s.id.as_str()).collect();
    let lists = [("subjects.txt", ids)];
    Ok(store_manifest(&build_dir, manifest.clone(), &lists)?)
}

/// The batch stages of a build: init, then map (one task per subject) and reduce for every
/// iteration, each task a `pedinorm template …` invocation. A step whose outputs break runs
/// again alone: the steps after it keep their results.
pub fn build_stages(
    build_dir: &Path,
    manifest: &BuildManifest,
    map: Resources,
    reduce: Resources,
) -> Vec<PlannedStage> {
    let args = |step: &str, options: &[&str]| step_args("template", step, build_dir, options);
    let mut stages = vec![PlannedStage::new(Stage {
        name: "init".into(),
        tasks: vec![Task {
            label: "init".into(),
            args: args("init", &[]),
            done_marker: init_marker(build_dir),
        }],
        resources: reduce,
    })];
    for iteration in 0..=manifest.config.iterations {
        stages.push(
            PlannedStage::new(Stage {
                name: format!("iter-{iteration}-map"),
                tasks: manifest
                    .subjects
                    .iter()
                    .map(|s| Task {
                        label: s.id.clone(),
                        args: args("map", &["--iteration", &iteration.to_string(), "--subject", &s.id]),
                        done_marker: map_marker(build_dir, iteration, &s.id),
                    })
                    .collect(),
                resources: map,
            })
            .recorded_by::<MapRecord>(),
        );
        stages.push(PlannedStage::new(Stage {
            name: format!("iter-{iteration}-reduce"),
            tasks: vec![Task {
                label: "reduce".into(),
                args: args("reduce", &["--iteration", &iteration.to_string()]),
                done_marker: reduce_marker(build_dir, iteration),
            }],
            resources: reduce,
        }));
    }
    stages
}

/// Resources of the map and reduce tasks of a build, from the template and subject image
/// sizes (see [`crate::batch::plan`]).
pub fn plan_resources(
    manifest: &BuildManifest,
    threads: usize,
) -> Result<(Resources, Resources), TemplateBuildError> {
    let mut largest = 0usize;
    for subject in &manifest.subjects {
        largest = largest.max(image_voxels(&subject.path)?);
    }
    let estimate = crate::batch::plan::TaskEstimate::for_voxels(
        largest,
        manifest.config.registration.spacing_mm,
        threads,
    );
    Ok((estimate.map, estimate.reduce))
}

/// Builds a template: prepares the build directory, runs every step through `executor`
/// (each step a `pedinorm template …` process), then writes the final template, QC and
/// montage. Re-running with the same arguments resumes an interrupted build.
pub fn build_template(
    subjects: &[SubjectInput],
    config: &TemplateConfig,
    build_dir: &Path,
    executor: &dyn Executor,
    threads_per_task: usize,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<TemplateBuildResult, TemplateBuildError> {
    let manifest = prepare_build(subjects, config, build_dir)?;
    let build_dir = absolute(build_dir)?;
    let (map, reduce) = plan_resources(&manifest, threads_per_task)?;
    run_plan::<TemplateBuildError>(&build_stages(&build_dir, &manifest, map, reduce), executor, progress)?;
    finalize(&build_dir)
}

/// Writes the final outputs of a finished build (`template.nii.gz`, `qc.json`,
/// `montage.png`) and returns the result.
pub fn finalize(build_dir: &Path) -> Result<TemplateBuildResult, TemplateBuildError> {
    let manifest = BuildManifest::read(build_dir)?;
    let last = manifest.config.iterations;
    if !step_done(&reduce_marker(build_dir, last)) {
        return Err(TemplateBuildError::Invalid(format!(
            "the build in {} is not finished",
            build_dir.display()
        )));
    }
    let last_dir = iteration_dir(build_dir, last);
    let template = read_image(&last_dir.join("template.nii.gz"))?;
    let template_path = build_dir.join("template.nii.gz");
    write_image(&template_path, &template, VoxelType::F32)?;
    let iterations: Vec<IterationQc> = (0..=last)
        .map(|k| read_json(&iteration_dir(build_dir, k).join("qc.json")))
        .collect::<Result<_, _>>()?;
    let outliers = iterations
        .last()
        .map(|q| q.subjects.iter().filter(|s| s.outlier).map(|s| s.id.clone()).collect())
        .unwrap_or_default();
    let qc = BuildQc { iterations, outliers };
    write_json(&build_dir.join("qc.json"), &qc)?;
    write_template_montage(&build_dir.join("montage.png"), &[&template])?;
    let mut transforms = Vec::new();
    for subject in &manifest.subjects {
        let dir = subject_dir(build_dir, last, &subject.id);
        let affine_path = dir.join("affine.txt");
        transforms.push(SubjectTransforms {
            id: subject.id.clone(),
            affine: read_affine(&affine_path)?,
            affine_path,
            warp_path: (last > 0).then(|| dir.join("warp.nii.gz")),
            warped_path: dir.join("warped.nii.gz"),
        });
    }
    Ok(TemplateBuildResult { template, template_path, transforms, qc, manifest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;
    use pedinorm_registration::Grid;
    use pedinorm_templates::age::AgeKernel;
    use pedinorm_templates::template::{IdentityRegistrar, Sharpening};

    fn blob(value: f32, radius: f64) -> Image<f32> {
        let grid = Grid::axis_aligned([14, 12, 10], [2.0; 3], [-14.0, -12.0, -10.0]).unwrap();
        let d = grid.dims();
        let data = Array3::from_shape_fn((d[0], d[1], d[2]), |(i, j, k)| {
            let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let r = (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt();
            if r < radius { value * (1.0 + 0.02 * i as f32) } else { 0.0 }
        });
        Image::new(data, grid).unwrap()
    }

    fn subjects() -> Vec<SubjectInput> {
        [(3.0, 1.0), (3.5, 1.5), (4.0, 2.0), (12.0, 4.0)]
            .iter()
            .enumerate()
            .map(|(i, &(age, value))| SubjectInput {
                id: format!("s{i}"),
                source: SubjectSource::Image(blob(value, 8.0)),
                age_years: age,
            })
            .collect()
    }

    #[test]
    fn age_kernel_weights_drop_far_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = AgeKernel { minimum_effective_sample: 2.0, ..AgeKernel::default() };
        let config = TemplateConfig {
            target: TemplateTarget::Age { age_years: 3.5, kernel },
            ..TemplateConfig::default()
        };
        let manifest = prepare_build(&subjects(), &config, dir.path()).unwrap();
        let ids: Vec<&str> = manifest.subjects.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["s0", "s1", "s2"]);
        assert!(manifest.subjects[1].weight > manifest.subjects[0].weight);
        assert!(manifest.effective_sample >= 2.0);
        assert_eq!(std::fs::read_to_string(dir.path().join("subjects.txt")).unwrap(), "s0\ns1\ns2\n");
        // The same build again is accepted; a different one is refused.
        prepare_build(&subjects(), &config, dir.path()).unwrap();
        let other = TemplateConfig { iterations: 2, ..config };
        assert!(
            prepare_build(&subjects(), &other, dir.path())
                .unwrap_err()
                .to_string()
                .contains("different build")
        );
    }

    #[test]
    fn steps_run_resume_and_report_missing_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let config = TemplateConfig {
            iterations: 1,
            sharpening: Sharpening::None,
            normalize_intensity: false,
            ..TemplateConfig::default()
        };
        let mut cohort = subjects();
        cohort.pop();
        let manifest = prepare_build(&cohort, &config, dir.path()).unwrap();
        let build = dir.path().canonicalize().unwrap();
        // Reduce before its maps names the missing subjects.
        run_init(&build).unwrap();
        let error = run_reduce(&build, 0).unwrap_err().to_string();
        assert!(error.contains("s0, s1, s2"), "{error}");
        let registrar = IdentityRegistrar { spacing_mm: 4.0 };
        for iteration in 0..=1 {
            for subject in &manifest.subjects {
                run_map_with(&build, &manifest, iteration, &subject.id, &registrar).unwrap();
            }
            run_reduce(&build, iteration).unwrap();
        }
        assert!(build.join("iter-1/subject-s1/warp.nii.gz").is_file());
        assert!(!build.join("iter-0/subject-s1/warp.nii.gz").exists());
        let result = finalize(&build).unwrap();
        // Identity mappings: the template is the plain mean of the subjects (values 1, 1.5, 2).
        let centre = result.template.data()[[7, 6, 5]];
        let expected = 1.5 * (1.0 + 0.02 * 7.0);
        assert!((centre - expected).abs() < 1e-5, "{centre} vs {expected}");
        assert_eq!(result.transforms.len(), 3);
        assert_eq!(result.qc.iterations.len(), 2);
        assert!(build.join("montage.png").is_file() && build.join("qc.json").is_file());
        // A finished step is skipped: its record (with its timing) is returned unchanged.
        let before = std::fs::read(map_marker(&build, 1, "s2")).unwrap();
        run_map_with(&build, &manifest, 1, "s2", &registrar).unwrap();
        assert_eq!(std::fs::read(map_marker(&build, 1, "s2")).unwrap(), before);
        // Broken outputs invalidate their step only.
        std::fs::write(build.join("iter-1/subject-s2/warped.nii.gz"), b"x").unwrap();
        let plan = build_stages(&build, &manifest, Resources::default(), Resources::default());
        assert_eq!(crate::pipeline::steps::invalidate(&plan).unwrap(), 1);
        assert!(!map_marker(&build, 1, "s2").exists() && map_marker(&build, 1, "s1").exists());
        assert!(run_map_with(&build, &manifest, 5, "s2", &registrar).is_err());
        assert!(run_map_with(&build, &manifest, 1, "nobody", &registrar).is_err());
    }
}
