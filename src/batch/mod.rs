//! Batch executors for template and normative-database builds: local worker pool and Slurm job arrays.
//!
//! A build is a list of [`Stage`]s run in order; the tasks of one stage are independent and
//! run in parallel. Every task is one invocation of the `pedinorm` program (for example
//! `pedinorm template map --build-dir D --iteration 2 --subject S`), so the local pool and a
//! Slurm cluster do exactly the same work and give bit-identical results. A task is *done*
//! when its done marker (a file written last and atomically by the step) exists: executors
//! skip done tasks, so re-running a build resumes it. A failed task is retried up to a
//! configured count and then reported by its label (the subject); stages after it do not run.

mod local;
pub mod plan;
mod slurm;
mod slurm_site;

pub use local::LocalExecutor;
pub use slurm::{SlurmConfig, SlurmExecutor};
pub use slurm_site::{SlurmSite, SlurmSiteError};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Resources one task needs (used by Slurm; the local pool uses `cpus` as threads per task).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs (threads) per task.
    pub cpus: usize,
    /// Memory per task (MiB).
    pub memory_mb: u64,
    /// Wall-time limit per task (minutes).
    pub time_minutes: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Self { cpus: 1, memory_mb: 2048, time_minutes: 60 }
    }
}

/// One invocation of the `pedinorm` program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// What the task works on, as reported on failure (a subject identifier, or `reduce`).
    pub label: String,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// The file whose existence means the task is done.
    pub done_marker: PathBuf,
}

impl Task {
    /// Whether the task's done marker exists.
    pub fn is_done(&self) -> bool {
        self.done_marker.is_file()
    }
}

/// Independent tasks that may run in parallel once every earlier stage is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// A short file-safe name (`iter-2-map`).
    pub name: String,
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Resources per task.
    pub resources: Resources,
}

/// Progress of a batch run.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// A stage starts (or is submitted) with `pending` of `total` tasks still to do.
    StageStarted {
        /// Stage name.
        stage: String,
        /// Tasks to run.
        pending: usize,
        /// All tasks of the stage.
        total: usize,
    },
    /// Tasks of a stage done so far.
    StageProgress {
        /// Stage name.
        stage: String,
        /// Tasks done.
        done: usize,
        /// All tasks.
        total: usize,
    },
    /// A task failed and will be retried.
    TaskRetried {
        /// Stage name.
        stage: String,
        /// Task label.
        label: String,
        /// Attempts so far.
        attempt: usize,
        /// Why it failed.
        reason: String,
    },
    /// Every task of a stage is done.
    StageFinished {
        /// Stage name.
        stage: String,
    },
}

/// A task that failed after all its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTask {
    /// Stage name.
    pub stage: String,
    /// Task label (the subject).
    pub label: String,
    /// Attempts made.
    pub attempts: usize,
    /// Why the last attempt failed.
    pub reason: String,
}

/// Why a batch run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Tasks failed after their retries; later stages were not run (or were cancelled).
    #[error("{} task(s) failed: {}", failed.len(), describe(failed))]
    TasksFailed {
        /// The failed tasks.
        failed: Vec<FailedTask>,
    },
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A Slurm command failed or answered something unexpected.
    #[error("slurm: {0}")]
    Slurm(String),
    /// A file of the executor could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn describe(failed: &[FailedTask]) -> String {
    failed
        .iter()
        .map(|f| format!("{} in {} after {} attempt(s): {}", f.label, f.stage, f.attempts, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs stages of `pedinorm` tasks.
pub trait Executor: Sync {
    /// A short name (`local`, `slurm`).
    fn name(&self) -> &'static str;

    /// Runs the stages in order, skipping done tasks; returns when every task is done or a
    /// task failed after its retries.
    fn run(&self, stages: &[Stage], progress: &(dyn Fn(&ProgressEvent) + Sync)) -> Result<(), BatchError>;
}

/// Quotes one word for a POSIX shell (single quotes; `'` as `'\''`).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("--build-dir"), "--build-dir");
        assert_eq!(shell_quote("/a/b c"), "'/a/b c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn failure_message_names_the_subjects() {
        let error = BatchError::TasksFailed {
            failed: vec![FailedTask {
                stage: "iter-1-map".into(),
                label: "sub-07".into(),
                attempts: 2,
                reason: "exit 1".into(),
            }],
        };
        let text = error.to_string();
        assert!(
            text.contains("sub-07") && text.contains("iter-1-map") && text.contains("2 attempt"),
            "{text}"
        );
    }
}
