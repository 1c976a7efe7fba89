//! Out-of-distribution safeguards through the real `pedinorm deviation` command: a normative
//! database of synthetic phantom normals (4 mm, ages 8–12) is built, then fresh normals of the
//! same generator (another seed: in distribution) and mismatched versions of one of them
//! (inverted contrast, heavy blur, an age the database has no normals for) are compared with it;
//! the ignored experiment adds normals of another base brain (MNI152 instead of the phantom).
//! The fresh normals must not be flagged; every mismatch must be, in `report.json`
//! (`reliability`, cluster caveats), in the command's summary, and as a banner on the montage.

mod demo_common;

use demo_common::miniature_demo;
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::pipeline::demo::run_demo;
use pedinorm_registration::Grid;
use pedinorm_registration::smooth::smooth_mm;
use pedinorm_templates::model::MappingParams;
use pedinorm_validation::{BaseBrain, CohortSpec, Generator, cohort_plan};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The phantom base of the miniature demo (same grid as `BaseSource::Phantom { 4.0 }`).
fn phantom_base() -> BaseBrain {
    let n = |extent: f64| (extent / 4.0).round() as usize;
    let grid = Grid::axis_aligned([n(140.0), n(170.0), n(130.0)], [4.0; 3], [-70.0, -100.0, -60.0]).unwrap();
    BaseBrain::phantom(&grid)
}

fn build_database(dir: &Path) -> PathBuf {
    // The standard mapping: `pedinorm deviation` maps cases with it (only the settings recorded in
    // the database are taken from it), so the normals must be mapped the same way.
    let mut mapping = MappingParams::standard();
    mapping.smoothing_fwhm_mm = 6.0;
    run_demo(&miniature_demo(dir.join("demo"), 24, mapping)).unwrap().normdb
}

/// Normals aged 8.5–11.5 made from `base` by the generator with `seed`, written as
/// `<prefix>-<i>.nii.gz`: `(image path, age)`.
fn normals_of(base: &BaseBrain, dir: &Path, count: usize, seed: u64, prefix: &str) -> Vec<(PathBuf, f64)> {
    let mut spec = CohortSpec::new(count, 8.5, 11.5, 0, seed);
    spec.resolution_mm = 4.0;
    let generator = Generator::new(base, 4.0).unwrap();
    cohort_plan(&spec)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, member)| {
            let subject = generator.subject(&member.spec).unwrap();
            let path = dir.join(format!("{prefix}-{i}.nii.gz"));
            write_image(&path, &subject.image, VoxelType::F32).unwrap();
            (path, subject.age_years)
        })
        .collect()
}

/// Fresh normals of the same generator with another seed.
fn fresh_normals(dir: &Path, count: usize) -> Vec<(PathBuf, f64)> {
    normals_of(&phantom_base(), dir, count, 991, "fresh")
}

/// Normals of another base brain (the MNI152 2009 T1 instead of the phantom the database was
/// built from), same generator, ages and grid spacing: a brain the database's base never made.
fn other_base_normals(dir: &Path, count: usize) -> Vec<(PathBuf, f64)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = pedinorm::synth_io::load_base(&root.join(".data/mni")).unwrap();
    normals_of(&base, dir, count, 992, "other-base")
}

struct Run {
    report: serde_json::Value,
    stderr: String,
    out_dir: PathBuf,
}

fn deviation(normdb: &Path, case: &Path, age: f64, out_dir: &Path) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args(["deviation", "--normdb"])
        .arg(normdb)
        .arg("--case")
        .arg(case)
        .args(["--age", &format!("{age}"), "--out-dir"])
        .arg(out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "deviation of {} failed: {stderr}", case.display());
    let report = serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    Run { report, stderr, out_dir: out_dir.to_owned() }
}

fn flagged_indices(report: &serde_json::Value) -> Vec<String> {
    report["reliability"]["indices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["flagged"] == true)
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Rows of the montage whose pixels are all the banner red.
fn banner_rows(png: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let width = info.width as usize;
    (0..info.height as usize)
        .filter(|&y| {
            (0..width).all(|x| {
                let o = (y * width + x) * 3;
                buffer[o..o + 3] == pedinorm::report::BANNER_RED || buffer[o..o + 3] == [255, 255, 255]
            }) && buffer[y * width * 3..y * width * 3 + 3] == pedinorm::report::BANNER_RED
        })
        .count()
}

fn assert_unreliable(run: &Run, what: &str) {
    assert_eq!(
        run.report["reliability"]["reliable"], false,
        "{what} not flagged: {}",
        run.report["reliability"]
    );
    assert!(!run.report["reliability"]["reasons"].as_array().unwrap().is_empty());
    assert!(run.report["warnings"][0].as_str().unwrap().starts_with("COMPARISON UNRELIABLE"), "{what}");
    for c in run.report["clusters"].as_array().unwrap().iter().filter(|c| c["significant"] == true) {
        assert!(
            c["caveat"].as_str().is_some_and(|t| t.contains("unreliable")),
            "{what}: cluster without caveat {c}"
        );
    }
    assert!(run.stderr.contains("COMPARISON UNRELIABLE"), "{what}: summary says nothing: {}", run.stderr);
    assert!(
        banner_rows(&run.out_dir.join("montage_intensity.png")) >= 10,
        "{what}: no banner on the montage"
    );
    assert!(banner_rows(&run.out_dir.join("montage_logjac.png")) >= 10, "{what}: no banner on the montage");
}

#[test]
fn in_distribution_normals_pass_and_mismatched_cases_are_flagged_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let normdb = build_database(dir.path());
    let fresh = fresh_normals(dir.path(), 3);

    // In distribution: no flag, no banner, no caveat.
    for (i, (path, age)) in fresh.iter().enumerate() {
        let run = deviation(&normdb, path, *age, &dir.path().join(format!("fresh-{i}")));
        assert_eq!(
            run.report["reliability"]["reliable"], true,
            "in-distribution normal {i} flagged: {}",
            run.report["reliability"]
        );
        assert!(!run.stderr.contains("UNRELIABLE"), "{}", run.stderr);
        assert_eq!(banner_rows(&run.out_dir.join("montage_intensity.png")), 0);
        let floors = run.report["sd_floors"].as_array().unwrap();
        assert_eq!(floors.len(), 2);
        assert_eq!(floors[1]["sd_floor"], 0.04);
    }

    let (path, age) = &fresh[0];
    let image = read_image(path).unwrap();

    // Wrong contrast: intensities inverted inside the head.
    let max = image.as_slice().iter().copied().fold(0f32, f32::max);
    let inverted = image.map(|&v| if v > 0.02 * max { max - v } else { 0.0 });
    let inverted_path = dir.path().join("inverted.nii.gz");
    write_image(&inverted_path, &inverted, VoxelType::F32).unwrap();
    let run = deviation(&normdb, &inverted_path, *age, &dir.path().join("inverted"));
    assert_unreliable(&run, "inverted contrast");
    let flagged = flagged_indices(&run.report);
    assert!(
        flagged.iter().any(|n| n == "registration_similarity" || n == "histogram_distance"),
        "{flagged:?}"
    );

    // Heavy blur (Gaussian σ 6 mm, as from gross motion).
    let blurred_path = dir.path().join("blurred.nii.gz");
    write_image(&blurred_path, &smooth_mm(&image, 6.0), VoxelType::F32).unwrap();
    let run = deviation(&normdb, &blurred_path, *age, &dir.path().join("blurred"));
    assert_unreliable(&run, "heavy blur");

    // Wrong age: the database has normals of 8–12 years only.
    let run = deviation(&normdb, path, 16.5, &dir.path().join("wrong-age"));
    assert_unreliable(&run, "age outside the normals");
    assert!(
        run.report["reliability"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("age")),
        "{}",
        run.report["reliability"]
    );

    // The reference the verdicts came from is in the database file.
    let script = r#"
import sys, h5py
f = h5py.File(sys.argv[1], "r")
r = f["safeguards"]["reference"]
assert r.attrs["robust_z_limit"] == 4.0
for name in ("intensity_fraction_beyond", "logjac_median_abs_z", "registration_similarity", "histogram_distance", "mask_dice"):
    d = r[name]
    assert len(d) >= 10 and "limit" in d.attrs and "median" in d.attrs, name
s = f["safeguards"]
assert s.attrs["sd_floor_logjac"] == 0.04
(b,) = [k for k in s if k != "reference"]
assert s[b].attrs["sd_floor_intensity"] > 0
assert len(f["subjects"]["qc_mask_dice"]) == len(f["subjects"]["pseudonym"])
print("ok")
"#;
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/venv/bin/python");
    let output = Command::new(python).arg("-c").arg(script).arg(&normdb).output().unwrap();
    assert!(output.status.success(), "h5py: {}", String::from_utf8_lossy(&output.stderr));
}

/// The figures of `validation/RESULTS.md` (out-of-distribution flag): flag rate on fresh
/// in-distribution normals and on mismatched versions of them. Prints one line per kind.
#[test]
#[ignore = "validation figures (minutes): cargo test --test deviation_safeguards -- --ignored --nocapture"]
fn ood_flag_rates_on_normals_and_mismatched_cases() {
    let dir = tempfile::tempdir().unwrap();
    let normdb = build_database(dir.path());
    let fresh = fresh_normals(dir.path(), 20);
    let mut rows: Vec<(&str, usize, usize, usize)> = Vec::new(); // kind, cases, flagged, with a significant cluster
    let mut tally = |kind: &'static str, run: &Run| {
        let flagged = run.report["reliability"]["reliable"] == false;
        let significant = run.report["clusters"].as_array().unwrap().iter().any(|c| c["significant"] == true);
        match rows.iter_mut().find(|r| r.0 == kind) {
            Some(r) => {
                r.1 += 1;
                r.2 += usize::from(flagged);
                r.3 += usize::from(significant);
            }
            None => rows.push((kind, 1, usize::from(flagged), usize::from(significant))),
        }
    };
    for (i, (path, age)) in fresh.iter().enumerate() {
        let out = |name: &str| dir.path().join(format!("{name}-{i}"));
        tally("in-distribution normal", &deviation(&normdb, path, *age, &out("fresh")));
        let image = read_image(path).unwrap();
        let max = image.as_slice().iter().copied().fold(0f32, f32::max);
        let inverted = image.map(|&v| if v > 0.02 * max { max - v } else { 0.0 });
        let p = dir.path().join(format!("inverted-{i}.nii.gz"));
        write_image(&p, &inverted, VoxelType::F32).unwrap();
        tally("inverted contrast", &deviation(&normdb, &p, *age, &out("inverted")));
        let p = dir.path().join(format!("blurred-{i}.nii.gz"));
        write_image(&p, &smooth_mm(&image, 6.0), VoxelType::F32).unwrap();
        tally("blur σ 6 mm", &deviation(&normdb, &p, *age, &out("blurred")));
        let p = dir.path().join(format!("mild-blur-{i}.nii.gz"));
        write_image(&p, &smooth_mm(&image, 3.0), VoxelType::F32).unwrap();
        tally("blur σ 3 mm", &deviation(&normdb, &p, *age, &out("mild-blur")));
        tally("age 16.5 y (normals 8–12 y)", &deviation(&normdb, path, 16.5, &out("age")));
    }
    for (i, (path, age)) in other_base_normals(dir.path(), 20).iter().enumerate() {
        let out = dir.path().join(format!("other-base-{i}"));
        tally("another base brain (MNI152, normal)", &deviation(&normdb, path, *age, &out));
    }
    println!("kind\tcases\tflagged\twith a significant cluster");
    for (kind, cases, flagged, significant) in &rows {
        println!("{kind}\t{cases}\t{flagged}\t{significant}");
    }
    let in_distribution = rows.iter().find(|r| r.0 == "in-distribution normal").unwrap();
    assert!(in_distribution.2 as f64 <= 0.05 * in_distribution.1 as f64, "{rows:?}");
}
