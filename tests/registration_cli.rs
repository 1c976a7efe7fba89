//! End-to-end tests of `pedinorm register`, `apply` and `jacobian` on small synthetic files:
//! the affine recovers a known transform, the deformable stage reduces a known warp's error,
//! `apply` with the written transforms reproduces the warped output, and the Jacobian of the
//! written field is positive.

mod registration_common;

use nalgebra::Matrix3;
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::formats::transform::{read_affine, read_field};
use pedinorm_registration::resample::resample;
use pedinorm_registration::transform::map_voxels;
use pedinorm_registration::{
    AffineTransform, DisplacementField, Grid, Image, Interpolation, SpatialTransform, TransformChain,
};
use registration_common::phantom;
use std::path::Path;
use std::process::Command;

fn pedinorm(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm")).args(args).output().expect("pedinorm runs");
    assert!(
        output.status.success(),
        "pedinorm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn grid() -> Grid {
    Grid::axis_aligned([40, 46, 36], [2.0; 3], [-40.0, -46.0, -36.0]).unwrap()
}

fn lattice() -> Vec<[f64; 3]> {
    let mut points = Vec::new();
    for x in (-20..=20).step_by(5) {
        for y in (-25..=25).step_by(5) {
            for z in (-15..=15).step_by(5) {
                points.push([x as f64, y as f64, z as f64]);
            }
        }
    }
    points
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// Writes `fixed` and `moving` into `dir` and registers them with `--transform transform`,
/// writing outputs with the prefix `DIR/prefix`.
fn register(dir: &Path, fixed: &Image<f32>, moving: &Image<f32>, transform: &str, prefix: &str) {
    write_image(&dir.join("fixed.nii.gz"), fixed, VoxelType::F32).unwrap();
    write_image(&dir.join("moving.nii.gz"), moving, VoxelType::F32).unwrap();
    pedinorm(&[
        "register",
        "--fixed",
        &path(dir, "fixed.nii.gz"),
        "--moving",
        &path(dir, "moving.nii.gz"),
        "--transform",
        transform,
        "--output",
        &path(dir, prefix),
        "--threads",
        "2",
    ]);
}

#[test]
fn affine_recovers_a_known_transform() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid();
    let fixed = phantom(&grid);
    // The moving image is the fixed one pulled through a child-like shrink (0.85), rotation
    // and shift: moving(q) = fixed(t(q)), so the registration (fixed → moving) must be t⁻¹.
    let rotation = nalgebra::Rotation3::from_euler_angles(0.06, -0.04, 0.1).into_inner();
    let t = AffineTransform::about_center(&(rotation / 0.85), [2.0, -3.0, 1.0], [0.0; 3]);
    let moving = resample(&fixed, &grid, &t, Interpolation::Linear, 0.0);
    register(dir.path(), &fixed, &moving, "affine", "out_");
    let found = read_affine(&dir.path().join("out_affine.txt")).unwrap();
    let expected = t.inverse().unwrap();
    let error = found.max_distance(&expected, &lattice());
    assert!(error < 1.0, "largest error {error} mm");
    assert!(dir.path().join("out_warped.nii.gz").exists());
    assert!(!dir.path().join("out_warp.nii.gz").exists());
}

#[test]
fn syn_reduces_error_and_apply_reproduces_warped_output() {
    let dir = tempfile::tempdir().unwrap();
    let grid = grid();
    let fixed = phantom(&grid);
    // A smooth bump warp after a small affine: moving(q) = fixed(b(a(q))).
    let bump = DisplacementField::from_flat(
        &grid,
        map_voxels(&grid, |v| {
            let p = grid.voxel_to_world(v);
            let g = (-(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) / (2.0 * 14.0f64.powi(2))).exp();
            [(4.0 * g) as f32, (-3.0 * g) as f32, (2.0 * g) as f32]
        }),
    );
    let a = AffineTransform::about_center(&(Matrix3::identity() * 1.1), [1.0, 0.0, -1.0], [0.0; 3]);
    let truth = TransformChain::new(vec![&a, &bump]);
    let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0);
    register(dir.path(), &fixed, &moving, "syn", "syn_");
    let affine = read_affine(&dir.path().join("syn_affine.txt")).unwrap();
    let warp = read_field(&dir.path().join("syn_warp.nii.gz")).unwrap();
    let inverse = read_field(&dir.path().join("syn_inverse_warp.nii.gz")).unwrap();
    // Endpoint error of truth(R(p)) against p, affine only and with the deformable stage.
    let registered = TransformChain::new(vec![&warp, &affine]);
    let (mut affine_error, mut syn_error) = (0.0, 0.0);
    let points = lattice();
    for &p in &points {
        affine_error += distance(truth.transform_point(affine.transform_point(p)), p);
        syn_error += distance(truth.transform_point(registered.transform_point(p)), p);
    }
    affine_error /= points.len() as f64;
    syn_error /= points.len() as f64;
    assert!(
        syn_error < 0.7 * affine_error,
        "mean endpoint error: affine {affine_error} mm, syn {syn_error} mm"
    );
    assert!(syn_error < 1.0, "syn error {syn_error} mm");
    // The inverse chain [affine⁻¹, inverse] undoes the forward chain.
    let inverse_affine = affine.inverse().unwrap();
    let back = TransformChain::new(vec![&inverse_affine, &inverse]);
    for p in [[0.0, 0.0, 0.0], [10.0, -12.0, 5.0]] {
        let e = distance(registered.transform_point(back.transform_point(p)), p);
        assert!(e < 0.2, "inverse round trip error {e} mm at {p:?}");
    }

    // `apply` with the written transforms in antsApplyTransforms order reproduces the output.
    let applied = path(dir.path(), "applied.nii.gz");
    pedinorm(&[
        "apply",
        "--reference",
        &path(dir.path(), "fixed.nii.gz"),
        "--input",
        &path(dir.path(), "moving.nii.gz"),
        "--transform",
        &path(dir.path(), "syn_warp.nii.gz"),
        "--transform",
        &path(dir.path(), "syn_affine.txt"),
        "--interpolation",
        "linear",
        "--output",
        &applied,
    ]);
    let a = read_image(Path::new(&applied)).unwrap();
    let b = read_image(&dir.path().join("syn_warped.nii.gz")).unwrap();
    let largest = a.as_slice().iter().zip(b.as_slice()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(largest < 1e-3, "apply differs from register's warped output by {largest}");
    // Labels through the inverse chain land on the moving grid as integers.
    let labels = path(dir.path(), "labels.nii.gz");
    pedinorm(&[
        "apply",
        "-r",
        &path(dir.path(), "moving.nii.gz"),
        "-i",
        &path(dir.path(), "fixed.nii.gz"),
        "-t",
        &format!("[{},1]", path(dir.path(), "syn_affine.txt")),
        "-t",
        &path(dir.path(), "syn_inverse_warp.nii.gz"),
        "-n",
        "label",
        "-o",
        &labels,
    ]);
    let l = read_image(Path::new(&labels)).unwrap();
    assert!(l.as_slice().iter().all(|v| v.fract() == 0.0));

    // The Jacobian of the written field is positive everywhere; its log is finite.
    let jacobian = path(dir.path(), "jacobian.nii.gz");
    pedinorm(&["jacobian", "--warp", &path(dir.path(), "syn_warp.nii.gz"), "--output", &jacobian]);
    let j = read_image(Path::new(&jacobian)).unwrap();
    assert!(j.as_slice().iter().all(|&v| v > 0.0));
    let log = path(dir.path(), "log_jacobian.nii.gz");
    pedinorm(&[
        "jacobian",
        "--warp",
        &path(dir.path(), "syn_warp.nii.gz"),
        "--log-jacobian",
        "--output",
        &log,
    ]);
    let l = read_image(Path::new(&log)).unwrap();
    assert!(l.as_slice().iter().zip(j.as_slice()).all(|(a, b)| (a - b.ln()).abs() < 1e-5));
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args([
            "apply",
            "-r",
            "/nonexistent/ref.nii.gz",
            "-i",
            "/nonexistent/in.nii.gz",
            "-o",
            &path(dir.path(), "o.nii.gz"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/ref.nii.gz"));
    let bad = dir.path().join("bad.txt");
    std::fs::write(
        &bad,
        "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 2\n",
    )
    .unwrap();
    let grid = grid();
    write_image(&dir.path().join("f.nii.gz"), &phantom(&grid), VoxelType::F32).unwrap();
    let f = path(dir.path(), "f.nii.gz");
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm"))
        .args([
            "apply",
            "-r",
            &f,
            "-i",
            &f,
            "-t",
            &bad.to_string_lossy(),
            "-o",
            &path(dir.path(), "o.nii.gz"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("bad.txt") && stderr.contains("Parameters"),
        "{stderr}"
    );
    assert!(!dir.path().join("o.nii.gz").exists());
}
