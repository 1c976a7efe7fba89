//! Similar cases from files: a deviation output folder read as a signature (from its
//! `report.json`: age, region table, clusters, regional centiles), and a library of labelled
//! results — a folder of deviation output folders with a labels file — for `pedinorm similar`.
//! The signature and the similarity are `pedinorm_templates::similarity`.

use crate::pipeline::cohort::{ListError, column};
use pedinorm_templates::centiles::PlacedMeasure;
use pedinorm_templates::model::case_local_volume::LocalVolumeFinding;
use pedinorm_templates::model::score::{ClusterReport, RegionReport};
use pedinorm_templates::similarity::Signature;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a result or a library cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SimilarError {
    /// A report is missing, unreadable or breaks a rule.
    #[error("{path}: {field}: {rule}")]
    Report {
        /// The `report.json` file.
        path: PathBuf,
        /// The field, e.g. `regions`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The labels file or the results folder.
    #[error(transparent)]
    List(#[from] ListError),
}

/// The signature of the deviation result in `dir` (a `pedinorm deviation` output folder).
pub fn read_signature(dir: &Path) -> Result<Signature, SimilarError> {
    let path = dir.join("report.json");
    let report_error = |field: &str, rule: String| SimilarError::Report {
        path: path.clone(),
        field: field.to_owned(),
        rule,
    };
    let bytes =
        std::fs::read(&path).map_err(|e| report_error("report.json", format!("cannot be read: {e}")))?;
    let report: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| report_error("report.json", format!("is not JSON: {e}")))?;
    let age_years = report["age_years"]
        .as_f64()
        .ok_or_else(|| report_error("age_years", "must be a number of years".into()))?;
    let regions: Vec<RegionReport> = field(&report, "regions", &path)?;
    let clusters: Vec<ClusterReport> = field(&report, "clusters", &path)?;
    // Centiles exist only when the database has centile models.
    let centiles: Vec<PlacedMeasure> = match report.get("regional").and_then(|r| r.get("centiles")) {
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| report_error("regional.centiles", format!("must list placed measures: {e}")))?,
        None => Vec::new(),
    };
    // Local volume findings exist only for databases calibrated for them.
    let local_volume: Vec<LocalVolumeFinding> =
        match report.get("local_volume").and_then(|l| l.get("findings")) {
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|e| report_error("local_volume.findings", format!("must list findings: {e}")))?,
            None => Vec::new(),
        };
    Signature::from_findings(age_years, &regions, &clusters, &local_volume, &centiles)
        .map_err(|e| report_error("report.json", e.to_string()))
}

fn field<T: DeserializeOwned>(
    report: &serde_json::Value,
    name: &str,
    path: &Path,
) -> Result<T, SimilarError> {
    let value = report.get(name).cloned().ok_or_else(|| SimilarError::Report {
        path: path.to_owned(),
        field: name.to_owned(),
        rule: "is missing (not a deviation report?)".into(),
    })?;
    serde_json::from_value(value).map_err(|e| SimilarError::Report {
        path: path.to_owned(),
        field: name.to_owned(),
        rule: format!("does not read as a deviation report's {name}: {e}"),
    })
}

/// A labelled result of a library.
#[derive(Debug, Clone)]
pub struct LabelledResult {
    /// The result's folder name under the library folder.
    pub id: String,
    /// Its label: a diagnosis, an Orphanet code, a class.
    pub label: String,
    /// Its signature.
    pub signature: Signature,
}

/// The labels file: `id,label` (header required, other columns ignored); every problem is
/// listed with its row.
pub fn read_labels(path: &Path) -> Result<Vec<(String, String)>, ListError> {
    let unreadable = |message: String| ListError::Unreadable { path: path.to_owned(), message };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|e| unreadable(e.to_string()))?;
    let headers: Vec<String> =
        reader.headers().map_err(|e| unreadable(e.to_string()))?.iter().map(str::to_owned).collect();
    let (Some(id_column), Some(label_column)) = (column(&headers, &["id"]), column(&headers, &["label"]))
    else {
        return Err(ListError::Invalid {
            path: path.to_owned(),
            problems: vec![format!("header: needs the columns id and label (found: {})", headers.join(", "))],
        });
    };
    let mut labels: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let line = row + 2;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                problems.push(format!("row {line}: {e}"));
                continue;
            }
        };
        let id = record.get(id_column).unwrap_or("").to_owned();
        let label = record.get(label_column).unwrap_or("").to_owned();
        if id.is_empty() || label.is_empty() {
            problems.push(format!("row {line}: id and label must not be empty"));
        } else if id.contains(['/', '\\']) || id == "." || id == ".." {
            problems.push(format!("row {line}: id `{id}` must be a folder name, not a path"));
        } else if labels.iter().any(|(seen, _)| *seen == id) {
            problems.push(format!("row {line}: id `{id}` is listed twice"));
        } else {
            labels.push((id, label));
        }
    }
    if labels.is_empty() && problems.is_empty() {
        problems.push("no rows: list one labelled result per row".into());
    }
    if !problems.is_empty() {
        return Err(ListError::Invalid { path: path.to_owned(), problems });
    }
    Ok(labels)
}

/// The library: every result the labels file lists, read from its folder under `results`.
pub fn read_library(results: &Path, labels: &Path) -> Result<Vec<LabelledResult>, SimilarError> {
    let rows = read_labels(labels)?;
    let mut library = Vec::with_capacity(rows.len());
    let mut problems = Vec::new();
    for (id, label) in rows {
        let dir = results.join(&id);
        if !dir.is_dir() {
            problems.push(format!("id `{id}`: no folder {} in the results folder", dir.display()));
            continue;
        }
        match read_signature(&dir) {
            Ok(signature) => library.push(LabelledResult { id, label, signature }),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(ListError::Invalid { path: labels.to_owned(), problems }.into());
    }
    Ok(library)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const REPORT: &str = r#"{"age_years": 6.5,
        "regions": [{"label": 3, "name": "Fornix", "voxels": 40, "intensity_mean_z": 0.2,
                     "intensity_fraction_beyond": 0.0, "logjac_mean_z": 2.5, "logjac_fraction_beyond": 0.3}],
        "clusters": [{"channel": "logjac", "label": 1, "direction": "above", "size_voxels": 30,
                      "volume_mm3": 240.0, "peak_z": 5.1, "mean_z": 3.9, "mass": 42.0,
                      "peak_template_mm": [1.0, -4.0, 12.0], "peak_native_mm": [0.0, 0.0, 0.0],
                      "region": "Fornix", "significant": true}],
        "local_volume": {"findings": [{"direction": "gain", "peak_score": 5.0, "volume_ml": 2.0,
                      "peak_template_mm": [2.0, -4.0, 12.0], "peak_native_mm": [0.0, 0.0, 0.0], "region": null}]},
        "regional": {"centiles": [{"measure": "csf", "value": 120.0, "centile": 99.0, "z": 2.4,
                      "normal_range": [80.0, 100.0, 118.0], "flagged": true, "site_known": true, "age_covered": true}]}}"#;

    #[test]
    fn a_report_reads_as_its_signature() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "report.json", REPORT);
        let signature = read_signature(dir.path()).unwrap();
        assert_eq!(signature.age_years, 6.5);
        assert_eq!(signature.regions["Fornix"], [0.2, 0.0, 2.5, 0.3]);
        assert_eq!(signature.clusters.len(), 2, "a cluster and a local volume finding");
        assert_eq!(signature.centiles["csf"], 2.4);
    }

    #[test]
    fn a_broken_report_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "report.json", r#"{"age_years": 3.0, "regions": [{"name": 4}], "clusters": []}"#);
        let error = read_signature(dir.path()).unwrap_err().to_string();
        assert!(error.contains("report.json: regions: does not read"), "{error}");
        write(dir.path(), "report.json", r#"{"regions": [], "clusters": []}"#);
        let error = read_signature(dir.path()).unwrap_err().to_string();
        assert!(error.contains("age_years: must be a number"), "{error}");
        let missing = read_signature(&dir.path().join("nowhere")).unwrap_err().to_string();
        assert!(missing.contains("cannot be read"), "{missing}");
    }

    #[test]
    fn labels_list_every_problem_with_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(
            dir.path(),
            "good.csv",
            "id,label,note\ncase-1,ORPHA:123,x\n# a comment\ncase-2,ORPHA:9,\n",
        );
        assert_eq!(
            read_labels(&good).unwrap(),
            vec![("case-1".into(), "ORPHA:123".into()), ("case-2".into(), "ORPHA:9".into())]
        );
        let bad = write(dir.path(), "bad.csv", "id,label\ncase-1,\n../x,A\ncase-2,B\ncase-2,C\n");
        let error = read_labels(&bad).unwrap_err().to_string();
        for expected in [
            "row 2: id and label",
            "row 3: id `../x` must be a folder name",
            "row 5: id `case-2` is listed twice",
        ] {
            assert!(error.contains(expected), "{error}");
        }
        let no_header = write(dir.path(), "none.csv", "case,class\na,b\n");
        assert!(read_labels(&no_header).unwrap_err().to_string().contains("needs the columns id and label"));
    }

    #[test]
    fn a_library_reads_each_listed_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("case-1")).unwrap();
        write(&dir.path().join("case-1"), "report.json", REPORT);
        let labels = write(dir.path(), "labels.csv", "id,label\ncase-1,ventricles\n");
        let library = read_library(dir.path(), &labels).unwrap();
        assert_eq!((library[0].id.as_str(), library[0].label.as_str()), ("case-1", "ventricles"));
        let labels = write(dir.path(), "more.csv", "id,label\ncase-1,ventricles\ncase-9,x\n");
        let error = read_library(dir.path(), &labels).unwrap_err().to_string();
        assert!(error.contains("id `case-9`: no folder"), "{error}");
    }
}
