//! The one DICOM series writer against the readers: a written series reads back with the same
//! affine through pedinorm's DICOM reader (right-handed grids, oblique included), with the same
//! world geometry when the grid is left-handed, and with the same world geometry through
//! dcm2niix, the reference converter.

use nalgebra::{Matrix4, Rotation3};
use ndarray::Array3;
use pedinorm::formats::dicom::load_series;
use pedinorm::formats::dicom_write::{PixelScaling, SeriesSpec, UidSource, write_series};
use pedinorm::formats::nifti::read_image;
use pedinorm_registration::resample::resample;
use pedinorm_registration::{Grid, Identity, Image, Interpolation};
use std::path::Path;
use std::process::Command;

/// A smooth test image on an oblique grid (rotated about all three axes, anisotropic voxels);
/// `left_handed` mirrors the first voxel axis.
fn oblique_image(left_handed: bool) -> Image<f32> {
    let dims = [12, 10, 8];
    let rotation = Rotation3::from_euler_angles(0.2, -0.15, 0.3).into_inner();
    let mut affine = Matrix4::identity();
    let spacing = [1.2, 0.9, 2.5];
    for column in 0..3 {
        let sign = if left_handed && column == 0 { -1.0 } else { 1.0 };
        for row in 0..3 {
            affine[(row, column)] = rotation[(row, column)] * spacing[column] * sign;
        }
    }
    affine[(0, 3)] = -7.5;
    affine[(1, 3)] = 12.25;
    affine[(2, 3)] = -3.0;
    let grid = Grid::new(dims, affine).unwrap();
    let data = Array3::from_shape_fn((dims[0], dims[1], dims[2]), |(i, j, k)| {
        100.0 + 10.0 * i as f32 + 3.0 * j as f32 * j as f32 - 7.0 * k as f32
    });
    Image::new(data, grid).unwrap()
}

fn spec(image: &Image<f32>) -> SeriesSpec {
    let uids = UidSource::Seeded(17);
    SeriesSpec {
        study_uid: uids.uid(10),
        uids,
        scaling: PixelScaling::unsigned_full_range(image),
        attributes: dicom_object::InMemDicomObject::new_empty(),
    }
}

/// Largest difference between `image` and `other` resampled (nearest) onto `image`'s grid;
/// every voxel of `image` must be covered.
fn world_difference(image: &Image<f32>, other: &Image<f32>) -> f32 {
    let back = resample(other, image.grid(), &Identity, Interpolation::Nearest, f32::NAN);
    back.as_slice().iter().zip(image.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn quantum(image: &Image<f32>) -> f32 {
    let (low, high) = image.finite_range().unwrap();
    (high - low.min(0.0)) / 65535.0 + 1e-3
}

/// `image` written as a series and read back by our own reader (which finds one volume).
fn written_and_read_back(image: &Image<f32>) -> Image<f32> {
    let dir = tempfile::tempdir().unwrap();
    write_series(dir.path(), image, &spec(image)).unwrap();
    let mut volumes = load_series(&[dir.path().to_owned()]).unwrap();
    assert_eq!(volumes.len(), 1);
    volumes.remove(0).image
}

#[test]
fn a_written_series_reads_back_with_the_same_affine() {
    let image = oblique_image(false);
    let back = &written_and_read_back(&image);
    assert_eq!(back.grid().dims(), image.grid().dims());
    for (a, b) in back.grid().affine().iter().zip(image.grid().affine().iter()) {
        assert!((a - b).abs() < 1e-4, "affine differs: {a} vs {b}");
    }
    let worst = back.as_slice().iter().zip(image.as_slice()).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst <= quantum(&image), "values differ by {worst}");
}

#[test]
fn a_left_handed_grid_reads_back_with_the_same_world_geometry() {
    let image = oblique_image(true);
    let back = &written_and_read_back(&image);
    // Slices are sorted along the normal, so the third axis comes back reversed.
    let affine = back.grid().affine();
    let original = image.grid().affine();
    for row in 0..3 {
        assert!((affine[(row, 2)] + original[(row, 2)]).abs() < 1e-4);
    }
    let worst = world_difference(&image, back);
    assert!(worst <= quantum(&image), "values differ by {worst} in world space");
}

/// dcm2niix (from the Python environment of scripts/setup.sh) converts the written series to
/// the same image in world space, for both handednesses.
#[test]
fn dcm2niix_reads_a_written_series_in_the_same_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dcm2niix = root.join(".data/venv/bin/dcm2niix");
    assert!(dcm2niix.exists(), "{} is missing: run scripts/setup.sh", dcm2niix.display());
    for left_handed in [false, true] {
        let image = oblique_image(left_handed);
        let dir = tempfile::tempdir().unwrap();
        let series = dir.path().join("series");
        write_series(&series, &image, &spec(&image)).unwrap();
        let output = Command::new(&dcm2niix)
            .args(["-z", "n", "-b", "n", "-f", "converted", "-o"])
            .arg(dir.path())
            .arg(&series)
            .output()
            .unwrap();
        assert!(output.status.success(), "dcm2niix failed: {}", String::from_utf8_lossy(&output.stderr));
        let converted = read_image(&dir.path().join("converted.nii")).unwrap();
        let worst = world_difference(&image, &converted);
        assert!(worst <= quantum(&image), "left-handed {left_handed}: dcm2niix differs by {worst}");
    }
}
