//! Agreement with dcm2niix (the reference converter) on synthetic oblique, compressed and
//! enhanced multi-frame series: same volume after reorientation to RAS, affine within 1e-3 mm.

use std::path::Path;
use std::process::Command;

#[test]
fn pedinorm_agrees_with_dcm2niix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let work = tempfile::tempdir().unwrap();
    let cases = ["oblique", "rle", "jpegls", "jpeg_lossless", "enhanced", "multiecho"];
    let output = Command::new(&python)
        .arg(root.join("validation/peers/dcm2niix_compare.py"))
        .arg("--pedinorm")
        .arg(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("--work")
        .arg(work.path())
        .arg("--no-real")
        .arg("--cases")
        .args(cases)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "comparison failed:\n{stdout}\n{stderr}");
    for case in cases {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(&format!("| {case} |")))
            .unwrap_or_else(|| panic!("no row for {case}:\n{stdout}\n{stderr}"));
        assert!(row.trim_end().ends_with("| agree |"), "{case} does not agree with dcm2niix: {row}");
    }
}

/// Real Siemens MOSAIC files (nibabel's `0.dcm`, `1.dcm` and the two-file DWI series) and a
/// file without SeriesInstanceUID (`decimal_rescale.dcm`, decimal-string rescale) agree with
/// dcm2niix: affine within 1e-3 mm, equal values, one volume per mosaic file.
#[test]
fn real_mosaic_and_uidless_files_agree_with_dcm2niix() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let work = tempfile::tempdir().unwrap();
    let series = ["nibabel_0", "nibabel_1", "nibabel_siemens_dwi", "nibabel_decimal_rescale"];
    let output = Command::new(&python)
        .arg(root.join("validation/peers/dcm2niix_compare.py"))
        .arg("--pedinorm")
        .arg(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("--work")
        .arg(work.path())
        .args(["--cases", "axial", "--only"])
        .args(series)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "comparison failed:\n{stdout}\n{stderr}");
    for name in series {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}\n{stderr}"));
        assert!(row.trim_end().ends_with("| agree |"), "{name} does not agree with dcm2niix: {row}");
    }
    let dwi = stdout.lines().find(|line| line.starts_with("| nibabel_siemens_dwi |")).unwrap();
    assert!(dwi.contains("| 2 / 2 |"), "{dwi}");
}
