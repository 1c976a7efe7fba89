//! Normative-database builds and batch deviation maps through the `pedinorm` binary with the
//! local executor (phantom cohort at 4 mm): the database equals the in-memory build's, an
//! interrupted build resumes to the same database without redoing finished steps, statistics
//! computed in chunks and merged equal the subject-by-subject ones, and a batch of cases
//! reports a failing case by name, leaves no half-written folder and skips done cases on a
//! re-run.

mod batch_common;

use batch_common::{
    QUICK_TEMPLATE_REGISTRATION, assert_same_normdb, deviation_batch, normdb_content, pedinorm, run_ok, synth,
};
use pedinorm::formats::nifti::read_image;
use pedinorm::pipeline::cohort::read_cohort;
use pedinorm::pipeline::database::{BracketTemplate, build_database};
use pedinorm_templates::model::{BuildOptions, NormalSubject};
use pedinorm_templates::stats::Sex;
use std::path::{Path, PathBuf};
use std::process::Command;

fn normdb_build(cohort: &Path, output: &Path, extra: &[&str]) -> Command {
    let template = cohort.parent().unwrap().join("base_t1.nii.gz");
    let mut command = pedinorm();
    command
        .args(["normdb", "build", "--nodes", "1", "--jobs", "2", "--threads", "1", "--cohort"])
        .arg(cohort)
        .arg("--template")
        .arg(format!("t:7:12:{}", template.display()))
        .arg("--output")
        .arg(output)
        .args(extra);
    command
}

/// The normals of a cohort CSV, as an in-memory build takes them.
fn cohort_normals(cohort: &Path) -> Vec<NormalSubject> {
    read_cohort(cohort)
        .unwrap()
        .into_iter()
        .map(|s| NormalSubject {
            pseudonym: s.id,
            age_years: s.age_years,
            sex: Sex::parse(s.sex.as_deref().unwrap()).unwrap(),
            scanner: s.site.unwrap_or_default(),
            image: read_image(&s.path).unwrap(),
        })
        .collect()
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn normdb_build_resumes_and_chunked_statistics_match() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = synth(dir.path(), 6, 0, 4.0, 5);
    let output = dir.path().join("db.h5");
    run_ok(&mut normdb_build(&cohort, &output, &[]));
    let build = dir.path().join("db.h5.build");
    for file in ["normdb.json", "subjects.txt", "bracket-t/mask.nii.gz", "subject-sub-0004/logjac.nii.gz"] {
        assert!(build.join(file).is_file(), "{file} missing");
    }
    let reference = normdb_content(&output);
    assert_eq!(reference.subjects.len(), 6);
    assert!(reference.calibration.is_some());
    // Every QC-passed normal has its regional volumes, measured with the finished priors.
    let passed = reference.subjects.iter().filter(|s| s.qc_passed).count();
    let regional = reference.regional.as_ref().expect("regional volumes");
    assert_eq!(regional.rows.len(), passed);
    let icv = regional.names.iter().position(|n| n == "icv").unwrap();
    assert!(regional.rows.iter().all(|r| r.values_ml[icv] > 100.0), "{regional:?}");

    // The steps as processes give exactly the database of the in-memory build.
    let normals = cohort_normals(&cohort);
    let template = read_image(&cohort.parent().unwrap().join("base_t1.nii.gz")).unwrap();
    let options = BuildOptions { nodes_per_bracket: 1, ..BuildOptions::default() };
    let bracket = BracketTemplate { name: "t".into(), min_years: 7.0, max_years: 12.0, template };
    let mut built = build_database(&normals, vec![bracket], None, &options, &|_| {}).unwrap();
    built.metadata.created_utc.clear();
    built.metadata.modified_utc.clear();
    built.metadata.history.clear();
    assert_same_normdb(&built, &reference);

    // Interrupt: drop one subject's map step, corrupt another map; the re-run redoes only
    // those and what depends on them (the reduce), and writes the same database.
    let kept = build.join("subject-sub-0001/intensity.nii.gz");
    let reduce_before = std::fs::read_to_string(build.join("reduce/done.json")).unwrap();
    let kept_time = modified(&kept);
    std::fs::remove_dir_all(build.join("subject-sub-0003")).unwrap();
    std::fs::write(build.join("subject-sub-0002/logjac.nii.gz"), b"truncated").unwrap();
    run_ok(&mut normdb_build(&cohort, &output, &[]));
    let reduce = std::fs::read_to_string(build.join("reduce/done.json")).unwrap();
    assert_same_normdb(&normdb_content(&output), &reference);
    assert_eq!(modified(&kept), kept_time, "a finished map step was redone");
    assert_ne!(reduce, reduce_before, "the reduce must run again after its inputs were redone");

    // Other settings in the same build directory are refused rather than mixed.
    let refused = normdb_build(&cohort, &output, &["--fwhm", "6"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("different build"));

    // Partial sums of chunks of 4 and 2 subjects, merged in chunk order: the same statistics
    // up to rounding, the same subjects.
    // The map steps do not depend on the chunking: reuse them (the build skips done steps).
    let chunked = dir.path().join("chunked.h5");
    for entry in walkdir::WalkDir::new(&build) {
        let entry = entry.unwrap();
        let relative = entry.path().strip_prefix(&build).unwrap();
        let name = relative.to_string_lossy();
        if entry.file_type().is_file() && (name.starts_with("subject-") || name.starts_with("bracket-")) {
            let target = dir.path().join("chunked.h5.build").join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
    run_ok(&mut normdb_build(&cohort, &chunked, &["--chunk-size", "4"]));
    assert!(build.parent().unwrap().join("chunked.h5.build/partial-1/stats.h5").is_file());
    let merged = normdb_content(&chunked);
    assert_eq!(merged.subjects, reference.subjects);
    let (a, b) = (&merged.brackets[0].stats[0], &reference.brackets[0].stats[0]);
    for (ga, gb) in a.groups().iter().flatten().zip(b.groups().iter().flatten()) {
        assert_eq!(ga.count, gb.count);
        for (x, y) in ga.mean.iter().zip(&gb.mean).chain(ga.m2.iter().zip(&gb.m2)) {
            assert!((x - y).abs() <= 1e-9 * (1.0 + y.abs()), "{x} against {y}");
        }
    }
}

/// Too few normals outside the template to calibrate on their own: every template member's map
/// step maps it a second time, to the template without it, and the calibration scores those
/// maps; the staged build and the in-memory build agree on it.
#[test]
fn template_members_are_calibrated_as_new_cases() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = synth(dir.path(), 6, 0, 6.0, 11);
    let rows: Vec<String> = std::fs::read_to_string(&cohort).unwrap().lines().map(String::from).collect();
    let members_csv = cohort.with_file_name("members.csv");
    std::fs::write(&members_csv, rows[..5].join("\n") + "\n").unwrap();
    let brackets = dir.path().join("brackets.json");
    std::fs::write(&brackets, r#"[{"name": "t", "min_years": 7, "max_years": 12}]"#).unwrap();
    let templates = dir.path().join("templates");
    run_ok(
        pedinorm()
            .args(["template", "build", "--iterations", "1", "--threads", "1", "--jobs", "2", "--brackets"])
            .arg(&brackets)
            .args(QUICK_TEMPLATE_REGISTRATION)
            .arg("--cohort")
            .arg(&members_csv)
            .arg("--out-dir")
            .arg(&templates),
    );
    let template_build = templates.join("bracket-t");
    let output = dir.path().join("db.h5");
    run_ok(
        pedinorm()
            .args(["normdb", "build", "--nodes", "1", "--jobs", "2", "--threads", "1", "--cohort"])
            .arg(&cohort)
            .arg("--template-build")
            .arg(&template_build)
            .arg("--output")
            .arg(&output),
    );
    let normals = read_cohort(&cohort).unwrap();
    let members: std::collections::BTreeSet<String> =
        read_cohort(&members_csv).unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(members.len(), 4);
    for normal in &normals {
        let again =
            dir.path().join(format!("db.h5.build/subject-{}/intensity_as_new_case.nii.gz", normal.id));
        assert_eq!(again.is_file(), members.contains(&normal.id), "{}", again.display());
    }
    let staged = normdb_content(&output);
    assert_eq!(staged.calibration.as_ref().unwrap().nulls.len(), 6, "every normal calibrates");

    let subjects = cohort_normals(&cohort);
    let template = read_image(&template_build.join("template.nii.gz")).unwrap();
    let bracket = BracketTemplate { name: "t".into(), min_years: 7.0, max_years: 12.0, template };
    let options = BuildOptions { nodes_per_bracket: 1, template_members: members, ..BuildOptions::default() };
    let mut built = build_database(&subjects, vec![bracket], None, &options, &|_| {}).unwrap();
    built.metadata.created_utc.clear();
    built.metadata.modified_utc.clear();
    built.metadata.history.clear();
    assert_same_normdb(&built, &staged);
}

fn write_cases(path: &Path, cohort_dir: &Path, extra_rows: &str) {
    let text = format!(
        "path,age,sex,id\n{0}/sub-0007.nii.gz,10.3,M,lesion-a\n{0}/sub-0008.nii.gz,9.9,F,lesion-b\n{0}/sub-0001.nii.gz,8.1,,normal-1\n{extra_rows}",
        cohort_dir.display()
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn batch_deviation_reports_failed_cases_by_name_and_skips_done_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = synth(dir.path(), 6, 2, 4.0, 5);
    let cohort_dir: PathBuf = cohort.parent().unwrap().to_owned();
    let db = dir.path().join("db.h5");
    run_ok(&mut normdb_build(&cohort, &db, &[]));
    // A constant image reads fine but cannot be registered: it fails every attempt.
    let image = read_image(&cohort_dir.join("sub-0001.nii.gz")).unwrap();
    pedinorm::formats::nifti::write_image(
        &cohort_dir.join("broken.nii.gz"),
        &image.map(|_| 100.0f32),
        pedinorm::formats::nifti::VoxelType::F32,
    )
    .unwrap();
    let cases = dir.path().join("cases.csv");
    write_cases(&cases, &cohort_dir, &format!("{}/broken.nii.gz,9,F,broken\n", cohort_dir.display()));
    let out = dir.path().join("maps");
    let output = deviation_batch(&db, &cases, &out, &["--retries", "1"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken in deviation after 2 attempt(s)"), "{stderr}");
    let summary = std::fs::read_to_string(out.join("summary.tsv")).unwrap();
    assert!(summary.contains("broken\tfailed") && summary.contains("lesion-a\tdone\tt\t"), "{summary}");
    // Only whole folders: no temporary folder left, none for the failed case.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp")) && !out.join("broken").exists(), "{names:?}");
    for name in pedinorm::pipeline::deviation::OUTPUT_FILES.iter().chain(&["done.json"]) {
        assert!(out.join("lesion-b").join(name).is_file(), "{name} missing");
    }
    // Same outputs as the single-case form (reports differ only in their creation time).
    let single = dir.path().join("single");
    run_ok(
        pedinorm()
            .arg("deviation")
            .arg("--normdb")
            .arg(&db)
            .arg("--case")
            .arg(cohort_dir.join("sub-0008.nii.gz"))
            .args(["--age", "9.9", "--sex", "F", "--out-dir"])
            .arg(&single),
    );
    let files = |d: &Path| batch_common::result_files(d, &[], &["done.json"], &[], &["created_utc"]);
    assert_eq!(files(&out.join("lesion-b")), files(&single));

    // Re-run with the broken case fixed: only that case runs.
    let kept = out.join("lesion-a/report.json");
    let kept_time = modified(&kept);
    write_cases(&cases, &cohort_dir, &format!("{}/sub-0002.nii.gz,8.6,F,broken\n", cohort_dir.display()));
    run_ok(&mut deviation_batch(&db, &cases, &out, &["--retries", "1"]));
    assert_eq!(modified(&kept), kept_time, "a done case was redone");
    assert!(out.join("broken/done.json").is_file());
    assert!(!std::fs::read_to_string(out.join("summary.tsv")).unwrap().contains("failed"));
}
