//! A normative database for Python: its templates, masks, labels and tissue priors, the
//! normative model at any age as arrays, its calibration, and a case's deviation maps and
//! regional volumes computed by the library functions `pedinorm deviation` and
//! `pedinorm volumes` call.

use crate::errors::{about, to_py};
use crate::image::{PyImage, PyImageOut, image_from_py, image_to_py};
use pedinorm::normdb::NormDbFile;
use pedinorm::pipeline::deviation::Report;
use pedinorm::pipeline::volumes::{MeasuredVolumes, measure_volumes};
use pedinorm_registration::Image;
use pedinorm_templates::model::{
    BracketDb, Channel, DeviationOptions, NormativeDb, TISSUES, compute_deviation, scatter,
};
use pedinorm_templates::safeguards::floored_model;
use pedinorm_templates::stats::Sex;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Arc;

/// A normative database (`normdb.h5`) read whole into memory.
#[pyclass(module = "pedinorm", frozen)]
pub struct NormDb {
    db: Arc<NormativeDb>,
    /// The file it was read from.
    #[pyo3(get)]
    path: PathBuf,
}

fn parse_sex(sex: Option<&str>) -> PyResult<Option<Sex>> {
    sex.map(|code| Sex::parse(code).ok_or_else(|| to_py(format!("sex {code:?}: must be F or M")))).transpose()
}

fn parse_channel(name: &str) -> PyResult<Channel> {
    Channel::ALL
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| to_py(format!("channel {name:?}: must be intensity or logjac")))
}

impl NormDb {
    fn bracket(&self, name: &str) -> PyResult<&BracketDb> {
        self.db.bracket(name).ok_or_else(|| {
            let names: Vec<&str> = self.db.brackets.iter().map(|b| b.name.as_str()).collect();
            to_py(format!("{}: no bracket {name:?} (brackets: {})", self.path.display(), names.join(", ")))
        })
    }
}

fn image_out<'py>(py: Python<'py>, image: &Image<f32>) -> PyImageOut<'py> {
    image_to_py(py, image.clone())
}

#[pymethods]
impl NormDb {
    /// Reads a normative database; errors name the file and the field.
    #[staticmethod]
    fn open(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let db = py.detach(|| NormativeDb::read(&path)).map_err(to_py)?;
        Ok(Self { db: Arc::new(db), path })
    }

    /// The age brackets: a list of dicts (`name`, `min_years`, `max_years`, `normals`).
    #[getter]
    fn brackets<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.db
            .brackets
            .iter()
            .map(|b| {
                let d = PyDict::new(py);
                d.set_item("name", &b.name)?;
                d.set_item("min_years", b.min_years)?;
                d.set_item("max_years", b.max_years)?;
                d.set_item(
                    "normals",
                    self.db.subjects.iter().filter(|s| s.bracket == b.name && s.qc_passed).count(),
                )?;
                Ok(d)
            })
            .collect()
    }

    /// The bracket a case of `age` (years) is compared in.
    fn bracket_for_age(&self, age: f64) -> PyResult<String> {
        if self.db.brackets.is_empty() {
            return Err(to_py(format!("{}: the database has no brackets", self.path.display())));
        }
        Ok(self.db.brackets[self.db.bracket_for_age(age)].name.clone())
    }

    /// A bracket's template `(data, affine)`.
    fn template<'py>(&self, py: Python<'py>, bracket: &str) -> PyResult<PyImageOut<'py>> {
        Ok(image_out(py, &self.bracket(bracket)?.template))
    }

    /// A bracket's brain mask `(data, affine)` (1 inside).
    fn mask<'py>(&self, py: Python<'py>, bracket: &str) -> PyResult<PyImageOut<'py>> {
        Ok(image_out(py, &self.bracket(bracket)?.mask))
    }

    /// A bracket's atlas labels `(data, affine)` in template space, or None without an atlas.
    fn labels<'py>(&self, py: Python<'py>, bracket: &str) -> PyResult<Option<PyImageOut<'py>>> {
        Ok(self.bracket(bracket)?.labels.as_ref().map(|l| image_out(py, l)))
    }

    /// A bracket's tissue priors: `{"csf": (data, affine), "gm": …, "wm": …}`, or None.
    fn priors<'py>(&self, py: Python<'py>, bracket: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(priors) = &self.bracket(bracket)?.priors else { return Ok(None) };
        let d = PyDict::new(py);
        for (name, map) in TISSUES.iter().zip(&priors.maps) {
            d.set_item(name, image_out(py, map))?;
        }
        Ok(Some(d))
    }

    /// The atlas: `{"name", "source", "labels": {value: name}}`, or None.
    #[getter]
    fn atlas<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(atlas) = &self.db.atlas else { return Ok(None) };
        let d = PyDict::new(py);
        d.set_item("name", &atlas.name)?;
        d.set_item("source", &atlas.source)?;
        let labels = PyDict::new(py);
        for (value, name) in &atlas.labels {
            labels.set_item(value, name)?;
        }
        d.set_item("labels", labels)?;
        Ok(Some(d))
    }

    /// The normative model of `channel` (`intensity` or `logjac`) at `age` for `sex` (F, M or
    /// None: both pooled), as scoring uses it (SD floored): a dict with `bracket`, `mean` and
    /// `sd` (`(data, affine)` on the template grid, 0 outside the mask), `sex` (the sex the
    /// model used, None when pooled), `effective_n` and `fraction_floored`.
    #[pyo3(signature = (age, sex = None, channel = "intensity"))]
    fn model<'py>(
        &self,
        py: Python<'py>,
        age: f64,
        sex: Option<&str>,
        channel: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let sex = parse_sex(sex)?;
        let channel = parse_channel(channel)?;
        let name = self.bracket_for_age(age)?;
        let bracket = self.bracket(&name)?;
        let params = self.db.metadata.parameters.normative;
        let floors = bracket.sd_floors(&params);
        let (model, floored) = py
            .detach(|| floored_model(bracket.channel(channel), age, sex, &params, floors[channel.index()]))
            .map_err(about(channel.name()))?;
        let grid = bracket.template.grid();
        let indices = bracket.mask_indices();
        let d = PyDict::new(py);
        d.set_item("bracket", name)?;
        d.set_item("mean", image_to_py(py, scatter(grid, &indices, &model.mean, 0.0)))?;
        d.set_item("sd", image_to_py(py, scatter(grid, &indices, &model.sd, 0.0)))?;
        d.set_item("sex", model.sex.map(|s| s.code()))?;
        d.set_item("effective_n", model.effective_n)?;
        d.set_item("fraction_floored", floored)?;
        Ok(d)
    }

    /// The calibration as JSON text (thresholds and achieved rates per channel, site effects,
    /// the local-volume limit), or None when the database was not calibrated.
    #[getter]
    fn calibration_json(&self) -> PyResult<Option<String>> {
        self.db.calibration.as_ref().map(|c| serde_json::to_string(c).map_err(to_py)).transpose()
    }

    /// The normals as JSON text: a list of records (pseudonym, age, sex, scanner, bracket, QC).
    #[getter]
    fn subjects_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.db.subjects).map_err(to_py)
    }

    /// The deviation maps of `case` (its own grid) at `age` for `sex` and `site`, computed as
    /// `pedinorm deviation` computes them: a dict with `report` (JSON text, what `report.json`
    /// holds), `z_template` and `z_native` (`{"intensity": (data, affine), "logjac": …}`) and
    /// `clusters_template`, `clusters_native` (significant clusters labelled).
    #[pyo3(signature = (case, age, sex = None, site = None, max_regions = 15, case_name = "case"))]
    #[allow(clippy::too_many_arguments)]
    fn deviation<'py>(
        &self,
        py: Python<'py>,
        case: PyImage<'py>,
        age: f64,
        sex: Option<&str>,
        site: Option<String>,
        max_regions: usize,
        case_name: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let options = DeviationOptions { age_years: age, sex: parse_sex(sex)?, max_regions, site };
        let image = image_from_py(&case, case_name)?;
        let db = self.db.clone();
        let result = py.detach(|| compute_deviation(&db, &image, &options)).map_err(about(case_name))?;
        let report = Report::new(&result, case_name, &self.path.display().to_string(), Vec::new());
        let d = PyDict::new(py);
        d.set_item("report", serde_json::to_string(&report).map_err(to_py)?)?;
        let z_template = PyDict::new(py);
        let z_native = PyDict::new(py);
        let [z_intensity, z_logjac] = result.z_template;
        let [n_intensity, n_logjac] = result.z_native;
        z_template.set_item("intensity", image_to_py(py, z_intensity))?;
        z_template.set_item("logjac", image_to_py(py, z_logjac))?;
        z_native.set_item("intensity", image_to_py(py, n_intensity))?;
        z_native.set_item("logjac", image_to_py(py, n_logjac))?;
        d.set_item("z_template", z_template)?;
        d.set_item("z_native", z_native)?;
        d.set_item("clusters_template", image_to_py(py, result.clusters_template))?;
        d.set_item("clusters_native", image_to_py(py, result.clusters_native))?;
        Ok(d)
    }

    /// The regional volumes of `image` (a T1w on its own grid) at `age`, as `pedinorm volumes`
    /// measures them: a dict with `summary` (JSON text, what `volumes.json` holds), `tissues`
    /// (`{"csf": (data, affine), "gm": …, "wm": …}` on the image's grid) and `labels` (atlas
    /// labels on the image's grid, or None).
    #[pyo3(signature = (image, age, sex = None, site = None, subject = "subject"))]
    fn volumes<'py>(
        &self,
        py: Python<'py>,
        image: PyImage<'py>,
        age: f64,
        sex: Option<&str>,
        site: Option<&str>,
        subject: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let sex = parse_sex(sex)?;
        let image = image_from_py(&image, subject)?;
        let db = self.db.clone();
        let MeasuredVolumes { summary, volumes } =
            py.detach(|| measure_volumes(&db, &image, subject, age, sex, site)).map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("summary", serde_json::to_string(&summary).map_err(to_py)?)?;
        let tissues = PyDict::new(py);
        for (name, map) in TISSUES.iter().zip(volumes.tissues) {
            tissues.set_item(name, image_to_py(py, map))?;
        }
        d.set_item("tissues", tissues)?;
        d.set_item("labels", volumes.labels.map(|l| image_to_py(py, l)))?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let names: Vec<&str> = self.db.brackets.iter().map(|b| b.name.as_str()).collect();
        format!("NormDb({:?}, brackets [{}])", self.path.display().to_string(), names.join(", "))
    }
}
