//! Transforms for Python: an affine or a displacement field, mapping fixed (reference) world
//! points to moving world points in RAS+ mm (a pull, as ITK and ANTs resample), read from and
//! written to ANTs' files; resampling through a chain of them and Jacobians of a field.

use crate::errors::{about, to_py};
use crate::image::{
    PyImage, affine_from_py, affine_to_py, dtype_name, grid_from_py, image_from_py, image_to_py,
};
use numpy::{
    IntoPyArray, PyArray2, PyArray3, PyArray4, PyReadonlyArray2, PyReadonlyArray4, PyUntypedArrayMethods,
};
use pedinorm::formats::transform::{LoadedTransform, read_transform_spec, write_affine, write_field};
use pedinorm::pipeline::apply::{ApplyInterpolation, apply_transforms as apply_chain};
use pedinorm_registration::jacobian::{count_non_positive, jacobian_determinant, log_jacobian};
use pedinorm_registration::{AffineTransform, DisplacementField, Image, SpatialTransform};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

/// A displacement field as it goes to Python: data `(x, y, z, 3)` and the grid's affine.
type PyFieldOut<'py> = (Bound<'py, PyArray4<f32>>, Bound<'py, PyArray2<f64>>);

/// An affine or a displacement field mapping fixed-space world points (RAS+ mm) to the moving
/// space. Lists of transforms are in antsApplyTransforms' order: as a point mapping the first
/// listed acts first.
#[pyclass(module = "pedinorm", frozen, from_py_object)]
#[derive(Clone)]
pub struct Transform {
    pub(crate) inner: Arc<LoadedTransform>,
}

impl Transform {
    /// A transform held by Python.
    pub fn new(inner: LoadedTransform) -> Self {
        Self { inner: Arc::new(inner) }
    }

    fn affine(&self) -> PyResult<&AffineTransform> {
        match self.inner.as_ref() {
            LoadedTransform::Affine(affine) => Ok(affine),
            LoadedTransform::Field(_) => Err(to_py("transform: a displacement field has no matrix")),
        }
    }

    fn field(&self) -> PyResult<&DisplacementField> {
        match self.inner.as_ref() {
            LoadedTransform::Field(field) => Ok(field),
            LoadedTransform::Affine(_) => Err(to_py("transform: an affine is not a displacement field")),
        }
    }
}

#[pymethods]
impl Transform {
    /// Reads a transform written as on antsApplyTransforms' command line: `file` or
    /// `[file,1]` (an affine's inverse). `.nii`/`.nii.gz` are ANTs displacement fields; other
    /// files ITK text (`.txt`, `.tfm`) or ANTs `.mat` affines.
    #[staticmethod]
    fn read(py: Python<'_>, spec: String) -> PyResult<Self> {
        let loaded = py.detach(|| read_transform_spec(&spec)).map_err(to_py)?;
        Ok(Self::new(loaded))
    }

    /// An affine from its 4×4 matrix mapping fixed RAS+ world points to moving ones.
    #[staticmethod]
    fn from_matrix(matrix: PyReadonlyArray2<'_, f64>) -> PyResult<Self> {
        let affine = AffineTransform::from_matrix(affine_from_py(&matrix, "matrix")?);
        if !affine.is_valid() {
            return Err(to_py("matrix: the affine is singular or not finite"));
        }
        Ok(Self::new(LoadedTransform::Affine(affine)))
    }

    /// A displacement field from its data `(x, y, z, 3)` (RAS+ mm displacements of fixed
    /// points) on the grid of `affine`.
    #[staticmethod]
    fn from_field(data: PyReadonlyArray4<'_, f32>, affine: PyReadonlyArray2<'_, f64>) -> PyResult<Self> {
        let shape = data.shape().to_vec();
        if shape.len() != 4 || shape[3] != 3 {
            return Err(to_py(format!("field: data must have shape (x, y, z, 3), found {shape:?}")));
        }
        let grid = grid_from_py(&shape[..3], &affine, "field")?;
        let view = data.as_array();
        let component = |c: usize| {
            Image::new(view.index_axis(ndarray::Axis(3), c).to_owned(), grid.clone()).map_err(about("field"))
        };
        let field = DisplacementField::from_components([component(0)?, component(1)?, component(2)?]);
        Ok(Self::new(LoadedTransform::Field(field)))
    }

    /// `"affine"` or `"field"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.as_ref() {
            LoadedTransform::Affine(_) => "affine",
            LoadedTransform::Field(_) => "field",
        }
    }

    /// The affine's 4×4 matrix (fixed RAS+ world → moving RAS+ world).
    #[getter]
    fn matrix<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        Ok(affine_to_py(py, self.affine()?.matrix()))
    }

    /// The field's data `(x, y, z, 3)` (RAS+ mm) and the affine of its grid.
    #[getter]
    fn field_data<'py>(&self, py: Python<'py>) -> PyResult<PyFieldOut<'py>> {
        let field = self.field()?;
        let components = field.components();
        let [x, y, z] = field.grid().dims();
        let data =
            ndarray::Array4::from_shape_fn((x, y, z, 3), |(i, j, k, c)| components[c].data()[[i, j, k]]);
        Ok((data.into_pyarray(py), affine_to_py(py, field.grid().affine())))
    }

    /// The inverse of an affine (a field's inverse is the registration's `inverse_warp`).
    pub fn inverse(&self) -> PyResult<Self> {
        let inverse =
            self.affine()?.inverse().ok_or_else(|| to_py("transform: the affine is not invertible"))?;
        Ok(Self::new(LoadedTransform::Affine(inverse)))
    }

    /// Maps fixed-space points `(n, 3)` (RAS+ mm) to the moving space.
    fn transform_points<'py>(
        &self,
        py: Python<'py>,
        points: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        map_points(py, self.inner.as_spatial(), points)
    }

    /// Writes the transform in ANTs' formats: an affine as an ITK text file (`.txt`/`.tfm`,
    /// LPS), a field as an ANTs displacement field (`.nii.gz`).
    fn write(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let inner = self.inner.clone();
        py.detach(|| match inner.as_ref() {
            LoadedTransform::Affine(affine) => write_affine(&path, affine),
            LoadedTransform::Field(field) => write_field(&path, field),
        })
        .map_err(to_py)
    }

    fn __repr__(&self) -> String {
        match self.inner.as_ref() {
            LoadedTransform::Affine(_) => "Transform(affine)".into(),
            LoadedTransform::Field(field) => format!("Transform(field {:?})", field.grid().dims()),
        }
    }
}

/// Maps points `(n, 3)` through `transform`.
fn map_points<'py>(
    py: Python<'py>,
    transform: &dyn SpatialTransform,
    points: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    if points.shape().len() != 2 || points.shape()[1] != 3 {
        return Err(to_py(format!("points: expected shape (n, 3), found {:?}", points.shape())));
    }
    let view = points.as_array();
    let mut out = ndarray::Array2::<f64>::zeros(view.dim());
    for (row, mut target) in view.rows().into_iter().zip(out.rows_mut()) {
        let mapped = transform.transform_point([row[0], row[1], row[2]]);
        target.assign(&ndarray::ArrayView1::from(&mapped));
    }
    Ok(out.into_pyarray(py))
}

/// `moving` resampled on the grid of `fixed` (shape and affine) through `transforms`
/// (antsApplyTransforms' order) with `interpolation` (`linear`, `nearest` or `label`):
/// `(data, affine, dtype)`, dtype the type the values are stored as (labels: the smallest
/// integer type holding them).
#[pyfunction]
#[pyo3(signature = (fixed_shape, fixed_affine, moving, transforms, interpolation = "linear", default_value = 0.0))]
#[allow(clippy::type_complexity)]
pub fn apply_transforms<'py>(
    py: Python<'py>,
    fixed_shape: Vec<usize>,
    fixed_affine: PyReadonlyArray2<'py, f64>,
    moving: PyImage<'py>,
    transforms: Vec<Transform>,
    interpolation: &str,
    default_value: f32,
) -> PyResult<(Bound<'py, PyArray3<f32>>, Bound<'py, PyArray2<f64>>, &'static str)> {
    let grid = grid_from_py(&fixed_shape, &fixed_affine, "fixed")?;
    let input = image_from_py(&moving, "moving")?;
    let interpolation: ApplyInterpolation = interpolation.parse().map_err(about("interpolation"))?;
    let (output, voxel_type) = py.detach(|| {
        let chain: Vec<&dyn SpatialTransform> = transforms.iter().map(|t| t.inner.as_spatial()).collect();
        apply_chain(&grid, &input, &chain, interpolation, default_value)
    });
    let (data, affine) = image_to_py(py, output);
    Ok((data, affine, dtype_name(voxel_type)))
}

/// The Jacobian determinant of a displacement field on its grid (`log`: its natural logarithm,
/// determinants below 1e-6 clamped first): `(data, affine, folded voxels)`.
#[pyfunction]
#[pyo3(signature = (transform, log = false))]
#[allow(clippy::type_complexity)]
pub fn jacobian<'py>(
    py: Python<'py>,
    transform: Transform,
    log: bool,
) -> PyResult<(Bound<'py, PyArray3<f32>>, Bound<'py, PyArray2<f64>>, usize)> {
    let field = transform.field()?;
    let (map, folded) = py.detach(|| {
        let determinant = jacobian_determinant(field);
        let folded = count_non_positive(&determinant);
        (if log { log_jacobian(field) } else { determinant }, folded)
    });
    let (data, affine) = image_to_py(py, map);
    Ok((data, affine, folded))
}
