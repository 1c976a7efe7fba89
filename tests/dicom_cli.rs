//! `pedinorm convert` and `pedinorm inspect` from the command line.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn generate(dir: &Path, cases: &[&str]) {
    let python = root().join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let output = Command::new(python)
        .arg(root().join("validation/peers/make_dicom_series.py"))
        .arg(dir)
        .args(cases)
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn pedinorm(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pedinorm")).args(args).output().expect("pedinorm runs")
}

#[test]
fn convert_writes_volume_and_sidecar_then_inspect_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &["oblique", "multiecho"]);
    let out = dir.path().join("out");
    let output = pedinorm(&[
        "convert".as_ref(),
        dir.path().join("oblique").as_os_str(),
        dir.path().join("multiecho").as_os_str(),
        "--out-dir".as_ref(),
        out.as_os_str(),
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0003_T1_synthetic_multiecho_1.json",
            "0003_T1_synthetic_multiecho_1.nii.gz",
            "0003_T1_synthetic_multiecho_2.json",
            "0003_T1_synthetic_multiecho_2.nii.gz",
            "0003_T1_synthetic_oblique.json",
            "0003_T1_synthetic_oblique.nii.gz",
        ]
    );
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("0003_T1_synthetic_oblique.json")).unwrap()).unwrap();
    assert_eq!(sidecar["MagneticFieldStrength"], 3.0);
    assert_eq!(sidecar["EchoTime"], 0.0035);
    assert!(sidecar.get("PatientName").is_none() && sidecar.get("PatientID").is_none());
    let text = serde_json::to_string(&sidecar).unwrap();
    assert!(!text.contains("Fake") && !text.contains("FAKEID") && !text.contains("2015"));

    let nifti = out.join("0003_T1_synthetic_oblique.nii.gz");
    let output = pedinorm(&["inspect".as_ref(), nifti.as_os_str(), "--json".as_ref()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["affine_source"], "sform");
    assert_eq!(report[0]["datatype"], "int16"); // integer values are stored losslessly as int16

    let output = pedinorm(&["inspect".as_ref(), dir.path().join("oblique").as_os_str(), "--json".as_ref()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["metadata"]["Modality"], "MR");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("Fake") && !stdout.contains("FAKEID"));

    // A second run refuses to overwrite.
    let output = pedinorm(&[
        "convert".as_ref(),
        dir.path().join("oblique").as_os_str(),
        "--out-dir".as_ref(),
        out.as_os_str(),
    ]);
    assert!(!output.status.success());
}

#[test]
fn bad_input_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), &["missing"]);
    let out: PathBuf = dir.path().join("out");
    for input in [dir.path().join("missing"), dir.path().join("does-not-exist")] {
        let output =
            pedinorm(&["convert".as_ref(), input.as_os_str(), "--out-dir".as_ref(), out.as_os_str()]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one-line error expected, got: {stderr}");
    }
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "a refused series writes nothing"
    );
}
