//! `pedinorm volumes`: the regional volumes of one subject against a normative database (its
//! image mapped to the bracket template of its age, the bracket's atlas and tissue priors pulled
//! onto its own grid, its image segmented with them; `pedinorm_templates::model::regional`).
//! This module reads the inputs and writes the folder, which appears whole.

use crate::formats::measures::{MeasuresError, SubjectMeasures, format_measures};
use crate::formats::nifti::{NiftiIoError, VoxelType, read_image, write_image};
use crate::normdb::{NormDbError, NormDbFile};
use crate::pipeline::steps::{is_valid_name, write_folder_atomically};
use pedinorm_registration::Image;
use pedinorm_templates::centiles::{Covariates, MeasureTable};
use pedinorm_templates::model::regional::{RegionalVolumes, subject_volumes};
use pedinorm_templates::model::{ModelError, NormativeDb, TISSUES};
use pedinorm_templates::stats::Sex;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to measure.
#[derive(Debug, Clone)]
pub struct VolumesRequest {
    /// The normative database.
    pub normdb: PathBuf,
    /// The subject's T1-weighted image.
    pub image: PathBuf,
    /// Age at scan (years).
    pub age_years: f64,
    /// Sex, when known.
    pub sex: Option<Sex>,
    /// Scanner site, when known.
    pub site: Option<String>,
    /// The subject's name in the table (a pseudonym); default: the image's file name.
    pub subject: Option<String>,
}

/// Why the volumes could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    /// The image cannot be read or an output written (the error names the file).
    #[error(transparent)]
    Image(#[from] NiftiIoError),
    /// The database cannot be read.
    #[error(transparent)]
    NormDb(#[from] NormDbError),
    /// Mapping, segmentation or measurement failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The request does not hold together (names the argument and the rule).
    #[error("{0}")]
    Request(String),
    /// The measures table cannot be written.
    #[error(transparent)]
    Measures(#[from] MeasuresError),
    /// The output folder cannot be made, filled or moved into place.
    #[error("{path}: {source}")]
    Write {
        /// The folder or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An I/O error inside the temporary folder (named by [`run_volumes`]).
    #[error("output folder: {0}")]
    Folder(#[from] std::io::Error),
}

/// One measure of `volumes.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// Stable name (see `docs/segmentation.md`).
    pub name: String,
    /// Volume in ml.
    pub volume_ml: f64,
}

/// What `volumes.json` (and `done.json`) record.
#[derive(Debug, Clone, Serialize)]
pub struct VolumesSummary {
    /// The subject's name in the table.
    pub subject: String,
    /// Age at scan (years).
    pub age_years: f64,
    /// Sex (`F`, `M`, or empty).
    pub sex: String,
    /// Site (may be empty).
    pub site: String,
    /// The bracket whose template the subject was mapped to.
    pub bracket: String,
    /// The atlas naming the regions (empty without one).
    pub atlas: String,
    /// Correlation of the warped subject with the template (registration QC).
    pub registration_similarity: f64,
    /// Warnings (age outside every bracket, poor registration).
    pub warnings: Vec<String>,
    /// The volumes, in table order.
    pub measures: Vec<Measure>,
    /// Each modelled measure placed on the database's growth-chart centiles at the subject's
    /// age, sex and site (empty: the database has no centile models).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub centiles: Vec<pedinorm_templates::centiles::PlacedMeasure>,
    /// |z| beyond which a measure is flagged (absent without centile models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag_limit_z: Option<f64>,
}

/// An age in years a subject can have (0–25).
fn check_age(age_years: f64) -> Result<(), VolumesError> {
    if age_years.is_finite() && (0.0..=25.0).contains(&age_years) {
        Ok(())
    } else {
        Err(VolumesError::Request(format!("--age: {age_years} is not an age in years (0–25)")))
    }
}

/// A subject's regional volumes in memory: what `volumes.json` records, the tissue maps and
/// labels on the image's grid, and the measures.
#[derive(Debug, Clone)]
pub struct MeasuredVolumes {
    /// What `volumes.json` records.
    pub summary: VolumesSummary,
    /// Tissue probabilities ([`TISSUES`] order), labels and measures on the image's grid.
    pub volumes: RegionalVolumes,
}

/// Measures the subject `image` (named `subject` in the table) against `db`: the one path of
/// `pedinorm volumes` (after reading its files) and of the Python package.
pub fn measure_volumes(
    db: &NormativeDb,
    image: &Image<f32>,
    subject: &str,
    age_years: f64,
    sex: Option<Sex>,
    site: Option<&str>,
) -> Result<MeasuredVolumes, VolumesError> {
    check_age(age_years)?;
    if !is_valid_name(subject) {
        return Err(VolumesError::Request(format!(
            "--subject: {subject:?} must be letters, digits, `-`, `_` or `.`"
        )));
    }
    let result = subject_volumes(db, image, age_years, subject)?;
    let volumes = result.volumes;
    let summary = VolumesSummary {
        subject: subject.to_owned(),
        age_years,
        sex: sex.map(|s| s.code().to_owned()).unwrap_or_default(),
        site: site.unwrap_or_default().to_owned(),
        bracket: result.bracket,
        atlas: db.atlas.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
        registration_similarity: result.similarity,
        warnings: result.warnings,
        measures: volumes
            .measures
            .names
            .iter()
            .zip(&volumes.measures.values_ml)
            .map(|(name, &volume_ml)| Measure { name: name.clone(), volume_ml })
            .collect(),
        centiles: db
            .centiles
            .as_ref()
            .map(|set| {
                let covariates = Covariates { age: age_years, sex, site: site.map(str::to_owned) };
                set.place(&volumes.measures.pairs(), &covariates)
            })
            .unwrap_or_default(),
        flag_limit_z: db.centiles.as_ref().map(|set| set.limit.z),
    };
    Ok(MeasuredVolumes { summary, volumes })
}

/// Measures the subject and writes into `out_dir`: `volumes.tsv` (a one-row measures table:
/// `subject age sex site <measure>…`, what `pedinorm centiles score` reads), `volumes.json`,
/// the tissue probabilities `csf.nii.gz`, `gm.nii.gz`, `wm.nii.gz` and, with an atlas,
/// `labels.nii.gz`, all on the image's grid.
pub fn run_volumes(request: &VolumesRequest, out_dir: &Path) -> Result<VolumesSummary, VolumesError> {
    // Checked before the database is read: a wrong age fails at once.
    check_age(request.age_years)?;
    let subject = match &request.subject {
        Some(name) => name.clone(),
        None => request
            .image
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gz").trim_end_matches(".nii").to_string())
            .unwrap_or_default(),
    };
    let db = NormativeDb::read(&request.normdb)?;
    let image = read_image(&request.image)?;
    let MeasuredVolumes { summary, volumes } =
        measure_volumes(&db, &image, &subject, request.age_years, request.sex, request.site.as_deref())?;
    let table = SubjectMeasures {
        subjects: vec![subject],
        table: MeasureTable {
            measures: volumes.measures.names.clone(),
            covariates: vec![Covariates {
                age: request.age_years,
                sex: request.sex,
                site: request.site.clone(),
            }],
            values: volumes.measures.values_ml.iter().map(|&v| vec![v]).collect(),
        },
    };
    write_folder_atomically(out_dir, |tmp| -> Result<VolumesSummary, VolumesError> {
        std::fs::create_dir_all(tmp)?;
        for (name, map) in TISSUES.iter().zip(&volumes.tissues) {
            write_image(&tmp.join(format!("{name}.nii.gz")), map, VoxelType::F32)?;
        }
        if let Some(labels) = &volumes.labels {
            write_image(&tmp.join("labels.nii.gz"), labels, VoxelType::I16)?;
        }
        let write = |name: &str, bytes: &[u8]| {
            let path = tmp.join(name);
            std::fs::write(&path, bytes).map_err(|source| VolumesError::Write { path, source })
        };
        write("volumes.tsv", format_measures(&table).as_bytes())?;
        write("volumes.json", &serde_json::to_vec_pretty(&summary).expect("a summary serialises"))?;
        Ok(summary.clone())
    })
    // Making, filling or renaming the folder failed: name the folder.
    .map_err(|error| match error {
        VolumesError::Folder(source) => VolumesError::Write { path: out_dir.to_owned(), source },
        other => other,
    })
}
