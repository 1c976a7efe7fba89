//! `register` for Python: the pairwise registration of `pedinorm register` (same plan, same
//! threads, same result) returning its transforms, which apply to images and points and save
//! in ANTs' formats.

use crate::errors::{about, on_threads, to_py};
use crate::image::{PyImage, image_from_py, image_to_py};
use crate::transform::Transform;
use numpy::{PyArray2, PyArray3};
use pedinorm::formats::transform::LoadedTransform;
use pedinorm::pipeline::register::{MetricChoice, TransformModel, pairwise_plan, write_registration};
use pedinorm_registration::{Interpolation, register as register_pair};
use pyo3::prelude::*;
use std::path::PathBuf;

/// The outcome of `register`: the affine and, after a deformable stage, the forward and
/// inverse displacement fields, all on the fixed grid.
#[pyclass(module = "pedinorm", frozen, get_all)]
pub struct Registration {
    /// Fixed world → moving world (RAS+ mm).
    pub affine: Transform,
    /// The forward displacement field (fixed grid), after a deformable stage.
    pub warp: Option<Transform>,
    /// The inverse displacement field (fixed grid), after a deformable stage.
    pub inverse_warp: Option<Transform>,
    /// Final cost of the affine stage (lower is better).
    pub affine_metric_value: Option<f64>,
}

#[pymethods]
impl Registration {
    /// The transforms that bring the moving image onto the fixed grid, in
    /// antsApplyTransforms' order: `[warp, affine]` (or `[affine]`).
    #[getter]
    fn forward_transforms(&self) -> Vec<Transform> {
        self.warp.iter().cloned().chain([self.affine.clone()]).collect()
    }

    /// The transforms that bring the fixed image onto the moving grid, in
    /// antsApplyTransforms' order: `[affine⁻¹, inverse_warp]` (or `[affine⁻¹]`).
    #[getter]
    fn inverse_transforms(&self) -> PyResult<Vec<Transform>> {
        let mut chain = vec![self.affine.inverse()?];
        chain.extend(self.inverse_warp.iter().cloned());
        Ok(chain)
    }

    /// Writes the transforms under `prefix` as `pedinorm register` does (a folder must end with
    /// `/`): `PREFIXaffine.txt` (ITK text, LPS) and, after a deformable stage,
    /// `PREFIXwarp.nii.gz` and `PREFIXinverse_warp.nii.gz` (ANTs displacement fields); returns
    /// the paths written.
    fn save(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<PathBuf>> {
        let affine = match self.affine.inner.as_ref() {
            LoadedTransform::Affine(affine) => affine,
            LoadedTransform::Field(_) => return Err(to_py("registration: its affine is a field")),
        };
        fn field(t: &Option<Transform>) -> Option<&pedinorm_registration::DisplacementField> {
            match t.as_ref().map(|t| t.inner.as_ref()) {
                Some(LoadedTransform::Field(field)) => Some(field),
                _ => None,
            }
        }
        let fields = field(&self.warp).zip(field(&self.inverse_warp));
        let files = py.detach(|| write_registration(prefix, affine, fields, None)).map_err(to_py)?;
        Ok([Some(files.affine), files.warp, files.inverse_warp].into_iter().flatten().collect())
    }

    fn __repr__(&self) -> String {
        format!("Registration(affine{})", if self.warp.is_some() { ", warp, inverse_warp" } else { "" })
    }
}

/// Registers `moving` to `fixed` as `pedinorm register --transform T --metric M` does, on
/// `threads` workers (default: all cores; the result is the same for any count): the
/// registration and the moving image on the fixed grid (linear), `(registration, data,
/// affine)`.
#[pyfunction]
#[pyo3(signature = (fixed, moving, transform = "syn", metric = None, fixed_mask = None, moving_mask = None, threads = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn register<'py>(
    py: Python<'py>,
    fixed: PyImage<'py>,
    moving: PyImage<'py>,
    transform: &str,
    metric: Option<&str>,
    fixed_mask: Option<PyImage<'py>>,
    moving_mask: Option<PyImage<'py>>,
    threads: Option<usize>,
) -> PyResult<(Registration, Bound<'py, PyArray3<f32>>, Bound<'py, PyArray2<f64>>)> {
    let model: TransformModel = transform.parse().map_err(about("transform"))?;
    let metric: Option<MetricChoice> = metric.map(str::parse).transpose().map_err(about("metric"))?;
    let fixed = image_from_py(&fixed, "fixed")?;
    let moving = image_from_py(&moving, "moving")?;
    let mask = |mask: Option<PyImage<'py>>, image: &pedinorm_registration::Image<f32>, which: &str| {
        let Some(mask) = mask else { return Ok(None) };
        let mask = image_from_py(&mask, &format!("{which}_mask"))?;
        if !mask.grid().same_as(image.grid(), 1e-3) {
            return Err(to_py(format!("{which}_mask: must have the {which} image's shape and affine")));
        }
        Ok(Some(mask))
    };
    let fixed_mask = mask(fixed_mask, &fixed, "fixed")?;
    let moving_mask = mask(moving_mask, &moving, "moving")?;
    let plan = pairwise_plan(model, metric, fixed_mask, moving_mask).map_err(to_py)?;
    let (registration, warped) = py
        .detach(|| {
            on_threads(threads, || {
                let registration = register_pair(&fixed, &moving, &plan)?;
                let warped = registration.warp(&moving, fixed.grid(), Interpolation::Linear);
                Ok::<_, pedinorm_registration::RegistrationError>((registration, warped))
            })
        })?
        .map_err(about("registration of moving to fixed"))?;
    let (warp, inverse_warp) = match registration.deformable {
        Some(deformable) => (
            Some(Transform::new(LoadedTransform::Field(deformable.forward))),
            Some(Transform::new(LoadedTransform::Field(deformable.inverse))),
        ),
        None => (None, None),
    };
    let result = Registration {
        affine: Transform::new(LoadedTransform::Affine(registration.affine)),
        warp,
        inverse_warp,
        affine_metric_value: registration.affine_metric_value,
    };
    let (data, affine) = image_to_py(py, warped);
    Ok((result, data, affine))
}
