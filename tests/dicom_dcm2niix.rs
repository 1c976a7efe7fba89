//! Agreement with dcm2niix (the reference converter) on synthetic oblique, compressed and
//! enhanced multi-frame series: same volume after reorientation to RAS, affine within 1e-3 mm.

use std::path::Path;
use std::process::Command;

/// Runs `validation/peers/dcm2niix_compare.py` with `args` (work folder in `work`) and returns
/// the table it prints; fails the test when the script fails.
fn compare(work: &Path, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let output = Command::new(&python)
        .arg(root.join("validation/peers/dcm2niix_compare.py"))
        .arg("--pedinorm")
        .arg(env!("CARGO_BIN_EXE_pedinorm"))
        .arg("--work")
        .arg(work)
        .args(args)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "comparison failed:\n{stdout}\n{stderr}");
    stdout
}

/// The table row of series `name`.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.starts_with(&format!("| {name} |")))
        .unwrap_or_else(|| panic!("no row for {name} (is its package installed?):\n{table}"))
}

/// Every series in `names` agrees with dcm2niix.
fn assert_agree(table: &str, names: &[&str]) {
    for name in names {
        let row = row(table, name);
        assert!(row.trim_end().ends_with("| agree |"), "{name} does not agree with dcm2niix: {row}");
    }
}

#[test]
fn pedinorm_agrees_with_dcm2niix() {
    let work = tempfile::tempdir().unwrap();
    let cases = ["oblique", "rle", "jpegls", "jpeg_lossless", "enhanced", "multiecho"];
    let mut args = vec!["--no-real", "--cases"];
    args.extend(cases);
    assert_agree(&compare(work.path(), &args), &cases);
}

/// Real Siemens MOSAIC files (nibabel's `0.dcm`, `1.dcm` and the two-file DWI series) and a
/// file without SeriesInstanceUID (`decimal_rescale.dcm`, decimal-string rescale) agree with
/// dcm2niix: affine within 1e-3 mm, equal values, one volume per mosaic file.
#[test]
fn real_mosaic_and_uidless_files_agree_with_dcm2niix() {
    let work = tempfile::tempdir().unwrap();
    let series = ["nibabel_0", "nibabel_1", "nibabel_siemens_dwi", "nibabel_decimal_rescale"];
    let mut args = vec!["--cases", "axial", "--only"];
    args.extend(series);
    let table = compare(work.path(), &args);
    assert_agree(&table, &series);
    let dwi = row(&table, "nibabel_siemens_dwi");
    assert!(dwi.contains("| 2 / 2 |"), "{dwi}");
}

/// pydicom-data's MR files: the enhanced multi-frame `emri_small` in native, big-endian, RLE,
/// JPEG-LS and JPEG 2000 encodings (compared as `_placed` copies: the files carry no geometry,
/// so the comparison script adds an oblique one and leaves the encoded pixel data untouched), a
/// 1024×1024 MR in lossless and lossy JPEG 2000, and a Siemens MR with an overlay plane: each
/// agrees with dcm2niix. The files as shipped lack ImageOrientationPatient, ImagePositionPatient
/// and PixelSpacing (dcm2niix writes them with an "unknown" transform): pedinorm refuses them by
/// its documented rule instead of inventing a geometry.
#[test]
fn pydicom_data_mr_files_agree_with_dcm2niix() {
    let work = tempfile::tempdir().unwrap();
    let agreeing = [
        "emri_small_placed",
        "emri_small_big_endian_placed",
        "emri_small_RLE_placed",
        "emri_small_jpeg_ls_lossless_placed",
        "emri_small_jpeg_2k_lossless_placed",
        "MR2_J2KR",
        "MR2_J2KI",
        "MR-SIEMENS-DICOM-WithOverlays",
    ];
    let mut args = vec!["--cases", "axial", "--only", "emri_small_RLE"];
    args.extend(agreeing);
    let table = compare(work.path(), &args);
    assert_agree(&table, &agreeing);
    for name in agreeing {
        let row = row(&table, name);
        assert!(row.contains("| 1 / 1 |"), "{name}: one volume each expected: {row}");
    }
    let emri = row(&table, "emri_small_RLE_placed");
    assert!(emri.contains("| 64×10×64 |"), "ten frames stacked into one volume: {emri}");
    let shipped = row(&table, "emri_small_RLE");
    assert!(
        shipped.contains("pedinorm refuses") && shipped.contains("ImagePositionPatient is missing"),
        "a file without geometry must be refused by the placement rule: {shipped}"
    );

    // pydicom-data's `emri_small_jpeg_2k_lossless_too_short.dcm` is the JPEG 2000 file without
    // the sequence delimiter that closes its encapsulated pixel data. Cut the placed copy the
    // same way: the ten fragments are all there, so the volume must not change.
    let placed = work.path().join("real/emri_small_jpeg_2k_lossless_placed/emri_small_jpeg_2k_lossless.dcm");
    let bytes = std::fs::read(&placed).unwrap();
    let (kept, delimiter) = bytes.split_at(bytes.len() - 8);
    assert_eq!(delimiter, [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0], "the file ends with the sequence delimiter");
    let cut = work.path().join("too_short.dcm");
    std::fs::write(&cut, kept).unwrap();
    let complete = pedinorm::formats::dicom::load_series(&[placed]).unwrap();
    let truncated = pedinorm::formats::dicom::load_series(&[cut]).unwrap();
    assert_eq!(complete.len(), 1);
    assert_eq!(truncated.len(), 1);
    assert_eq!(truncated[0].image.data(), complete[0].image.data());
    assert_eq!(truncated[0].image.grid(), complete[0].image.grid());
    assert!(complete[0].image.data().iter().any(|&v| v > 0.0), "decoded frames hold the image");
}
