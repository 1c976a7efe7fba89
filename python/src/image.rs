//! numpy ↔ [`Image<f32>`]: data `(x, y, z)` indexed `[i, j, k]` as nibabel's, with a 4×4
//! voxel → world RAS+ affine. Arrays coming in are copied once into the C-order buffer the
//! compute works on (the GIL is released meanwhile, so Python must not share it); arrays going
//! out are handed to numpy without a copy.

use crate::errors::{about, to_py};
use nalgebra::Matrix4;
use numpy::{IntoPyArray, PyArray2, PyArray3, PyReadonlyArray2, PyReadonlyArray3, PyUntypedArrayMethods};
use pedinorm::formats::nifti::VoxelType;
use pedinorm_registration::{Grid, Image};
use pyo3::prelude::*;
use std::path::PathBuf;

/// An image as it comes from Python: its data and affine.
pub type PyImage<'py> = (PyReadonlyArray3<'py, f32>, PyReadonlyArray2<'py, f64>);

/// An image as it goes to Python: its data and affine.
pub type PyImageOut<'py> = (Bound<'py, PyArray3<f32>>, Bound<'py, PyArray2<f64>>);

/// A 4×4 affine from numpy, checked.
pub fn affine_from_py(affine: &PyReadonlyArray2<'_, f64>, name: &str) -> PyResult<Matrix4<f64>> {
    if affine.shape() != [4, 4] {
        return Err(to_py(format!("{name}: affine must be 4×4, found {:?}", affine.shape())));
    }
    let view = affine.as_array();
    Ok(Matrix4::from_fn(|r, c| view[[r, c]]))
}

/// The affine as a numpy array.
pub fn affine_to_py<'py>(py: Python<'py>, affine: &Matrix4<f64>) -> Bound<'py, PyArray2<f64>> {
    ndarray::Array2::from_shape_fn((4, 4), |(r, c)| affine[(r, c)]).into_pyarray(py)
}

/// An image from numpy data and affine (one copy into C order); `name` labels errors.
pub fn image_from_py(image: &PyImage<'_>, name: &str) -> PyResult<Image<f32>> {
    let (data, affine) = image;
    let grid = grid_from_py(data.shape(), affine, name)?;
    let owned = data.as_array().as_standard_layout().into_owned();
    Image::new(owned, grid).map_err(about(name))
}

/// A grid from a shape and an affine; `name` labels errors.
pub fn grid_from_py(shape: &[usize], affine: &PyReadonlyArray2<'_, f64>, name: &str) -> PyResult<Grid> {
    let [x, y, z] = shape else {
        return Err(to_py(format!("{name}: data must be 3-D, found shape {shape:?}")));
    };
    Grid::new([*x, *y, *z], affine_from_py(affine, name)?).map_err(about(name))
}

/// An image as numpy data (handed over without a copy) and affine.
pub fn image_to_py(py: Python<'_>, image: Image<f32>) -> PyImageOut<'_> {
    let (data, grid) = image.into_parts();
    (data.into_pyarray(py), affine_to_py(py, grid.affine()))
}

/// A NIfTI voxel type by its numpy name.
pub fn voxel_type(dtype: &str) -> PyResult<VoxelType> {
    match dtype {
        "float32" => Ok(VoxelType::F32),
        "uint8" => Ok(VoxelType::U8),
        "int16" => Ok(VoxelType::I16),
        other => Err(to_py(format!("dtype `{other}`: pedinorm writes float32, uint8 or int16"))),
    }
}

/// The numpy name of a NIfTI voxel type.
pub fn dtype_name(voxel_type: VoxelType) -> &'static str {
    match voxel_type {
        VoxelType::U8 => "uint8",
        VoxelType::I16 => "int16",
        _ => "float32",
    }
}

/// Reads a 3-D NIfTI file as pedinorm does (scl_slope/scl_inter applied, sform then qform
/// then the base affine): `(data, affine)`.
#[pyfunction]
pub fn read_image(py: Python<'_>, path: PathBuf) -> PyResult<PyImageOut<'_>> {
    let image = py.detach(|| pedinorm::formats::nifti::read_image(&path)).map_err(to_py)?;
    Ok(image_to_py(py, image))
}

/// Writes a 3-D image as NIfTI (sform and qform set to the affine), voxels stored as `dtype`
/// (float32, uint8 or int16; integers rounded and clamped).
#[pyfunction]
#[pyo3(signature = (path, data, affine, dtype = "float32"))]
pub fn write_image(
    py: Python<'_>,
    path: PathBuf,
    data: PyReadonlyArray3<'_, f32>,
    affine: PyReadonlyArray2<'_, f64>,
    dtype: &str,
) -> PyResult<()> {
    let image = image_from_py(&(data, affine), &path.display().to_string())?;
    let voxel_type = voxel_type(dtype)?;
    py.detach(|| pedinorm::formats::nifti::write_image(&path, &image, voxel_type)).map_err(to_py)
}
