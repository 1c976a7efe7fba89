//! ANTs round trip: pedinorm's affine and warp files resample in ANTs exactly as pedinorm does,
//! and ANTs' own files (a SyN warp and a binary `.mat` affine) resample in pedinorm as in ANTs
//! (correlation > 0.999 inside the brain). Needs the `.data` Python environment with ANTsPy
//! (`validation/peers/registration_pairs.py` installs it).

mod registration_common;

use pedinorm::formats::nifti::{VoxelType, write_image};
use pedinorm_registration::resample::resample;
use pedinorm_registration::{AffineTransform, Grid, Interpolation};
use registration_common::phantom;
use std::path::Path;
use std::process::Command;

#[test]
fn transforms_round_trip_through_ants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let dir = tempfile::tempdir().unwrap();
    // An oblique, anisotropic fixed grid exercises the LPS conversion of directions too.
    let rotation = nalgebra::Rotation3::from_euler_angles(0.1, 0.0, -0.15).to_homogeneous();
    let mut affine =
        rotation * nalgebra::Matrix4::new_nonuniform_scaling(&nalgebra::Vector3::new(2.0, 2.0, 2.2));
    affine[(0, 3)] = -40.0;
    affine[(1, 3)] = -44.0;
    affine[(2, 3)] = -36.0;
    let grid = Grid::new([40, 46, 34], affine).unwrap();
    let fixed = phantom(&grid);
    let t = AffineTransform::about_center(
        &(nalgebra::Rotation3::from_euler_angles(0.05, -0.05, 0.1).into_inner() / 0.9),
        [2.0, -1.0, 1.0],
        [0.0; 3],
    );
    let moving_grid = Grid::axis_aligned([42, 44, 36], [2.0; 3], [-42.0, -44.0, -36.0]).unwrap();
    let moving = resample(&fixed, &moving_grid, &t, Interpolation::Linear, 0.0);
    let fixed_path = dir.path().join("fixed.nii.gz");
    let moving_path = dir.path().join("moving.nii.gz");
    write_image(&fixed_path, &fixed, VoxelType::F32).unwrap();
    write_image(&moving_path, &moving, VoxelType::F32).unwrap();
    let output = Command::new(&python)
        .arg(root.join("validation/peers/registration_ants_roundtrip.py"))
        .arg(env!("CARGO_BIN_EXE_pedinorm"))
        .arg(&fixed_path)
        .arg(&moving_path)
        .arg(dir.path())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "round trip failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    let result: serde_json::Value = serde_json::from_str(line).unwrap();
    for key in ["pedinorm_to_ants_forward", "pedinorm_to_ants_inverse", "ants_to_pedinorm_forward"] {
        let r = result[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {line}"));
        assert!(r > 0.999, "{key}: correlation {r}");
    }
    assert!(result["ants_transforms"].to_string().contains(".mat"), "{line}");
}
