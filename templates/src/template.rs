//! Unbiased template construction in the manner of antsMultivariateTemplateConstruction2, as
//! explicit pure steps a batch system can run separately:
//!
//! * [`init_target`] — the starting target: the weighted average of the subjects, each
//!   translated so its intensity centre of mass lands on the mean centre of mass;
//! * [`map_subject`] — one subject against the current template (affine, then optionally
//!   deformable), giving the transform template → subject and the subject warped to the
//!   template grid;
//! * [`ReduceAccumulator`] — the reduce step, streaming over subjects (one image in memory at a
//!   time): weighted average of the warped subjects, then the *shape update*
//!   ([`shape_update`]): the weighted mean warp scaled by −gradient step (0.25), resampled
//!   through the inverse of the mean affine, applied four times after that inverse affine,
//!   so the template drifts toward the population centre; then optional Laplacian sharpening.
//!
//! The first iteration (index 0) maps affinely only, so the deformable iterations start from
//! an affine average, as the reference script does. Registration itself is behind the
//! [`Registrar`] trait; [`PedinormRegistrar`] is pedinorm's affine + diffeomorphic engine.

use crate::age::{AgeBracket, AgeKernel};
use nalgebra::Matrix4;
use ndarray::Array3;
use pedinorm_registration::{
    AffineTransform, DisplacementField, Grid, Image, Interpolation, SpatialTransform, TransformChain,
    resample::resample,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Why a template step failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Registration of a subject failed.
    #[error("registration failed: {0}")]
    Registration(String),
    /// An input is unusable (empty image, zero weights, mismatched grids).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Laplacian sharpening of each new template (ANTs' default `Sharpen`), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sharpening {
    /// No sharpening.
    None,
    /// `T − ΔT` (voxel-unit Laplacian), rescaled to the original foreground mean and spread.
    #[default]
    Laplacian,
}

/// Settings of the per-subject registration inside a template build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationSettings {
    /// Images finer than this are shrunk to about this spacing (mm) for registration; the
    /// resulting transforms are applied to the full-resolution subject.
    pub spacing_mm: f64,
    /// Affine iterations per pyramid level (coarse to fine).
    pub affine_iterations: Vec<usize>,
    /// Deformable iterations per pyramid level (coarse to fine).
    pub deformable_iterations: Vec<usize>,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            spacing_mm: 2.0,
            affine_iterations: vec![100, 50, 25],
            deformable_iterations: vec![40, 20, 10],
        }
    }
}

/// Which subjects a template is built from, and with which weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateTarget {
    /// Every subject (weight 1).
    AllSubjects,
    /// The subjects whose age lies in the bracket (weight 1).
    Bracket(AgeBracket),
    /// Every subject weighted by a Gaussian age kernel centred at `age_years`.
    Age {
        /// The template's age (years).
        age_years: f64,
        /// The kernel.
        kernel: AgeKernel,
    },
}

/// Everything that decides a template build's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateConfig {
    /// Which subjects and weights.
    pub target: TemplateTarget,
    /// Deformable iterations after the affine one (ANTs' default is 4).
    pub iterations: usize,
    /// Shape-update gradient step (ANTs: 0.25).
    pub gradient_step: f64,
    /// Template sharpening after each reduce.
    pub sharpening: Sharpening,
    /// Divide each warped subject by its mean before averaging (ANTs' `-a 1`).
    pub normalize_intensity: bool,
    /// Template voxel spacing (mm); `None` keeps the reference subject's grid.
    pub template_spacing_mm: Option<f64>,
    /// Per-subject registration settings.
    pub registration: RegistrationSettings,
    /// Robust z of similarity below −this flags a subject as an outlier.
    pub outlier_z: f64,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            target: TemplateTarget::AllSubjects,
            iterations: 4,
            gradient_step: 0.25,
            sharpening: Sharpening::Laplacian,
            normalize_intensity: true,
            template_spacing_mm: None,
            registration: RegistrationSettings::default(),
            outlier_z: 3.5,
        }
    }
}

impl TemplateConfig {
    /// Checks the numeric settings.
    pub fn validate(&self) -> Result<(), TemplateError> {
        let bad = |rule: &str| Err(TemplateError::InvalidInput(format!("template config: {rule}")));
        if !(self.gradient_step.is_finite() && self.gradient_step > 0.0 && self.gradient_step <= 1.0) {
            return bad("gradient_step must be in (0, 1]");
        }
        if let Some(s) = self.template_spacing_mm
            && !(s.is_finite() && s > 0.0)
        {
            return bad("template_spacing_mm must be > 0");
        }
        if !(self.registration.spacing_mm.is_finite() && self.registration.spacing_mm > 0.0) {
            return bad("registration.spacing_mm must be > 0");
        }
        if !(self.outlier_z.is_finite() && self.outlier_z > 0.0) {
            return bad("outlier_z must be > 0");
        }
        Ok(())
    }
}

/// The per-iteration kind of map step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapStage {
    /// Affine only (the first iteration).
    Affine,
    /// Affine, then diffeomorphic.
    AffineAndDeformable,
}

impl MapStage {
    /// The stage of iteration `iteration` (0 is affine only).
    pub fn of_iteration(iteration: usize) -> Self {
        if iteration == 0 { MapStage::Affine } else { MapStage::AffineAndDeformable }
    }
}

/// The transform template → subject: `p ↦ affine(p + warp(p))` (antsApplyTransforms order
/// `[warp, affine]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectMapping {
    /// Template world → subject world affine part.
    pub affine: AffineTransform,
    /// Displacement field on the registration grid of the template, if deformable.
    pub warp: Option<DisplacementField>,
}

impl SubjectMapping {
    /// The mapping as a point transform.
    pub fn chain(&self) -> TransformChain<'_> {
        match &self.warp {
            Some(warp) => TransformChain::new(vec![warp as &dyn SpatialTransform, &self.affine]),
            None => TransformChain::new(vec![&self.affine]),
        }
    }
}

/// Registers a subject (moving) to a template (fixed).
pub trait Registrar: Sync {
    /// The transform template → subject for one map step.
    fn register(
        &self,
        template: &Image<f32>,
        subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError>;
}

/// The output of one map step.
#[derive(Debug, Clone)]
pub struct MapOutput {
    /// Template → subject.
    pub mapping: SubjectMapping,
    /// The subject resampled onto the template grid through the mapping.
    pub warped: Image<f32>,
    /// Correlation of the warped subject with the template over the template foreground.
    pub similarity: f64,
    /// Mean displacement norm (mm) of the warp over its grid, `None` for affine-only steps.
    pub warp_norm_mm: Option<f64>,
}

/// The map step: registers `subject` to `template` and warps it onto the template grid.
pub fn map_subject(
    template: &Image<f32>,
    subject: &Image<f32>,
    stage: MapStage,
    registrar: &dyn Registrar,
) -> Result<MapOutput, TemplateError> {
    let mapping = registrar.register(template, subject, stage)?;
    let warped = resample(subject, template.grid(), &mapping.chain(), Interpolation::Linear, 0.0);
    let similarity = crate::qc::foreground_correlation(template, &warped);
    let warp_norm_mm = mapping.warp.as_ref().map(crate::qc::mean_displacement_norm);
    Ok(MapOutput { mapping, warped, similarity, warp_norm_mm })
}

/// Intensity centre of mass (world mm) of the positive voxels; the grid centre when none.
pub fn centre_of_mass(image: &Image<f32>) -> [f64; 3] {
    let dims = image.grid().dims();
    let data = image.as_slice();
    // Per-slab sums in slab order: deterministic at any thread count.
    let partial: Vec<[f64; 4]> = (0..dims[0])
        .into_par_iter()
        .map(|i| {
            let mut s = [0.0f64; 4];
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let v = data[(i * dims[1] + j) * dims[2] + k];
                    if v > 0.0 {
                        let v = v as f64;
                        s[0] += v * i as f64;
                        s[1] += v * j as f64;
                        s[2] += v * k as f64;
                        s[3] += v;
                    }
                }
            }
            s
        })
        .collect();
    let mut total = [0.0f64; 4];
    for s in &partial {
        for a in 0..4 {
            total[a] += s[a];
        }
    }
    if total[3] <= 0.0 {
        return image.grid().center_world();
    }
    image.grid().voxel_to_world([total[0] / total[3], total[1] / total[3], total[2] / total[3]])
}

/// The template grid: the reference image's grid, resampled to `spacing_mm` (isotropic)
/// over the same field of view when given.
pub fn template_grid(reference: &Grid, spacing_mm: Option<f64>) -> Grid {
    let Some(spacing) = spacing_mm else { return reference.clone() };
    let current = reference.spacing();
    let mut dims = [0usize; 3];
    let mut affine = *reference.affine();
    let old_dims = reference.dims();
    // Keep the field of view: the outer voxel edges stay where they were.
    let mut offset = nalgebra::Vector4::new(0.0, 0.0, 0.0, 1.0);
    for a in 0..3 {
        let extent = old_dims[a] as f64 * current[a];
        dims[a] = ((extent / spacing).round() as usize).max(1);
        let scale = extent / dims[a] as f64 / current[a];
        offset[a] = 0.5 * scale - 0.5;
        for r in 0..3 {
            affine[(r, a)] = reference.affine()[(r, a)] * scale;
        }
    }
    let shifted = reference.affine() * offset;
    for r in 0..3 {
        affine[(r, 3)] = shifted[r];
    }
    Grid::new(dims, affine).expect("a rescaled valid grid is valid")
}

/// A running weighted mean of images on one grid, accumulated in call order (deterministic).
#[derive(Debug, Clone)]
pub struct WeightedMean {
    sum: Vec<f64>,
    grid: Grid,
    weight: f64,
}

impl WeightedMean {
    /// An empty mean on `grid`.
    pub fn new(grid: &Grid) -> Self {
        Self { sum: vec![0.0; grid.len()], grid: grid.clone(), weight: 0.0 }
    }

    /// Adds `scale × image` with weight `weight` (image must be on the mean's grid).
    pub fn add(&mut self, image: &Image<f32>, weight: f64, scale: f64) -> Result<(), TemplateError> {
        if !image.grid().same_as(&self.grid, 1e-6) {
            return Err(TemplateError::InvalidInput("image grid differs from the template grid".into()));
        }
        let factor = weight * scale;
        self.sum.par_iter_mut().zip(image.as_slice().par_iter()).for_each(|(s, &v)| *s += factor * v as f64);
        self.weight += weight;
        Ok(())
    }

    /// Total weight added.
    pub fn total_weight(&self) -> f64 {
        self.weight
    }

    /// The mean image, `None` when no weight was added.
    pub fn finish(&self) -> Option<Image<f32>> {
        if self.weight <= 0.0 {
            return None;
        }
        let d = self.grid.dims();
        let data: Vec<f32> = self.sum.par_iter().map(|s| (s / self.weight) as f32).collect();
        Some(
            Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("size"), self.grid.clone())
                .expect("grid"),
        )
    }
}

/// Mean of the positive voxels (the scale used for intensity normalization); 1 when none.
pub fn positive_mean(image: &Image<f32>) -> f64 {
    let (sum, count) = image
        .as_slice()
        .iter()
        .filter(|v| **v > 0.0)
        .fold((0.0f64, 0usize), |(s, c), &v| (s + v as f64, c + 1));
    if count == 0 || sum <= 0.0 { 1.0 } else { sum / count as f64 }
}

/// The starting target: weighted average of the subjects on `grid`, each translated so its
/// centre of mass lands on the weighted mean centre of mass (placed at the grid's own centre
/// of mass of the first subject's frame). `subjects` yields `(image, weight)` in a fixed
/// order; images are visited twice (centres first), so it is a closure producing them.
pub fn init_target(
    grid: &Grid,
    count: usize,
    mut subject: impl FnMut(usize) -> Result<(Image<f32>, f64), TemplateError>,
    normalize_intensity: bool,
) -> Result<Image<f32>, TemplateError> {
    let mut centres = Vec::with_capacity(count);
    let mut mean_centre = [0.0f64; 3];
    let mut total = 0.0;
    let mut images = Vec::new();
    for index in 0..count {
        let (image, weight) = subject(index)?;
        let centre = centre_of_mass(&image);
        for a in 0..3 {
            mean_centre[a] += weight * centre[a];
        }
        total += weight;
        centres.push(centre);
        // Keep images only for small counts; otherwise they are read again below.
        if count <= 64 {
            images.push(Some((image, weight)));
        } else {
            images.push(None);
        }
    }
    if total <= 0.0 {
        return Err(TemplateError::InvalidInput("subject weights sum to zero".into()));
    }
    for c in &mut mean_centre {
        *c /= total;
    }
    let mut mean = WeightedMean::new(grid);
    let mut scale_sum = 0.0;
    for index in 0..count {
        let (image, weight) = match images[index].take() {
            Some(pair) => pair,
            None => subject(index)?,
        };
        if weight <= 0.0 {
            continue;
        }
        let mut matrix = Matrix4::identity();
        for a in 0..3 {
            matrix[(a, 3)] = centres[index][a] - mean_centre[a];
        }
        let translated =
            resample(&image, grid, &AffineTransform::from_matrix(matrix), Interpolation::Linear, 0.0);
        let scale = if normalize_intensity { positive_mean(&translated) } else { 1.0 };
        mean.add(&translated, weight, 1.0 / scale)?;
        scale_sum += weight * scale;
    }
    let mut template = mean.finish().expect("weights positive");
    let restore = (scale_sum / mean.total_weight()) as f32;
    template.as_mut_slice().par_iter_mut().for_each(|v| *v *= restore);
    Ok(template)
}

/// The streaming reduce step of one iteration.
#[derive(Debug, Clone)]
pub struct ReduceAccumulator {
    images: WeightedMean,
    warp_sum: Option<[Vec<f64>; 3]>,
    warp_grid: Option<Grid>,
    affine_sum: Matrix4<f64>,
    scale_sum: f64,
    normalize_intensity: bool,
}

impl ReduceAccumulator {
    /// An empty reduce on the template grid.
    pub fn new(template_grid: &Grid, normalize_intensity: bool) -> Self {
        Self {
            images: WeightedMean::new(template_grid),
            warp_sum: None,
            warp_grid: None,
            affine_sum: Matrix4::zeros(),
            scale_sum: 0.0,
            normalize_intensity,
        }
    }

    /// Adds one subject's map output (subjects must be added in a fixed order).
    pub fn add(
        &mut self,
        warped: &Image<f32>,
        mapping: &SubjectMapping,
        weight: f64,
    ) -> Result<(), TemplateError> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(TemplateError::InvalidInput(format!(
                "subject weight {weight} must be finite and ≥ 0"
            )));
        }
        if weight == 0.0 {
            return Ok(());
        }
        let scale = if self.normalize_intensity { positive_mean(warped) } else { 1.0 };
        self.images.add(warped, weight, 1.0 / scale)?;
        self.scale_sum += weight * scale;
        self.affine_sum += mapping.affine.matrix() * weight;
        if let Some(warp) = &mapping.warp {
            match &self.warp_grid {
                None => {
                    self.warp_grid = Some(warp.grid().clone());
                    self.warp_sum = Some(std::array::from_fn(|_| vec![0.0; warp.grid().len()]));
                }
                Some(grid) if !grid.same_as(warp.grid(), 1e-6) => {
                    return Err(TemplateError::InvalidInput(
                        "warps of one iteration lie on different grids".into(),
                    ));
                }
                Some(_) => {}
            }
            let sums = self.warp_sum.as_mut().expect("set with grid");
            for (sum, component) in sums.iter_mut().zip(warp.components()) {
                sum.par_iter_mut()
                    .zip(component.as_slice().par_iter())
                    .for_each(|(s, &v)| *s += weight * v as f64);
            }
        }
        Ok(())
    }

    /// The weighted mean affine (template → subject), `None` before any subject.
    pub fn mean_affine(&self) -> Option<AffineTransform> {
        let w = self.images.total_weight();
        (w > 0.0).then(|| AffineTransform::from_matrix(self.affine_sum / w))
    }

    /// The weighted mean warp, `None` for affine-only iterations.
    pub fn mean_warp(&self) -> Option<DisplacementField> {
        let (sums, grid) = (self.warp_sum.as_ref()?, self.warp_grid.as_ref()?);
        let w = self.images.total_weight();
        let d = grid.dims();
        let components = std::array::from_fn(|a| {
            let data: Vec<f32> = sums[a].iter().map(|s| (s / w) as f32).collect();
            Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("size"), grid.clone())
                .expect("grid")
        });
        Some(DisplacementField::from_components(components))
    }

    /// Finishes the reduce: average, shape update, sharpening.
    pub fn finish(&self, gradient_step: f64, sharpening: Sharpening) -> Result<Image<f32>, TemplateError> {
        let mut average = self
            .images
            .finish()
            .ok_or_else(|| TemplateError::InvalidInput("no subject with positive weight".into()))?;
        let restore = (self.scale_sum / self.images.total_weight()) as f32;
        average.as_mut_slice().par_iter_mut().for_each(|v| *v *= restore);
        let mean_affine = self.mean_affine().expect("weight positive");
        let updated = shape_update(&average, &mean_affine, self.mean_warp().as_ref(), gradient_step)?;
        Ok(match sharpening {
            Sharpening::None => updated,
            Sharpening::Laplacian => sharpen_laplacian(&updated),
        })
    }
}

/// The shape update of antsMultivariateTemplateConstruction2: with the mean affine `Ā`
/// (template → subjects) and mean warp `ū`, the update field is `w(p) = −step · ū(Ā⁻¹p)` and the
/// new template is `T(w(w(w(w(Ā⁻¹p)))))`.
pub fn shape_update(
    average: &Image<f32>,
    mean_affine: &AffineTransform,
    mean_warp: Option<&DisplacementField>,
    gradient_step: f64,
) -> Result<Image<f32>, TemplateError> {
    let inverse = mean_affine
        .inverse()
        .ok_or_else(|| TemplateError::InvalidInput("the mean affine transform is singular".into()))?;
    let Some(mean_warp) = mean_warp else {
        return Ok(resample(average, average.grid(), &inverse, Interpolation::Linear, 0.0));
    };
    let grid = mean_warp.grid().clone();
    let d = grid.dims();
    let slab = d[1] * d[2];
    let mut components: [Vec<f32>; 3] = std::array::from_fn(|_| vec![0.0; grid.len()]);
    let [cx, cy, cz] = &mut components;
    cx.par_chunks_mut(slab).zip(cy.par_chunks_mut(slab)).zip(cz.par_chunks_mut(slab)).enumerate().for_each(
        |(i, ((x, y), z))| {
            for j in 0..d[1] {
                for k in 0..d[2] {
                    let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    let u = mean_warp.displacement_at(inverse.transform_point(p));
                    let n = j * d[2] + k;
                    x[n] = (-gradient_step * u[0]) as f32;
                    y[n] = (-gradient_step * u[1]) as f32;
                    z[n] = (-gradient_step * u[2]) as f32;
                }
            }
        },
    );
    let update = DisplacementField::from_components(components.map(|c| {
        Image::new(Array3::from_shape_vec((d[0], d[1], d[2]), c).expect("size"), grid.clone()).expect("grid")
    }));
    let chain = TransformChain::new(vec![&inverse, &update, &update, &update, &update]);
    Ok(resample(average, average.grid(), &chain, Interpolation::Linear, 0.0))
}

/// Laplacian sharpening `T − ΔT` (6-neighbour Laplacian in voxel units, edges replicated),
/// then rescaled so the foreground (voxels > 0 in `T`) keeps its mean and standard deviation;
/// the background keeps its values.
pub fn sharpen_laplacian(image: &Image<f32>) -> Image<f32> {
    let d = image.grid().dims();
    let data = image.as_slice();
    let at = |i: isize, j: isize, k: isize| {
        let i = i.clamp(0, d[0] as isize - 1) as usize;
        let j = j.clamp(0, d[1] as isize - 1) as usize;
        let k = k.clamp(0, d[2] as isize - 1) as usize;
        data[(i * d[1] + j) * d[2] + k]
    };
    let slab = d[1] * d[2];
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(slab).enumerate().for_each(|(i, chunk)| {
        let i = i as isize;
        for j in 0..d[1] as isize {
            for k in 0..d[2] as isize {
                let c = at(i, j, k);
                let laplacian = at(i - 1, j, k)
                    + at(i + 1, j, k)
                    + at(i, j - 1, k)
                    + at(i, j + 1, k)
                    + at(i, j, k - 1)
                    + at(i, j, k + 1)
                    - 6.0 * c;
                chunk[j as usize * d[2] + k as usize] = c - laplacian;
            }
        }
    });
    let stats = |values: &mut dyn Iterator<Item = f64>| {
        let (mut n, mut s, mut ss) = (0.0, 0.0, 0.0);
        for v in values {
            n += 1.0;
            s += v;
            ss += v * v;
        }
        if n == 0.0 {
            return (0.0, 1.0);
        }
        let mean = s / n;
        (mean, ((ss / n - mean * mean).max(0.0)).sqrt())
    };
    let (mean0, sd0) = stats(&mut data.iter().filter(|v| **v > 0.0).map(|&v| v as f64));
    let (mean1, sd1) = stats(&mut data.iter().zip(&out).filter(|(v, _)| **v > 0.0).map(|(_, &s)| s as f64));
    let gain = if sd1 > 0.0 { sd0 / sd1 } else { 1.0 };
    // Values may undershoot below 0 next to edges, as with ANTs' sharpening; the background
    // (voxels ≤ 0 in the input) is kept as it was.
    out.par_iter_mut().zip(data.par_iter()).for_each(|(s, &v)| {
        *s = if v > 0.0 { ((*s as f64 - mean1) * gain + mean0) as f32 } else { v };
    });
    image.with_data(Array3::from_shape_vec((d[0], d[1], d[2]), out).expect("size")).expect("grid")
}

/// pedinorm's registration engine as a [`Registrar`]: the template is shrunk (with Gaussian
/// anti-aliasing) to about `spacing_mm`, the subject is registered at full resolution onto
/// it, affine (Mattes MI, centre-of-mass and size initialization) then, in deformable
/// iterations, greedy diffeomorphic with squared local correlation (radius 2 voxels).
#[derive(Debug, Clone, Default)]
pub struct PedinormRegistrar {
    /// The settings (spacing, iterations).
    pub settings: RegistrationSettings,
}

impl Registrar for PedinormRegistrar {
    fn register(
        &self,
        template: &Image<f32>,
        subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError> {
        use pedinorm_registration::{RegistrationPlan, register};
        let settings = &self.settings;
        let factor = registration_factor(template.grid(), settings.spacing_mm);
        let fixed = pedinorm_registration::smooth::anti_aliased_level(template, factor);
        let mut plan =
            RegistrationPlan::template_build(&settings.affine_iterations, &settings.deformable_iterations);
        if stage == MapStage::Affine {
            plan.deformable = None;
        }
        let result =
            register(&fixed, subject, &plan).map_err(|e| TemplateError::Registration(e.to_string()))?;
        let warp = result.deformable.map(|deformable| deformable.forward);
        Ok(SubjectMapping { affine: result.affine, warp })
    }
}

/// The integer shrink factor bringing a grid's finest spacing closest to `spacing_mm` (≥ 1).
pub fn registration_factor(template: &Grid, spacing_mm: f64) -> usize {
    let finest = template.spacing().iter().cloned().fold(f64::INFINITY, f64::min);
    if spacing_mm > 0.0 { (spacing_mm / finest).round().max(1.0) as usize } else { 1 }
}

/// A registrar for tests and for inputs already in template space: identity affine, no warp
/// in the affine stage, a zero warp on the registration grid in the deformable stage.
#[derive(Debug, Clone, Default)]
pub struct IdentityRegistrar {
    /// Registration spacing (mm) deciding the warp grid, as the real registrar does.
    pub spacing_mm: f64,
}

impl Registrar for IdentityRegistrar {
    fn register(
        &self,
        template: &Image<f32>,
        _subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError> {
        let warp = match stage {
            MapStage::Affine => None,
            MapStage::AffineAndDeformable => {
                Some(DisplacementField::zeros(&registration_grid(template.grid(), self.spacing_mm)))
            }
        };
        Ok(SubjectMapping { affine: AffineTransform::identity(), warp })
    }
}

/// The grid registration runs on: the template grid shrunk by the integer factor that brings
/// its finest spacing closest to `spacing_mm` (at least 1).
pub fn registration_grid(template: &Grid, spacing_mm: f64) -> Grid {
    template.shrink(registration_factor(template, spacing_mm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::axis_aligned([24, 22, 20], [2.0; 3], [-24.0, -22.0, -20.0]).unwrap()
    }

    /// An ellipsoid "brain" of semi-axes `radii` centred at `centre`, smooth edge.
    fn ellipsoid(grid: &Grid, centre: [f64; 3], radii: [f64; 3]) -> Image<f32> {
        let d = grid.dims();
        let data = Array3::from_shape_fn((d[0], d[1], d[2]), |(i, j, k)| {
            let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let r = ((0..3).map(|a| ((w[a] - centre[a]) / radii[a]).powi(2)).sum::<f64>()).sqrt();
            (100.0 / (1.0 + ((r - 1.0) * 8.0).exp())) as f32
        });
        Image::new(data, grid.clone()).unwrap()
    }

    struct Translation;
    impl Registrar for Translation {
        fn register(
            &self,
            template: &Image<f32>,
            subject: &Image<f32>,
            stage: MapStage,
        ) -> Result<SubjectMapping, TemplateError> {
            let (a, b) = (centre_of_mass(template), centre_of_mass(subject));
            let mut m = Matrix4::identity();
            for i in 0..3 {
                m[(i, 3)] = b[i] - a[i];
            }
            let warp = (stage == MapStage::AffineAndDeformable)
                .then(|| DisplacementField::zeros(&registration_grid(template.grid(), 4.0)));
            Ok(SubjectMapping { affine: AffineTransform::from_matrix(m), warp })
        }
    }

    #[test]
    fn centre_of_mass_finds_the_blob() {
        let image = ellipsoid(&grid(), [4.0, -2.0, 3.0], [10.0, 8.0, 6.0]);
        let c = centre_of_mass(&image);
        assert!((c[0] - 4.0).abs() < 0.2 && (c[1] + 2.0).abs() < 0.2 && (c[2] - 3.0).abs() < 0.2, "{c:?}");
    }

    #[test]
    fn init_target_aligns_centres() {
        let g = grid();
        let subjects = [
            ellipsoid(&g, [-4.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
            ellipsoid(&g, [4.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
        ];
        let target = init_target(&g, 2, |i| Ok((subjects[i].clone(), 1.0)), true).unwrap();
        // Both blobs land at x = 0: the average is as sharp as one centred blob.
        let centred = ellipsoid(&g, [0.0, 0.0, 0.0], [10.0, 8.0, 6.0]);
        let correlation = crate::qc::foreground_correlation(&centred, &target);
        assert!(correlation > 0.99, "{correlation}");
    }

    #[test]
    fn reduce_averages_and_shape_update_moves_template_to_population_centre() {
        let g = grid();
        // Subjects are the template shifted by +3 and +5 mm: template → subject translation.
        let template = ellipsoid(&g, [0.0, 0.0, 0.0], [10.0, 8.0, 6.0]);
        let subjects = [
            ellipsoid(&g, [3.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
            ellipsoid(&g, [5.0, 0.0, 0.0], [10.0, 8.0, 6.0]),
        ];
        let mut reduce = ReduceAccumulator::new(&g, true);
        for subject in &subjects {
            let out = map_subject(&template, subject, MapStage::Affine, &Translation).unwrap();
            assert!(out.similarity > 0.99, "{}", out.similarity);
            reduce.add(&out.warped, &out.mapping, 1.0).unwrap();
        }
        let mean = reduce.mean_affine().unwrap();
        assert!((mean.matrix()[(0, 3)] - 4.0).abs() < 0.3, "{}", mean.matrix());
        let updated = reduce.finish(0.25, Sharpening::None).unwrap();
        let c = centre_of_mass(&updated);
        assert!((c[0] - 4.0).abs() < 0.3, "{c:?}");
    }

    #[test]
    fn mean_warp_update_moves_against_the_warp() {
        let g = grid();
        let average = ellipsoid(&g, [0.0; 3], [10.0, 8.0, 6.0]);
        let mut warp = DisplacementField::zeros(&g);
        warp.components_mut()[0].as_mut_slice().iter_mut().for_each(|v| *v = 2.0);
        let updated = shape_update(&average, &AffineTransform::identity(), Some(&warp), 0.25).unwrap();
        // −0.25 × 2 mm applied four times: content moves by +2 mm.
        let c = centre_of_mass(&updated);
        assert!((c[0] - 2.0).abs() < 0.2, "{c:?}");
    }

    #[test]
    fn weights_decide_the_average() {
        let g = grid();
        let a = Image::filled(g.clone(), 1.0f32);
        let b = Image::filled(g.clone(), 3.0f32);
        let identity = SubjectMapping { affine: AffineTransform::identity(), warp: None };
        let mut reduce = ReduceAccumulator::new(&g, false);
        reduce.add(&a, &identity, 3.0).unwrap();
        reduce.add(&b, &identity, 1.0).unwrap();
        reduce.add(&b, &identity, 0.0).unwrap();
        let t = reduce.finish(0.25, Sharpening::None).unwrap();
        assert!((t.data()[[10, 10, 10]] - 1.5).abs() < 1e-6);
        assert!(ReduceAccumulator::new(&g, false).finish(0.25, Sharpening::None).is_err());
        assert!(reduce.add(&a, &identity, f64::NAN).is_err());
    }

    #[test]
    fn sharpening_increases_sharpness_and_keeps_mean() {
        let g = grid();
        let blurred =
            pedinorm_registration::smooth::smooth_mm(&ellipsoid(&g, [0.0; 3], [10.0, 8.0, 6.0]), 2.0);
        let sharpened = sharpen_laplacian(&blurred);
        assert!(crate::qc::sharpness(&sharpened) > crate::qc::sharpness(&blurred));
        // The foreground mean is kept.
        let mean = |im: &Image<f32>| {
            let values: Vec<f64> = blurred
                .as_slice()
                .iter()
                .zip(im.as_slice())
                .filter(|(b, _)| **b > 0.0)
                .map(|(_, &v)| v as f64)
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        };
        assert!((mean(&sharpened) - mean(&blurred)).abs() / mean(&blurred) < 1e-4);
    }

    #[test]
    fn template_grid_keeps_field_of_view() {
        let reference = Grid::axis_aligned([40, 40, 40], [1.0; 3], [-19.5, -19.5, -19.5]).unwrap();
        let coarse = template_grid(&reference, Some(2.0));
        assert_eq!(coarse.dims(), [20, 20, 20]);
        assert!((coarse.spacing()[0] - 2.0).abs() < 1e-12);
        let c0 = reference.center_world();
        let c1 = coarse.center_world();
        assert!((c0[0] - c1[0]).abs() < 1e-9);
        assert_eq!(template_grid(&reference, None), reference);
        assert_eq!(registration_grid(&reference, 2.0).dims(), [20, 20, 20]);
    }

    #[test]
    fn reduce_is_deterministic_across_thread_counts() {
        let g = grid();
        let template = ellipsoid(&g, [0.0; 3], [10.0, 8.0, 6.0]);
        let subjects: Vec<_> = (0..3)
            .map(|i| ellipsoid(&g, [i as f64, -(i as f64), 0.5], [10.0 + i as f64, 8.0, 6.0]))
            .collect();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let mut reduce = ReduceAccumulator::new(&g, true);
                for s in &subjects {
                    let out = map_subject(&template, s, MapStage::AffineAndDeformable, &Translation).unwrap();
                    reduce.add(&out.warped, &out.mapping, 0.7).unwrap();
                }
                reduce.finish(0.25, Sharpening::Laplacian).unwrap()
            })
        };
        assert_eq!(run(1).as_slice(), run(2).as_slice());
    }
}
