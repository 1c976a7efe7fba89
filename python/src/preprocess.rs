//! `preprocess` for Python: bias-field correction, brain mask and intensity normalization, as
//! `pedinorm preprocess` runs them (the same settings and defaults).

use crate::errors::{about, to_py};
use crate::image::{PyImage, image_from_py, image_to_py};
use pedinorm::pipeline::preprocess::{
    Normalization, ScanPreprocessing, Steps, TemplateRef, preprocess as run,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Preprocesses one image: a dict with `image`, `mask` and `field` (each `(data, affine)`;
/// `field` None when the bias step did not run), `mask_source` and, when normalization ran,
/// the tissue `peaks`. `steps` is a comma-separated list of `bias`, `mask`, `normalize` (or
/// `all`); `normalization` one of auto, wm-peak, tissue-peaks, nyul, histogram-match;
/// `bias_iterations` per fitting level as `50x50x50x50`.
#[pyfunction]
#[pyo3(signature = (image, steps = "bias,mask,normalize", normalization = "auto", template = None, template_mask = None, mask = None, shrink_factor = 4, bias_iterations = "50x50x50x50", convergence = 0.001))]
#[allow(clippy::too_many_arguments)]
pub fn preprocess<'py>(
    py: Python<'py>,
    image: PyImage<'py>,
    steps: &str,
    normalization: &str,
    template: Option<PyImage<'py>>,
    template_mask: Option<PyImage<'py>>,
    mask: Option<PyImage<'py>>,
    shrink_factor: usize,
    bias_iterations: &str,
    convergence: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let settings = ScanPreprocessing {
        steps: steps.parse::<Steps>().map_err(about("steps"))?,
        normalization: normalization.parse::<Normalization>().map_err(about("normalization"))?,
        shrink_factor,
        bias_iterations: ScanPreprocessing::parse_iterations(bias_iterations).map_err(to_py)?,
        convergence,
    };
    let image = image_from_py(&image, "image")?;
    let template = match (template, template_mask) {
        (Some(t), Some(m)) => Some((image_from_py(&t, "template")?, image_from_py(&m, "template_mask")?)),
        (None, None) => None,
        _ => return Err(to_py("template, template_mask: give both or neither")),
    };
    let given_mask = mask.map(|m| image_from_py(&m, "mask")).transpose()?;
    let result = py
        .detach(|| {
            let options = settings.options(
                template.as_ref().map(|(image, mask)| TemplateRef { image, mask }),
                given_mask.as_ref(),
            );
            run(&image, &options)
        })
        .map_err(about("image: preprocessing failed"))?;
    let out = PyDict::new(py);
    out.set_item("image", image_to_py(py, result.image))?;
    out.set_item("mask", image_to_py(py, result.mask))?;
    out.set_item("field", result.field.map(|f| image_to_py(py, f)))?;
    out.set_item("mask_source", result.mask_source)?;
    if let Some(peaks) = result.normalization.and_then(|n| n.peaks) {
        let p = PyDict::new(py);
        p.set_item("white_matter", peaks.white_matter)?;
        p.set_item("grey_matter", peaks.grey_matter)?;
        p.set_item("inverted", peaks.inverted)?;
        out.set_item("peaks", p)?;
    }
    Ok(out)
}
