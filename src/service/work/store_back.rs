//! The store-back job: a deviation job's results sent to the study's PACS as DICOM objects
//! (`dicom_results`: the clusters as a Segmentation, the z-maps as derived series) on the
//! study's own series, which is found by retrieving the study (WADO-RS) and matching the
//! case's grid. When the study no longer holds a series on that grid (deleted, or replaced by
//! a conversion on the PACS side), the case image the deviation job scored is written into the
//! study as a new series and the results lie on it.

use super::{archive_dir, pacs_client, param_i64, study_volume};
use crate::dicom_results::source::{CASE_SERIES_NUMBER, SourceSeries};
use crate::dicom_results::{ResultMaps, ResultsRequest, build_results};
use crate::formats::dicom_common::{DateTime, StudyContext};
use crate::formats::dicom_write::UidSource;
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
    let deviation_dir = jobs_dir.join(deviation_job.to_string());
    let maps = ResultMaps::read(&deviation_dir).map_err(|e| {
        tracing::error!("store-back of job {deviation_job}: {e}");
        JobFailure::Failed("the deviation job's maps or report cannot be read".into())
    })?;
    ctx.progress(5.0, "querying the PACS")?;
    let client = pacs_client(config, &centre)?;
    let found = client.find_study(&study_uid)?;
    let study = found
        .first()
        .and_then(StudyContext::from_qido)
        .ok_or_else(|| JobFailure::Failed("the PACS no longer holds the study".into()))?;
    ctx.progress(10.0, "retrieving the study's images (WADO-RS)")?;
    let retrieved = client.retrieve_study(&study_uid)?;
    ctx.progress(40.0, "building the result objects")?;
    // Messages name the study by its service id: a UID or a path never reaches the job record.
    let study_name = format!("study {study_id}");
    let failed = |e: crate::dicom_results::ResultsError| JobFailure::Failed(e.to_string());
    let found = SourceSeries::find_in_study(retrieved, maps.clusters_native.grid(), &study, &study_name)
        .map_err(failed)?;
    let (source, source_series) = match found {
        Some(source) => (source, "found"),
        None => {
            let stored = internals
                .stored_path
                .as_ref()
                .and_then(|stored| study_volume(&archive_dir(config).join(stored)))
                .ok_or_else(|| JobFailure::Failed("the study has no stored volume to write back".into()))?;
            let image = crate::formats::nifti::read_image(&stored).map_err(|e| {
                tracing::error!("store-back of job {deviation_job}: {e}");
                JobFailure::Failed("the study's stored volume cannot be read".into())
            })?;
            let described = ("case image as scored by pedinorm", CASE_SERIES_NUMBER);
            (
                SourceSeries::new_series(&image, study, described, UidSource::Random).map_err(failed)?,
                "written",
            )
        }
    };
    let request =
        ResultsRequest { maps: &maps, source: &source, uids: UidSource::Random, when: DateTime::now_utc() };
    let built = build_results(&request).map_err(failed)?;
    ctx.progress(60.0, "sending to the PACS (STOW-RS)")?;
    // report.pdf is kept with the job; the PACS gets its encapsulated copy.
    let (pdf, built): (Vec<_>, Vec<_>) = built.into_iter().partition(|o| o.series_uid.is_empty());
    for object in &pdf {
        crate::atomic::write_bytes(&ctx.work_dir.join(&object.file), &object.bytes)?;
    }
    let bytes: Vec<Vec<u8>> = built.iter().map(|o| o.bytes.clone()).collect();
    let answer = client.store(&bytes)?;
    crate::atomic::write_bytes(&ctx.work_dir.join("stow_response.json"), answer.to_string().as_bytes())?;
    let mut series: Vec<Value> = Vec::new();
    for object in &built {
        let kind = object.file.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        let kind = kind.unwrap_or_default().trim_end_matches(".dcm").to_string();
        match series.iter_mut().find(|s| s["series_instance_uid"] == object.series_uid.as_str()) {
            Some(entry) => entry["instances"] = json!(entry["instances"].as_u64().unwrap_or(0) + 1),
            None => {
                series.push(json!({ "kind": kind, "series_instance_uid": object.series_uid, "instances": 1 }))
            }
        }
    }
    Ok(json!({
        "deviation_job": deviation_job,
        "centre": centre,
        "source_series": source_series,
        "instances": built.len(),
        "series": series,
    }))
}
