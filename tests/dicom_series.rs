//! DICOM series → volume, end to end: synthetic series written with pydicom (and dcmtk for
//! JPEG-LS / JPEG lossless) with independently computed expected volumes and affines, plus
//! real files shipped in pydicom's and nibabel's packages.

use pedinorm::formats::dicom::{DicomError, load_series, load_series_from_memory};
use pedinorm::formats::nifti::read_image;
use pedinorm_registration::Image;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let python = root().join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

/// The synthetic cases, generated once per test binary.
fn cases() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(python())
            .arg(root().join("validation/peers/make_dicom_series.py"))
            .arg(dir.path())
            .arg("--source")
            .arg(root().join(".data/mni/t1.nii.gz"))
            .arg("--shrink")
            .arg("6")
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "make_dicom_series.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
    .path()
}

fn site_packages() -> PathBuf {
    let lib = root().join(".data/venv/lib");
    let python = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", lib.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("python3"))
        .expect("python3.x in venv");
    python.join("site-packages")
}

fn assert_same_volume(got: &Image<f32>, expected: &Image<f32>, label: &str) {
    assert_eq!(got.grid().dims(), expected.grid().dims(), "{label}: dims");
    let difference = (got.grid().affine() - expected.grid().affine()).abs().max();
    assert!(
        difference < 1e-3,
        "{label}: affine differs by {difference}\n{}\n{}",
        got.grid().affine(),
        expected.grid().affine()
    );
    let worst =
        got.as_slice().iter().zip(expected.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-3, "{label}: values differ by up to {worst}");
}

fn check_case(case: &str) {
    let folder = cases().join(case);
    assert!(folder.exists(), "case {case} was not generated (dcmtk missing?)");
    let volumes = load_series(std::slice::from_ref(&folder)).unwrap_or_else(|e| panic!("{case}: {e}"));
    let expected: Vec<PathBuf> = {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("expected"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(volumes.len(), expected.len(), "{case}: number of volumes");
    for (volume, path) in volumes.iter().zip(&expected) {
        assert_same_volume(&volume.image, &read_image(path).unwrap(), case);
    }
}

#[test]
fn axial_series() {
    check_case("axial");
}

#[test]
fn oblique_series_keeps_its_exact_geometry() {
    check_case("oblique");
}

#[test]
fn implicit_little_endian() {
    check_case("implicit");
}

#[test]
fn rle_compressed() {
    check_case("rle");
}

#[test]
fn jpeg_ls_compressed_oblique() {
    check_case("jpegls");
}

#[test]
fn jpeg_lossless_compressed() {
    check_case("jpeg_lossless");
}

#[test]
fn enhanced_multiframe_with_frames_out_of_order() {
    check_case("enhanced");
}

#[test]
fn shuffled_instance_numbers_are_ignored() {
    check_case("shuffled");
}

#[test]
fn two_echoes_split_into_two_volumes() {
    check_case("multiecho");
    let volumes = load_series(&[cases().join("multiecho")]).unwrap();
    let echo_times: Vec<f64> = volumes.iter().map(|v| v.sidecar.echo_time.unwrap()).collect();
    assert_eq!(echo_times, vec![0.0035, 0.009]);
    assert_ne!(volumes[0].file_stem(), volumes[1].file_stem());
}

#[test]
fn signed_values_with_rescale() {
    check_case("rescaled");
}

fn check_refused(case: &str, field: &str) {
    let folder = cases().join(case);
    let phrase = std::fs::read_to_string(folder.join("expected_error.txt")).unwrap();
    let error = load_series(&[folder]).err().unwrap_or_else(|| panic!("{case} must be refused"));
    let message = error.to_string();
    assert!(message.contains(phrase.trim()), "{case}: {message}");
    assert!(message.contains(field) && message.contains(".dcm"), "{case}: names field and file: {message}");
    assert!(matches!(error, DicomError::Geometry { .. }));
}

#[test]
fn missing_slice_is_refused() {
    check_refused("missing", "ImagePositionPatient");
}

#[test]
fn non_uniform_spacing_is_refused() {
    check_refused("nonuniform", "ImagePositionPatient");
}

#[test]
fn tilted_stack_is_refused() {
    check_refused("tilted", "ImagePositionPatient");
}

#[test]
fn sidecar_has_metadata_and_no_identity() {
    let volumes = load_series(&[cases().join("axial")]).unwrap();
    let sidecar = &volumes[0].sidecar;
    assert_eq!(sidecar.magnetic_field_strength, Some(3.0));
    assert_eq!(sidecar.modality.as_deref(), Some("MR"));
    assert_eq!(sidecar.repetition_time, Some(2.0));
    assert_eq!(sidecar.inversion_time, Some(0.9));
    assert_eq!(sidecar.flip_angle, Some(9.0));
    assert_eq!(sidecar.patient_sex.as_deref(), Some("F"));
    assert_eq!(sidecar.body_part_examined.as_deref(), Some("BRAIN"));
    // Born 2015-03-10, scanned 2024-09-15: 9 years and 189 of 365 days.
    let age = sidecar.age_years.unwrap();
    assert!((age - (9.0 + 189.0 / 365.0)).abs() < 1e-9, "{age}");
    assert_eq!(sidecar.voxel_size.map(|v| v.map(|x| (x * 1000.0).round() / 1000.0)), Some([0.9, 1.1, 2.5]));
    let json = serde_json::to_string(sidecar).unwrap();
    for secret in ["Fake", "FAKEID", "20150310", "20240915", "Patient^"] {
        assert!(!json.contains(secret), "sidecar leaks {secret}: {json}");
    }
    // Enhanced objects keep timing in functional groups.
    let enhanced = &load_series(&[cases().join("enhanced")]).unwrap()[0].sidecar;
    assert_eq!(enhanced.repetition_time, Some(2.0));
    assert_eq!(enhanced.echo_time, Some(0.0035));
    assert_eq!(enhanced.flip_angle, Some(9.0));
}

#[test]
fn zip_input_matches_folder_input() {
    use std::io::Write;
    let folder = cases().join("oblique");
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("study.zip");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("study/{}", path.file_name().unwrap().to_string_lossy());
        writer.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        writer.write_all(&std::fs::read(&path).unwrap()).unwrap();
    }
    writer.finish().unwrap();
    let from_zip = load_series(std::slice::from_ref(&zip_path)).unwrap();
    let from_folder = load_series(&[folder]).unwrap();
    assert_eq!(from_zip.len(), 1);
    assert_eq!(from_zip[0].image, from_folder[0].image);
    assert!(from_zip[0].files[0].starts_with(&zip_path));
}

#[test]
fn explicit_non_dicom_file_is_an_error_and_folder_noise_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, b"not a DICOM file").unwrap();
    let error = load_series(std::slice::from_ref(&junk)).unwrap_err();
    assert!(error.to_string().contains("notes.txt") && error.to_string().contains("DICM"), "{error}");
    let error = load_series(&[dir.path().to_path_buf()]).unwrap_err();
    assert!(matches!(error, DicomError::NothingFound { .. }), "{error}");
}

#[test]
fn corrupted_objects_give_errors_not_panics() {
    let folder = cases().join("rle");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    let original: Vec<(PathBuf, Vec<u8>)> =
        files.iter().map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for round in 0..60 {
        let mut objects = original.clone();
        let victim = (next() % objects.len() as u64) as usize;
        let bytes = &mut objects[victim].1;
        match round % 3 {
            0 => bytes.truncate((next() % bytes.len() as u64) as usize),
            1 => {
                for _ in 0..8 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] = next() as u8;
                }
            }
            _ => {
                let at = 132 + (next() % 800) as usize;
                if at + 4 <= bytes.len() {
                    bytes[at..at + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
                }
            }
        }
        if load_series_from_memory(objects).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 10, "only {errors} of 60 corruptions were detected");
}

#[test]
fn pydicom_mr_small_decodes_identically_in_every_transfer_syntax() {
    let folder = site_packages().join("pydicom/data/test_files");
    let reference = load_series(&[folder.join("MR_small.dcm")]).unwrap();
    assert_eq!(reference.len(), 1);
    assert_eq!(reference[0].image.grid().dims(), [64, 64, 1]);
    for name in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_padded.dcm",
    ] {
        let volumes = load_series(&[folder.join(name)]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same_volume(&volumes[0].image, &reference[0].image, name);
    }
    assert!(load_series(&[folder.join("MR_truncated.dcm")]).is_err());
}

#[test]
fn nibabel_philips_enhanced_mprage_geometry() {
    // 176-frame enhanced MR; the gzip is unpacked here (the loader reads DICOM, not gzip).
    let gz = site_packages().join("nibabel/nicom/tests/data/philips_mprage.dcm.gz");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()),
        &mut bytes,
    )
    .unwrap();
    let volumes = load_series_from_memory(vec![(PathBuf::from("philips_mprage.dcm"), bytes)]).unwrap();
    assert_eq!(volumes.len(), 1);
    let dims = volumes[0].image.grid().dims();
    assert_eq!(dims[2], 176, "{dims:?}");
    assert_eq!(
        volumes[0].sidecar.manufacturer.as_deref().map(|m| m.to_ascii_lowercase().contains("philips")),
        Some(true)
    );
}
