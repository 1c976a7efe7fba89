//! Command-line options shared by every batch command (`template build`, `normdb build`,
//! batch `deviation`): where tasks run (`--executor local|slurm`), how many at once, threads per
//! task, retries and Slurm site settings; and the progress bar fed by executor events.

use indicatif::ProgressBar;
use pedinorm::batch::{Executor, LocalExecutor, ProgressEvent, SlurmConfig, SlurmExecutor, SlurmSite};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// A pool of `--jobs` child processes on this machine.
    Local,
    /// Slurm job arrays chained with `--dependency=afterok`.
    Slurm,
}

impl ExecutorKind {
    /// `local` or `slurm`.
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Slurm => "slurm",
        }
    }
}

/// Executor options of a batch command.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// Where tasks run.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Concurrent local tasks (default: available cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Threads per task (default: cores / jobs locally, 1 on Slurm).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Extra attempts of a failed task.
    #[arg(long, default_value_t = 1)]
    pub retries: usize,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    /// Extra #SBATCH option (repeatable), e.g. --sbatch-option=--qos=short.
    #[arg(long = "sbatch-option", allow_hyphen_values = true)]
    pub sbatch_options: Vec<String>,
    /// At most this many array tasks at once on Slurm.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// squeue polling interval (ms).
    #[arg(long, default_value_t = 2000)]
    pub poll_ms: u64,
    /// Site settings for Slurm (TOML: partition, account, sbatch_options, max_concurrent);
    /// default: the file named by PEDINORM_SLURM_CONFIG, if set. Options given on the command
    /// line win over the file.
    #[arg(long, env = "PEDINORM_SLURM_CONFIG")]
    pub slurm_config: Option<PathBuf>,
}

impl ExecutorArgs {
    /// Concurrent tasks and threads per task.
    pub fn jobs_and_threads(&self) -> (usize, usize) {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        match self.executor {
            ExecutorKind::Local => {
                let jobs = self.jobs.unwrap_or(cores).max(1);
                (jobs, self.threads.unwrap_or((cores / jobs).max(1)).max(1))
            }
            ExecutorKind::Slurm => (self.jobs.unwrap_or(1).max(1), self.threads.unwrap_or(1).max(1)),
        }
    }

    /// The executor running `program`; Slurm job scripts and logs go to `slurm_dir`, job names
    /// start with `job_name_prefix`.
    pub fn executor(
        &self,
        program: &Path,
        slurm_dir: PathBuf,
        job_name_prefix: &str,
    ) -> anyhow::Result<Box<dyn Executor>> {
        let (jobs, threads) = self.jobs_and_threads();
        Ok(match self.executor {
            ExecutorKind::Local => Box::new(LocalExecutor {
                program: program.to_owned(),
                jobs,
                retries: self.retries,
                threads_per_task: Some(threads),
            }),
            ExecutorKind::Slurm => {
                let site = match &self.slurm_config {
                    Some(path) => SlurmSite::read(path)?,
                    None => SlurmSite::default(),
                };
                let mut extra_options = site.sbatch_options;
                extra_options.extend(self.sbatch_options.iter().cloned());
                Box::new(SlurmExecutor::new(
                    program.to_owned(),
                    SlurmConfig {
                        partition: self.partition.clone().or(site.partition),
                        account: self.account.clone().or(site.account),
                        extra_options,
                        retries: self.retries,
                        max_concurrent_tasks: self.max_concurrent.or(site.max_concurrent),
                        poll_interval_ms: self.poll_ms,
                        job_name_prefix: job_name_prefix.to_owned(),
                        ..SlurmConfig::new(slurm_dir)
                    },
                ))
            }
        })
    }
}

/// A progress bar over every task of a batch run, fed by [`ProgressEvent`]s (retries are
/// printed above the bar).
pub struct BatchProgress {
    bar: ProgressBar,
    name: String,
    counts: Mutex<HashMap<String, (usize, usize)>>,
}

impl BatchProgress {
    /// A bar titled `name`.
    pub fn new(name: &str) -> Self {
        Self {
            bar: crate::cli::progress::bar(0, name),
            name: name.to_owned(),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Updates the bar with one event.
    pub fn on_event(&self, event: &ProgressEvent) {
        let mut counts = self.counts.lock().expect("progress lock");
        match event {
            ProgressEvent::StageStarted { stage, pending, total } => {
                counts.insert(stage.clone(), (total - pending, *total));
                self.bar.set_message(format!("{} {stage}", self.name));
            }
            ProgressEvent::StageProgress { stage, done, total } => {
                counts.insert(stage.clone(), (*done, *total));
            }
            ProgressEvent::TaskRetried { stage, label, attempt, reason } => {
                self.bar.println(format!("{stage}: {label} failed (attempt {attempt}), retrying: {reason}"));
            }
            ProgressEvent::StageFinished { .. } => {}
        }
        let (done, total) = counts.values().fold((0, 0), |(d, t), (a, b)| (d + a, t + b));
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
