//! Deviation maps of many cases as a batch: one task per case (a `pedinorm deviation` process
//! run by the local pool or a Slurm job array), each writing its own output folder
//! `OUT/ID/` atomically (computed in a temporary sibling folder, `done.json` written last,
//! then renamed into place), so a re-run skips the cases already done and a killed task never
//! leaves a half-written folder.
//!
//! The case list is a CSV with a header row and the columns `path` (or `image`, `file`;
//! relative to the CSV's folder), `age` (or `age_years`), optional `sex` (`F`/`M`; empty:
//! unknown, both sexes pooled), optional `site` (or `scanner`: the scanner or site label as the
//! database's normals carry it; empty: not given, scored as an unseen site) and optional `id`
//! (default: the file name without `.nii.gz`/`.nii`).
//!
//! With a DICOM folder (`--dicom-out DIR`) each case's result objects go to `DIR/ID/`, written
//! whole before the case's `done.json`, so a case marked done has all of them.

use crate::batch::plan::TaskEstimate;
use crate::batch::{BatchError, Executor, ProgressEvent, Resources, Stage, Task};
use crate::dicom_results::{ResultsError, write_case_results};
use crate::formats::dicom::is_nifti_path;
use crate::normdb::{NormDbError, NormDbFile};
use crate::pipeline::cohort::{CsvList, ListError, stem};
use crate::pipeline::deviation::{CaseError, CaseRequest, DeviationError, read_case, run_case};
use crate::pipeline::steps::{
    PlannedStage, StepFileError, image_voxels, is_valid_name, run_plan, write_folder_atomically,
};
use pedinorm_templates::model::NormativeDb;
use pedinorm_templates::stats::Sex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a batch of deviation maps failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchDeviationError {
    /// The case list cannot be read or breaks rules (every problem listed), or an output
    /// cannot be written.
    #[error(transparent)]
    List(#[from] ListError),
    /// Cases failed after their retries (the others are done; see `summary.tsv`).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The database could not be read.
    #[error(transparent)]
    NormDb(#[from] NormDbError),
    /// A case could not be read, scored or written.
    #[error(transparent)]
    Case(#[from] CaseError),
    /// A case's DICOM result objects could not be built or written.
    #[error("case {}: DICOM results: {error}", case.display())]
    DicomResults {
        /// The case image.
        case: PathBuf,
        /// What went wrong.
        error: ResultsError,
    },
}

/// Where the results of every case of a batch go.
#[derive(Debug, Clone, Copy)]
pub struct BatchOutputs<'a> {
    /// The batch's output folder: case `ID` in `OUT/ID/`.
    pub out_dir: &'a Path,
    /// Regions listed in each report.
    pub max_regions: usize,
    /// A folder for the DICOM result objects: case `ID` in `DIR/ID/` (none: not written).
    pub dicom_out: Option<&'a Path>,
}

impl From<std::io::Error> for BatchDeviationError {
    fn from(error: std::io::Error) -> Self {
        ListError::Unreadable { path: PathBuf::new(), message: error.to_string() }.into()
    }
}

impl From<StepFileError> for BatchDeviationError {
    fn from(error: StepFileError) -> Self {
        ListError::Unreadable { path: error.path, message: error.message }.into()
    }
}

/// One case of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCase {
    /// Identifier: the name of the case's output folder.
    pub id: String,
    /// The case image (NIfTI or DICOM series).
    pub path: PathBuf,
    /// Age at scan in years.
    pub age_years: f64,
    /// Sex, when known.
    pub sex: Option<Sex>,
    /// Scanner or site label, when known.
    pub site: Option<String>,
}

/// Reads and checks a case list; every problem (missing or implausible age, unknown sex,
/// duplicate or unusable id, missing image) is reported, by line, in one error.
pub fn read_cases(path: &Path) -> Result<Vec<BatchCase>, BatchDeviationError> {
    let list = CsvList::read(path, &["id", "case", "case_id", "subject"])?;
    if list.path.is_none() {
        return Err(ListError::Unreadable {
            path: path.to_owned(),
            message: "header: a `path` column is required (a case list takes one image per case)".into(),
        }
        .into());
    }
    let mut cases: Vec<BatchCase> = Vec::new();
    let mut problems = list.problems.clone();
    for (line, record) in &list.rows {
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).filter(|v| !v.is_empty());
        let Some(image) = field(list.path) else {
            problems.push(format!("line {line}: path is missing"));
            continue;
        };
        let image = list.image(image);
        let id = field(list.id).map(str::to_owned).unwrap_or_else(|| stem(&image));
        let mut ok = true;
        if !is_valid_name(&id) {
            problems.push(format!("line {line}: id {id:?}: use letters, digits, '-', '_' or '.'"));
            ok = false;
        } else if cases.iter().any(|c| c.id == id) {
            problems.push(format!("line {line}: id {id:?} appears more than once"));
            ok = false;
        }
        let age = match field(Some(list.age)) {
            None => {
                problems.push(format!("line {line} (case {id}): age is missing"));
                None
            }
            Some(text) => match text.parse::<f64>() {
                Ok(age) if pedinorm_templates::age::check_age(age).is_ok() => Some(age),
                Ok(age) => {
                    problems.push(format!("line {line} (case {id}): age {age} is outside 0–25 years"));
                    None
                }
                Err(_) => {
                    problems.push(format!("line {line} (case {id}): age {text:?} is not a number of years"));
                    None
                }
            },
        };
        let sex = match field(list.sex) {
            None => None,
            Some(text) => match Sex::parse(text) {
                Some(sex) => Some(sex),
                None => {
                    problems.push(format!("line {line} (case {id}): sex {text:?} must be F, M or empty"));
                    ok = false;
                    None
                }
            },
        };
        let image = match image.canonicalize() {
            Ok(image) => Some(image),
            Err(e) => {
                problems.push(format!("line {line} (case {id}): image {}: {e}", image.display()));
                None
            }
        };
        let site = field(list.site).map(str::to_owned);
        if site.as_ref().is_some_and(|s| s.len() > 200 || s.contains(['\t', '\n', '\r'])) {
            problems
                .push(format!("line {line} (case {id}): site must be one line of at most 200 characters"));
            ok = false;
        }
        if let (true, Some(age_years), Some(path)) = (ok, age, image) {
            cases.push(BatchCase { id, path, age_years, sex, site });
        }
    }
    if cases.is_empty() && problems.is_empty() {
        problems.push("the case list has no rows".into());
    }
    if !problems.is_empty() {
        return Err(ListError::Invalid { path: path.to_owned(), problems }.into());
    }
    Ok(cases)
}

/// The done marker of a case's output folder.
pub fn case_marker(out_dir: &Path, id: &str) -> PathBuf {
    out_dir.join(id).join("done.json")
}

/// What `done.json` of a case records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseDone {
    /// Case identifier.
    pub id: String,
    /// The case image.
    pub case: PathBuf,
    /// Bracket the case was compared with.
    pub bracket: String,
    /// Significant clusters.
    pub significant_clusters: usize,
    /// How the case's site was scored ([`SiteAdjustment::label`]; absent when the database
    /// has no site effects, or in records written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Whether the case lies within what the normals represent (absent in records written
    /// before it: unknown, read as reliable).
    #[serde(default = "assumed_reliable")]
    pub reliable: bool,
    /// Wall time (s); not part of the result.
    pub seconds: f64,
}

fn assumed_reliable() -> bool {
    true
}

/// The batch stage: one `pedinorm deviation --atomic` task per case. A case's folder appears
/// whole with its marker (see [`crate::pipeline::steps::write_folder_atomically`]), so an
/// existing marker means the case is done.
pub fn deviation_stage(
    normdb: &Path,
    cases: &[BatchCase],
    outputs: BatchOutputs<'_>,
    resources: Resources,
) -> PlannedStage {
    let out_dir = outputs.out_dir;
    let stage = Stage {
        name: "deviation".into(),
        tasks: cases
            .iter()
            .map(|case| {
                let mut args: Vec<String> = vec![
                    "deviation".into(),
                    "--normdb".into(),
                    normdb.to_string_lossy().into_owned(),
                    "--case".into(),
                    case.path.to_string_lossy().into_owned(),
                    "--age".into(),
                    case.age_years.to_string(),
                ];
                if let Some(sex) = case.sex {
                    args.extend(["--sex".into(), sex.code().into()]);
                }
                if let Some(site) = &case.site {
                    args.extend(["--site".into(), site.clone()]);
                }
                if let Some(dicom_out) = outputs.dicom_out {
                    args.extend([
                        "--dicom-out".into(),
                        dicom_out.join(&case.id).to_string_lossy().into_owned(),
                    ]);
                }
                args.extend([
                    "--max-regions".into(),
                    outputs.max_regions.to_string(),
                    "--out-dir".into(),
                    out_dir.join(&case.id).to_string_lossy().into_owned(),
                    "--atomic".into(),
                ]);
                Task { label: case.id.clone(), args, done_marker: case_marker(out_dir, &case.id) }
            })
            .collect(),
        resources,
    };
    PlannedStage { is_done: |marker| marker.is_file(), ..PlannedStage::new(stage) }
}

/// Writes `OUT/cases.tsv` (id, path, age, sex, site; line i + 1 is array task i) for
/// submission by hand, and returns its path.
pub fn write_case_table(cases: &[BatchCase], out_dir: &Path) -> Result<PathBuf, BatchDeviationError> {
    let unwritable = |path: &Path, e: std::io::Error| ListError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| unwritable(out_dir, e))?;
    let table: String = cases
        .iter()
        .map(|c| {
            let sex = c.sex.map(|s| s.code()).unwrap_or("");
            let site = c.site.as_deref().unwrap_or("");
            format!("{}\t{}\t{}\t{sex}\t{site}\n", c.id, c.path.display(), c.age_years)
        })
        .collect();
    let path = out_dir.join("cases.tsv");
    crate::atomic::write_bytes(&path, table.as_bytes()).map_err(|e| unwritable(&path, e))?;
    Ok(path)
}

/// Resources of one case's task: a normal's map step (registration at the template's
/// resolution) plus the database held in memory (templates, masks and statistics).
pub fn case_resources(
    db: &NormativeDb,
    cases: &[BatchCase],
    threads: usize,
) -> Result<Resources, BatchDeviationError> {
    let mut largest = 0usize;
    for bracket in &db.brackets {
        largest = largest.max(bracket.template.grid().len());
    }
    for case in cases.iter().filter(|case| is_nifti_path(&case.path)) {
        let voxels = image_voxels(&case.path).map_err(|e| ListError::Unreadable {
            path: e.path,
            message: format!("case {}: {}", case.id, e.message),
        })?;
        largest = largest.max(voxels);
    }
    let estimate = TaskEstimate::for_cohort(largest, 1.0, 1.0, threads, 1);
    let statistics_bytes: usize = db
        .brackets
        .iter()
        .map(|b| {
            let nodes = b.stats[0].nodes().len();
            // Two channels × nodes × two sexes × three f64 moments per mask voxel, plus images.
            2 * nodes * 2 * 3 * 8 * b.stats[0].voxel_count() + 12 * b.template.grid().len()
        })
        .sum();
    let mut resources = estimate.map;
    resources.memory_mb += (statistics_bytes as f64 * 1.5 / (1024.0 * 1024.0)).ceil() as u64;
    Ok(resources)
}

/// One case's task (`pedinorm deviation --atomic`): scores the case and writes `out_dir` as a
/// whole, `done.json` last (see [`write_folder_atomically`]); nothing to do when `done.json`
/// exists. The case's id is the folder's name. With `dicom_out`, the DICOM result objects are
/// written there as a whole folder before `done.json`.
pub fn run_case_task(
    normdb: &Path,
    case_path: &Path,
    request: &CaseRequest,
    out_dir: &Path,
    dicom_out: Option<&Path>,
) -> Result<(), BatchDeviationError> {
    if out_dir.join("done.json").is_file() {
        return Ok(());
    }
    let start = std::time::Instant::now();
    let failed = |error: DeviationError| CaseError { case: case_path.to_owned(), error };
    let db = NormativeDb::read(normdb)?;
    let case = read_case(case_path).map_err(failed)?;
    let options = request.options(&case, case_path).map_err(failed)?;
    let id = out_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (case_name, normdb_name) = (case_path.display().to_string(), normdb.display().to_string());
    write_folder_atomically(out_dir, |tmp| -> Result<CaseDone, BatchDeviationError> {
        let result = run_case(&db, &case.image, &options, &case_name, &normdb_name, tmp).map_err(failed)?;
        if let Some(dicom_out) = dicom_out {
            crate::atomic::replace_folder(dicom_out, |objects| {
                write_case_results(case_path, &case.image, tmp, objects)
                    .map_err(|error| BatchDeviationError::DicomResults { case: case_path.to_owned(), error })
            })?;
        }
        Ok(CaseDone {
            id,
            case: case_path.to_owned(),
            bracket: result.bracket.clone(),
            significant_clusters: result.clusters.iter().filter(|c| c.significant).count(),
            site: result.site_adjustment.as_ref().map(|a| a.label()),
            reliable: result.reliability.reliable,
            seconds: start.elapsed().as_secs_f64(),
        })
    })?;
    Ok(())
}

/// One row of `summary.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSummary {
    /// Case identifier.
    pub id: String,
    /// `done` or `failed`.
    pub status: &'static str,
    /// What `done.json` records, when done.
    pub done: Option<CaseDone>,
}

/// Runs every case not done yet through `executor`, then writes `OUT/summary.tsv` (one row per
/// case: id, status, bracket, significant clusters, reliable, site). Failed cases (after their retries) are
/// listed there and returned as [`BatchError::TasksFailed`], by case id.
pub fn run_batch(
    normdb: &Path,
    cases: &[BatchCase],
    outputs: BatchOutputs<'_>,
    executor: &dyn Executor,
    resources: Resources,
    progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<Vec<CaseSummary>, BatchDeviationError> {
    let unwritable = |path: &Path, e: std::io::Error| ListError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let out_dir = outputs.out_dir;
    std::fs::create_dir_all(out_dir).map_err(|e| unwritable(out_dir, e))?;
    let stage = deviation_stage(normdb, cases, outputs, resources);
    let outcome = run_plan::<BatchDeviationError>(&[stage], executor, progress);
    let summary: Vec<CaseSummary> = cases
        .iter()
        .map(|case| {
            let done = std::fs::read(case_marker(out_dir, &case.id))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<CaseDone>(&bytes).ok());
            CaseSummary { id: case.id.clone(), status: if done.is_some() { "done" } else { "failed" }, done }
        })
        .collect();
    let mut text = String::from("id\tstatus\tbracket\tsignificant_clusters\treliable\tsite\n");
    for row in &summary {
        let (bracket, clusters, reliable, site) = match &row.done {
            Some(d) => (
                d.bracket.clone(),
                d.significant_clusters.to_string(),
                d.reliable.to_string(),
                d.site.clone().unwrap_or_default(),
            ),
            None => Default::default(),
        };
        text.push_str(&format!("{}\t{}\t{bracket}\t{clusters}\t{reliable}\t{site}\n", row.id, row.status));
    }
    let path = out_dir.join("summary.tsv");
    crate::atomic::write_bytes(&path, text.as_bytes()).map_err(|e| unwritable(&path, e))?;
    outcome?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_list_problems_are_reported_by_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.nii.gz"), b"x").unwrap();
        let list = dir.path().join("cases.csv");
        std::fs::write(
            &list,
            "path,age,sex,id\na.nii.gz,9.5,F,\na.nii.gz,7,,second\nmissing.nii.gz,8,M,m\na.nii.gz,,M,noage\na.nii.gz,8,X,badsex\na.nii.gz,8,M,second\n",
        )
        .unwrap();
        let error = read_cases(&list).unwrap_err().to_string();
        for expected in [
            "line 4 (case m): image",
            "line 5 (case noage): age is missing",
            "line 6 (case badsex): sex \"X\" must be F, M or empty",
            "line 7: id \"second\" appears more than once",
        ] {
            assert!(error.contains(expected), "{expected} not in {error}");
        }
        assert!(!error.contains("line 2") && !error.contains("line 3"), "{error}");
        std::fs::write(
            &list,
            "path,age,sex,id,scanner\na.nii.gz,9.5,F,,SIEMENS Prisma 3T\na.nii.gz,7,,second,\n",
        )
        .unwrap();
        let cases = read_cases(&list).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].id, "a");
        assert_eq!(cases[0].sex, Some(Sex::Female));
        assert_eq!(cases[1].sex, None);
        assert_eq!((cases[0].site.as_deref(), cases[1].site.as_deref()), (Some("SIEMENS Prisma 3T"), None));
        let outputs = BatchOutputs { out_dir: Path::new("/out"), max_regions: 15, dicom_out: None };
        let stage = deviation_stage(Path::new("/db.h5"), &cases, outputs, Resources::default());
        let tasks = &stage.stage.tasks;
        assert!(!tasks[0].args.contains(&"--dicom-out".to_string()));
        let with_dicom = BatchOutputs { dicom_out: Some(Path::new("/dicom")), ..outputs };
        let stage = deviation_stage(Path::new("/db.h5"), &cases, with_dicom, Resources::default());
        let dicom_at = stage.stage.tasks[1].args.iter().position(|a| a == "--dicom-out").unwrap();
        assert_eq!(stage.stage.tasks[1].args[dicom_at + 1], "/dicom/second");
        let stage = deviation_stage(Path::new("/db.h5"), &cases, outputs, Resources::default());
        let tasks = &stage.stage.tasks;
        assert_eq!(tasks[1].done_marker, Path::new("/out/second/done.json"));
        assert!(!tasks[1].args.contains(&"--sex".to_string()));
        assert!(!tasks[1].args.contains(&"--site".to_string()));
        let site_at = tasks[0].args.iter().position(|a| a == "--site").unwrap();
        assert_eq!(tasks[0].args[site_at + 1], "SIEMENS Prisma 3T");
        assert_eq!(tasks[0].args.last().unwrap(), "--atomic");
        // The table a Slurm array reads: five tab-separated fields per line, empty ones kept.
        let table = std::fs::read_to_string(write_case_table(&cases, dir.path()).unwrap()).unwrap();
        let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(rows[0][3..], ["F", "SIEMENS Prisma 3T"]);
        assert_eq!(rows[1][3..], ["", ""]);
    }
}
