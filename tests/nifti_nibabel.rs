//! NIfTI interoperability with nibabel: files pedinorm writes load in nibabel with the same
//! affine and values, and files nibabel writes (every voxel type, scaling, qform-only,
//! sform-only, no transform, 4-D, 5-D) are read back by pedinorm identically.

use nalgebra::{Matrix4, Rotation3, Vector3};
use ndarray::Array3;
use pedinorm::formats::nifti::{VoxelType, read_vector_image, write_image, write_vector_image};
use pedinorm_registration::{Grid, Image};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    python
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("validation/peers/nifti_nibabel_check.py")
}

fn run_script(mode: &str, folder: &Path) {
    let output = Command::new(python()).arg(script()).arg(mode).arg(folder).output().expect("python runs");
    assert!(
        output.status.success(),
        "nifti_nibabel_check.py {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn oblique_grid(dims: [usize; 3], spacing: [f64; 3], left_handed: bool) -> Grid {
    let rotation = Rotation3::from_euler_angles(0.3, -0.2, 0.45).to_homogeneous();
    let mut scale = Vector3::new(spacing[0], spacing[1], spacing[2]);
    if left_handed {
        scale[2] = -scale[2];
    }
    let mut affine = rotation * Matrix4::new_nonuniform_scaling(&scale);
    affine[(0, 3)] = -41.5;
    affine[(1, 3)] = 17.25;
    affine[(2, 3)] = 3.0;
    Grid::new(dims, affine).unwrap()
}

fn expected_json(components: &[Image<f32>], convert: impl Fn(f32) -> f64) -> serde_json::Value {
    let affine = components[0].grid().affine();
    let rows: Vec<Vec<f64>> = (0..4).map(|r| (0..4).map(|c| affine[(r, c)]).collect()).collect();
    let dims = components[0].grid().dims();
    serde_json::json!({
        "affine": rows,
        "shape": [dims[0], dims[1], dims[2], components.len()],
        "data": components.iter().map(|c| c.as_slice().iter().map(|&v| convert(v)).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

#[test]
fn pedinorm_files_load_in_nibabel_with_the_same_affine_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let dims = [6, 5, 4];
    let values = Array3::from_shape_fn((6, 5, 4), |(i, j, k)| {
        (i as f32 * 37.5 - j as f32 * 11.25 + k as f32 * 3.0) - 40.0
    });
    type Case = (&'static str, VoxelType, bool, fn(f32) -> f64);
    let cases: [Case; 5] = [
        ("oblique_f32.nii.gz", VoxelType::F32, false, |v| v as f64),
        ("oblique_f64.nii", VoxelType::F64, false, |v| v as f64),
        ("left_handed_i16.nii.gz", VoxelType::I16, true, |v| v.round() as f64),
        ("oblique_u8.nii", VoxelType::U8, false, |v| v.round().clamp(0.0, 255.0) as f64),
        ("left_handed_f32.nii", VoxelType::F32, true, |v| v as f64),
    ];
    for (name, voxel_type, left_handed, convert) in cases {
        let image = Image::new(values.clone(), oblique_grid(dims, [0.9, 1.1, 2.7], left_handed)).unwrap();
        let path = dir.path().join(name);
        write_image(&path, &image, voxel_type).unwrap();
        let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
        let expected = expected_json(std::slice::from_ref(&image), convert);
        std::fs::write(dir.path().join(format!("{stem}.expected.json")), expected.to_string()).unwrap();
    }
    let grid = oblique_grid(dims, [2.0, 2.0, 2.0], false);
    let field: Vec<Image<f32>> = (0..3)
        .map(|c| Image::new(values.mapv(|v| v * (c as f32 + 1.0) / 7.0), grid.clone()).unwrap())
        .collect();
    write_vector_image(&dir.path().join("vector_field.nii.gz"), &field, VoxelType::F32).unwrap();
    std::fs::write(
        dir.path().join("vector_field.expected.json"),
        expected_json(&field, |v| v as f64).to_string(),
    )
    .unwrap();
    run_script("check", dir.path());
}

#[test]
fn nibabel_files_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    run_script("write", dir.path());
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".expected.json") else { continue };
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let nifti = [format!("{stem}.nii.gz"), format!("{stem}.nii")]
            .into_iter()
            .map(|n| dir.path().join(n))
            .find(|p| p.exists())
            .unwrap();
        let components = read_vector_image(&nifti).unwrap_or_else(|e| panic!("{e}"));
        let data = expected["data"].as_array().unwrap();
        assert_eq!(components.len(), data.len(), "{name}: component count");
        for (component, values) in components.iter().zip(data) {
            let values: Vec<f32> =
                values.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(component.as_slice(), values.as_slice(), "{stem}: values");
        }
        let affine = components[0].grid().affine();
        for r in 0..4 {
            for c in 0..4 {
                let want = expected["affine"][r][c].as_f64().unwrap();
                assert!(
                    (affine[(r, c)] - want).abs() < 1e-5,
                    "{stem}: affine[{r},{c}] = {} vs {want}",
                    affine[(r, c)]
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} nibabel files checked");
}
