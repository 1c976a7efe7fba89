//! The Slurm executor: each stage is one job array (one array task per pending task), each
//! array depends on the previous one (`--dependency=afterok`, `--kill-on-invalid-dep=yes`), so
//! a whole build is submitted at once as a chain. The chain is monitored with
//! `squeue --json`; when a task fails, the jobs still queued behind it are cancelled, the
//! failed tasks are counted, and the rest of the chain is resubmitted from the first stage with
//! unfinished tasks (done tasks are skipped) until the retries are used up.

use super::{BatchError, Executor, FailedTask, ProgressEvent, Stage, shell_quote};
use crate::atomic::write_bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Site settings of the Slurm executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlurmConfig {
    /// Where job scripts, task lists and logs are written (on the shared filesystem).
    pub work_dir: PathBuf,
    /// `--partition`, if any.
    pub partition: Option<String>,
    /// `--account`, if any.
    pub account: Option<String>,
    /// Extra `#SBATCH` options (for example `--qos=short`, `--constraint=avx2`).
    pub extra_options: Vec<String>,
    /// Extra attempts of a failed task.
    pub retries: usize,
    /// At most this many array tasks run at once (`--array=…%N`), if set.
    pub max_concurrent_tasks: Option<usize>,
    /// How often `squeue` is polled (milliseconds).
    pub poll_interval_ms: u64,
    /// Prefix of job names.
    pub job_name_prefix: String,
}

impl SlurmConfig {
    /// Defaults for a work directory: no partition or account, one retry, 1 s polling.
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            work_dir,
            partition: None,
            account: None,
            extra_options: Vec::new(),
            retries: 1,
            max_concurrent_tasks: None,
            poll_interval_ms: 1000,
            job_name_prefix: "pedinorm".into(),
        }
    }
}

/// Submits stages as chained Slurm job arrays of `program` invocations.
#[derive(Debug, Clone)]
pub struct SlurmExecutor {
    /// The `pedinorm` program (on the shared filesystem, same path on every node).
    pub program: PathBuf,
    /// Settings.
    pub config: SlurmConfig,
}

/// One submitted stage of a chain.
struct Submitted {
    stage: usize,
    job_id: String,
    /// Array index → task index.
    tasks: Vec<usize>,
}

/// One record of `squeue --json`.
#[derive(Debug, Clone, PartialEq)]
struct JobRecord {
    array_job_id: String,
    array_task_id: Option<usize>,
    state: String,
    exit_code: Option<i64>,
    reason: String,
}

const ACTIVE_STATES: [&str; 8] =
    ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING"];

fn is_active(state: &str) -> bool {
    ACTIVE_STATES.contains(&state)
}

fn is_failure(state: &str) -> bool {
    !is_active(state) && state != "COMPLETED"
}

impl SlurmExecutor {
    /// An executor with the given settings.
    pub fn new(program: PathBuf, config: SlurmConfig) -> Self {
        Self { program, config }
    }

    fn run_command(&self, program: &str, args: &[String]) -> Result<String, BatchError> {
        let output = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| BatchError::Slurm(format!("cannot run {program}: {e}")))?;
        if !output.status.success() {
            return Err(BatchError::Slurm(format!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Writes the task list and job script of one stage, returns the script path.
    fn write_stage_files(
        &self,
        round: usize,
        stage: &Stage,
        pending: &[usize],
    ) -> Result<PathBuf, BatchError> {
        let dir = self.config.work_dir.join(format!("round-{round}"));
        let logs = self.config.work_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| BatchError::Io { path: logs.clone(), source })?;
        let tasks_path = dir.join(format!("{}.tasks", stage.name));
        let mut tasks = String::new();
        for &index in pending {
            let task = &stage.tasks[index];
            let words: Vec<String> = std::iter::once(self.program.to_string_lossy().into_owned())
                .chain(task.args.iter().cloned())
                .map(|w| shell_quote(&w))
                .collect();
            tasks.push_str(&words.join(" "));
            tasks.push('\n');
        }
        write_bytes(&tasks_path, tasks.as_bytes())
            .map_err(|source| BatchError::Io { path: tasks_path.clone(), source })?;
        let resources = stage.resources;
        let mut array = format!("0-{}", pending.len() - 1);
        if let Some(limit) = self.config.max_concurrent_tasks {
            array.push_str(&format!("%{}", limit.max(1)));
        }
        let mut options = vec![
            format!("--job-name={}-{}", self.config.job_name_prefix, stage.name),
            format!("--array={array}"),
            "--nodes=1".to_string(),
            "--ntasks=1".to_string(),
            format!("--cpus-per-task={}", resources.cpus.max(1)),
            format!("--mem={}M", resources.memory_mb.max(1)),
            format!("--time={}", resources.time_minutes.max(1)),
            format!("--output={}", logs.join(format!("{}-%A_%a.log", stage.name)).display()),
            format!("--chdir={}", self.config.work_dir.display()),
        ];
        if let Some(partition) = &self.config.partition {
            options.push(format!("--partition={partition}"));
        }
        if let Some(account) = &self.config.account {
            options.push(format!("--account={account}"));
        }
        options.extend(self.config.extra_options.iter().cloned());
        let mut script = String::from("#!/bin/bash\n");
        for option in &options {
            script.push_str(&format!("#SBATCH {option}\n"));
        }
        script.push_str(&format!(
            "set -euo pipefail\n\
             # Threads of the task: the CPUs Slurm gave it.\n\
             export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-1}}\"\n\
             line=\"$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {tasks})\"\n\
             eval \"exec $line\"\n",
            tasks = shell_quote(&tasks_path.to_string_lossy())
        ));
        let script_path = dir.join(format!("{}.sbatch", stage.name));
        write_bytes(&script_path, script.as_bytes())
            .map_err(|source| BatchError::Io { path: script_path.clone(), source })?;
        Ok(script_path)
    }

    fn submit(&self, script: &Path, after: Option<&str>) -> Result<String, BatchError> {
        let mut args = vec!["--parsable".to_string()];
        if let Some(job) = after {
            args.push(format!("--dependency=afterok:{job}"));
            args.push("--kill-on-invalid-dep=yes".to_string());
        }
        args.push(script.to_string_lossy().into_owned());
        let out = self.run_command("sbatch", &args)?;
        // `--parsable` prints `jobid` or `jobid;cluster`.
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(BatchError::Slurm(format!("sbatch printed an unexpected job id {out:?}")));
        }
        Ok(id)
    }

    fn query(&self, job_ids: &[String]) -> Result<Vec<JobRecord>, BatchError> {
        let args =
            vec!["--json".to_string(), "--states=all".to_string(), format!("--jobs={}", job_ids.join(","))];
        let out = match self.run_command("squeue", &args) {
            Ok(out) => out,
            // Jobs that left the controller's memory are reported as invalid ids: none active.
            Err(BatchError::Slurm(message)) if message.contains("Invalid job id") => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        parse_squeue_json(&out)
    }

    fn cancel(&self, job_ids: &[String]) {
        if job_ids.is_empty() {
            return;
        }
        if let Err(error) = self.run_command("scancel", job_ids) {
            tracing::warn!(%error, "scancel failed");
        }
    }
}

fn parse_squeue_json(text: &str) -> Result<Vec<JobRecord>, BatchError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| BatchError::Slurm(format!("squeue --json printed invalid JSON: {e}")))?;
    let jobs = value
        .get("jobs")
        .and_then(|j| j.as_array())
        .ok_or_else(|| BatchError::Slurm("squeue --json output has no `jobs` list".into()))?;
    let text_of = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        // Newer Slurm wraps states in lists and numbers in {"set", "number"} objects.
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(",")
        }
        Some(serde_json::Value::Object(map)) => map.get("number").map(|n| n.to_string()).unwrap_or_default(),
        _ => String::new(),
    };
    let number = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::Object(map)) => {
            let set = map.get("set").and_then(|s| s.as_bool()).unwrap_or(true);
            if set { map.get("number").and_then(|n| n.as_i64()) } else { None }
        }
        _ => None,
    };
    Ok(jobs
        .iter()
        .map(|job| {
            let exit_code = match job.get("exit_code") {
                Some(serde_json::Value::Object(map)) if map.contains_key("return_code") => {
                    number(map.get("return_code"))
                }
                other => number(other),
            };
            JobRecord {
                array_job_id: text_of(job.get("array_job_id")),
                array_task_id: number(job.get("array_task_id")).and_then(|n| usize::try_from(n).ok()),
                state: text_of(job.get("job_state")),
                exit_code,
                reason: text_of(job.get("state_reason")),
            }
        })
        .collect())
}

impl Executor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn run(&self, stages: &[Stage], progress: &(dyn Fn(&ProgressEvent) + Sync)) -> Result<(), BatchError> {
        let mut attempts: HashMap<(usize, usize), usize> = HashMap::new();
        let poll = Duration::from_millis(self.config.poll_interval_ms.max(50));
        // Rounds continue across re-runs so earlier scripts and logs are kept.
        let mut round = std::fs::read_dir(&self.config.work_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_prefix("round-")
                            .and_then(|n| n.parse::<usize>().ok())
                    })
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        loop {
            let Some(first) = stages.iter().position(|s| s.tasks.iter().any(|t| !t.is_done())) else {
                return Ok(());
            };
            round += 1;
            // Submit the chain from the first unfinished stage.
            let mut submitted: Vec<Submitted> = Vec::new();
            for (index, stage) in stages.iter().enumerate().skip(first) {
                let pending: Vec<usize> =
                    (0..stage.tasks.len()).filter(|&i| !stage.tasks[i].is_done()).collect();
                if pending.is_empty() {
                    continue;
                }
                let script = self.write_stage_files(round, stage, &pending)?;
                let after = submitted.last().map(|s| s.job_id.as_str());
                let job_id = match self.submit(&script, after) {
                    Ok(id) => id,
                    Err(error) => {
                        self.cancel(&submitted.iter().map(|s| s.job_id.clone()).collect::<Vec<_>>());
                        return Err(error);
                    }
                };
                tracing::info!(stage = %stage.name, %job_id, tasks = pending.len(), "submitted");
                progress(&ProgressEvent::StageStarted {
                    stage: stage.name.clone(),
                    pending: pending.len(),
                    total: stage.tasks.len(),
                });
                submitted.push(Submitted { stage: index, job_id, tasks: pending });
            }
            let job_ids: Vec<String> = submitted.iter().map(|s| s.job_id.clone()).collect();
            // Monitor until nothing of the chain is queued or running.
            let mut reported: Vec<usize> = vec![usize::MAX; stages.len()];
            let mut cancelled = false;
            let records = loop {
                std::thread::sleep(poll);
                let records = self.query(&job_ids)?;
                for s in &submitted {
                    let stage = &stages[s.stage];
                    let done = stage.tasks.iter().filter(|t| t.is_done()).count();
                    if reported[s.stage] != done {
                        reported[s.stage] = done;
                        progress(&ProgressEvent::StageProgress {
                            stage: stage.name.clone(),
                            done,
                            total: stage.tasks.len(),
                        });
                    }
                }
                let failed_stage = submitted
                    .iter()
                    .position(|s| records.iter().any(|r| r.array_job_id == s.job_id && is_failure(&r.state)));
                if !cancelled && let Some(position) = failed_stage {
                    // Cancel what waits behind a failure instead of leaving it pending; the
                    // failed stage's other tasks and earlier stages finish their work.
                    cancelled = true;
                    let waiting: Vec<String> = submitted[position + 1..]
                        .iter()
                        .filter(|s| records.iter().any(|r| r.array_job_id == s.job_id && is_active(&r.state)))
                        .map(|s| s.job_id.clone())
                        .collect();
                    self.cancel(&waiting);
                    continue;
                }
                if records.iter().all(|r| !is_active(&r.state)) {
                    break records;
                }
            };
            // Count attempts of the first stage that still has unfinished tasks.
            let Some(position) =
                submitted.iter().position(|s| s.tasks.iter().any(|&t| !stages[s.stage].tasks[t].is_done()))
            else {
                continue;
            };
            let s = &submitted[position];
            // A stage behind a failed one never ran (it was cancelled, or killed for its invalid
            // dependency). When the failed task still left valid outputs (it was cancelled as it
            // finished), that stage is now first: resubmit it without counting an attempt.
            let failed_before = submitted[..position]
                .iter()
                .any(|f| records.iter().any(|r| r.array_job_id == f.job_id && is_failure(&r.state)));
            if failed_before {
                tracing::info!(stage = %stages[s.stage].name, "resubmitting a stage that never ran");
                continue;
            }
            let stage = &stages[s.stage];
            let mut failed = Vec::new();
            for (array_index, &task_index) in s.tasks.iter().enumerate() {
                let task = &stage.tasks[task_index];
                if task.is_done() {
                    continue;
                }
                let record = records
                    .iter()
                    .find(|r| r.array_job_id == s.job_id && r.array_task_id == Some(array_index));
                let reason = match record {
                    Some(r) => format!(
                        "job {}_{array_index} {}{}{}",
                        s.job_id,
                        r.state,
                        r.exit_code.map(|c| format!(" exit code {c}")).unwrap_or_default(),
                        if r.reason.is_empty() || r.reason == "None" {
                            String::new()
                        } else {
                            format!(" ({})", r.reason)
                        }
                    ),
                    None => format!(
                        "job {}_{array_index} left the queue without completing (cancelled before it started?)",
                        s.job_id
                    ),
                };
                let reason = format!(
                    "{reason}; log {}",
                    self.config
                        .work_dir
                        .join("logs")
                        .join(format!("{}-{}_{array_index}.log", stage.name, s.job_id))
                        .display()
                );
                let count = attempts.entry((s.stage, task_index)).or_insert(0);
                *count += 1;
                if *count > self.config.retries {
                    failed.push(FailedTask {
                        stage: stage.name.clone(),
                        label: task.label.clone(),
                        attempts: *count,
                        reason,
                    });
                } else {
                    progress(&ProgressEvent::TaskRetried {
                        stage: stage.name.clone(),
                        label: task.label.clone(),
                        attempt: *count,
                        reason,
                    });
                }
            }
            if !failed.is_empty() {
                failed.sort_by(|a, b| a.label.cmp(&b.label));
                return Err(BatchError::TasksFailed { failed });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_squeue_json_of_slurm_22_05() {
        let text = r#"{"meta":{},"errors":[],"jobs":[
            {"job_id":2,"array_job_id":1,"array_task_id":0,"job_state":"COMPLETED","exit_code":0,"state_reason":"None"},
            {"job_id":3,"array_job_id":1,"array_task_id":1,"job_state":"FAILED","exit_code":256,"state_reason":"NonZeroExitCode"},
            {"job_id":1,"array_job_id":1,"array_task_id":null,"job_state":"PENDING","exit_code":0,"state_reason":"Resources"}]}"#;
        let records = parse_squeue_json(text).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].array_job_id, "1");
        assert_eq!(records[1].array_task_id, Some(1));
        assert!(is_failure(&records[1].state));
        assert_eq!(records[2].array_task_id, None);
        assert!(is_active(&records[2].state));
        assert!(parse_squeue_json("not json").is_err());
    }

    #[test]
    fn parses_newer_squeue_json_shapes() {
        let text = r#"{"jobs":[{"array_job_id":{"set":true,"number":7},"array_task_id":{"set":true,"number":3},
            "job_state":["CANCELLED"],"exit_code":{"status":["SIGNALED"],"return_code":{"set":true,"number":0}},"state_reason":"None"}]}"#;
        let records = parse_squeue_json(text).unwrap();
        assert_eq!(records[0].array_job_id, "7");
        assert_eq!(records[0].array_task_id, Some(3));
        assert_eq!(records[0].state, "CANCELLED");
    }

    #[test]
    fn job_script_runs_the_array_task_line() {
        let dir = tempfile::tempdir().unwrap();
        let executor = SlurmExecutor::new(
            "/opt/pedinorm bin/pedinorm".into(),
            SlurmConfig {
                partition: Some("short".into()),
                max_concurrent_tasks: Some(4),
                ..SlurmConfig::new(dir.path().to_owned())
            },
        );
        let stage = Stage {
            name: "iter-1-map".into(),
            tasks: ["a", "b", "c"]
                .iter()
                .map(|s| super::super::Task {
                    label: s.to_string(),
                    args: vec!["template".into(), "map".into(), "--subject".into(), s.to_string()],
                    done_marker: dir.path().join(s),
                })
                .collect(),
            resources: super::super::Resources { cpus: 2, memory_mb: 1500, time_minutes: 30 },
        };
        let script = executor.write_stage_files(1, &stage, &[0, 2]).unwrap();
        let text = std::fs::read_to_string(&script).unwrap();
        for expected in
            ["--array=0-1%4", "--cpus-per-task=2", "--mem=1500M", "--time=30", "--partition=short"]
        {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
        let tasks = std::fs::read_to_string(dir.path().join("round-1/iter-1-map.tasks")).unwrap();
        assert_eq!(
            tasks,
            "'/opt/pedinorm bin/pedinorm' template map --subject a\n'/opt/pedinorm bin/pedinorm' template map --subject c\n"
        );
        // The script picks line SLURM_ARRAY_TASK_ID + 1 and executes it.
        let fake = dir.path().join("echo-args");
        std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
        let tasks_path = dir.path().join("round-1/iter-1-map.tasks");
        std::fs::write(&tasks_path, format!("{} x\n{} y\n", fake.display(), fake.display())).unwrap();
        let out =
            std::process::Command::new("bash").arg(&script).env("SLURM_ARRAY_TASK_ID", "1").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "y");
    }
}
