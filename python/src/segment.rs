//! `segment` for Python: tissue probability maps, labels and volumes of one subject, the
//! segmentation `pedinorm segment` runs (`pedinorm::pipeline::segment::segment_images`).

use crate::errors::to_py;
use crate::image::{PyImage, image_from_py, image_to_py};
use pedinorm::pipeline::segment::{Segmented, SubjectImages, segment_images};
use pedinorm_registration::segmentation::SegmentationOptions;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Segments a subject's images (one per contrast, one grid), each given as `(name, data,
/// affine)`; `priors` likewise, one per tissue (named by `tissues`, else by their names).
/// Returns a dict: `tissues` (names in label order), `probabilities` (name → `(data, affine)`),
/// `labels` (`(data, affine)`: 0 outside the mask, else the tissue's 1-based index) and
/// `summary` (what `segmentation.json` records, as JSON text).
#[pyfunction]
#[pyo3(signature = (images, mask = None, priors = Vec::new(), tissues = Vec::new(), classes = 3, mrf = None, prior_weight = None, iterations = None))]
#[allow(clippy::too_many_arguments)]
pub fn segment<'py>(
    py: Python<'py>,
    images: Vec<(String, PyImage<'py>)>,
    mask: Option<(String, PyImage<'py>)>,
    priors: Vec<(String, PyImage<'py>)>,
    tissues: Vec<String>,
    classes: usize,
    mrf: Option<f64>,
    prior_weight: Option<f64>,
    iterations: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let read = |(name, image): (String, PyImage<'py>)| image_from_py(&image, &name).map(|i| (name, i));
    let inputs = SubjectImages {
        images: images.into_iter().map(read).collect::<PyResult<_>>()?,
        mask: mask.map(read).transpose()?,
        priors: priors.into_iter().map(read).collect::<PyResult<_>>()?,
    };
    let defaults = SegmentationOptions::default();
    let options = SegmentationOptions {
        classes,
        max_iterations: iterations.unwrap_or(defaults.max_iterations),
        mrf_weight: mrf.unwrap_or(defaults.mrf_weight),
        prior_weight: prior_weight.unwrap_or(defaults.prior_weight),
        ..defaults
    };
    let Segmented { tissues, segmentation, summary } =
        py.detach(|| segment_images(&inputs, &tissues, &options)).map_err(to_py)?;
    let out = PyDict::new(py);
    let probabilities = PyDict::new(py);
    for (name, posterior) in tissues.iter().zip(segmentation.posteriors) {
        probabilities.set_item(name, image_to_py(py, posterior))?;
    }
    out.set_item("tissues", tissues)?;
    out.set_item("probabilities", probabilities)?;
    out.set_item("labels", image_to_py(py, segmentation.labels))?;
    out.set_item("summary", serde_json::to_string(&summary).map_err(to_py)?)?;
    Ok(out)
}
