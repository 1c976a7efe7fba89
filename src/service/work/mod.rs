//! Job handlers: the service's bridge to ingest, the deviation pipeline, normative builds and
//! the PACS, one module per job kind. Each call into another part of pedinorm sits in one
//! function here.

mod build_request;
mod deviation;
mod ingest;
mod normdb;
mod store_back;

pub use build_request::{
    BracketRequest, BuildMode, BuildRequest, BuildRequestShape, ExtendBuild, ExtendMode, ScratchBuild,
    ScratchMode,
};
pub use deviation::check_deviation_request;
pub use ingest::IngestOutcome;
pub use normdb::{BracketSummary, NormdbSummary, normdb_summary};
pub use store_back::check_store_back_request;

use deviation::deviation_job;
use ingest::ingest_job;
use normdb::normdb_build_job;
use store_back::store_back_job;

use super::config::ServiceConfig;
use super::jobs::{JobContext, JobFailure, JobQueue};
use super::layout::StateEntry;
use super::pacs::PacsClient;
use super::store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Directory (inside the data directory) where ingest keeps admitted studies and its index.
pub fn archive_dir(config: &ServiceConfig) -> PathBuf {
    config.state_path(StateEntry::Archive)
}

/// Registers every job kind on the queue.
pub fn register_handlers(queue: &mut JobQueue, config: Arc<ServiceConfig>, store: Store) {
    let (c, s) = (config.clone(), store.clone());
    queue.register("ingest", Arc::new(move |ctx: &JobContext| ingest_job(&c, &s, ctx)));
    let (c, s) = (config.clone(), store.clone());
    queue.register("deviation", Arc::new(move |ctx: &JobContext| deviation_job(&c, &s, ctx)));
    let (c, s) = (config.clone(), store.clone());
    queue.register("store_back", Arc::new(move |ctx: &JobContext| store_back_job(&c, &s, ctx)));
    let (c, s) = (config, store);
    queue.register("normdb_build", Arc::new(move |ctx: &JobContext| normdb_build_job(&c, &s, ctx)));
}

fn param_i64(ctx: &JobContext, name: &str) -> Result<i64, JobFailure> {
    ctx.params[name].as_i64().ok_or_else(|| JobFailure::Failed(format!("job parameter `{name}` is missing")))
}

fn pacs_client(config: &ServiceConfig, centre: &str) -> Result<PacsClient, JobFailure> {
    let pacs = config
        .pacs
        .iter()
        .find(|p| p.centre == centre)
        .ok_or_else(|| JobFailure::Failed(format!("no PACS is configured for centre {centre}")))?;
    PacsClient::new(pacs).map_err(JobFailure::from)
}

fn strip_paths(message: &str, dir: &Path) -> String {
    message.replace(&format!("{}/", dir.display()), "").replace(&dir.display().to_string(), "study")
}

/// The volume of a stored study the pipeline registers: its T1w, else its T2w (see
/// [`crate::ingest::store::structural_volume`]).
fn study_volume(study_dir: &Path) -> Option<PathBuf> {
    crate::ingest::store::structural_volume(study_dir).map(|(path, _)| path)
}
