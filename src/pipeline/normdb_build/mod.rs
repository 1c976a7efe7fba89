//! Normative-database builds on disk: the per-bracket and per-subject work of
//! [`crate::pipeline::database::build_database`] as separate steps with their state in a build
//! directory, so each step runs as its own process (a local pool or a Slurm job array) and a
//! build resumes where it stopped. The steps call the same functions as the in-memory build
//! ([`TemplateSpace::new`], [`carry_atlas`], [`map_to_template`], [`assemble`]) in the same
//! order, so every executor gives bit-identical statistics.
//!
//! Layout of a build directory `BUILD`:
//!
//! ```text
//! BUILD/normdb.json                                   parameters, brackets, atlas, subjects, output path
//! BUILD/subjects.txt, brackets.txt                    ids and bracket names (array index i = line i + 1)
//! BUILD/bracket-NAME/template.nii.gz, mask.nii.gz     the template space (step `space`, one per bracket)
//! BUILD/bracket-NAME/labels.nii.gz                    atlas labels carried to the template (with an atlas)
//! BUILD/bracket-NAME/done.json
//! BUILD/subject-ID/intensity.nii.gz, logjac.nii.gz    smoothed maps on the template grid (step `map`)
//! BUILD/subject-ID/csf.nii.gz, gm.nii.gz, wm.nii.gz  tissue probabilities on the template grid
//! BUILD/subject-ID/corrected.nii.gz, inverse.nii.gz  bias-corrected image, inverse deformation
//!                                                     (with the affine in done.json: regional volumes)
//! BUILD/subject-ID/done.json                          bracket, QC similarity, output sizes (written last)
//! BUILD/partial-C/stats.h5, done.json                 statistics of chunk C of subjects (step `partial`)
//! BUILD/reduce/done.json                              the written database's path and size (step `reduce`)
//! ```
//!
//! The `reduce` step merges the chunks' statistics in chunk order (or, without chunks, adds
//! every subject in build order), calibrates leave-one-out and writes the HDF5 database
//! atomically. A step whose `done.json` exists and whose outputs have the recorded sizes is
//! skipped.

use crate::batch::{BatchError, Executor, ProgressEvent, Resources, Stage, Task};
use crate::formats::nifti::{
    NiftiIoError, VoxelType, read_image, read_vector_image, write_image, write_vector_image,
};
use crate::normdb::{NormDbError, NormDbFile, now_utc};
use crate::pipeline::steps::{
    Manifest, PlannedStage, StepFileError, StepOutputs, absolute, completed, file_error, file_sizes,
    image_voxels, index_in_build, name_problems, read_json, run_plan, run_step, step_args, step_done,
    store_manifest, write_json,
};
use pedinorm_registration::{AffineTransform, DisplacementField, Image};
use pedinorm_templates::age::{AgeRange, containing_bracket};
use pedinorm_templates::model::{
    BracketInput, BuildOptions, Channel, MappedNormal, Metadata, ModelError, NativeSubject, NormativeDb,
    SubjectRecord, TISSUES, TemplateSpace, assemble, assemble_with_stats, bracket_nodes,
    calibrates_on_members, carry_atlas, gather, map_again_if_calibrated, map_to_template, member_tissues,
    recorded_quality, scatter, template_members_of, template_tissues,
};
use pedinorm_templates::stats::{NormativeAccumulator, Sex};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod inputs;
mod tasks;

pub use inputs::{bracket_templates, normals_of_cohort};
pub use tasks::{NormalMapRecord, run_normal_map, run_normdb_reduce, run_partial, run_space};

/// Version of the build directory layout and `normdb.json`.
pub const NORMDB_BUILD_FORMAT_VERSION: u32 = 1;

/// Why a normative-database build step failed.
#[derive(Debug, thiserror::Error)]
pub enum NormdbBuildError {
    /// A NIfTI file could not be read or written.
    #[error(transparent)]
    Nifti(#[from] NiftiIoError),
    /// A compute step failed.
    #[error(transparent)]
    Normative(#[from] ModelError),
    /// The database could not be written or a partial statistics file read.
    #[error(transparent)]
    NormDb(#[from] NormDbError),
    /// A file of the build could not be read, written or parsed.
    #[error(transparent)]
    File(#[from] StepFileError),
    /// The request is inconsistent (unknown subject or bracket, a different build in the folder).
    #[error("{0}")]
    Invalid(String),
    /// The batch executor failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Numbers that decide the result are stored in the JSON files as decimal strings (Rust's
/// shortest round-trip form): a JSON number read back by `serde_json` may differ in the last
/// bit, which would make a staged build differ from the in-memory one.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| serde::de::Error::custom(format!("{text:?} is not a number")))
    }
}

fn unknown() -> f64 {
    f64::NAN
}

/// Build parameters that decide the result (everything else of [`BuildOptions`] is the
/// default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormdbParameters {
    /// Smoothing FWHM (mm) of the intensity and log-Jacobian maps.
    #[serde(with = "exact_f64")]
    pub smoothing_fwhm_mm: f64,
    /// Age nodes per bracket.
    pub nodes_per_bracket: usize,
    /// Nominal voxelwise false-positive rate of the calibration.
    #[serde(with = "exact_f64")]
    pub voxel_rate: f64,
    /// Nominal per-image false-cluster rate of the calibration.
    #[serde(with = "exact_f64")]
    pub cluster_rate: f64,
    /// Subjects per `partial` task (the statistics of each chunk are computed in parallel
    /// tasks and merged in chunk order by `reduce`); `None`: `reduce` adds every subject itself.
    pub chunk_size: Option<usize>,
    /// Ids of the normals the templates were built from (from `--template-build`); the
    /// calibration's null comes from the other normals when enough exist.
    #[serde(default)]
    pub template_members: Vec<String>,
}

impl NormdbParameters {
    /// The build options of these parameters.
    pub fn options(&self) -> BuildOptions {
        let mut options = BuildOptions {
            nodes_per_bracket: self.nodes_per_bracket,
            voxel_rate: self.voxel_rate,
            cluster_rate: self.cluster_rate,
            template_members: self.template_members.iter().cloned().collect(),
            ..BuildOptions::default()
        };
        options.mapping.smoothing_fwhm_mm = self.smoothing_fwhm_mm;
        options
    }
}

/// A bracket of a build, as given and as recorded in `normdb.json` (there with the template's
/// absolute path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestBracket {
    /// Name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Lower bound (years, inclusive).
    #[serde(with = "exact_f64")]
    pub min_years: f64,
    /// Upper bound (years, exclusive).
    #[serde(with = "exact_f64")]
    pub max_years: f64,
    /// The template image (its absolute path once recorded).
    pub template: PathBuf,
}

impl AgeRange for ManifestBracket {
    fn min_years(&self) -> f64 {
        self.min_years
    }
    fn max_years(&self) -> f64 {
        self.max_years
    }
}

/// The atlas carried into every template, as recorded in `normdb.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtlasFiles {
    /// Label image in the reference's space.
    pub labels: PathBuf,
    /// Label names (`VALUE NAME` per line).
    pub names: PathBuf,
    /// T1 image of the atlas space.
    pub reference: PathBuf,
}

/// A normal subject as recorded in `normdb.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestNormal {
    /// Identifier and pseudonym.
    pub id: String,
    /// Absolute path of the image.
    pub path: PathBuf,
    /// Age in years.
    #[serde(with = "exact_f64")]
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Scanner or site label.
    pub scanner: String,
    /// Index of the bracket whose template the subject is registered to.
    pub bracket: usize,
}

/// The content of `normdb.json`: everything that decides the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormdbManifest {
    /// [`NORMDB_BUILD_FORMAT_VERSION`].
    pub format_version: u32,
    /// Where `reduce` writes the database.
    pub output: PathBuf,
    /// Parameters.
    pub parameters: NormdbParameters,
    /// Brackets.
    pub brackets: Vec<ManifestBracket>,
    /// Atlas, if any.
    pub atlas: Option<AtlasFiles>,
    /// Subjects in build order (the cohort's order).
    pub subjects: Vec<ManifestNormal>,
}

impl Manifest for NormdbManifest {
    const FILE: &'static str = "normdb.json";
    const VERSION: u32 = NORMDB_BUILD_FORMAT_VERSION;
    const DIFFERENCES: &'static str = "other subjects, templates, settings or output";
}

impl NormdbManifest {
    fn bracket_index(&self, name: &str) -> Result<usize, NormdbBuildError> {
        index_in_build(&self.brackets, |b| &b.name, "bracket", name).map_err(NormdbBuildError::Invalid)
    }

    fn subject(&self, id: &str) -> Result<&ManifestNormal, NormdbBuildError> {
        let index =
            index_in_build(&self.subjects, |s| &s.id, "subject", id).map_err(NormdbBuildError::Invalid)?;
        Ok(&self.subjects[index])
    }

    /// Chunks of subject indices (build order) of the `partial` step, if chunked.
    pub fn chunks(&self) -> Vec<std::ops::Range<usize>> {
        match self.parameters.chunk_size {
            Some(size) => {
                let size = size.max(1);
                (0..self.subjects.len().div_ceil(size))
                    .map(|c| c * size..((c + 1) * size).min(self.subjects.len()))
                    .collect()
            }
            None => Vec::new(),
        }
    }
}

/// One normal subject offered to a build.
#[derive(Debug, Clone)]
pub struct NormalFile {
    /// Identifier and pseudonym (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// The image.
    pub path: PathBuf,
    /// Age in years.
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Scanner or site label.
    pub scanner: String,
}

/// The directory of one bracket's template space.
pub fn bracket_dir(build_dir: &Path, name: &str) -> PathBuf {
    build_dir.join(format!("bracket-{name}"))
}

/// The directory of one subject's map step.
pub fn subject_dir(build_dir: &Path, id: &str) -> PathBuf {
    build_dir.join(format!("subject-{id}"))
}

/// The directory of one chunk's partial statistics.
pub fn partial_dir(build_dir: &Path, chunk: usize) -> PathBuf {
    build_dir.join(format!("partial-{chunk}"))
}

/// The done marker of the reduce step.
pub fn reduce_marker(build_dir: &Path) -> PathBuf {
    build_dir.join("reduce").join("done.json")
}

/// Writes `normdb.json` for a new build, or checks that an existing build directory holds the
/// same build (so it can be resumed). Every problem of the cohort is reported in one error.
pub fn prepare_normdb_build(
    normals: &[NormalFile],
    brackets: &[ManifestBracket],
    atlas: Option<&AtlasFiles>,
    parameters: &NormdbParameters,
    output: &Path,
    build_dir: &Path,
) -> Result<NormdbManifest, NormdbBuildError> {
    let mut problems = name_problems("bracket name", brackets.iter().map(|b| b.name.as_str()));
    problems.extend(name_problems("subject id", normals.iter().map(|n| n.id.as_str())));
    let mut manifest_brackets = Vec::new();
    for ManifestBracket { name, min_years, max_years, template } in brackets {
        match template.canonicalize() {
            Ok(template) => manifest_brackets.push(ManifestBracket {
                name: name.clone(),
                min_years: *min_years,
                max_years: *max_years,
                template,
            }),
            Err(e) => problems.push(format!("bracket {name}: template {}: {e}", template.display())),
        }
    }
    if manifest_brackets.is_empty() && problems.is_empty() {
        problems.push("no bracket: give at least one template".into());
    }
    let mut subjects = Vec::new();
    for normal in normals {
        if !(normal.age_years.is_finite() && (0.0..=25.0).contains(&normal.age_years)) {
            problems.push(format!("subject {}: implausible age {}", normal.id, normal.age_years));
            continue;
        }
        let Some(bracket) = containing_bracket(&manifest_brackets, normal.age_years) else {
            problems
                .push(format!("subject {}: age {:.2} is outside every bracket", normal.id, normal.age_years));
            continue;
        };
        match normal.path.canonicalize() {
            Ok(path) => subjects.push(ManifestNormal {
                id: normal.id.clone(),
                path,
                age_years: normal.age_years,
                sex: normal.sex,
                scanner: normal.scanner.clone(),
                bracket,
            }),
            Err(e) => problems.push(format!("subject {}: image {}: {e}", normal.id, normal.path.display())),
        }
    }
    if normals.is_empty() {
        problems.push("no normal subject".into());
    }
    if parameters.chunk_size == Some(0) {
        problems.push("chunk size must be at least 1".into());
    }
    if !problems.is_empty() {
        return Err(NormdbBuildError::Invalid(format!(
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    let atlas = match atlas {
        Some(a) => Some(AtlasFiles {
            labels: absolute(&a.labels)?,
            names: absolute(&a.names)?,
            reference: absolute(&a.reference)?,
        }),
        None => None,
    };
    std::fs::create_dir_all(build_dir).map_err(|e| file_error(build_dir, e))?;
    let build_dir = absolute(build_dir)?;
    let output = if output.is_absolute() {
        output.to_owned()
    } else {
        std::env::current_dir().map_err(|e| file_error(output, e))?.join(output)
    };
    let manifest = NormdbManifest {
        format_version: NORMDB_BUILD_FORMAT_VERSION,
        output,
        parameters: parameters.clone(),
        brackets: manifest_brackets,
        atlas,
        subjects,
    };
    let lists = [
        ("subjects.txt", manifest.subjects.iter().map(|s| s.id.as_str()).collect::<Vec<_>>()),
        ("brackets.txt", manifest.brackets.iter().map(|b| b.name.as_str()).collect()),
    ];
    Ok(store_manifest(&build_dir, manifest.clone(), &lists)?)
}

/// Resources of the map tasks (registration at the template's resolution) and of the
/// reduce task (every subject's masked maps in memory, statistics and one held-out copy per
/// thread), see [`crate::batch::plan`].
pub fn plan_normdb_resources(
    manifest: &NormdbManifest,
    threads: usize,
) -> Result<(Resources, Resources), NormdbBuildError> {
    let voxels_of = |path: &Path| image_voxels(path);
    let mut largest = 0usize;
    let mut template_voxels = 0usize;
    for bracket in &manifest.brackets {
        let voxels = voxels_of(&bracket.template)?;
        largest = largest.max(voxels);
        template_voxels = template_voxels.max(voxels);
    }
    for subject in &manifest.subjects {
        largest = largest.max(voxels_of(&subject.path)?);
    }
    let estimate =
        crate::batch::plan::TaskEstimate::for_cohort(largest, 1.0, 1.0, threads, manifest.subjects.len());
    let reduce = crate::batch::plan::normdb_reduce_resources(
        template_voxels,
        manifest.subjects.len(),
        manifest.parameters.nodes_per_bracket,
        threads,
    );
    Ok((estimate.map, reduce))
}

/// The batch stages of a build: `space` (one task per bracket), `map` (one per subject),
/// `partial` (one per chunk, when chunked) and `reduce`, each task a `pedinorm normdb …`
/// invocation. A `space` or `map` step to run again makes every later `partial` and the
/// `reduce` step run again (they read all of them).
pub fn normdb_stages(
    build_dir: &Path,
    manifest: &NormdbManifest,
    map: Resources,
    reduce: Resources,
) -> Vec<PlannedStage> {
    let args = |step: &str, options: &[&str]| step_args("normdb", step, build_dir, options);
    let mut stages = vec![
        PlannedStage::new(Stage {
            name: "space".into(),
            tasks: manifest
                .brackets
                .iter()
                .map(|b| Task {
                    label: format!("bracket {}", b.name),
                    args: args("space", &["--bracket", &b.name]),
                    done_marker: bracket_dir(build_dir, &b.name).join("done.json"),
                })
                .collect(),
            resources: map,
        }),
        PlannedStage::new(Stage {
            name: "map".into(),
            tasks: manifest
                .subjects
                .iter()
                .map(|s| Task {
                    label: s.id.clone(),
                    args: args("map", &["--subject", &s.id]),
                    done_marker: subject_dir(build_dir, &s.id).join("done.json"),
                })
                .collect(),
            resources: map,
        })
        .recorded_by::<NormalMapRecord>(),
    ];
    let chunks = manifest.chunks();
    if !chunks.is_empty() {
        stages.push(
            PlannedStage::new(Stage {
                name: "partial".into(),
                tasks: chunks
                    .iter()
                    .enumerate()
                    .map(|(c, range)| Task {
                        label: format!(
                            "chunk {c} ({}..{})",
                            manifest.subjects[range.start].id,
                            manifest.subjects[range.end - 1].id
                        ),
                        args: args("partial", &["--chunk", &c.to_string()]),
                        done_marker: partial_dir(build_dir, c).join("done.json"),
                    })
                    .collect(),
                resources: Resources { cpus: 1, ..reduce },
            })
            .following_upstream(),
        );
    }
    stages.push(
        PlannedStage::new(Stage {
            name: "reduce".into(),
            tasks: vec![Task {
                label: "reduce".into(),
                args: args("reduce", &[]),
                done_marker: reduce_marker(build_dir),
            }],
            resources: reduce,
        })
        .following_upstream(),
    );
    stages
}

/// Builds the normative database of a prepared build directory (see
/// [`prepare_normdb_build`]): runs every step not done yet through `executor` (each a
/// `pedinorm normdb …` process) and returns the written database. Re-running resumes an
/// interrupted build.
pub fn build_normdb(
    manifest: &NormdbManifest,
    build_dir: &Path,
    executor: &dyn Executor,
    threads_per_task: usize,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<NormativeDb, NormdbBuildError> {
    let build_dir = absolute(build_dir)?;
    let (map, reduce) = plan_normdb_resources(manifest, threads_per_task)?;
    run_plan::<NormdbBuildError>(&normdb_stages(&build_dir, manifest, map, reduce), executor, progress)?;
    Ok(NormativeDb::read(&manifest.output)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: usize, chunk_size: Option<usize>) -> NormdbManifest {
        NormdbManifest {
            format_version: NORMDB_BUILD_FORMAT_VERSION,
            output: "/o.h5".into(),
            parameters: NormdbParameters {
                smoothing_fwhm_mm: 4.0,
                nodes_per_bracket: 1,
                voxel_rate: 0.001,
                cluster_rate: 0.05,
                chunk_size,
                template_members: Vec::new(),
            },
            brackets: vec![ManifestBracket {
                name: "a".into(),
                min_years: 0.0,
                max_years: 5.0,
                template: "/t".into(),
            }],
            atlas: None,
            subjects: (0..n)
                .map(|i| ManifestNormal {
                    id: format!("s{i}"),
                    path: "/x".into(),
                    age_years: 1.0,
                    sex: Sex::Female,
                    scanner: String::new(),
                    bracket: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn chunks_cover_the_subjects_in_order() {
        assert!(manifest(5, None).chunks().is_empty());
        assert_eq!(manifest(5, Some(2)).chunks(), vec![0..2, 2..4, 4..5]);
        assert_eq!(manifest(4, Some(4)).chunks(), vec![0..4]);
        let stages =
            normdb_stages(Path::new("/b"), &manifest(5, Some(2)), Resources::default(), Resources::default());
        let names: Vec<&str> = stages.iter().map(|s| s.stage.name.as_str()).collect();
        assert_eq!(names, ["space", "map", "partial", "reduce"]);
        assert_eq!(stages[1].stage.tasks[3].args, ["normdb", "map", "--build-dir", "/b", "--subject", "s3"]);
        assert_eq!(stages[2].stage.tasks.len(), 3);
        assert_eq!(stages[3].stage.tasks[0].done_marker, Path::new("/b/reduce/done.json"));
    }

    #[test]
    fn numbers_survive_json_exactly() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let similarity = f64::from_bits((seed >> 12) | 0x3fe0_0000_0000_0000);
            let record = NormalMapRecord {
                id: "s".into(),
                bracket: "b".into(),
                similarity,
                histogram_distance: similarity / 3.0,
                mask_dice: f64::NAN,
                qc_passed: true,
                affine: vec![(similarity * 7.0).to_string()],
                seconds: 0.0,
                outputs: Vec::new(),
            };
            let text = serde_json::to_string(&record).unwrap();
            let back: NormalMapRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(back.similarity.to_bits(), similarity.to_bits(), "{text}");
            assert_eq!(back.histogram_distance.to_bits(), record.histogram_distance.to_bits(), "{text}");
            assert!(back.mask_dice.is_nan());
            let affine: f64 = back.affine[0].parse().unwrap();
            assert_eq!(affine.to_bits(), (similarity * 7.0).to_bits(), "{text}");
        }
    }

    #[test]
    fn nearest_bracket_centre_wins() {
        let b = |name: &str, lo, hi| ManifestBracket {
            name: name.into(),
            min_years: lo,
            max_years: hi,
            template: "/t".into(),
        };
        let brackets = [b("a", 0.0, 4.0), b("b", 3.0, 7.0)];
        assert_eq!(containing_bracket(&brackets, 1.0), Some(0));
        assert_eq!(containing_bracket(&brackets, 3.4), Some(0));
        assert_eq!(containing_bracket(&brackets, 3.6), Some(1));
        assert_eq!(containing_bracket(&brackets, 11.0), None);
    }

    #[test]
    fn bad_cohort_is_reported_in_one_error() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("t.nii.gz");
        std::fs::write(&template, b"x").unwrap();
        let normal = |id: &str, age: f64| NormalFile {
            id: id.into(),
            path: template.clone(),
            age_years: age,
            sex: Sex::Male,
            scanner: String::new(),
        };
        let parameters = manifest(0, None).parameters;
        let error = prepare_normdb_build(
            &[normal("a", 3.0), normal("a", 3.0), normal("b", 30.0), normal("c", 9.0)],
            &[ManifestBracket {
                name: "x".into(),
                min_years: 0.0,
                max_years: 5.0,
                template: template.clone(),
            }],
            None,
            &parameters,
            &dir.path().join("o.h5"),
            &dir.path().join("build"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("subject id \"a\" appears more than once"), "{error}");
        assert!(error.contains("subject b: implausible age 30"), "{error}");
        assert!(error.contains("subject c: age 9.00 is outside every bracket"), "{error}");
        assert!(!dir.path().join("build").exists());
    }
}
