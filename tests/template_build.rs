//! End-to-end template builds through the `pedinorm` binary with the local executor: the
//! result does not depend on the number of concurrent tasks, an interrupted build resumes to
//! the same result without redoing finished steps, and bad inputs or failing subjects are
//! reported by name.

mod batch_common;

use batch_common::{QUICK_TEMPLATE_REGISTRATION, pedinorm, template_build_files as result_files};
use pedinorm::formats::nifti::read_image;
use std::path::Path;

/// A small synthetic cohort (procedural phantom, 6 mm voxels).
fn synth(dir: &Path, n: usize) -> std::path::PathBuf {
    batch_common::synth(dir, n, 0, 6.0, 3)
}

fn build(cohort: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    pedinorm()
        .args(["template", "build", "--brackets", "all", "--iterations", "1", "--threads", "1"])
        .args(QUICK_TEMPLATE_REGISTRATION)
        .arg("--cohort")
        .arg(cohort)
        .arg("--out-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn build_is_identical_across_job_counts_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = synth(dir.path(), 3);
    let one = dir.path().join("one");
    let output = build(&cohort, &one, &["--jobs", "1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let build_one = one.join("all");
    for file in [
        "template.nii.gz",
        "qc.json",
        "montage.png",
        "iter-1/subject-sub-0002/warp.nii.gz",
        "iter-0/subject-sub-0002/affine.txt",
    ] {
        assert!(build_one.join(file).is_file(), "{file} missing");
    }
    let qc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(build_one.join("qc.json")).unwrap()).unwrap();
    let iterations = qc["iterations"].as_array().unwrap();
    assert_eq!(iterations.len(), 2);
    assert!(iterations[1]["mean_similarity"].as_f64().unwrap() > 0.8, "{qc}");
    assert!(iterations[1]["mean_warp_norm_mm"].as_f64().unwrap() > 0.0);
    assert_eq!(iterations[1]["subjects"].as_array().unwrap().len(), 3);
    let png = std::fs::read(one.join("montage.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let two = dir.path().join("two");
    let output = build(&cohort, &two, &["--jobs", "2"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let build_two = two.join("all");
    let reference = result_files(&build_one);
    assert_eq!(result_files(&build_two), reference);

    // Interrupt: drop the last reduce and one map step of the last iteration; the re-run
    // redoes only those and ends identical.
    let init_time = std::fs::metadata(build_two.join("init/target.nii.gz")).unwrap().modified().unwrap();
    let kept_map = std::fs::metadata(build_two.join("iter-1/subject-sub-0001/warped.nii.gz"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::remove_file(build_two.join("iter-1/done.json")).unwrap();
    std::fs::remove_file(build_two.join("iter-1/template.nii.gz")).unwrap();
    std::fs::remove_dir_all(build_two.join("iter-1/subject-sub-0003")).unwrap();
    std::fs::remove_file(build_two.join("template.nii.gz")).unwrap();
    // A corrupted output (size differs from done.json) is redone too.
    std::fs::write(build_two.join("iter-1/subject-sub-0002/warped.nii.gz"), b"truncated").unwrap();
    let output = build(&cohort, &two, &["--jobs", "2"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(result_files(&build_two), reference);
    assert_eq!(
        std::fs::metadata(build_two.join("init/target.nii.gz")).unwrap().modified().unwrap(),
        init_time
    );
    assert_eq!(
        std::fs::metadata(build_two.join("iter-1/subject-sub-0001/warped.nii.gz"))
            .unwrap()
            .modified()
            .unwrap(),
        kept_map
    );

    // Other settings in the same folder are refused rather than mixed.
    let output = build(&cohort, &two, &["--jobs", "2", "--gradient-step", "0.5"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("different build"));
}

#[test]
fn bad_cohort_is_reported_before_any_compute() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = synth(dir.path(), 2);
    let folder = cohort.parent().unwrap();
    std::fs::write(folder.join("broken.nii.gz"), b"not an image").unwrap();
    let mut text = std::fs::read_to_string(&cohort).unwrap();
    text.push_str(
        "sub-x,broken.nii.gz,8,F,normal\nsub-y,sub-0001.nii.gz,9,M,normal\nsub-z,sub-0002.nii.gz,,M,normal\n",
    );
    std::fs::write(&cohort, text).unwrap();
    let out = dir.path().join("out");
    let output = build(&cohort, &out, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("subject sub-x") && stderr.contains("broken.nii.gz"), "{stderr}");
    assert!(stderr.contains("(subject sub-z): age is missing"), "{stderr}");
    assert!(
        stderr.contains("subject sub-y: image") && stderr.contains("is also subject sub-0001"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing may be computed");
}

#[test]
fn failing_subject_is_retried_then_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = synth(dir.path(), 3);
    let folder = cohort.parent().unwrap();
    // A constant image reads fine but cannot be registered.
    let image = read_image(&folder.join("sub-0001.nii.gz")).unwrap();
    let flat = image.map(|_| 100.0f32);
    pedinorm::formats::nifti::write_image(
        &folder.join("flat.nii.gz"),
        &flat,
        pedinorm::formats::nifti::VoxelType::F32,
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&cohort).unwrap();
    text.push_str("sub-flat,flat.nii.gz,9,F,normal\n");
    std::fs::write(&cohort, text).unwrap();
    let out = dir.path().join("out");
    let output = build(&cohort, &out, &["--jobs", "2", "--retries", "1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sub-flat in iter-0-map after 2 attempt(s)"), "{stderr}");
    assert!(stderr.contains("constant intensity"), "{stderr}");
    // The other subjects' steps are done; the reduce did not run.
    assert!(out.join("all/iter-0/subject-sub-0002/done.json").is_file());
    assert!(!out.join("all/iter-0/done.json").exists());
}
