//! The normative database: its summary, and the build job (extend the installed database or
//! build a new one from consented database B studies).

use super::{BuildMode, BuildRequest, archive_dir, strip_paths, study_volume};
use crate::normdb::NormDbFile;
use crate::service::config::ServiceConfig;
use crate::service::error::ApiError;
use crate::service::jobs::{JobContext, JobFailure};
use crate::service::store::Store;
use crate::service::studies;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use utoipa::ToSchema;

/// One age bracket of the normative database.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BracketSummary {
    /// Bracket name.
    pub name: String,
    /// Lower age bound (years, inclusive).
    pub min_years: f64,
    /// Upper age bound (years, exclusive).
    pub max_years: f64,
    /// Template grid dimensions.
    pub dims: [usize; 3],
    /// Template voxel size (mm).
    pub spacing_mm: [f64; 3],
    /// Subjects in this bracket.
    pub subjects: usize,
}

/// Summary of the normative database.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NormdbSummary {
    /// Software that wrote it.
    pub software: String,
    /// Creation time.
    pub created_utc: String,
    /// Last modification.
    pub modified_utc: String,
    /// Subjects.
    pub subjects: usize,
    /// Whether calibration results are present.
    pub calibrated: bool,
    /// Age brackets.
    pub brackets: Vec<BracketSummary>,
    /// Operations recorded in the database, oldest first (creation, service builds with the
    /// studies they used).
    pub history: Vec<String>,
}

/// Reads (and caches by modification time) the normative database summary. The cache lock
/// is held during a read, so concurrent requests after a change wait for one read instead of
/// each reading the whole file.
pub fn normdb_summary(path: &Path) -> Result<NormdbSummary, ApiError> {
    static CACHE: Mutex<Option<(PathBuf, std::time::SystemTime, NormdbSummary)>> = Mutex::new(None);
    // A missing database is an absent resource (404); one that cannot be read is a 503.
    let missing =
        || ApiError::NotFound("the normative database is missing: build or install it first".into());
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|_| missing())?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, m, summary)) = cache.as_ref()
        && p == path
        && *m == modified
    {
        return Ok(summary.clone());
    }
    let summary = read_normdb_summary(path)?;
    *cache = Some((path.to_path_buf(), modified, summary.clone()));
    Ok(summary)
}

fn read_normdb_summary(path: &Path) -> Result<NormdbSummary, ApiError> {
    let db = pedinorm_templates::model::NormativeDb::read(path).map_err(|e| {
        tracing::error!("normative database: {e}");
        ApiError::Unavailable("the normative database cannot be read".into())
    })?;
    let brackets = db
        .brackets
        .iter()
        .map(|bracket| BracketSummary {
            name: bracket.name.clone(),
            min_years: bracket.min_years,
            max_years: bracket.max_years,
            dims: bracket.template.grid().dims(),
            spacing_mm: bracket.template.grid().spacing(),
            subjects: db.subjects.iter().filter(|s| s.bracket == bracket.name).count(),
        })
        .collect();
    Ok(NormdbSummary {
        software: db.metadata.software.clone(),
        created_utc: db.metadata.created_utc.clone(),
        modified_utc: db.metadata.modified_utc.clone(),
        subjects: db.subjects.len(),
        calibrated: db.calibration.is_some(),
        brackets,
        history: db.metadata.history.clone(),
    })
}

/// A consented, admitted database B study ready to enter a build.
struct BuildStudy {
    study_id: i64,
    volume: PathBuf,
    pseudonym: String,
    age_years: f64,
    sex: pedinorm_templates::stats::Sex,
}

/// The studies a build may use: admitted to database B with standing consent (withdrawn ones
/// excluded), with their volume, age and sex; the others come back with the reason.
fn select_build_studies(
    config: &ServiceConfig,
    store: &Store,
) -> Result<(Vec<BuildStudy>, Vec<Value>), JobFailure> {
    let selected = studies::consented_b_studies(&store.lock()).map_err(JobFailure::from)?;
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (study_id, stored) in selected {
        let metadata = studies::internals(&store.lock(), study_id).map_err(JobFailure::from)?.metadata;
        let pseudonym = metadata["pseudonym"].as_str().unwrap_or_default().to_string();
        let age = metadata["age_years"].as_f64();
        let sex = metadata["sex"].as_str().and_then(pedinorm_templates::stats::Sex::parse);
        let volume = study_volume(&archive_dir(config).join(stored));
        match (volume, age, sex, pseudonym.is_empty()) {
            (Some(volume), Some(age_years), Some(sex), false) => {
                usable.push(BuildStudy { study_id, volume, pseudonym, age_years, sex })
            }
            (None, ..) => skipped.push(json!({ "study": study_id, "reason": "no T1w or T2w volume" })),
            _ => skipped.push(json!({ "study": study_id, "reason": "age, sex or pseudonym unknown" })),
        }
    }
    Ok((usable, skipped))
}

/// The scanner label of a study's volume (empty when its sidecar names none): normals are
/// grouped by it for site effects.
fn scanner_of(volume: &std::path::Path) -> String {
    crate::formats::dicom::sidecar::Sidecar::next_to(volume)
        .and_then(|s| s.scanner_label())
        .unwrap_or_default()
}

fn read_build_image(study: &BuildStudy) -> Result<pedinorm_registration::Image<f32>, JobFailure> {
    crate::formats::nifti::read_image(&study.volume)
        .map_err(|_| JobFailure::Failed(format!("the volume of study {} cannot be read", study.study_id)))
}

/// Extends the installed normative database with the given studies (each registered to the
/// template of its age bracket, statistics updated).
fn extend_normdb(
    config: &ServiceConfig,
    studies: &[BuildStudy],
    ctx: &JobContext,
) -> Result<(pedinorm_templates::model::NormativeDb, Vec<i64>, Vec<Value>), JobFailure> {
    use pedinorm_templates::model::{NormalSubject, add_subject};
    let normdb = config.normdb_path();
    if !normdb.is_file() {
        return Err(JobFailure::Failed(
            "the normative database is missing: build one with `mode: scratch` or install one built with `pedinorm normdb build`".into(),
        ));
    }
    let mut db = pedinorm_templates::model::NormativeDb::read(&normdb).map_err(|e| {
        tracing::error!("normative database: {e}");
        JobFailure::Failed("the normative database cannot be read".into())
    })?;
    let mut added = Vec::new();
    let mut skipped = Vec::new();
    for (index, study) in studies.iter().enumerate() {
        let percent = 5.0 + 90.0 * index as f64 / studies.len() as f64;
        ctx.progress(percent, &format!("adding study {}", study.study_id))?;
        if db.subjects.iter().any(|s| s.pseudonym == study.pseudonym) {
            skipped.push(json!({ "study": study.study_id, "reason": "already in the database" }));
            continue;
        }
        let subject = NormalSubject {
            pseudonym: study.pseudonym.clone(),
            age_years: study.age_years,
            sex: study.sex,
            scanner: scanner_of(&study.volume),
            image: read_build_image(study)?,
        };
        match add_subject(&mut db, &subject, &crate::normdb::now_utc()) {
            Ok(_) => added.push(study.study_id),
            Err(error) => skipped.push(json!({ "study": study.study_id, "reason": error.to_string() })),
        }
    }
    db.metadata.touch(&format!("service build (extend): added studies {added:?}"), &crate::normdb::now_utc());
    Ok((db, added, skipped))
}

/// Builds a new normative database from the studies: for each bracket a template from its
/// studies (local batch executor, resumable folders under `templates/`), then every study
/// mapped to its bracket's template, statistics and leave-one-out calibration.
fn scratch_normdb(
    config: &ServiceConfig,
    request: &BuildRequest,
    studies: Vec<BuildStudy>,
    mut skipped: Vec<Value>,
    ctx: &JobContext,
) -> Result<(pedinorm_templates::model::NormativeDb, Vec<i64>, Vec<Value>), JobFailure> {
    use crate::batch::LocalExecutor;
    use crate::pipeline::database::{BracketTemplate, MIN_TEMPLATE_SUBJECTS, build_database};
    use crate::pipeline::steps::default_program;
    use crate::pipeline::template_build::{SubjectInput, SubjectSource, build_template};
    use pedinorm_templates::age::AgeBracket;
    use pedinorm_templates::model::{BuildOptions, NormalSubject};
    use pedinorm_templates::template::{RegistrationSettings, TemplateConfig, TemplateTarget};

    let inside = |study: &BuildStudy| {
        request.brackets.iter().any(|b| study.age_years >= b.min_years && study.age_years < b.max_years)
    };
    let (used, outside): (Vec<BuildStudy>, Vec<BuildStudy>) = studies.into_iter().partition(inside);
    for study in &outside {
        skipped.push(json!({ "study": study.study_id, "reason": "age outside every requested bracket" }));
    }
    let mapping = {
        let mut mapping = config.compute.mapping();
        mapping.smoothing_fwhm_mm = request.smoothing_fwhm_mm.unwrap_or(mapping.smoothing_fwhm_mm);
        mapping
    };
    let program = config.compute.program.clone().unwrap_or_else(default_program);
    let executor = LocalExecutor::new(program, config.compute.template_jobs);
    let brackets_total = request.brackets.len() as f64;
    let mut inputs = Vec::new();
    for (index, bracket) in request.brackets.iter().enumerate() {
        let members: Vec<&BuildStudy> = used
            .iter()
            .filter(|s| s.age_years >= bracket.min_years && s.age_years < bracket.max_years)
            .collect();
        if members.len() < MIN_TEMPLATE_SUBJECTS {
            return Err(JobFailure::Failed(format!(
                "bracket {} has {} admitted database B studies with consent; a template needs at least {MIN_TEMPLATE_SUBJECTS}",
                bracket.name,
                members.len()
            )));
        }
        let base = 5.0 + 50.0 * index as f64 / brackets_total;
        ctx.progress(base, &format!("template {}", bracket.name))?;
        let subjects: Vec<SubjectInput> = members
            .iter()
            .map(|s| SubjectInput {
                id: format!("study-{}", s.study_id),
                source: SubjectSource::Path(s.volume.clone()),
                age_years: s.age_years,
            })
            .collect();
        // The coarsest voxel spacing of the members: registration never works finer than the data.
        let mut spacing = 0.0f64;
        for study in &members {
            let header = crate::formats::nifti::read_image(&study.volume).map_err(|_| {
                JobFailure::Failed(format!("the volume of study {} cannot be read", study.study_id))
            })?;
            spacing = spacing.max(header.grid().spacing().into_iter().fold(0.0, f64::max));
        }
        let template_config = TemplateConfig {
            target: TemplateTarget::Bracket(AgeBracket {
                name: bracket.name.clone(),
                min_years: bracket.min_years,
                max_years: bracket.max_years,
            }),
            iterations: request.template_iterations.unwrap_or(2),
            template_spacing_mm: Some(spacing),
            registration: RegistrationSettings {
                spacing_mm: spacing.max(RegistrationSettings::default().spacing_mm),
                affine_iterations: mapping.affine_iterations.clone(),
                deformable_iterations: mapping.deformable_iterations.clone(),
            },
            ..TemplateConfig::default()
        };
        let span = 50.0 / brackets_total;
        let template = build_template(
            &subjects,
            &template_config,
            &ctx.work_dir.join("templates").join(&bracket.name),
            &executor,
            1,
            &|event| {
                if let crate::batch::ProgressEvent::StageProgress { stage, done, total } = event {
                    let fraction = *done as f64 / (*total).max(1) as f64;
                    let _ =
                        ctx.progress(base + span * fraction, &format!("template {}: {stage}", bracket.name));
                }
            },
        )
        .map_err(|e| {
            JobFailure::Failed(strip_paths(&format!("template {}: {e}", bracket.name), &ctx.work_dir))
        })?;
        inputs.push(BracketTemplate {
            name: bracket.name.clone(),
            min_years: bracket.min_years,
            max_years: bracket.max_years,
            template: template.template,
        });
    }
    ctx.progress(55.0, "mapping the studies to their templates")?;
    let normals = used
        .iter()
        .map(|s| {
            Ok(NormalSubject {
                pseudonym: s.pseudonym.clone(),
                age_years: s.age_years,
                sex: s.sex,
                scanner: scanner_of(&s.volume),
                image: read_build_image(s)?,
            })
        })
        .collect::<Result<Vec<_>, JobFailure>>()?;
    let defaults = BuildOptions::default();
    let options = BuildOptions {
        mapping,
        nodes_per_bracket: request.nodes_per_bracket.unwrap_or(defaults.nodes_per_bracket),
        voxel_rate: request.voxel_rate.unwrap_or(defaults.voxel_rate),
        cluster_rate: request.cluster_rate.unwrap_or(defaults.cluster_rate),
        ..defaults
    };
    let mut db = build_database(&normals, inputs, None, &options, &|_| {})
        .map_err(|e| JobFailure::Failed(e.to_string()))?;
    let ids: Vec<i64> = used.iter().map(|s| s.study_id).collect();
    db.metadata
        .touch(&format!("service build (scratch): built from studies {ids:?}"), &crate::normdb::now_utc());
    Ok((db, ids, skipped))
}

pub(super) fn normdb_build_job(
    config: &ServiceConfig,
    store: &Store,
    ctx: &JobContext,
) -> Result<Value, JobFailure> {
    let request: BuildRequest = serde_json::from_value(ctx.params.clone())?;
    request.validate().map_err(|e| JobFailure::Failed(e.to_string()))?;
    ctx.progress(1.0, "selecting consented database B studies")?;
    let (usable, skipped) = select_build_studies(config, store)?;
    if usable.is_empty() {
        return Err(JobFailure::Failed("no admitted database B study with consent is available".into()));
    }
    let (db, used, skipped) = match request.mode {
        BuildMode::Extend => {
            let (db, added, mut more) = extend_normdb(config, &usable, ctx)?;
            more.extend(skipped);
            (db, added, more)
        }
        BuildMode::Scratch => scratch_normdb(config, &request, usable, skipped, ctx)?,
    };
    ctx.progress(96.0, "writing the database")?;
    // Provenance: the studies this database was built from (withdrawn consent excluded), in
    // the job folder and in the database's own history.
    crate::atomic::write_bytes(
        &ctx.work_dir.join("studies.json"),
        serde_json::to_vec_pretty(&json!({ "mode": request.mode, "studies": used, "skipped": skipped }))?
            .as_slice(),
    )?;
    let output = ctx.work_dir.join("normdb.h5");
    db.write(&output).map_err(|e| JobFailure::Failed(strip_paths(&e.to_string(), &ctx.work_dir)))?;
    if request.install {
        // Copy into place atomically; the job folder keeps its own copy.
        let bytes = std::fs::read(&output)?;
        crate::atomic::write_bytes(&config.normdb_path(), &bytes)?;
    }
    Ok(json!({
        "mode": request.mode,
        "studies": used,
        "skipped": skipped,
        "subjects": db.subjects.len(),
        "brackets": db.brackets.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        "calibrated": db.calibration.is_some(),
        "installed": request.install,
    }))
}
