//! The store-back job: a deviation job's maps sent to the study's PACS as derived series.

use super::{pacs_client, param_i64};
use crate::service::config::ServiceConfig;
use crate::service::error::ApiError;
use crate::service::jobs::{JobContext, JobFailure, JobQueue, JobState};
use crate::service::layout::StateEntry;
use crate::service::store::Store;
use crate::service::studies;
use serde_json::{Value, json};

/// Checks that a deviation job's maps can be sent back to the study's PACS.
pub fn check_store_back_request(store: &Store, jobs: &JobQueue, job_id: i64) -> Result<(), ApiError> {
    let job = jobs.get(job_id)?.ok_or_else(|| ApiError::NotFound(format!("job {job_id} does not exist")))?;
    if job.kind != "deviation" {
        return Err(ApiError::Conflict(format!("job {job_id} is not a deviation job")));
    }
    if job.state != JobState::Done {
        return Err(ApiError::Conflict(format!("job {job_id} is not done")));
    }
    let study_id = job.result.as_ref().and_then(|r| r["study_id"].as_i64()).unwrap_or(0);
    let internals = studies::internals(&store.lock(), study_id)?;
    if internals.pacs.is_none() {
        return Err(ApiError::Conflict(
            "the study was uploaded, not imported from a PACS: nowhere to send it".into(),
        ));
    }
    Ok(())
}

pub(super) fn store_back_job(
    config: &ServiceConfig,
    store: &Store,
    ctx: &JobContext,
) -> Result<Value, JobFailure> {
    let deviation_job = param_i64(ctx, "deviation_job")?;
    let jobs_dir = config.state_path(StateEntry::Jobs);
    let result: Value = serde_json::from_slice(&std::fs::read(
        jobs_dir.join(deviation_job.to_string()).join("result.json"),
    )?)?;
    let study_id = result["study_id"]
        .as_i64()
        .ok_or_else(|| JobFailure::Failed("deviation result lacks study".into()))?;
    let internals = studies::internals(&store.lock(), study_id).map_err(JobFailure::from)?;
    let (centre, study_uid) =
        internals.pacs.ok_or_else(|| JobFailure::Failed("the study was not imported from a PACS".into()))?;
    let map = jobs_dir.join(deviation_job.to_string()).join("intensity_z_native.nii.gz");
    if !map.is_file() {
        return Err(JobFailure::Failed("the deviation job has no intensity_z_native.nii.gz".into()));
    }
    ctx.progress(5.0, "querying the PACS")?;
    let client = pacs_client(config, &centre)?;
    let found = client.find_study(&study_uid)?;
    let study =
        found.first().ok_or_else(|| JobFailure::Failed("the PACS no longer holds the study".into()))?;
    ctx.progress(20.0, "building the derived series")?;
    let image = crate::formats::nifti::read_image(&map)?;
    let series = crate::service::derived::derived_series(&image, study, "pedinorm intensity z-map")?;
    let (objects, series_uid) = (series.objects, series.series_uid);
    ctx.progress(60.0, "sending to the PACS (STOW-RS)")?;
    let answer = client.store(&objects)?;
    crate::atomic::write_bytes(&ctx.work_dir.join("stow_response.json"), answer.to_string().as_bytes())?;
    Ok(
        json!({ "deviation_job": deviation_job, "centre": centre, "instances": objects.len(), "series_instance_uid": series_uid }),
    )
}
