//! What the viewer of a deviation job may fetch: the job's maps and report, the case's own
//! volumes (one per contrast of its study) and the template of its age bracket, by plain names
//! the page knows — never a path. Case volumes and the template are encoded afresh (in memory)
//! from their voxels and affine, so no header text of the archive reaches the browser.

use crate::formats::nifti::{VoxelType, image_to_gzip_bytes, read_image};
use crate::ingest::series_class::SeriesClass;
use crate::service::error::ApiError;
use crate::service::jobs::{JobInfo, JobState, output_files};
use crate::service::layout::StateEntry;
use crate::service::state::AppState;
use crate::service::studies;
use pedinorm_registration::Image;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Mutex;

/// The maps a page overlays: (channel, map on the case's grid, map in template space).
pub const OVERLAYS: [(&str, &str, &str); 2] = [
    ("intensity", "intensity_z_native.nii.gz", "intensity_z.nii.gz"),
    ("logjac", "logjac_z_native.nii.gz", "logjac_z.nii.gz"),
];

/// The name under which the template of the job's bracket is served.
pub const TEMPLATE: &str = "template.nii.gz";

/// One of the case's volumes as the page lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CaseImage {
    /// The name to fetch it by (`case-1.nii.gz`, …; the first is the volume the job scored).
    pub name: String,
    /// Its contrast (`T1w`, `T2w`, `FLAIR`, or `volume` when unclassified).
    pub contrast: String,
}

/// Everything the page loads for a job, by name.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Manifest {
    /// The deviation job.
    pub job: i64,
    /// The case's volumes, the scored one first.
    pub images: Vec<CaseImage>,
    /// Per channel, the z-map on the case's grid and in template space.
    pub overlays: Vec<OverlayNames>,
    /// The template of the job's bracket (`template.nii.gz`), when the installed database
    /// still has that bracket.
    pub template: Option<String>,
    /// Growth charts and the regional summary sheet (SVG), when the job wrote them.
    pub charts: Vec<String>,
}

/// The two maps of one channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OverlayNames {
    /// `intensity` or `logjac`.
    pub channel: String,
    /// On the case's grid.
    pub native: String,
    /// In template space.
    pub template: String,
}

/// A file served to the viewer: its bytes and content type.
pub struct Served {
    /// The content.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub content_type: &'static str,
}

/// The finished deviation job `id`: 404 when it is another kind of job, 409 while not done
/// (the guard has already answered 404 for ids that do not exist or belong elsewhere).
pub fn deviation_job(state: &AppState, id: i64) -> Result<JobInfo, ApiError> {
    let job = state.jobs.get(id)?.ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))?;
    if job.kind != "deviation" {
        return Err(ApiError::NotFound(format!(
            "job {id} is not a deviation map: the viewer shows only those"
        )));
    }
    if job.state != JobState::Done {
        return Err(ApiError::Conflict(format!("job {id} is not done: the viewer opens once it is")));
    }
    Ok(job)
}

/// Whether `name` is a plain file name (no separators, no dot files): anything else is 400.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain { Ok(()) } else { Err(ApiError::BadRequest("`name` must be a plain file name".into())) }
}

/// The page's manifest of job `job`.
pub fn manifest(state: &AppState, job: &JobInfo) -> Result<Manifest, ApiError> {
    let outputs: Vec<String> =
        output_files(&state.jobs.output_dir(job.id)).into_iter().map(|(name, _)| name).collect();
    let images = case_volumes(state, job)?
        .iter()
        .enumerate()
        .map(|(i, (_, class))| CaseImage {
            name: format!("case-{}.nii.gz", i + 1),
            contrast: class.map_or("volume", SeriesClass::as_str).to_string(),
        })
        .collect();
    let overlays = OVERLAYS
        .iter()
        .filter(|(_, native, template)| {
            outputs.iter().any(|o| o == native) && outputs.iter().any(|o| o == template)
        })
        .map(|(channel, native, template)| OverlayNames {
            channel: channel.to_string(),
            native: native.to_string(),
            template: template.to_string(),
        })
        .collect();
    let template = bracket(job).filter(|b| template_image(state, b).is_ok()).map(|_| TEMPLATE.to_string());
    let charts = outputs.into_iter().filter(|name| name.ends_with(".svg")).collect();
    Ok(Manifest { job: job.id, images, overlays, template, charts })
}

/// One file of the viewer of `job` by name: an output (NIfTI, `report.json`, SVG charts), a
/// case volume (`case-N.nii.gz`) or the template; 404 for any other name.
pub fn read(state: &AppState, job: &JobInfo, name: &str) -> Result<Served, ApiError> {
    check_name(name)?;
    let missing = || ApiError::NotFound(format!("job {} has no viewer file named {name}", job.id));
    if name == TEMPLATE {
        let bracket = bracket(job).ok_or_else(missing)?;
        return Ok(Served { bytes: template_image(state, &bracket)?, content_type: "application/gzip" });
    }
    if let Some(index) = name.strip_prefix("case-").and_then(|n| n.strip_suffix(".nii.gz")) {
        let index: usize = index.parse().map_err(|_| missing())?;
        let volumes = case_volumes(state, job)?;
        let (path, _) = index.checked_sub(1).and_then(|i| volumes.get(i)).ok_or_else(missing)?;
        // Another contrast as the job aligned it onto the scored volume, when it did.
        let aligned = state.jobs.output_dir(job.id).join(aligned_contrast_name(index));
        let path = if index > 1 && aligned.is_file() { &aligned } else { path };
        let image = read_image(path).map_err(ApiError::internal)?;
        return Ok(Served { bytes: nifti_bytes(&image)?, content_type: "application/gzip" });
    }
    let content_type = if name.ends_with(".nii.gz") {
        "application/gzip"
    } else if name == "report.json" {
        "application/json"
    } else if name.ends_with(".svg") {
        "image/svg+xml"
    } else {
        return Err(missing());
    };
    let dir = state.jobs.output_dir(job.id);
    if !output_files(&dir).iter().any(|(n, _)| n == name) {
        return Err(missing());
    }
    let bytes = std::fs::read(dir.join(name)).map_err(ApiError::internal)?;
    Ok(Served { bytes, content_type })
}

/// The job output holding case volume `index` (2, 3, …: the study's other contrasts) aligned
/// onto the scored volume by the deviation job.
pub fn aligned_contrast_name(index: usize) -> String {
    format!("case-{index}_aligned.nii.gz")
}

/// The template bracket the job's case was scored in.
fn bracket(job: &JobInfo) -> Option<String> {
    job.result.as_ref()?["summary"]["bracket"].as_str().map(str::to_string)
}

/// The case's volumes in the archive (see [`crate::ingest::store::viewable_volumes`]): the one
/// the job scored first (its z-maps lie on its grid), then the other contrasts.
fn case_volumes(state: &AppState, job: &JobInfo) -> Result<Vec<(PathBuf, Option<SeriesClass>)>, ApiError> {
    let study = job
        .result
        .as_ref()
        .and_then(|r| r["study_id"].as_i64())
        .ok_or_else(|| ApiError::NotFound(format!("job {} does not name its study", job.id)))?;
    let stored = studies::internals(&state.store.lock(), study)?.stored_path;
    let Some(stored) = stored else { return Ok(Vec::new()) };
    let study_dir = state.config.state_path(StateEntry::Archive).join(stored);
    let volumes = crate::ingest::store::viewable_volumes(&study_dir);
    Ok(volumes)
}

/// The template of `bracket` in the installed database as gzipped NIfTI, kept while the
/// database file is unchanged (reading the database is the slow part).
fn template_image(state: &AppState, bracket: &str) -> Result<Vec<u8>, ApiError> {
    type Cached = (PathBuf, std::time::SystemTime, String, Vec<u8>);
    static CACHE: Mutex<Option<Cached>> = Mutex::new(None);
    let path = state.config.normdb_path();
    let unavailable =
        || ApiError::NotFound(format!("the installed database has no template of bracket {bracket}"));
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).map_err(|_| unavailable())?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, m, b, bytes)) = cache.as_ref()
        && *p == path
        && *m == modified
        && b == bracket
    {
        return Ok(bytes.clone());
    }
    use crate::normdb::NormDbFile;
    let db = pedinorm_templates::model::NormativeDb::read(&path).map_err(|e| {
        tracing::error!("normative database: {e}");
        ApiError::Unavailable("the normative database cannot be read".into())
    })?;
    let template = db.brackets.iter().find(|b| b.name == bracket).ok_or_else(unavailable)?;
    let bytes = nifti_bytes(&template.template)?;
    *cache = Some((path, modified, bracket.to_string(), bytes.clone()));
    Ok(bytes)
}

/// An image as gzipped NIfTI bytes (float voxels, its affine, no header text).
fn nifti_bytes(image: &Image<f32>) -> Result<Vec<u8>, ApiError> {
    image_to_gzip_bytes(image, VoxelType::F32).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain() {
        for good in ["report.json", "case-1.nii.gz", "growth_total_brain.svg"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a b", &"x".repeat(201)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
