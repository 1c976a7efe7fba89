//! The resumable step engine of every staged pipeline (template builds, normative-database
//! builds, batch deviation maps): a manifest that fixes what a build computes, steps that write
//! their outputs and then a done marker (a record of the outputs' sizes), a plan of stages
//! that a batch executor (local pool or Slurm) runs, and the invalidation of steps whose
//! outputs went missing or were altered, so a re-run resumes where a build stopped.
//!
//! A step is *done* when its marker exists and every output it records still has the recorded
//! size. Executors only look for markers, so [`run_plan`] first removes the markers of broken
//! steps.

use crate::atomic::write_bytes;
use crate::batch::{BatchError, Executor, ProgressEvent, Stage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A file of a build that could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StepFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// A [`StepFileError`] for `path`.
pub fn file_error(path: &Path, message: impl ToString) -> StepFileError {
    StepFileError { path: path.to_owned(), message: message.to_string() }
}

/// The absolute path of an existing file or folder of a build (links resolved), so that
/// every step process reads the same files whatever its working directory.
pub fn absolute(path: &Path) -> Result<PathBuf, StepFileError> {
    path.canonicalize().map_err(|e| file_error(path, e))
}

/// The arguments of one step's process: `pedinorm COMMAND STEP --build-dir BUILD OPTIONS…`.
pub fn step_args(command: &str, step: &str, build_dir: &Path, options: &[&str]) -> Vec<String> {
    let mut args = vec![command.to_owned(), step.to_owned(), "--build-dir".to_owned()];
    args.push(build_dir.to_string_lossy().into_owned());
    args.extend(options.iter().map(|o| o.to_string()));
    args
}

/// Whether `name` may name a subject, bracket or case of a build: letters, digits, `-`, `_`,
/// `.`, not starting with `.` (it becomes a folder name and a line of an array-task list).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// The problems of the names a build gives its subjects, brackets or cases (`kind`: e.g.
/// `subject id`): each must be a valid name ([`is_valid_name`]) and appear once.
pub fn name_problems<'a>(kind: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !is_valid_name(name) {
            problems.push(format!("{kind} {name:?}: use letters, digits, '-', '_' or '.'"));
        }
        if !seen.insert(name) {
            problems.push(format!("{kind} {name:?} appears more than once"));
        }
    }
    problems
}

/// The index of the entry named `name` in a list of a build's manifest (`kind`: e.g.
/// `subject`), or a message saying that the build has none.
pub fn index_in_build<T>(
    entries: &[T],
    name_of: impl Fn(&T) -> &str,
    kind: &str,
    name: &str,
) -> Result<usize, String> {
    entries
        .iter()
        .position(|entry| name_of(entry) == name)
        .ok_or_else(|| format!("{kind} {name:?} is not in this build"))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StepFileError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| file_error(path, e))?;
    write_bytes(path, text.as_bytes()).map_err(|e| file_error(path, e))
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StepFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| file_error(path, format!("invalid JSON: {e}")))
}

/// The sizes of output files `names` of `dir` (a name may also be an absolute path).
pub fn file_sizes<S: AsRef<str>>(dir: &Path, names: &[S]) -> Result<Vec<(String, u64)>, StepFileError> {
    names
        .iter()
        .map(|name| {
            let path = dir.join(name.as_ref());
            let size = std::fs::metadata(&path).map_err(|e| file_error(&path, e))?.len();
            Ok((name.as_ref().to_string(), size))
        })
        .collect()
}

/// Whether every recorded output of `dir` exists with its recorded size.
pub fn outputs_valid(dir: &Path, outputs: &[(String, u64)]) -> bool {
    outputs.iter().all(|(name, size)| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == *size))
}

/// A done marker's content: it lists the step's outputs (relative to the marker's folder, or
/// absolute) with their sizes.
pub trait StepOutputs: DeserializeOwned {
    /// The outputs and their sizes (bytes).
    fn outputs(&self) -> &[(String, u64)];
}

/// The done marker of a step that records nothing but its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// What the step was.
    pub step: String,
    /// Wall time (s); not part of the result.
    pub seconds: f64,
    /// Output files (relative to the marker's folder, or absolute) and their sizes.
    pub outputs: Vec<(String, u64)>,
}

impl StepOutputs for StepRecord {
    fn outputs(&self) -> &[(String, u64)] {
        &self.outputs
    }
}

/// The record of a done step: `marker` parses as `R` and its outputs are intact.
pub fn completed<R: StepOutputs>(marker: &Path) -> Option<R> {
    let dir = marker.parent()?;
    read_json::<R>(marker).ok().filter(|record| outputs_valid(dir, record.outputs()))
}

/// Whether the step of `marker` (a [`StepRecord`]) is done.
pub fn step_done(marker: &Path) -> bool {
    completed::<StepRecord>(marker).is_some()
}

/// Runs a step unless it is done: `compute` writes the outputs into the marker's folder and
/// returns a value and the output names; then the marker ([`StepRecord`] named `step`) is
/// written last. Returns `None` when the step was already done.
pub fn run_step<T, E: From<StepFileError>>(
    marker: &Path,
    step: impl FnOnce() -> String,
    compute: impl FnOnce() -> Result<(T, Vec<String>), E>,
) -> Result<Option<T>, E> {
    if step_done(marker) {
        return Ok(None);
    }
    let start = Instant::now();
    let (value, names) = compute()?;
    let dir = marker.parent().unwrap_or(Path::new("."));
    let record = StepRecord {
        step: step(),
        seconds: start.elapsed().as_secs_f64(),
        outputs: file_sizes(dir, &names)?,
    };
    write_json(marker, &record)?;
    Ok(Some(value))
}

/// The manifest of a build directory (`build.json`, `normdb.json`): everything that decides
/// the result. A directory holds one build: a new build writes it, a re-run must match it.
pub trait Manifest: Serialize + DeserializeOwned + PartialEq {
    /// File name inside the build directory.
    const FILE: &'static str;
    /// The current format version.
    const VERSION: u32;
    /// What may differ when another build is found in the directory (for the error); the
    /// manifest keeps the version it was written with in its `format_version` field.
    const DIFFERENCES: &'static str;

    /// Reads `BUILD/FILE` and checks its format version.
    fn read(build_dir: &Path) -> Result<Self, StepFileError> {
        read_manifest(build_dir)
    }
}

/// Reads the manifest of `build_dir` after checking its format version (so a manifest of
/// another version is named as such, not as a parse error).
pub fn read_manifest<M: Manifest>(build_dir: &Path) -> Result<M, StepFileError> {
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let path = build_dir.join(M::FILE);
    let Version { format_version } = read_json(&path)?;
    if format_version != M::VERSION {
        return Err(file_error(&path, format!("format_version {format_version} is not {}", M::VERSION)));
    }
    read_json(&path)
}

/// Writes `manifest` (after the name lists `lists`: file name and names, one per line, so
/// that array index i of a hand-submitted job is line i + 1) into `build_dir`, or, when the
/// directory already holds a build, checks that it is the same one so it can be resumed.
pub fn store_manifest<M: Manifest>(
    build_dir: &Path,
    manifest: M,
    lists: &[(&str, Vec<&str>)],
) -> Result<M, StepFileError> {
    let path = build_dir.join(M::FILE);
    if path.is_file() {
        let existing: M = read_manifest(build_dir)?;
        if existing != manifest {
            return Err(file_error(
                &path,
                format!(
                    "the build directory holds a different build ({}); use a new directory",
                    M::DIFFERENCES
                ),
            ));
        }
        return Ok(existing);
    }
    for (file, names) in lists {
        let list: String = names.iter().map(|name| format!("{name}\n")).collect();
        let list_path = build_dir.join(file);
        write_bytes(&list_path, list.as_bytes()).map_err(|e| file_error(&list_path, e))?;
    }
    write_json(&path, &manifest)?;
    Ok(manifest)
}

/// One stage of a plan: the executor's stage, how a task's marker is judged done, and whether
/// its steps run again when a step of an earlier stage does.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// The tasks, as the executors run them.
    pub stage: Stage,
    /// Whether a task's done marker stands for intact outputs.
    pub is_done: fn(&Path) -> bool,
    /// The stage's steps are redone when any step of an earlier stage runs again (they read
    /// all of its outputs).
    pub follows_upstream: bool,
}

impl PlannedStage {
    /// A stage whose markers are [`StepRecord`]s, independent of earlier stages being redone.
    pub fn new(stage: Stage) -> Self {
        Self { stage, is_done: step_done, follows_upstream: false }
    }

    /// The same stage with markers of record type `R`.
    pub fn recorded_by<R: StepOutputs>(self) -> Self {
        Self { is_done: |marker| completed::<R>(marker).is_some(), ..self }
    }

    /// The same stage with its steps redone when an earlier stage's step runs again.
    pub fn following_upstream(self) -> Self {
        Self { follows_upstream: true, ..self }
    }
}

/// Removes the done marker of every step whose outputs are missing or altered (and, in a stage
/// that follows upstream, of every step after a step to run again), so executors, which only
/// look for markers, run those steps again. Returns how many markers were removed.
pub fn invalidate(plan: &[PlannedStage]) -> Result<usize, StepFileError> {
    let mut removed = 0;
    let mut upstream_redone = false;
    for planned in plan {
        let redo_all = planned.follows_upstream && upstream_redone;
        for task in &planned.stage.tasks {
            let marker = &task.done_marker;
            if redo_all || !(planned.is_done)(marker) {
                upstream_redone = true;
                if marker.is_file() {
                    std::fs::remove_file(marker).map_err(|e| file_error(marker, e))?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// Runs a plan through `executor` after invalidating broken steps: done steps are skipped, so
/// re-running the same plan resumes it.
pub fn run_plan<E: From<StepFileError> + From<BatchError>>(
    plan: &[PlannedStage],
    executor: &dyn Executor,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<(), E> {
    let redone = invalidate(plan)?;
    if redone > 0 {
        tracing::warn!(steps = redone, "outputs missing or altered: those steps run again");
    }
    let stages: Vec<Stage> = plan.iter().map(|planned| planned.stage.clone()).collect();
    Ok(executor.run(&stages, progress)?)
}

/// Runs `compute` in a temporary sibling of `destination`, writes `done` into it as
/// `done.json`, then renames the folder into place (replacing an unfinished folder of the same
/// name): a step whose output is a whole folder. On error the temporary folder is removed and
/// `destination` is untouched.
pub fn write_folder_atomically<D: Serialize, E>(
    destination: &Path,
    compute: impl FnOnce(&Path) -> Result<D, E>,
) -> Result<D, E>
where
    E: From<std::io::Error>,
{
    // An existing folder is an unfinished one of an earlier attempt: it has no done.json.
    crate::atomic::replace_folder(destination, |temporary| {
        let done = compute(temporary)?;
        let json = serde_json::to_vec_pretty(&done).map_err(std::io::Error::other)?;
        write_bytes(&temporary.join("done.json"), &json)?;
        Ok(done)
    })
}

/// The number of voxels of a NIfTI file, from its header (to plan a task's resources).
pub fn image_voxels(path: &Path) -> Result<usize, StepFileError> {
    let header = nifti::NiftiHeader::from_file(path).map_err(|e| file_error(path, e))?;
    Ok(header.dim[1..4].iter().map(|&d| d.max(1) as usize).product())
}

/// The path of the `pedinorm` program to run batch tasks with: `PEDINORM_PROGRAM` if set,
/// else the running executable.
pub fn default_program() -> PathBuf {
    std::env::var_os("PEDINORM_PROGRAM")
        .map(PathBuf::from)
        .or_else(|| std::env::current_exe().ok())
        .unwrap_or_else(|| PathBuf::from("pedinorm"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Resources, Task};

    fn stage(name: &str, markers: &[PathBuf]) -> Stage {
        Stage {
            name: name.into(),
            tasks: markers
                .iter()
                .map(|m| Task { label: name.into(), args: Vec::new(), done_marker: m.clone() })
                .collect(),
            resources: Resources::default(),
        }
    }

    fn done_step(dir: &Path, name: &str) -> PathBuf {
        let step = dir.join(name);
        std::fs::create_dir_all(&step).unwrap();
        std::fs::write(step.join("out.bin"), b"abc").unwrap();
        let marker = step.join("done.json");
        let ran = run_step(
            &marker,
            || name.to_string(),
            || Ok::<_, StepFileError>(((), vec!["out.bin".to_string()])),
        )
        .unwrap();
        assert!(ran.is_some());
        marker
    }

    #[test]
    fn done_steps_are_skipped_and_broken_ones_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let a = done_step(dir.path(), "a");
        let b = done_step(dir.path(), "b");
        let c = done_step(dir.path(), "c");
        let d = done_step(dir.path(), "d");
        // A done step does not run again.
        let again =
            run_step(&a, || "a".into(), || -> Result<((), Vec<String>), StepFileError> { panic!("ran") });
        assert!(again.unwrap().is_none());
        let plan = [
            PlannedStage::new(stage("first", std::slice::from_ref(&a))),
            PlannedStage::new(stage("second", &[b.clone(), c.clone()])),
            PlannedStage::new(stage("last", std::slice::from_ref(&d))).following_upstream(),
        ];
        assert_eq!(invalidate(&plan).unwrap(), 0);
        // Altered output of b: b runs again, and so does the stage that follows upstream.
        std::fs::write(dir.path().join("b/out.bin"), b"abcd").unwrap();
        assert_eq!(invalidate(&plan).unwrap(), 2);
        assert!(a.is_file() && !b.exists() && c.is_file() && !d.exists());
    }

    #[test]
    fn folder_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("case");
        let failed: Result<String, std::io::Error> = write_folder_atomically(&destination, |tmp| {
            std::fs::create_dir_all(tmp)?;
            std::fs::write(tmp.join("report.json"), b"{}")?;
            Err(std::io::Error::other("registration failed"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing may be left");
        // An unfinished folder of an earlier attempt is replaced.
        std::fs::create_dir_all(&destination).unwrap();
        std::fs::write(destination.join("stale"), b"x").unwrap();
        write_folder_atomically(&destination, |tmp| {
            std::fs::create_dir_all(tmp)?;
            std::fs::write(tmp.join("report.json"), b"{}")?;
            Ok::<_, std::io::Error>("case".to_string())
        })
        .unwrap();
        assert!(destination.join("report.json").is_file() && destination.join("done.json").is_file());
        assert!(!destination.join("stale").exists());
    }
}
