//! `pedinorm._native`: the compute crates and file formats of pedinorm for Python. Images cross
//! the boundary as numpy arrays (`float32`, shape `(x, y, z)`, voxel `[i, j, k]`) with a 4×4
//! voxel → world RAS+ affine; the package `pedinorm` (python/package) wraps them as images
//! and nibabel images. Every compute call releases the GIL.

mod errors;
mod image;
mod normdb;
mod preprocess;
mod register;
mod segment;
mod transform;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PedinormError", m.py().get_type::<errors::PedinormError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(image::read_image, m)?)?;
    m.add_function(wrap_pyfunction!(image::write_image, m)?)?;
    m.add_class::<transform::Transform>()?;
    m.add_function(wrap_pyfunction!(transform::apply_transforms, m)?)?;
    m.add_function(wrap_pyfunction!(transform::jacobian, m)?)?;
    m.add_class::<register::Registration>()?;
    m.add_function(wrap_pyfunction!(register::register, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess::preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(segment::segment, m)?)?;
    m.add_class::<normdb::NormDb>()?;
    Ok(())
}
