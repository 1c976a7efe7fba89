//! Set-up shared by the batch tests (template builds, normative-database builds and batch
//! deviation maps, locally and on Slurm): the `pedinorm` binary, small synthetic phantom
//! cohorts, result files compared by content, and the one-node Slurm of
//! `scripts/services/slurm.sh`.
#![allow(dead_code)] // each test file uses a part

#[path = "../component/mod.rs"]
mod component;

use component::component_available;
use pedinorm::formats::nifti::read_image;
use pedinorm::normdb::NormDbFile;
use pedinorm_templates::model::NormativeDb;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `pedinorm` binary under test.
pub fn pedinorm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pedinorm"))
}

/// Runs a command and returns its output, failing the test with its stderr when it fails.
pub fn run_ok(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Registration settings of the quick template builds of the batch tests: a 6 mm grid and
/// short schedules.
pub const QUICK_TEMPLATE_REGISTRATION: [&str; 6] =
    ["--registration-spacing", "6", "--affine-iterations", "30x15", "--deformable-iterations", "10x5"];

/// `pedinorm deviation` of the case list `cases` against `db` into `out`, two tasks at a time
/// with one thread each, with further executor options `executor` (e.g. `--retries 1`).
pub fn deviation_batch(db: &Path, cases: &Path, out: &Path, executor: &[&str]) -> Command {
    let mut command = pedinorm();
    command
        .args(["deviation", "--jobs", "2", "--threads", "1"])
        .args(executor)
        .arg("--normdb")
        .arg(db)
        .arg("--cases")
        .arg(cases)
        .arg("--out-dir")
        .arg(out);
    command
}

/// A synthetic phantom cohort of `n` normals aged 7–11 (and `cases` abnormal cases) at
/// `resolution_mm`, without warps; returns the cohort CSV.
pub fn synth(dir: &Path, n: usize, cases: usize, resolution_mm: f64, seed: u64) -> PathBuf {
    let out = dir.join("cohort");
    run_ok(
        pedinorm()
            .args(["synth", "--phantom", "--no-warps", "--ages", "7-11"])
            .args(["--resolution", &resolution_mm.to_string(), "--seed", &seed.to_string()])
            .args(["--n", &n.to_string(), "--cases", &cases.to_string(), "--out-dir"])
            .arg(&out),
    );
    out.join("cohort.csv")
}

/// Every file under `dir` that is part of a result, as (relative path, content), in name
/// order: NIfTI images by their voxel values (`raw_names` ending files by their bytes), JSON
/// files without the keys in `volatile_keys` (timings, creation times), other files by their
/// bytes. Files whose relative path starts with one of `skip_prefixes` or ends with one of
/// `skip_suffixes` are left out.
pub fn result_files(
    dir: &Path,
    skip_prefixes: &[&str],
    skip_suffixes: &[&str],
    raw_names: &[&str],
    volatile_keys: &[&str],
) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if !path.is_file()
            || skip_prefixes.iter().any(|p| name.starts_with(p))
            || skip_suffixes.iter().any(|s| name.ends_with(s))
        {
            continue;
        }
        let content = if raw_names.iter().any(|r| name.ends_with(r)) {
            std::fs::read(path).unwrap()
        } else if name.ends_with(".nii.gz") {
            read_image(path).unwrap().as_slice().iter().flat_map(|v| v.to_le_bytes()).collect()
        } else if name.ends_with(".json") && !volatile_keys.is_empty() {
            let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            strip_keys(&mut value, volatile_keys);
            serde_json::to_vec(&value).unwrap()
        } else {
            std::fs::read(path).unwrap()
        };
        files.push((name, content));
    }
    files
}

fn strip_keys(value: &mut serde_json::Value, keys: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !keys.contains(&k.as_str()));
            map.values_mut().for_each(|v| strip_keys(v, keys));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_keys(v, keys)),
        _ => {}
    }
}

/// The result files of a template build directory (no Slurm files, done markers or manifest;
/// warps by their bytes).
pub fn template_build_files(build_dir: &Path) -> Vec<(String, Vec<u8>)> {
    result_files(build_dir, &["slurm"], &["done.json", "build.json"], &["warp.nii.gz"], &[])
}

/// Whether the one-node Slurm of `scripts/services/slurm.sh start` is up (it sets
/// `PEDINORM_SLURM=1`); otherwise says why the test does not run, or fails it under `CI=true`.
pub fn slurm_available() -> bool {
    component_available(
        std::env::var("PEDINORM_SLURM").as_deref() == Ok("1"),
        "PEDINORM_SLURM is not 1 (start Slurm with scripts/services/slurm.sh start)",
    )
}

/// The working folder of a Slurm test (under the system's temporary folder), or `None` when
/// Slurm is not up (see [`slurm_available`]).
pub fn slurm_work_dir() -> Option<tempfile::TempDir> {
    slurm_available().then(|| tempfile::tempdir_in(std::env::temp_dir()).unwrap())
}

/// (job id with array index, name, state) of the queued or recent jobs whose name starts with
/// `name_prefix`.
pub fn squeue_tasks(name_prefix: &str) -> Vec<(String, String, String)> {
    let output = Command::new("squeue").args(["-h", "-r", "-o", "%i|%j|%T"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split('|').collect();
            (parts.len() == 3 && parts[1].starts_with(name_prefix))
                .then(|| (parts[0].to_string(), parts[1].to_string(), parts[2].to_string()))
        })
        .collect()
}

/// A normative database without its creation times and history: templates, masks, labels,
/// statistics, subjects, calibration and build parameters, for bit-identity checks.
pub fn normdb_content(path: &Path) -> NormativeDb {
    let mut db = NormativeDb::read(path).unwrap();
    db.metadata.created_utc.clear();
    db.metadata.modified_utc.clear();
    db.metadata.history.clear();
    db
}

/// Asserts two databases hold the same content, part by part (a readable message names the
/// first part that differs instead of printing whole databases).
pub fn assert_same_normdb(found: &NormativeDb, expected: &NormativeDb) {
    assert_eq!(found.metadata.parameters, expected.metadata.parameters, "build parameters differ");
    assert_eq!(found.brackets.len(), expected.brackets.len(), "bracket count differs");
    for (a, b) in found.brackets.iter().zip(&expected.brackets) {
        assert_eq!((&a.name, a.min_years, a.max_years), (&b.name, b.min_years, b.max_years));
        assert!(
            a.template.grid().same_as(b.template.grid(), 0.0),
            "bracket {}: template grid differs",
            a.name
        );
        assert!(a.template.as_slice() == b.template.as_slice(), "bracket {}: template differs", a.name);
        assert!(a.mask.as_slice() == b.mask.as_slice(), "bracket {}: mask differs", a.name);
        assert!(a.labels == b.labels, "bracket {}: labels differ", a.name);
        assert!(a.priors == b.priors, "bracket {}: tissue priors differ", a.name);
        for (channel, (x, y)) in a.stats.iter().zip(&b.stats).enumerate() {
            assert_eq!(x.nodes(), y.nodes(), "bracket {} channel {channel}: nodes differ", a.name);
            for (node, (gx, gy)) in x.groups().iter().zip(y.groups()).enumerate() {
                for sex in 0..2 {
                    assert!(
                        gx[sex] == gy[sex],
                        "bracket {} channel {channel} node {node} sex {sex}: statistics differ",
                        a.name
                    );
                }
            }
        }
    }
    assert_eq!(found.subjects, expected.subjects, "subjects differ");
    assert_eq!(found.calibration, expected.calibration, "calibration differs");
    assert_eq!(found.atlas, expected.atlas, "atlas differs");
    assert_eq!(found.metadata.software, expected.metadata.software);
    assert!(found.regional == expected.regional, "regional volumes differ");
}
