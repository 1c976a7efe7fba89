//! Deviation maps of one case against the normative database: the case is read, scored in
//! memory by [`compute_deviation`] (`pedinorm_templates::model::score`: mapping into the
//! template space of its age exactly as the normals were, z-scores, calibrated thresholds,
//! clusters, atlas regions, reliability), and its maps, montages and report are written.

use crate::formats::nifti::{VoxelType, read_image, write_image};
use crate::report::growth_chart::{GrowthChart, GrowthCurves, curves_svg};
use pedinorm_registration::Image;
use pedinorm_templates::model::case_local_volume::CaseLocalVolume;
use pedinorm_templates::model::case_regional::CaseRegional;
pub use pedinorm_templates::model::score::{
    AGE_MARGIN_FRACTION, AGE_MARGIN_MAX_YEARS, ClusterReport, DeviationOptions, DeviationResult,
    RegionReport, ScoreError, SdFloorReport, ThresholdReport, compute_deviation,
};
use pedinorm_templates::model::{Channel, NormativeDb};
use pedinorm_templates::safeguards::Reliability;
use pedinorm_templates::site_effects::SiteAdjustment;
use pedinorm_templates::stats::Sex;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why a deviation map could not be computed or written.
#[derive(Debug, thiserror::Error)]
pub enum DeviationError {
    /// Mapping the case into template space failed.
    #[error(transparent)]
    Mapping(#[from] pedinorm_templates::model::ModelError),
    /// The normative model cannot be evaluated for this case.
    #[error("normative model: {0}")]
    Model(String),
    /// The case could not be read.
    #[error("{path}: {message}")]
    Input {
        /// The case file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The case could not be scored.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// An output could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// A case that could not be read, scored or written, named by its file.
#[derive(Debug, thiserror::Error)]
#[error("case {case}: {error}")]
pub struct CaseError {
    /// The case's image file or DICOM series.
    pub case: PathBuf,
    /// What failed.
    pub error: DeviationError,
}

/// The JSON report of a deviation map.
#[derive(Debug, Clone, Serialize)]
pub struct Report<'a> {
    /// Software that produced it.
    pub software: String,
    /// Creation time (UTC).
    pub created_utc: String,
    /// The case file.
    pub case: String,
    /// The database file.
    pub normdb: String,
    /// Age used (years).
    pub age_years: f64,
    /// Sex given (`F`, `M` or null).
    pub sex: Option<&'static str>,
    /// Sex the model used (null: both pooled).
    pub model_sex: Option<&'static str>,
    /// Template bracket.
    pub bracket: &'a str,
    /// Effective number of normals.
    pub effective_normals: f64,
    /// Thresholds per channel with calibration figures.
    pub thresholds: &'a [ThresholdReport],
    /// Clusters.
    pub clusters: &'a [ClusterReport],
    /// Regions.
    pub regions: &'a [RegionReport],
    /// Registration QC.
    pub registration: serde_json::Value,
    /// Warnings (an unreliable comparison first).
    pub warnings: &'a [String],
    /// Whether the case lies within what the database's normals represent, index by index.
    pub reliability: &'a Reliability,
    /// SD floors per channel and where they bound.
    pub sd_floors: &'a [SdFloorReport],
    /// The scanner-site correction applied (absent: the database has no site effects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteReport<'a>>,
    /// Regional volumes (ml) and their centiles (absent: the database has no tissue priors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regional: Option<&'a CaseRegional>,
    /// Local volume change: the log-Jacobian z averaged over neighbourhoods of focal atrophy's
    /// size against the limit calibrated on the normals (absent: the database predates it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_volume: Option<&'a CaseLocalVolume>,
    /// Growth charts of total brain, intracranial volume and every flagged measure, as
    /// centile curves over age with the case's point (empty: no centile models).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub growth_charts: Vec<GrowthCurves>,
    /// Output files.
    pub outputs: Vec<String>,
    /// How to read the maps.
    pub interpretation: &'static str,
}

impl<'a> Report<'a> {
    /// The report of `result`, naming the case and the database as given and listing
    /// `outputs` (the files written beside it; none for a result kept in memory).
    pub fn new(
        result: &'a DeviationResult,
        case_name: &str,
        normdb_name: &str,
        outputs: Vec<String>,
    ) -> Self {
        Self::with_charts(result, case_name, normdb_name, outputs, growth_charts(result))
    }

    /// [`Report::new`] with the growth charts already drawn from `result`
    /// ([`growth_charts`]).
    fn with_charts(
        result: &'a DeviationResult,
        case_name: &str,
        normdb_name: &str,
        outputs: Vec<String>,
        growth_charts: Vec<GrowthCurves>,
    ) -> Self {
        Report {
            software: pedinorm_templates::model::software(),
            created_utc: crate::normdb::now_utc(),
            case: case_name.to_owned(),
            normdb: normdb_name.to_owned(),
            age_years: result.age_years,
            sex: result.sex.map(|s| s.code()),
            model_sex: result.model_sex.map(|s| s.code()),
            bracket: &result.bracket,
            effective_normals: result.effective_n,
            thresholds: &result.thresholds,
            clusters: &result.clusters,
            regions: &result.regions,
            registration: serde_json::json!({
                "similarity_to_template": result.registration_similarity,
                "affine_template_to_case": (0..4).map(|r| (0..4).map(|c| result.maps.affine.matrix()[(r, c)]).collect::<Vec<f64>>()).collect::<Vec<_>>(),
                "max_displacement_mm": result.maps.forward.max_norm(),
            }),
            warnings: &result.warnings,
            reliability: &result.reliability,
            sd_floors: &result.sd_floors,
            site: result
                .site_adjustment
                .as_ref()
                .map(|a| SiteReport { adjustment: a, description: a.describe() }),
            regional: result.regional.as_ref(),
            local_volume: result.local_volume.as_ref(),
            growth_charts,
            outputs,
            interpretation: "z = (case − normative mean at the case's age and sex) / normative SD, voxelwise in template \
                             space; intensity: normalized T1 signal; logjac: log of local volume of the case relative to the \
                             template (positive = larger, e.g. enlarged ventricles; negative = smaller, e.g. atrophy). \
                             Clusters are 26-connected voxels beyond the calibrated |z| threshold; 'significant' clusters \
                             exceed the cluster mass (sum of |z| minus the threshold over the cluster, so extent and height \
                             both count) that held-out normals reach at the stated rate. local_volume: the logjac z averaged \
                             over Gaussian neighbourhoods (sigma_mm) and divided by the normals' spread; a finding is a \
                             region beyond the limit that held-out normals pass anywhere at family_rate (loss = atrophy). \
                             When reliability.reliable is \
                             false the case lies outside what the normals represent (reasons listed) and no map or cluster \
                             of this report should be read as a finding.",
        }
    }
}

/// The site correction of a report.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport<'a> {
    /// What was applied.
    #[serde(flatten)]
    pub adjustment: &'a SiteAdjustment,
    /// The same in one sentence.
    pub description: String,
}

/// Names of the files [`write_outputs`] writes.
pub const OUTPUT_FILES: [&str; 7] = [
    "intensity_z.nii.gz",
    "logjac_z.nii.gz",
    "intensity_z_native.nii.gz",
    "logjac_z_native.nii.gz",
    "clusters.nii.gz",
    "clusters_native.nii.gz",
    "report.json",
];

/// The montage banner of an unreliable comparison: what failed, in the montage's font.
fn unreliable_banner(reliability: &Reliability) -> String {
    let mut what: Vec<String> =
        reliability.indices.iter().filter(|a| a.flagged).map(|a| a.name.clone()).collect();
    if reliability.reasons.iter().any(|r| r.contains("age")) {
        what.insert(0, "age".into());
    }
    format!("UNRELIABLE COMPARISON - CASE OUTSIDE THE NORMALS ({}) - SEE REPORT.JSON", what.join(", "))
}

/// Writes the NIfTI maps, the PNG montages and `report.json` into `out_dir` (each atomically).
pub fn write_outputs(
    result: &DeviationResult,
    case: &Image<f32>,
    case_name: &str,
    normdb_name: &str,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, DeviationError> {
    let werr = |path: &Path, message: String| DeviationError::Write { path: path.to_owned(), message };
    std::fs::create_dir_all(out_dir).map_err(|e| werr(out_dir, e.to_string()))?;
    let mut written = Vec::new();
    let images: [(&str, &Image<f32>, VoxelType); 6] = [
        ("intensity_z.nii.gz", &result.z_template[0], VoxelType::F32),
        ("logjac_z.nii.gz", &result.z_template[1], VoxelType::F32),
        ("intensity_z_native.nii.gz", &result.z_native[0], VoxelType::F32),
        ("logjac_z_native.nii.gz", &result.z_native[1], VoxelType::F32),
        ("clusters.nii.gz", &result.clusters_template, VoxelType::I16),
        ("clusters_native.nii.gz", &result.clusters_native, VoxelType::I16),
    ];
    for (name, image, voxel_type) in images {
        let path = out_dir.join(name);
        write_image(&path, image, voxel_type).map_err(|e| werr(&path, e.to_string()))?;
        written.push(path);
    }
    for channel in Channel::ALL {
        let c = channel.index();
        let path = out_dir.join(format!("montage_{}.png", channel.name()));
        let title = format!(
            "{} z  |z|>{:.2}  red above, blue below  bracket {}  age {:.1}",
            channel.name(),
            result.thresholds[c].z_threshold,
            result.bracket,
            result.age_years
        );
        let banner = (!result.reliability.reliable).then(|| unreliable_banner(&result.reliability));
        crate::report::write_montage(
            &path,
            case,
            &result.z_native[c],
            result.thresholds[c].z_threshold as f32,
            &title,
            banner.as_deref(),
        )
        .map_err(|e| werr(&path, e.to_string()))?;
        written.push(path);
    }
    // The charts' files are drawn from the curves the report carries (and the PDF draws).
    let growth_charts = growth_charts(result);
    if let Some(regional) = &result.regional {
        written.extend(write_regional(regional, result, &growth_charts, out_dir)?);
    }
    let report_path = out_dir.join("report.json");
    let mut outputs: Vec<String> =
        written.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    outputs.push("report.json".into());
    let report = Report::with_charts(result, case_name, normdb_name, outputs, growth_charts);
    let json = serde_json::to_vec_pretty(&report).expect("report serializes");
    crate::atomic::write_bytes(&report_path, &json).map_err(|e| werr(&report_path, e.to_string()))?;
    written.push(report_path);
    Ok(written)
}

/// Writes the regional table (`regional.tsv`), its summary sheet (`regional_summary.svg`) and a
/// growth chart per charted measure (`growth_<measure>.svg`: total brain, intracranial volume
/// and every flagged measure).
fn write_regional(
    regional: &CaseRegional,
    result: &DeviationResult,
    charts: &[GrowthCurves],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, DeviationError> {
    let werr = |path: &Path, message: String| DeviationError::Write { path: path.to_owned(), message };
    let mut written = Vec::new();
    let mut write = |name: String, text: String| -> Result<(), DeviationError> {
        let path = out_dir.join(name);
        crate::atomic::write_bytes(&path, text.as_bytes()).map_err(|e| werr(&path, e.to_string()))?;
        written.push(path);
        Ok(())
    };
    let table = if regional.centiles.is_empty() {
        let mut text = String::from("measure\tvalue_ml\n");
        for (name, value) in regional.volumes.names.iter().zip(&regional.volumes.values_ml) {
            text.push_str(&format!("{name}\t{value:.3}\n"));
        }
        text
    } else {
        let mut text = crate::report::regional::regional_tsv(&regional.centiles);
        if let Some(local) = &result.local_volume {
            text.push_str(&crate::report::regional::local_volume_rows(local));
        }
        text
    };
    write("regional.tsv".into(), table)?;
    if let Some(limit) = regional.flag_limit_z {
        let title = format!("Regional volumes, age {:.1} y, bracket {}", result.age_years, result.bracket);
        write(
            "regional_summary.svg".into(),
            crate::report::regional::regional_summary_svg(&regional.centiles, limit, &title),
        )?;
    }
    for chart in charts {
        write(format!("growth_{}.svg", chart.measure), curves_svg(chart))?;
    }
    Ok(written)
}

/// The growth charts of a result: one per measure worth charting (see
/// [`CaseRegional::chart_models`]) that the case has a centile for, in the case's sex.
pub fn growth_charts(result: &DeviationResult) -> Vec<GrowthCurves> {
    let Some(regional) = &result.regional else { return Vec::new() };
    regional
        .chart_models
        .iter()
        .filter_map(|model| {
            let placed = regional.centiles.iter().find(|p| p.measure == model.measure)?;
            let case = Some((result.age_years, placed.value, placed.centile));
            Some(GrowthChart { model, sex: result.sex, case, unit: "ml" }.curves())
        })
        .collect()
}

/// A case image with what its files say about age and sex.
pub struct CaseInput {
    /// The image.
    pub image: Image<f32>,
    /// Age from the files, if any.
    pub age_years: Option<f64>,
    /// Sex from the files, if any.
    pub sex: Option<Sex>,
    /// Scanner label from the files (see [`Sidecar::scanner_label`]), if any.
    ///
    /// [`Sidecar::scanner_label`]: crate::formats::dicom::sidecar::Sidecar::scanner_label
    pub scanner: Option<String>,
}

/// What a case is scored with besides its image: the age and sex when given (else what the
/// case's files say), the scanner site when given (else the scanner its DICOM files name), and
/// how many regions the report lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseRequest {
    /// Age at scan (years), overriding the files'.
    pub age_years: Option<f64>,
    /// Sex, overriding the files'.
    pub sex: Option<Sex>,
    /// Scanner or site as recorded for the database's normals.
    pub site: Option<String>,
    /// Regions listed in the report.
    pub max_regions: usize,
}

impl CaseRequest {
    /// The deviation options of `case` read from `path`; an error when no age is known.
    pub fn options(&self, case: &CaseInput, path: &Path) -> Result<DeviationOptions, DeviationError> {
        let Some(age_years) = self.age_years.or(case.age_years) else {
            return Err(DeviationError::Input {
                path: path.to_owned(),
                message: "the age is unknown: give --age YEARS".into(),
            });
        };
        Ok(DeviationOptions {
            age_years,
            sex: self.sex.or(case.sex),
            max_regions: self.max_regions,
            site: self.site.clone().or_else(|| case.scanner.clone()),
        })
    }
}

/// Reads a case from a NIfTI file or a DICOM series.
pub fn read_case(path: &Path) -> Result<CaseInput, DeviationError> {
    let unreadable = |message: String| DeviationError::Input { path: path.to_owned(), message };
    if crate::formats::dicom::is_nifti_path(path) {
        let image = read_image(path).map_err(|e| unreadable(e.to_string()))?;
        return Ok(CaseInput { image, age_years: None, sex: None, scanner: None });
    }
    let volumes = crate::formats::dicom::load_series(&[path.to_owned()])
        .map_err(|e| unreadable(format!("cannot read as a DICOM series: {e}")))?;
    match volumes.len() {
        0 => return Err(unreadable("no image volume found".into())),
        1 => {}
        n => return Err(unreadable(format!("{n} volumes found; give one series"))),
    }
    let volume = volumes.into_iter().next().expect("one volume");
    Ok(CaseInput {
        age_years: volume.sidecar.age_years,
        sex: volume.sidecar.patient_sex.as_deref().and_then(Sex::parse),
        scanner: volume.sidecar.scanner_label(),
        image: volume.image,
    })
}

/// Computes the deviation maps of one case and writes its outputs into `out_dir`; the one path
/// of the command line (single cases and batch tasks), the demo and the service.
/// `case_name` and `normdb_name` are what the report names them.
pub fn run_case(
    db: &NormativeDb,
    case: &Image<f32>,
    options: &DeviationOptions,
    case_name: &str,
    normdb_name: &str,
    out_dir: &Path,
) -> Result<DeviationResult, DeviationError> {
    let result = compute_deviation(db, case, options)?;
    write_outputs(&result, case, case_name, normdb_name, out_dir)?;
    Ok(result)
}
