//! `pedinorm segment` end to end on subjects the MNI base never made: the procedural phantom
//! base of the generator, a child (adult-like T1 order) and an infant (inverted grey/white
//! order), against the generator's truth labels; outputs, volumes and refusals.

use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use std::path::Path;
use std::process::{Command, Output};

fn pedinorm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pedinorm")).args(args).output().expect("pedinorm runs")
}

fn ok(args: &[&str]) -> String {
    let output = pedinorm(args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn dice(truth: &[f32], labels: &[f32], truth_label: f32, label: f32) -> f64 {
    let (mut both, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&t, &l) in truth.iter().zip(labels) {
        a += (t == truth_label) as usize;
        b += (l == label) as usize;
        both += (t == truth_label && l == label) as usize;
    }
    2.0 * both as f64 / (a + b) as f64
}

/// Synthesises one phantom subject aged within `ages` into `dir`; returns its file prefix.
fn subject(dir: &Path, ages: &str) -> String {
    let out = dir.to_str().unwrap();
    ok(&[
        "synth",
        "--phantom",
        "--n",
        "1",
        "--ages",
        ages,
        "--seed",
        "4",
        "--resolution",
        "3",
        "--no-warps",
        "--out-dir",
        out,
    ]);
    format!("{out}/sub-0001")
}

#[test]
fn tissues_of_child_and_infant_phantoms_match_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    // Class order follows intensity: CSF < GM < WM in a child's T1, CSF < WM < GM in an infant's.
    for (ages, order) in [("9-11", ["csf", "gm", "wm"]), ("0.1-0.3", ["csf", "wm", "gm"])] {
        let folder = dir.path().join(ages);
        let prefix = subject(&folder, ages);
        let out = folder.join("seg");
        let stdout = ok(&[
            "segment",
            "--image",
            &format!("{prefix}.nii.gz"),
            "--mask",
            &format!("{prefix}_mask.nii.gz"),
            "--tissues",
            &order.join(","),
            "--out-dir",
            out.to_str().unwrap(),
        ]);
        assert_eq!(stdout.lines().count(), 3, "{stdout}");
        let truth = read_image(Path::new(&format!("{prefix}_labels.nii.gz"))).unwrap();
        let labels = read_image(&out.join("labels.nii.gz")).unwrap();
        for (index, tissue) in order.iter().enumerate() {
            let truth_label = match *tissue {
                "csf" => 1.0,
                "gm" => 2.0,
                _ => 3.0,
            };
            let score = dice(truth.as_slice(), labels.as_slice(), truth_label, (index + 1) as f32);
            assert!(score > 0.75, "{ages} {tissue}: Dice {score:.3}");
            assert!(out.join(format!("{tissue}.nii.gz")).is_file());
        }
        // Volumes add up to the mask's volume.
        let table = std::fs::read_to_string(out.join("volumes.tsv")).unwrap();
        let total: f64 = table.lines().find(|l| l.starts_with("total\t")).unwrap()[6..].parse().unwrap();
        let mask = read_image(Path::new(&format!("{prefix}_mask.nii.gz"))).unwrap();
        let mask_ml = mask.as_slice().iter().filter(|&&m| m > 0.5).count() as f64 * 27.0 / 1000.0;
        assert!((total - mask_ml).abs() < 0.01 * mask_ml, "{total} vs {mask_ml}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("segmentation.json")).unwrap()).unwrap();
        assert_eq!(summary["tissues"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn bad_inputs_are_refused_by_name_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = subject(dir.path(), "9-11");
    let image = format!("{prefix}.nii.gz");
    // A prior on another grid.
    let other = dir.path().join("other.nii.gz");
    let grid = pedinorm_registration::Grid::axis_aligned([5, 5, 5], [3.0; 3], [0.0; 3]).unwrap();
    write_image(&other, &pedinorm_registration::Image::filled(grid, 0.5f32), VoxelType::F32).unwrap();
    let out = dir.path().join("seg");
    let priors = format!("{},{},{}", other.display(), other.display(), other.display());
    let with_tissues = |tissues: &str| {
        let out = out.to_str().unwrap();
        let output = pedinorm(&[
            "segment",
            "--image",
            &image,
            "--priors",
            &priors,
            "--tissues",
            tissues,
            "--out-dir",
            out,
        ]);
        assert!(!output.status.success(), "--tissues {tissues}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = with_tissues("csf,gm,wm");
    assert!(stderr.contains("other.nii.gz") && stderr.contains("grid"), "{stderr}");
    assert!(!out.exists(), "a refused run left an output folder");
    // Names that are not file names, or fewer names than priors.
    for tissues in ["a/b,c,d", "gm,wm"] {
        assert!(with_tissues(tissues).contains("--tissues"), "{tissues}");
    }
    assert!(!out.exists());
}
