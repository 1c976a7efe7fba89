//! Persistent job queue in SQLite.
//!
//! States: `queued` → `running` → `done` | `failed` | `cancelled`. A job's outputs are written
//! into `jobs/<id>.partial/` and renamed to `jobs/<id>/` only when the job succeeded, so a
//! reader never sees half-written outputs. After a restart (even `kill -9`), jobs found
//! `running` were interrupted: they are queued again and rerun from a clean partial
//! directory; a job whose final directory already exists (killed between rename and the
//! database update) is marked done from its saved `result.json` instead of rerun.

use super::store::{Store, StoreError, now};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// Being run.
    Running,
    /// Finished; outputs are complete.
    Done,
    /// Finished with an error.
    Failed,
    /// Cancelled on request.
    Cancelled,
}

impl JobState {
    fn parse(text: &str) -> JobState {
        match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        }
    }
    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// A job as seen by clients.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    /// Job id.
    pub id: i64,
    /// Kind (`ingest`, `pacs_import`, `deviation`, `store_back`, `normdb_build`).
    pub kind: String,
    /// State.
    pub state: JobState,
    /// Progress in percent (0–100).
    pub progress: f64,
    /// Current stage.
    pub stage: String,
    /// Account that submitted it.
    pub owner: String,
    /// Submission time.
    pub created: String,
    /// Start time of the latest attempt.
    pub started: Option<String>,
    /// End time.
    pub finished: Option<String>,
    /// Error message when failed.
    pub error: Option<String>,
    /// Result summary when done.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Attempts (more than one after an interrupted run).
    pub attempts: i64,
    /// Parameters (service ids only).
    #[schema(value_type = Object)]
    pub params: Value,
    /// Centre the job belongs to (that of the study, case or caller it serves).
    pub centre: String,
}

/// Why a job did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum JobFailure {
    /// Cancellation was requested.
    Cancelled,
    /// The job failed; the message is shown to the client (no identities).
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for JobFailure {
    fn from(error: E) -> Self {
        JobFailure::Failed(error.to_string())
    }
}

/// Errors of queue operations.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// State store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many queued jobs.
    #[error("the job queue is full ({0} jobs queued); retry later")]
    QueueFull(usize),
    /// No such job.
    #[error("job {0} does not exist")]
    NotFound(i64),
    /// The job has already finished.
    #[error("job {0} has already finished")]
    Finished(i64),
    /// No handler for this kind.
    #[error("unknown job kind `{0}`")]
    UnknownKind(String),
}

impl From<rusqlite::Error> for JobError {
    fn from(error: rusqlite::Error) -> Self {
        JobError::Store(StoreError::Sqlite(error))
    }
}

/// What a running job sees.
pub struct JobContext {
    /// Job id.
    pub id: i64,
    /// Parameters given at submission.
    pub params: Value,
    /// Directory to write outputs into (renamed into place on success).
    pub work_dir: PathBuf,
    store: Store,
    stage_delay: Duration,
}

impl JobContext {
    /// Reports progress; returns `Err(Cancelled)` once cancellation was requested, so
    /// handlers stop at the next step with `?`.
    pub fn progress(&self, percent: f64, stage: &str) -> Result<(), JobFailure> {
        let percent = percent.clamp(0.0, 100.0);
        let cancelled: i64 = {
            let connection = self.store.lock();
            connection
                .execute(
                    "UPDATE jobs SET progress = ?1, stage = ?2 WHERE id = ?3",
                    params![percent, stage, self.id],
                )
                .map_err(|e| JobFailure::Failed(e.to_string()))?;
            connection
                .query_row("SELECT cancel_requested FROM jobs WHERE id = ?1", params![self.id], |row| {
                    row.get(0)
                })
                .map_err(|e| JobFailure::Failed(e.to_string()))?
        };
        if cancelled != 0 {
            return Err(JobFailure::Cancelled);
        }
        if !self.stage_delay.is_zero() {
            // Sleep in slices so a cancellation is still noticed promptly.
            let deadline = std::time::Instant::now() + self.stage_delay;
            while std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                if self.is_cancelled() {
                    return Err(JobFailure::Cancelled);
                }
            }
        }
        Ok(())
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.store
            .lock()
            .query_row("SELECT cancel_requested FROM jobs WHERE id = ?1", params![self.id], |row| {
                row.get::<_, i64>(0)
            })
            .map(|v| v != 0)
            .unwrap_or(false)
    }
}

/// A job implementation: reads `ctx.params`, writes into `ctx.work_dir`, returns a summary.
pub type Handler = Arc<dyn Fn(&JobContext) -> Result<Value, JobFailure> + Send + Sync>;

/// The queue and its workers.
pub struct JobQueue {
    store: Store,
    jobs_dir: PathBuf,
    handlers: HashMap<String, Handler>,
    concurrency: usize,
    max_queued: usize,
    stage_delay: Duration,
    wake: Arc<(Mutex<u64>, Condvar)>,
    shutdown: Arc<AtomicBool>,
}

const JOB_COLUMNS: &str = "id, kind, state, progress, stage, owner, created, started, finished, error, result, attempts, params, centre";

fn row_to_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobInfo> {
    let result: Option<String> = row.get(10)?;
    let params: String = row.get(12)?;
    Ok(JobInfo {
        id: row.get(0)?,
        kind: row.get(1)?,
        state: JobState::parse(&row.get::<_, String>(2)?),
        progress: row.get(3)?,
        stage: row.get(4)?,
        owner: row.get(5)?,
        created: row.get(6)?,
        started: row.get(7)?,
        finished: row.get(8)?,
        error: row.get(9)?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        attempts: row.get(11)?,
        params: serde_json::from_str(&params).unwrap_or(Value::Null),
        centre: row.get(13)?,
    })
}

impl JobQueue {
    /// A queue over `store` keeping outputs under `jobs_dir`.
    pub fn new(
        store: Store,
        jobs_dir: PathBuf,
        concurrency: usize,
        max_queued: usize,
        stage_delay: Duration,
    ) -> Self {
        JobQueue {
            store,
            jobs_dir,
            handlers: HashMap::new(),
            concurrency: concurrency.max(1),
            max_queued,
            stage_delay,
            wake: Arc::new((Mutex::new(0), Condvar::new())),
            shutdown: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Registers the handler of a job kind.
    pub fn register(&mut self, kind: &str, handler: Handler) {
        self.handlers.insert(kind.to_string(), handler);
    }

    /// Directory of a finished job's outputs.
    pub fn output_dir(&self, id: i64) -> PathBuf {
        self.jobs_dir.join(id.to_string())
    }

    /// Requeues jobs interrupted by a crash; returns how many.
    pub fn recover(&self) -> Result<usize, JobError> {
        let connection = self.store.lock();
        let count = connection.execute(
            "UPDATE jobs SET state = 'queued', stage = 'interrupted; queued again' WHERE state = 'running'",
            [],
        )?;
        Ok(count)
    }

    /// Submits a job on behalf of `owner`, belonging to `centre`.
    pub fn enqueue(&self, kind: &str, params: &Value, owner: &str, centre: &str) -> Result<i64, JobError> {
        if !self.handlers.contains_key(kind) {
            return Err(JobError::UnknownKind(kind.to_string()));
        }
        let id = {
            let connection = self.store.lock();
            let queued: i64 =
                connection
                    .query_row("SELECT COUNT(*) FROM jobs WHERE state = 'queued'", [], |row| row.get(0))?;
            if queued as usize >= self.max_queued {
                return Err(JobError::QueueFull(queued as usize));
            }
            connection.execute(
                "INSERT INTO jobs (kind, params, state, owner, created, centre) VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
                params![kind, params.to_string(), owner, now(), centre],
            )?;
            connection.last_insert_rowid()
        };
        self.notify();
        Ok(id)
    }

    fn notify(&self) {
        let (lock, condvar) = &*self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        condvar.notify_all();
    }

    /// One job.
    pub fn get(&self, id: i64) -> Result<Option<JobInfo>, JobError> {
        let connection = self.store.lock();
        Ok(connection
            .query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), params![id], row_to_job)
            .optional()?)
    }

    /// Newest jobs first; only those of `centre` when given.
    pub fn list(&self, limit: i64, centre: Option<&str>) -> Result<Vec<JobInfo>, JobError> {
        let connection = self.store.lock();
        let mut statement = connection.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?2 IS NULL OR centre = ?2) ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = statement.query_map(params![limit, centre], row_to_job)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Number of jobs per state (for metrics).
    pub fn counts(&self) -> Result<Vec<(String, i64)>, JobError> {
        let connection = self.store.lock();
        let mut statement =
            connection.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Requests cancellation: a queued job is cancelled at once, a running one at its next
    /// progress report.
    pub fn cancel(&self, id: i64) -> Result<JobInfo, JobError> {
        {
            let connection = self.store.lock();
            let state: Option<String> = connection
                .query_row("SELECT state FROM jobs WHERE id = ?1", params![id], |row| row.get(0))
                .optional()?;
            match state.as_deref().map(JobState::parse) {
                None => return Err(JobError::NotFound(id)),
                Some(state) if state.is_final() => return Err(JobError::Finished(id)),
                Some(JobState::Queued) => {
                    connection.execute(
                        "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished = ?2, stage = 'cancelled'
                         WHERE id = ?1 AND state = 'queued'",
                        params![id, now()],
                    )?;
                }
                Some(_) => {
                    connection.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", params![id])?;
                }
            }
        }
        self.get(id)?.ok_or(JobError::NotFound(id))
    }

    /// Starts the workers (after `recover`). They stop after `shutdown`.
    pub fn start(self: &Arc<Self>) -> Vec<std::thread::JoinHandle<()>> {
        (0..self.concurrency)
            .map(|index| {
                let queue = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("pedinorm-job-{index}"))
                    .spawn(move || queue.worker_loop())
                    .expect("spawning a worker thread")
            })
            .collect()
    }

    /// Asks the workers to stop after their current job.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.notify();
    }

    fn worker_loop(&self) {
        while !self.shutdown.load(Ordering::SeqCst) {
            match self.claim() {
                Ok(Some((id, kind, params))) => self.run(id, &kind, params),
                Ok(None) => {
                    let (lock, condvar) = &*self.wake;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = condvar.wait_timeout(guard, Duration::from_millis(500));
                }
                Err(error) => {
                    tracing::error!("job queue: {error}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn claim(&self) -> Result<Option<(i64, String, Value)>, JobError> {
        let connection = self.store.lock();
        let claimed: Option<(i64, String, String)> = connection
            .query_row(
                "UPDATE jobs SET state = 'running', started = ?1, attempts = attempts + 1, stage = 'starting'
                 WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
                 RETURNING id, kind, params",
                params![now()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        Ok(claimed.map(|(id, kind, params)| (id, kind, serde_json::from_str(&params).unwrap_or(Value::Null))))
    }

    fn finish(&self, id: i64, state: JobState, error: Option<&str>, result: Option<&Value>) {
        // Clients see the job's and the data directory's relative names; the full text, with
        // the server's paths, goes only to the log.
        let error = error.map(|message| {
            tracing::warn!(job = id, "job failed: {message}");
            let data_dir = self.jobs_dir.parent().unwrap_or(&self.jobs_dir);
            let work_dir = self.jobs_dir.join(format!("{id}.partial"));
            without_server_paths(message, &[&work_dir, &self.output_dir(id), data_dir])
        });
        let error = error.as_deref();
        let state_name = match state {
            JobState::Done => "done",
            JobState::Cancelled => "cancelled",
            _ => "failed",
        };
        let progress_sql = if state == JobState::Done { ", progress = 100" } else { "" };
        let connection = self.store.lock();
        if let Err(e) = connection.execute(
            &format!(
                "UPDATE jobs SET state = ?2, finished = ?3, error = ?4, result = ?5, stage = ?2{progress_sql} WHERE id = ?1"
            ),
            params![id, state_name, now(), error, result.map(|r| r.to_string())],
        ) {
            tracing::error!("job {id}: cannot record its end: {e}");
        }
    }

    fn run(&self, id: i64, kind: &str, params: Value) {
        let final_dir = self.output_dir(id);
        let result_file = final_dir.join("result.json");
        // Killed after the rename but before the database update: the outputs are complete.
        if let Ok(bytes) = std::fs::read(&result_file) {
            let result = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            self.finish(id, JobState::Done, None, Some(&result));
            return;
        }
        let work_dir = self.jobs_dir.join(format!("{id}.partial"));
        let prepared = (|| {
            if work_dir.exists() {
                std::fs::remove_dir_all(&work_dir)?;
            }
            std::fs::create_dir_all(&work_dir)
        })();
        if let Err(error) = prepared {
            self.finish(
                id,
                JobState::Failed,
                Some(&format!("cannot prepare the job directory: {error}")),
                None,
            );
            return;
        }
        let Some(handler) = self.handlers.get(kind).cloned() else {
            self.finish(id, JobState::Failed, Some(&format!("unknown job kind `{kind}`")), None);
            return;
        };
        let context = JobContext {
            id,
            params,
            work_dir: work_dir.clone(),
            store: self.store.clone(),
            stage_delay: self.stage_delay,
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&context)))
            .unwrap_or_else(|_| Err(JobFailure::Failed("internal error in the job".to_string())));
        match outcome {
            Ok(result) => match publish(&work_dir, &final_dir, &result) {
                Ok(()) => self.finish(id, JobState::Done, None, Some(&result)),
                Err(error) => self.finish(
                    id,
                    JobState::Failed,
                    Some(&format!("cannot publish the outputs: {error}")),
                    None,
                ),
            },
            Err(JobFailure::Cancelled) => {
                let _ = std::fs::remove_dir_all(&work_dir);
                self.finish(id, JobState::Cancelled, None, None);
            }
            Err(JobFailure::Failed(message)) => {
                let _ = std::fs::remove_dir_all(&work_dir);
                self.finish(id, JobState::Failed, Some(&message), None);
            }
        }
    }
}

/// `message` with every absolute path replaced by its name relative to the first of `roots`
/// that holds it, or else by its file name: a client never learns where the server keeps
/// its files.
pub fn without_server_paths(message: &str, roots: &[&Path]) -> String {
    let starts_path = |before: Option<char>| {
        before
            .is_none_or(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '(' | '[' | '{' | '=' | '<'))
    };
    let ends_path =
        |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | ')' | ']' | '}' | '>' | ',' | ';');
    let mut shown = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(c) = rest.chars().next() {
        if c == '/' && starts_path(shown.chars().next_back()) {
            let end = rest.find(ends_path).unwrap_or(rest.len());
            // A colon or full stop after a path belongs to the sentence.
            let path = rest[..end].trim_end_matches([':', '.']);
            shown.push_str(&relative_name(Path::new(path), roots));
            rest = &rest[path.len()..];
        } else {
            shown.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    shown
}

fn relative_name(path: &Path, roots: &[&Path]) -> String {
    roots
        .iter()
        .filter_map(|root| path.strip_prefix(root).ok())
        .find(|relative| !relative.as_os_str().is_empty())
        .map(|relative| relative.display().to_string())
        .or_else(|| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "(a server path)".into())
}

/// Writes `result.json` into the work directory, syncs, then renames it into place.
fn publish(work_dir: &Path, final_dir: &Path, result: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(result).map_err(std::io::Error::other)?;
    crate::atomic::write_bytes(&work_dir.join("result.json"), &bytes)?;
    std::fs::rename(work_dir, final_dir)?;
    if let Some(parent) = final_dir.parent()
        && let Ok(dir) = std::fs::File::open(parent)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Names of the files of a finished job (flat, sorted).
pub fn output_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let (Ok(meta), Some(name)) = (entry.metadata(), entry.file_name().to_str()) {
                if meta.is_file() {
                    files.push((name.to_string(), meta.len()));
                }
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_no_server_path() {
        let (data, work) = (Path::new("/srv/pn/state"), Path::new("/srv/pn/state/jobs/7.partial"));
        let roots = [work, data];
        let cases = [
            ("cannot read '/srv/pn/state/jobs/7.partial/map.nii.gz': gone", "cannot read 'map.nii.gz': gone"),
            ("pseudonym key file /etc/pn/pseudonym.key: short", "pseudonym key file pseudonym.key: short"),
            ("/srv/pn/state/archive/ab/s1.json.", "archive/ab/s1.json."),
            ("(at /srv/pn/state) and/or http://pacs/x", "(at state) and/or http://pacs/x"),
            ("no path here: 3/4 done", "no path here: 3/4 done"),
        ];
        for (message, shown) in cases {
            assert_eq!(without_server_paths(message, &roots), shown, "{message}");
        }
    }

    fn wait_final(queue: &JobQueue, id: i64) -> JobInfo {
        for _ in 0..200 {
            let job = queue.get(id).unwrap().unwrap();
            if job.state.is_final() {
                return job;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("job {id} did not finish");
    }

    /// A queue of one `write` job kind in `dir` (its outputs in `dir/jobs`), every stage
    /// taking `delay_ms` longer.
    fn queue(dir: &Path, delay_ms: u64) -> JobQueue {
        std::fs::create_dir_all(dir.join("jobs")).unwrap();
        let store = Store::open(dir).unwrap();
        let mut queue = JobQueue::new(store, dir.join("jobs"), 2, 3, Duration::from_millis(delay_ms));
        queue.register(
            "write",
            Arc::new(|ctx: &JobContext| {
                for step in 0..4 {
                    ctx.progress(step as f64 * 25.0, &format!("step {step}"))?;
                }
                let n = ctx.params["n"].as_i64().ok_or_else(|| JobFailure::Failed("n missing".into()))?;
                std::fs::write(ctx.work_dir.join("out.txt"), n.to_string())?;
                Ok(serde_json::json!({ "n": n }))
            }),
        );
        queue
    }

    /// Stops the workers and waits for them.
    fn stop(queue: &JobQueue, workers: Vec<std::thread::JoinHandle<()>>) {
        queue.shutdown();
        for worker in workers {
            worker.join().unwrap();
        }
    }

    #[test]
    fn jobs_run_fail_cancel_and_publish_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(queue(dir.path(), 0));
        let workers = queue.start();
        let ok = queue.enqueue("write", &serde_json::json!({"n": 7}), "u", "C1").unwrap();
        let bad = queue.enqueue("write", &serde_json::json!({}), "u", "C1").unwrap();
        let job = wait_final(&queue, ok);
        assert_eq!(job.state, JobState::Done);
        assert_eq!(job.progress, 100.0);
        assert_eq!(std::fs::read_to_string(queue.output_dir(ok).join("out.txt")).unwrap(), "7");
        let job = wait_final(&queue, bad);
        assert_eq!((job.state, job.error.as_deref()), (JobState::Failed, Some("n missing")));
        assert!(!queue.output_dir(bad).exists());
        assert!(!dir.path().join("jobs").join(format!("{bad}.partial")).exists());
        assert!(matches!(queue.enqueue("nope", &Value::Null, "u", "C1"), Err(JobError::UnknownKind(_))));
        stop(&queue, workers);
    }

    #[test]
    fn running_jobs_are_cancelled_and_queue_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(queue(dir.path(), 300));
        // Not started: everything stays queued, so the bound applies.
        let ids: Vec<i64> = (0..3)
            .map(|_| queue.enqueue("write", &serde_json::json!({"n": 1}), "u", "C1").unwrap())
            .collect();
        assert!(matches!(
            queue.enqueue("write", &serde_json::json!({"n": 1}), "u", "C1"),
            Err(JobError::QueueFull(3))
        ));
        assert_eq!(queue.cancel(ids[2]).unwrap().state, JobState::Cancelled);
        let workers = queue.start();
        for _ in 0..100 {
            if queue.get(ids[0]).unwrap().unwrap().state == JobState::Running {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        queue.cancel(ids[0]).unwrap();
        assert_eq!(wait_final(&queue, ids[0]).state, JobState::Cancelled);
        assert!(!queue.output_dir(ids[0]).exists());
        assert_eq!(wait_final(&queue, ids[1]).state, JobState::Done);
        assert!(matches!(queue.cancel(ids[1]), Err(JobError::Finished(_))));
        stop(&queue, workers);
    }

    #[test]
    fn interrupted_jobs_are_requeued_and_completed_outputs_kept() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), 0);
        let a = queue.enqueue("write", &serde_json::json!({"n": 3}), "u", "C1").unwrap();
        let b = queue.enqueue("write", &serde_json::json!({"n": 4}), "u", "C1").unwrap();
        // Simulate a crash: both running, `a` half-written, `b` already published.
        queue.claim().unwrap();
        queue.claim().unwrap();
        std::fs::create_dir_all(dir.path().join("jobs").join(format!("{a}.partial"))).unwrap();
        std::fs::write(dir.path().join("jobs").join(format!("{a}.partial/junk")), "x").unwrap();
        std::fs::create_dir_all(queue.output_dir(b)).unwrap();
        std::fs::write(queue.output_dir(b).join("result.json"), "{\"n\": 4}").unwrap();
        drop(queue);
        let queue = Arc::new(self::tests::queue(dir.path(), 0));
        assert_eq!(queue.recover().unwrap(), 2);
        let workers = queue.start();
        let job_a = wait_final(&queue, a);
        assert_eq!((job_a.state, job_a.attempts), (JobState::Done, 2));
        assert!(!queue.output_dir(a).join("junk").exists());
        assert_eq!(wait_final(&queue, b).result, Some(serde_json::json!({"n": 4})));
        stop(&queue, workers);
    }
}
