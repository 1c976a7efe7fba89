//! Set-up shared by the registration tests: the head-like phantom both the command-line tests
//! and the ANTs round trip register.
#![allow(dead_code)] // each test file uses a part

use ndarray::Array3;
use pedinorm_registration::{Grid, Image};

/// A head-like phantom: ellipsoid "brain", inner "white matter", asymmetric blobs, texture.
pub fn phantom(grid: &Grid) -> Image<f32> {
    let d = grid.dims();
    let data = Array3::from_shape_fn((d[0], d[1], d[2]), |(i, j, k)| {
        let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
        let (x, y, z) = (p[0], p[1], p[2]);
        let outer = (x / 30.0).powi(2) + (y / 36.0).powi(2) + (z / 27.0).powi(2);
        let inner = ((x - 3.0) / 18.0).powi(2) + (y / 24.0).powi(2) + ((z + 2.0) / 15.0).powi(2);
        let mut v = 0.0;
        if outer < 1.0 {
            v = 60.0 + 10.0 * (x / 7.0).sin() * (y / 9.0).cos() + 8.0 * (z / 5.0).sin();
        }
        if inner < 1.0 {
            v = 110.0 + 6.0 * (y / 6.0).sin();
        }
        v += 50.0 * (-((x - 12.0).powi(2) + (y - 15.0).powi(2) + (z - 8.0).powi(2)) / 30.0).exp();
        v += 35.0 * (-((x + 14.0).powi(2) + (y + 10.0).powi(2) + (z - 12.0).powi(2)) / 20.0).exp();
        v as f32
    });
    Image::new(data, grid.clone()).unwrap()
}
