//! A miniature of the README's main command (`pedinorm demo`) end to end: synthetic phantom
//! cohort at 4 mm, one template bracket, the HDF5 normative database with leave-one-out
//! calibration, and deviation maps of two cases with strong abnormalities. Checks that the
//! strong lesion is detected where the truth says, that the outputs exist, and that the
//! database has the documented layout when read with h5py.

mod demo_common;

use demo_common::{miniature_demo, quick_mapping};
use pedinorm::normdb::NormDbFile;
use pedinorm::pipeline::demo::run_demo;
use pedinorm_templates::model::NormativeDb;
use std::path::Path;

fn python() -> std::path::PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/venv/bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

#[test]
fn miniature_demo_detects_a_strong_lesion_and_writes_the_documented_database() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = quick_mapping();
    let config = miniature_demo(dir.path().join("demo"), 12, mapping);
    let summary = run_demo(&config).unwrap();
    assert_eq!(summary.cases.len(), 1);
    let case = &summary.cases[0];
    assert!(case.detected, "the strong lesion was not detected: {case:?}");
    assert!(
        case.matching_channels.iter().any(|c| c == "intensity above"),
        "a hyperintense lesion must give a significant intensity cluster above the norm: {case:?}"
    );
    for name in pedinorm::pipeline::deviation::OUTPUT_FILES {
        assert!(case.out_dir.join(name).is_file(), "missing {name}");
    }
    assert!(case.out_dir.join("montage_intensity.png").is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.out_dir.join("report.json")).unwrap()).unwrap();
    assert!(report["clusters"].as_array().unwrap().iter().any(|c| c["significant"] == true));
    assert_eq!(report["thresholds"][0]["calibrated"], true);

    // Calibration: thresholds exist and the achieved rates are reported.
    let db = NormativeDb::read(&summary.normdb).unwrap();
    let calibration = db.calibration.as_ref().expect("calibrated");
    assert_eq!(calibration.channels.len(), 2);
    assert!(calibration.channels[0].voxel.z_threshold > 0.0);
    assert_eq!(calibration.channels[0].voxel.achieved_rate_per_subject.len(), 12);
    assert_eq!(db.subjects.len(), 12);

    // The documented layout, read by h5py.
    let script = r#"
import sys, h5py
f = h5py.File(sys.argv[1], "r")
assert f.attrs["schema"] == "pedinorm-normdb", f.attrs["schema"]
assert int(f.attrs["schema_version"]) == 2
for key in ("software", "created_utc", "parameters", "history"):
    assert key in f.attrs, key
(bracket,) = list(f["templates"])
t = f["templates"][bracket]
assert t["image"].ndim == 3 and t["image"].compression == "gzip" and t["image"].chunks is not None
assert t["mask"].shape == t["image"].shape and t["affine"].shape == (4, 4)
node = f["stats"][bracket]["node_00"]
for ch in ("intensity", "logjac"):
    for sex in ("F", "M"):
        g = node[ch][sex]
        for d in ("mean", "m2", "age_cross"):
            assert g[d].shape == t["image"].shape and g[d].compression == "gzip"
        for a in ("count", "weight_sum", "weight_sq_sum", "age_mean", "age_m2"):
            assert a in g.attrs, a
s = f["subjects"]
assert len(s["pseudonym"]) == 12 and len(s["age_years"]) == 12
assert set(x.decode() if isinstance(x, bytes) else x for x in s["sex"][:]) <= {"F", "M"}
c = f["calibration"]["intensity"]
assert c.attrs["z_threshold"] > 0 and len(c["achieved_voxel_rate_per_subject"]) == 12
assert c.attrs["cluster_mass_threshold"] >= 0 and len(c["max_cluster_mass_per_subject"]) == 12
n = f["calibration"]["null"]
assert len(n["pseudonym"]) == 12
for ch in ("intensity", "logjac"):
    assert n[ch]["abs_z_histogram"].shape == (12, 8001)
    assert n[ch]["max_cluster_mass"].shape == (12, 2001) and n[ch]["max_cluster_voxels"].shape == (12, 2001)
    # Each normal's histogram counts its mask voxels once.
    assert len(set(n[ch]["abs_z_histogram"][...].sum(axis=1))) == 1
print("ok", bracket)
"#;
    let output =
        std::process::Command::new(python()).arg("-c").arg(script).arg(&summary.normdb).output().unwrap();
    assert!(
        output.status.success(),
        "h5py check failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
