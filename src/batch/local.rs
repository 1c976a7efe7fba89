//! The local executor: a pool of `jobs` concurrent child processes.

use super::{BatchError, Executor, FailedTask, ProgressEvent, Stage, Task};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Runs each task as a child process of `program`, `jobs` at a time, each with
/// `RAYON_NUM_THREADS` set to the stage's CPUs per task (or `threads_per_task` when set).
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// The `pedinorm` program.
    pub program: PathBuf,
    /// Concurrent tasks.
    pub jobs: usize,
    /// Extra attempts after a task fails.
    pub retries: usize,
    /// Threads per task, overriding the stage's CPUs.
    pub threads_per_task: Option<usize>,
}

impl LocalExecutor {
    /// A pool of `jobs` workers running `program`, with one retry and threads per task from
    /// the stages' resources.
    pub fn new(program: PathBuf, jobs: usize) -> Self {
        Self { program, jobs: jobs.max(1), retries: 1, threads_per_task: None }
    }

    fn run_once(&self, task: &Task, threads: usize) -> Result<(), String> {
        let output = Command::new(&self.program)
            .args(&task.args)
            .env("RAYON_NUM_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .trim()
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(format!("{}: {tail}", output.status));
        }
        if !task.is_done() {
            return Err(format!("exited successfully but {} is missing", task.done_marker.display()));
        }
        Ok(())
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn run(&self, stages: &[Stage], progress: &(dyn Fn(&ProgressEvent) + Sync)) -> Result<(), BatchError> {
        if !self.program.is_file() {
            return Err(BatchError::Spawn {
                program: self.program.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "program not found"),
            });
        }
        for stage in stages {
            let total = stage.tasks.len();
            let pending: VecDeque<usize> = (0..total).filter(|&i| !stage.tasks[i].is_done()).collect();
            progress(&ProgressEvent::StageStarted {
                stage: stage.name.clone(),
                pending: pending.len(),
                total,
            });
            let threads = self.threads_per_task.unwrap_or(stage.resources.cpus).max(1);
            let queue = Mutex::new(pending);
            let done = Mutex::new(total - queue.lock().expect("fresh mutex").len());
            let failed: Mutex<Vec<FailedTask>> = Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..self.jobs {
                    scope.spawn(|| {
                        loop {
                            let Some(index) = queue.lock().expect("queue lock").pop_front() else { break };
                            let task = &stage.tasks[index];
                            let mut attempt = 0;
                            loop {
                                attempt += 1;
                                match self.run_once(task, threads) {
                                    Ok(()) => {
                                        let mut count = done.lock().expect("count lock");
                                        *count += 1;
                                        progress(&ProgressEvent::StageProgress {
                                            stage: stage.name.clone(),
                                            done: *count,
                                            total,
                                        });
                                        break;
                                    }
                                    Err(reason) if attempt <= self.retries => {
                                        tracing::warn!(stage = %stage.name, task = %task.label, attempt, %reason, "task failed, retrying");
                                        progress(&ProgressEvent::TaskRetried {
                                            stage: stage.name.clone(),
                                            label: task.label.clone(),
                                            attempt,
                                            reason,
                                        });
                                    }
                                    Err(reason) => {
                                        failed.lock().expect("failed lock").push(FailedTask {
                                            stage: stage.name.clone(),
                                            label: task.label.clone(),
                                            attempts: attempt,
                                            reason,
                                        });
                                        break;
                                    }
                                }
                            }
                        }
                    });
                }
            });
            let mut failed = failed.into_inner().expect("failed lock");
            if !failed.is_empty() {
                failed.sort_by(|a, b| a.label.cmp(&b.label));
                return Err(BatchError::TasksFailed { failed });
            }
            progress(&ProgressEvent::StageFinished { stage: stage.name.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Resources;

    /// Tasks run through `sh -c`: the program is the shell, the args a script.
    fn shell_task(label: &str, script: String, marker: PathBuf) -> Task {
        Task { label: label.into(), args: vec!["-c".into(), script], done_marker: marker }
    }

    #[test]
    fn runs_stages_in_order_skips_done_tasks_and_reports_failures_by_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let executor =
            LocalExecutor { program: "/bin/sh".into(), jobs: 2, retries: 1, threads_per_task: None };
        // Stage 2 checks that both stage-1 outputs exist before it runs.
        let stage1 = Stage {
            name: "first".into(),
            tasks: (0..3)
                .map(|i| {
                    let marker = path(&format!("a{i}"));
                    shell_task(
                        &format!("s{i}"),
                        format!("echo $RAYON_NUM_THREADS > {}", marker.display()),
                        marker,
                    )
                })
                .collect(),
            resources: Resources { cpus: 3, ..Resources::default() },
        };
        let stage2 = Stage {
            name: "second".into(),
            tasks: vec![shell_task(
                "reduce",
                format!(
                    "test -f {} && test -f {} && test -f {} && touch {}",
                    path("a0").display(),
                    path("a1").display(),
                    path("a2").display(),
                    path("b").display()
                ),
                path("b"),
            )],
            resources: Resources::default(),
        };
        let events = Mutex::new(Vec::new());
        executor.run(&[stage1.clone(), stage2.clone()], &|e| events.lock().unwrap().push(e.clone())).unwrap();
        assert_eq!(std::fs::read_to_string(path("a1")).unwrap().trim(), "3");
        assert!(path("b").is_file());
        // Re-run: everything is done, nothing is started.
        std::fs::write(path("a0"), "kept").unwrap();
        executor.run(&[stage1, stage2], &|_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(path("a0")).unwrap(), "kept");
        assert!(
            events
                .lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, ProgressEvent::StageFinished { stage } if stage == "second"))
        );

        // A task that always fails is retried, then reported by its label; later stages do not run.
        let failing = Stage {
            name: "map".into(),
            tasks: vec![
                shell_task("good", format!("touch {}", path("g").display()), path("g")),
                shell_task(
                    "sub-bad",
                    format!("echo attempt >> {}; echo broken image >&2; exit 3", path("attempts").display()),
                    path("never"),
                ),
            ],
            resources: Resources::default(),
        };
        let after = Stage {
            name: "after".into(),
            tasks: vec![shell_task("x", format!("touch {}", path("x").display()), path("x"))],
            resources: Resources::default(),
        };
        let error = executor.run(&[failing, after], &|_| {}).unwrap_err();
        let BatchError::TasksFailed { failed } = &error else { panic!("{error}") };
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].label, "sub-bad");
        assert_eq!(failed[0].attempts, 2);
        assert!(failed[0].reason.contains("broken image"), "{}", failed[0].reason);
        assert_eq!(std::fs::read_to_string(path("attempts")).unwrap().lines().count(), 2);
        assert!(path("g").is_file() && !path("x").exists());
    }

    #[test]
    fn success_without_marker_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let executor =
            LocalExecutor { program: "/bin/sh".into(), jobs: 1, retries: 0, threads_per_task: Some(1) };
        let stage = Stage {
            name: "s".into(),
            tasks: vec![shell_task("t", "true".into(), dir.path().join("m"))],
            resources: Resources::default(),
        };
        let error = executor.run(&[stage], &|_| {}).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
