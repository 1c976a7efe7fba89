//! The deviation job: a case's maps against the installed normative database.

use super::{archive_dir, param_i64, strip_paths, study_volume};
use crate::normdb::NormDbFile;
use crate::service::config::ServiceConfig;
use crate::service::consent::{self, Database};
use crate::service::error::ApiError;
use crate::service::jobs::{JobContext, JobFailure};
use crate::service::store::Store;
use crate::service::{cases, similar, studies};
use pedinorm_registration::Image;
use serde_json::{Value, json};
use std::path::Path;

/// Checks that a deviation map can be computed for a case (answered before queuing a job).
pub fn check_deviation_request(store: &Store, case_id: i64, normdb: &Path) -> Result<(), ApiError> {
    let connection = store.lock();
    let case = cases::get(&connection, case_id)?;
    if matches!(case.status, cases::CaseStatus::Withdrawn | cases::CaseStatus::Rejected) {
        return Err(ApiError::Conflict(format!("case {case_id} is {}", case.status.as_str())));
    }
    let internals = studies::internals(&connection, case.study_id)?;
    if internals.status != "admitted" {
        return Err(ApiError::Conflict(format!(
            "study {} of case {case_id} is {}: it must be admitted by ingest first",
            case.study_id, internals.status
        )));
    }
    if let Err(reason) = consent::permits(consent::get(&connection, case.study_id)?.as_ref(), Database::A) {
        return Err(ApiError::Refused {
            message: "no consent for a deviation map".into(),
            reasons: vec![reason],
        });
    }
    if !normdb.is_file() {
        return Err(ApiError::Unavailable(
            "the normative database is missing: build or install it first".into(),
        ));
    }
    Ok(())
}

/// Computes the deviation maps of one case volume into `out_dir` (z-maps, clusters, PNG
/// montages, report.json) with the deviation pipeline.
fn run_deviation(
    normdb: &Path,
    (case_volume, case): (&Path, &Image<f32>),
    age_years: f64,
    sex: Option<&str>,
    out_dir: &Path,
    ctx: &JobContext,
) -> Result<Value, JobFailure> {
    use crate::pipeline::deviation::{DeviationOptions, run_case};
    ctx.progress(5.0, "reading the normative database")?;
    let db = pedinorm_templates::model::NormativeDb::read(normdb).map_err(|e| {
        tracing::error!("normative database: {e}");
        JobFailure::Failed("the normative database cannot be read".into())
    })?;
    let options = DeviationOptions {
        age_years,
        sex: sex.and_then(pedinorm_templates::stats::Sex::parse),
        max_regions: 30,
        site: crate::formats::dicom::sidecar::Sidecar::next_to(case_volume).and_then(|s| s.scanner_label()),
    };
    ctx.progress(20.0, "registering, scoring and writing maps and report")?;
    // Names in the report are service-level, never file paths of the archive.
    let result = run_case(&db, case, &options, "case", "normdb.h5", out_dir)
        .map_err(|e| JobFailure::Failed(strip_paths(&e.to_string(), out_dir)))?;
    Ok(json!({
        "bracket": result.bracket,
        "clusters": result.clusters.iter().filter(|c| c.significant).count(),
        "warnings": result.warnings,
        "registration_similarity": result.registration_similarity,
        "reliable": result.reliability.reliable,
        "reliability_reasons": result.reliability.reasons,
        "reliability_notes": result.reliability.notes,
        "site": result.site_adjustment.as_ref().map(|a| a.describe()),
    }))
}

pub(super) fn deviation_job(
    config: &ServiceConfig,
    store: &Store,
    ctx: &JobContext,
) -> Result<Value, JobFailure> {
    let case_id = param_i64(ctx, "case_id")?;
    // Checked again: consent may have been withdrawn while the job waited.
    check_deviation_request(store, case_id, &config.normdb_path())
        .map_err(|e| JobFailure::Failed(e.to_string()))?;
    let (study_id, internals) = {
        let connection = store.lock();
        let case = cases::get(&connection, case_id).map_err(JobFailure::from)?;
        (case.study_id, studies::internals(&connection, case.study_id).map_err(JobFailure::from)?)
    };
    let stored =
        internals.stored_path.ok_or_else(|| JobFailure::Failed("the study has no stored volume".into()))?;
    let study_dir = archive_dir(config).join(stored);
    let volume = study_volume(&study_dir)
        .ok_or_else(|| JobFailure::Failed("the study has no T1w or T2w volume".into()))?;
    let age = internals.metadata["age_years"]
        .as_f64()
        .ok_or_else(|| JobFailure::Failed("the study's age is unknown".into()))?;
    let sex = internals.metadata["sex"].as_str().map(str::to_string);
    ctx.progress(2.0, "reading the case")?;
    let case = crate::formats::nifti::read_image(&volume)
        .map_err(|_| JobFailure::Failed("the case volume cannot be read".into()))?;
    let summary =
        run_deviation(&config.normdb_path(), (&volume, &case), age, sex.as_deref(), &ctx.work_dir, ctx)?;
    // The case's signature for similar-case queries. The maps stand without it: a report that
    // does not read back is logged, and `pedinorm serve --rebuild-similar` tries again.
    if let Err(message) = similar::record_from_outputs(&store.lock(), case_id, ctx.id, &ctx.work_dir) {
        tracing::error!("deviation job {}: case {case_id}: no similar-case signature: {message}", ctx.id);
    }
    ctx.progress(90.0, "aligning the study's other contrasts onto the scored volume")?;
    let contrasts = align_other_contrasts(&study_dir, &case, &ctx.work_dir)?;
    Ok(json!({
        "case_id": case_id, "study_id": study_id, "age_years": age, "summary": summary, "contrasts": contrasts,
    }))
}

/// The study's other contrasts (see [`crate::ingest::store::viewable_volumes`]) aligned onto
/// the scored volume (rigid, mutual information) and written beside the maps, so that the
/// viewer shows the maps on every contrast in place even when the head moved between series.
/// A contrast that cannot be aligned is listed with why and left out.
fn align_other_contrasts(
    study_dir: &Path,
    reference: &Image<f32>,
    out_dir: &Path,
) -> Result<Vec<Value>, JobFailure> {
    use crate::service::viewer::files::aligned_contrast_name;
    let volumes = crate::ingest::store::viewable_volumes(study_dir);
    if volumes.len() < 2 {
        return Ok(Vec::new());
    }
    let mut listed = Vec::new();
    for (index, (path, class)) in volumes.iter().enumerate().skip(1) {
        let class = class.map_or("volume", |c| c.as_str());
        let aligned = crate::formats::nifti::read_image(path).map_err(|e| e.to_string()).and_then(|moving| {
            pedinorm_registration::within_subject::align_contrast(reference, &moving)
                .map_err(|e| e.to_string())
        });
        match aligned {
            Ok(image) => {
                let name = aligned_contrast_name(index + 1);
                let target = out_dir.join(&name);
                crate::formats::nifti::write_image(&target, &image, crate::formats::nifti::VoxelType::F32)
                    .map_err(|_| JobFailure::Failed(format!("cannot write {name}")))?;
                listed.push(json!({ "contrast": class, "aligned": name }));
            }
            Err(why) => {
                tracing::warn!("a {class} volume of the study could not be aligned: {why}");
                listed
                    .push(json!({ "contrast": class, "aligned": null, "why": strip_paths(&why, study_dir) }));
            }
        }
    }
    Ok(listed)
}
