//! `pedinorm deviation --dicom-out DIR` from the command line: a synthetic case with a strong
//! lesion (phantom brain at 4 mm) is scored against a small normative database, once read from
//! a DICOM series and once from NIfTI, and the DICOM result objects are read back by pydicom and
//! highdicom (`tests/dicom_results_check.py`): the segmentation's frames set exactly the voxels
//! of `clusters_native.nii.gz` on the source slices, and dciodvfy finds no error.

mod service_common;

use service_common::component::component_available;
use service_common::*;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn pedinorm(args: &[&std::ffi::OsStr]) {
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm")).args(args).output().expect("pedinorm runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Runs the checker on `results` (against the `source` series and the run's `out` folder) and
/// returns its JSON summary.
fn check(results: &Path, source: &Path, out: &Path) -> serde_json::Value {
    let python = root().join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let dciodvfy = Command::new("dciodvfy").arg("-").output().is_ok();
    component_available(dciodvfy, "dciodvfy (Debian dicom3tools) is not installed: run scripts/setup.sh");
    let mut command = Command::new(python);
    command
        .arg(root().join("tests/dicom_results_check.py"))
        .arg("--results")
        .arg(results)
        .arg("--source")
        .arg(source)
        .arg("--clusters")
        .arg(out.join("clusters_native.nii.gz"))
        .arg("--report")
        .arg(out.join("report.json"));
    if dciodvfy {
        command.arg("--strict");
    }
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn deviation_writes_dicom_results_on_the_case_series() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let normdb = base.join("normdb.h5");
    let generator = phantom_generator();
    phantom_normdb(&generator, 8, &normdb);
    let case = phantom_subject(&generator, 10.3, true, 7, true);

    // The case as a DICOM series: results join its study and lie on its slices.
    let series = base.join("case_dicom");
    std::fs::create_dir_all(&series).unwrap();
    let (_, files) = subject_dicom(&case, 1);
    for (k, bytes) in files.iter().enumerate() {
        std::fs::write(series.join(format!("IM{:04}.dcm", k + 1)), bytes).unwrap();
    }
    let (out, results) = (base.join("out"), base.join("dicom"));
    pedinorm(&[
        "deviation".as_ref(),
        "--normdb".as_ref(),
        normdb.as_os_str(),
        "--case".as_ref(),
        series.as_os_str(),
        "--out-dir".as_ref(),
        out.as_os_str(),
        "--dicom-out".as_ref(),
        results.as_os_str(),
    ]);
    assert!(results.join("seg.dcm").is_file());
    let summary = check(&results, &series, &out);
    assert!(summary["seg"]["voxels"].as_u64().unwrap() > 0, "{summary}");
    eprintln!("DICOM case: {summary}");

    // The case as NIfTI: the case image is written as a new study's series beside the results.
    let nifti = base.join("case.nii.gz");
    pedinorm::formats::nifti::write_image(&nifti, &case.image, pedinorm::formats::nifti::VoxelType::F32)
        .unwrap();
    let (out, results) = (base.join("out_nifti"), base.join("dicom_nifti"));
    pedinorm(&[
        "deviation".as_ref(),
        "--normdb".as_ref(),
        normdb.as_os_str(),
        "--case".as_ref(),
        nifti.as_os_str(),
        "--age".as_ref(),
        "10.3".as_ref(),
        "--sex".as_ref(),
        "F".as_ref(),
        "--out-dir".as_ref(),
        out.as_os_str(),
        "--dicom-out".as_ref(),
        results.as_os_str(),
    ]);
    let summary = check(&results, &results.join("source"), &out);
    eprintln!("NIfTI case: {summary}");

    // Both as a batch: case ID's objects in DICOM_OUT/ID/, written whole before its done.json.
    let list = base.join("cases.csv");
    std::fs::write(
        &list,
        format!("path,age,sex,id\n{},10.3,F,series\n{},10.3,F,nifti\n", series.display(), nifti.display()),
    )
    .unwrap();
    let (out, results) = (base.join("batch"), base.join("batch_dicom"));
    let batch = |results: &Path| {
        pedinorm(&[
            "deviation".as_ref(),
            "--normdb".as_ref(),
            normdb.as_os_str(),
            "--cases".as_ref(),
            list.as_os_str(),
            "--out-dir".as_ref(),
            out.as_os_str(),
            "--dicom-out".as_ref(),
            results.as_os_str(),
            "--jobs".as_ref(),
            "1".as_ref(),
        ])
    };
    batch(&results);
    let summary = check(&results.join("series"), &series, &out.join("series"));
    assert!(summary["seg"]["voxels"].as_u64().unwrap() > 0, "{summary}");
    check(&results.join("nifti"), &results.join("nifti/source"), &out.join("nifti"));
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    };
    let left = names(&results);
    assert!(left.contains(&"nifti".to_string()) && left.contains(&"series".to_string()), "{left:?}");
    assert!(!left.iter().any(|n| n.starts_with('.')), "no temporary folder is left: {left:?}");
    // A re-run skips the cases done and leaves their objects as they are.
    let seg = std::fs::read(results.join("series/seg.dcm")).unwrap();
    batch(&results);
    assert_eq!(std::fs::read(results.join("series/seg.dcm")).unwrap(), seg);
    // --prepare-only hands the array to a script that writes no DICOM: refused together.
    let refused = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args([
            "deviation",
            "--prepare-only",
            "--dicom-out",
            "x",
            "--out-dir",
            "y",
            "--normdb",
            "z",
            "--cases",
        ])
        .arg(&list)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--prepare-only"));
}
