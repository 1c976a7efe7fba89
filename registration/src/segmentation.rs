//! Tissue segmentation: a Gaussian mixture over one or more channels (contrasts) fitted by
//! expectation–maximisation, with a Markov random field that favours the classes of a voxel's
//! neighbours and optional spatial prior probabilities, as ANTs Atropos does with prior
//! probability images.
//!
//! Each class has its own mean vector and full covariance over the channels, so a second
//! contrast separates what one cannot. A voxel's class probability is
//! `λ_k · N(I(x) | μ_k, Σ_k) · exp(β Σ_y w_xy p_k(y))` without priors, and with prior maps
//! `P_k` (weight `w`) Atropos's "Socrates" form
//! `P_k(x)^w · [N(I(x) | μ_k, Σ_k) · exp(β Σ_y w_xy p_k(y))]^(1−w)`, where the field term sums
//! the neighbours' current probabilities over the
//! 26-neighbourhood, weighted by the inverse distance in mm (mean-field update, as Atropos's
//! MRF with radius 1). Priors also decide which class is which, so the result does not depend on the
//! order of tissue intensities: infant T1 (white matter darker than grey) and T2 are
//! segmented as they are, and where two tissues share one intensity (isointense T1 around
//! 6–12 months) the priors and the neighbours separate them. Without priors the classes are
//! initialised by k-means and returned in ascending order of the first channel's mean.

use crate::Image;
use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

/// Settings of [`segment`]; the defaults follow Atropos's usual brain settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationOptions {
    /// Number of classes (ignored with priors: one class per prior map).
    pub classes: usize,
    /// Most EM iterations.
    pub max_iterations: usize,
    /// Converged when the log-likelihood per voxel changes by less than this.
    pub tolerance: f64,
    /// Markov random field weight β (0: none; Atropos's default 0.3 at radius 1).
    pub mrf_weight: f64,
    /// Weight `w` of the prior maps against the class proportions (0–1).
    pub prior_weight: f64,
}

impl Default for SegmentationOptions {
    fn default() -> Self {
        SegmentationOptions {
            classes: 3,
            max_iterations: 20,
            tolerance: 1e-4,
            mrf_weight: 0.3,
            prior_weight: 0.5,
        }
    }
}

/// Why a segmentation cannot run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SegmentationError {
    /// No channel was given.
    #[error("segmentation needs at least one image")]
    NoChannels,
    /// A channel, the mask or a prior lies on another grid than the first channel.
    #[error("{what} is not on the first image's grid")]
    GridMismatch {
        /// Which input.
        what: String,
    },
    /// Fewer than two classes.
    #[error("segmentation needs at least two classes (got {0})")]
    TooFewClasses(usize),
    /// The mask holds too few finite voxels for the classes.
    #[error("the mask holds {voxels} usable voxels: too few for {classes} classes")]
    TooFewVoxels {
        /// Usable voxels.
        voxels: usize,
        /// Classes asked for.
        classes: usize,
    },
    /// A setting is out of its range.
    #[error("{0}")]
    InvalidOption(String),
}

/// The result of [`segment`].
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// One probability map per class (0 outside the mask).
    pub posteriors: Vec<Image<f32>>,
    /// Most probable class, numbered from 1 (0 outside the mask).
    pub labels: Image<f32>,
    /// Mean of each class, one value per channel.
    pub means: Vec<Vec<f64>>,
    /// Covariance of each class, channels × channels, row by row.
    pub covariances: Vec<Vec<f64>>,
    /// Class proportions λ.
    pub proportions: Vec<f64>,
    /// EM iterations run.
    pub iterations: usize,
    /// Whether the tolerance was reached before the iteration limit.
    pub converged: bool,
}

impl Segmentation {
    /// Volume of each class in millilitres, counting partial probabilities.
    pub fn volumes_ml(&self) -> Vec<f64> {
        self.posteriors
            .iter()
            .map(|p| {
                let voxel_ml = p.grid().spacing().iter().product::<f64>() / 1000.0;
                p.as_slice().iter().map(|&v| v as f64).sum::<f64>() * voxel_ml
            })
            .collect()
    }
}

/// One class's Gaussian, ready to evaluate.
struct ClassModel {
    mean: DVector<f64>,
    precision: DMatrix<f64>,
    log_norm: f64,
}

impl ClassModel {
    fn new(mean: DVector<f64>, covariance: &DMatrix<f64>) -> ClassModel {
        let d = mean.len();
        let cholesky = covariance.clone().cholesky().expect("covariance regularised to be positive definite");
        let log_det = 2.0 * cholesky.l().diagonal().iter().map(|v| v.ln()).sum::<f64>();
        ClassModel {
            mean,
            precision: cholesky.inverse(),
            log_norm: -0.5 * (d as f64 * (2.0 * std::f64::consts::PI).ln() + log_det),
        }
    }

    /// Called for every voxel, class and iteration: no allocation.
    fn log_density(&self, x: &[f64]) -> f64 {
        let centred = |i: usize| x[i] - self.mean[i];
        let quadratic: f64 = (0..x.len())
            .map(|i| centred(i) * (0..x.len()).map(|j| self.precision[(i, j)] * centred(j)).sum::<f64>())
            .sum();
        self.log_norm - 0.5 * quadratic
    }
}

/// The masked voxels and how to reach their neighbours.
struct Voxels {
    /// Index into the full grid of each masked voxel.
    full_index: Vec<usize>,
    /// Position among the masked voxels of each grid voxel (`u32::MAX` outside the mask).
    position: Vec<u32>,
    /// Channel values, `channels` per voxel.
    values: Vec<f64>,
    channels: usize,
    /// Mean and variance of each channel over the masked voxels (k-means scaling, the ridge).
    channel_mean: Vec<f64>,
    channel_variance: Vec<f64>,
    dims: [usize; 3],
    /// 26-neighbourhood offsets with their weights, 1 / distance in mm (as Atropos: the field
    /// is weaker on coarser grids, where a neighbour is farther away).
    neighbours: Vec<([isize; 3], f64)>,
}

impl Voxels {
    fn gather(channels: &[&Image<f32>], mask: &Image<f32>) -> Voxels {
        let grid = channels[0].grid();
        let dims = grid.dims();
        let spacing = grid.spacing();
        let mut full_index = Vec::new();
        let mut position = vec![u32::MAX; grid.len()];
        let mut values = Vec::new();
        for (index, &m) in mask.as_slice().iter().enumerate() {
            let sample: Vec<f64> = channels.iter().map(|c| c.as_slice()[index] as f64).collect();
            if m > 0.5 && sample.iter().all(|v| v.is_finite()) {
                position[index] = full_index.len() as u32;
                full_index.push(index);
                values.extend(sample);
            }
        }
        let mut neighbours = Vec::new();
        for di in -1isize..=1 {
            for dj in -1isize..=1 {
                for dk in -1isize..=1 {
                    if (di, dj, dk) == (0, 0, 0) {
                        continue;
                    }
                    let distance = ((di as f64 * spacing[0]).powi(2)
                        + (dj as f64 * spacing[1]).powi(2)
                        + (dk as f64 * spacing[2]).powi(2))
                    .sqrt();
                    neighbours.push(([di, dj, dk], 1.0 / distance));
                }
            }
        }
        let (d, n) = (channels.len(), full_index.len().max(1) as f64);
        let mut channel_mean = vec![0.0; d];
        for (i, v) in values.iter().enumerate() {
            channel_mean[i % d] += v / n;
        }
        let mut channel_variance = vec![0.0; d];
        for (i, v) in values.iter().enumerate() {
            channel_variance[i % d] += (v - channel_mean[i % d]).powi(2) / n;
        }
        Voxels { full_index, position, values, channels: d, channel_mean, channel_variance, dims, neighbours }
    }

    fn len(&self) -> usize {
        self.full_index.len()
    }

    fn sample(&self, voxel: usize) -> &[f64] {
        &self.values[voxel * self.channels..(voxel + 1) * self.channels]
    }

    /// Σ_y w_xy p_k(y) over the masked neighbours of `voxel`, for every class.
    fn neighbour_sums(&self, voxel: usize, probabilities: &[f32], classes: usize, out: &mut [f64]) {
        out.iter_mut().for_each(|v| *v = 0.0);
        let [nx, ny, nz] = self.dims;
        let index = self.full_index[voxel];
        let (i, j, k) = (index / (ny * nz), (index / nz) % ny, index % nz);
        for &([di, dj, dk], weight) in &self.neighbours {
            let (a, b, c) = (i as isize + di, j as isize + dj, k as isize + dk);
            if a < 0 || b < 0 || c < 0 || a >= nx as isize || b >= ny as isize || c >= nz as isize {
                continue;
            }
            let neighbour = self.position[(a as usize * ny + b as usize) * nz + c as usize];
            if neighbour == u32::MAX {
                continue;
            }
            let row = &probabilities[neighbour as usize * classes..(neighbour as usize + 1) * classes];
            for (sum, &p) in out.iter_mut().zip(row) {
                *sum += weight * p as f64;
            }
        }
    }
}

/// Segments the voxels inside `mask` (> 0.5) of `channels` (one image per contrast, all on one
/// grid) into classes. With `priors` (one probability map per class, on the same grid) the
/// classes are the priors' and start from them; without, `options.classes` classes start from
/// k-means and come out in ascending order of the first channel's mean.
pub fn segment(
    channels: &[&Image<f32>],
    mask: &Image<f32>,
    priors: Option<&[Image<f32>]>,
    options: &SegmentationOptions,
) -> Result<Segmentation, SegmentationError> {
    let first = channels.first().ok_or(SegmentationError::NoChannels)?;
    let same_grid = |image: &Image<f32>, what: String| {
        if image.grid() == first.grid() { Ok(()) } else { Err(SegmentationError::GridMismatch { what }) }
    };
    for (index, channel) in channels.iter().enumerate().skip(1) {
        same_grid(channel, format!("channel {}", index + 1))?;
    }
    same_grid(mask, "the mask".into())?;
    if let Some(priors) = priors {
        for (index, prior) in priors.iter().enumerate() {
            same_grid(prior, format!("prior {}", index + 1))?;
        }
    }
    if !(0.0..=1.0).contains(&options.prior_weight)
        || options.mrf_weight.is_nan()
        || options.mrf_weight < 0.0
        || options.max_iterations == 0
    {
        return Err(SegmentationError::InvalidOption(
            "prior weight must be in [0, 1], the MRF weight ≥ 0 and at least one iteration".into(),
        ));
    }
    let classes = priors.map_or(options.classes, <[Image<f32>]>::len);
    if classes < 2 {
        return Err(SegmentationError::TooFewClasses(classes));
    }
    let voxels = Voxels::gather(channels, mask);
    let n = voxels.len();
    if n < 10 * classes {
        return Err(SegmentationError::TooFewVoxels { voxels: n, classes });
    }
    let prior_maps: Option<Vec<f32>> = priors.map(|maps| normalised_priors(maps, &voxels));
    let mut probabilities = match &prior_maps {
        Some(maps) => maps.clone(),
        None => kmeans_memberships(&voxels, classes),
    };
    let mut models = fit_classes(&voxels, &probabilities, classes);
    let mut previous = f64::NEG_INFINITY;
    let (mut iterations, mut converged) = (0, false);
    while iterations < options.max_iterations {
        iterations += 1;
        let (updated, log_likelihood) =
            expectation(&voxels, &models, &probabilities, prior_maps.as_deref(), classes, options);
        probabilities = updated;
        models = fit_classes(&voxels, &probabilities, classes);
        let per_voxel = log_likelihood / n as f64;
        if (per_voxel - previous).abs() < options.tolerance {
            converged = true;
            break;
        }
        previous = per_voxel;
    }
    Ok(result(&voxels, first, probabilities, models, classes, iterations, converged))
}

/// Each masked voxel's prior row, normalised to sum 1 (uniform where every map is 0).
fn normalised_priors(maps: &[Image<f32>], voxels: &Voxels) -> Vec<f32> {
    let classes = maps.len();
    let mut rows = vec![0f32; voxels.len() * classes];
    for (voxel, &index) in voxels.full_index.iter().enumerate() {
        let row = &mut rows[voxel * classes..(voxel + 1) * classes];
        for (value, map) in row.iter_mut().zip(maps) {
            *value = map.as_slice()[index].max(0.0);
        }
        let total: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v = if total > 0.0 { *v / total } else { 1.0 / classes as f32 });
    }
    rows
}

/// Hard k-means memberships on the channels scaled to unit variance. Lloyd's iterations start
/// twice — from quantiles of the first channel, and from farthest points of a trimmed sample
/// (which finds classes the first channel cannot tell apart) — and the start with the smaller
/// within-class scatter wins; classes come out ordered by the first channel.
fn kmeans_memberships(voxels: &Voxels, classes: usize) -> Vec<f32> {
    let n = voxels.len();
    let (mean, sd) = (&voxels.channel_mean, &voxels.channel_variance);
    let scaled: Vec<Vec<f64>> = (0..n)
        .map(|voxel| {
            voxels
                .sample(voxel)
                .iter()
                .enumerate()
                .map(|(c, v)| (v - mean[c]) / sd[c].sqrt().max(1e-12))
                .collect()
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scaled[a][0].total_cmp(&scaled[b][0]));
    let quantiles: Vec<Vec<f64>> =
        (0..classes).map(|k| scaled[order[((2 * k + 1) * n) / (2 * classes)]].clone()).collect();
    let starts = [quantiles, farthest_points(&scaled, classes)];
    let (centres, assignment) = starts
        .into_iter()
        .map(|start| lloyd(&scaled, start))
        .min_by(|a, b| scatter(&scaled, &a.0, &a.1).total_cmp(&scatter(&scaled, &b.0, &b.1)))
        .expect("two starts");
    let mut ranked: Vec<usize> = (0..classes).collect();
    ranked.sort_by(|&a, &b| centres[a][0].total_cmp(&centres[b][0]));
    let mut rank_of = vec![0usize; classes];
    for (rank, &k) in ranked.iter().enumerate() {
        rank_of[k] = rank;
    }
    let mut memberships = vec![0f32; n * classes];
    for (voxel, &k) in assignment.iter().enumerate() {
        memberships[voxel * classes + rank_of[k]] = 1.0;
    }
    memberships
}

/// Farthest-point seeds over a sample of at most ~20,000 points, leaving out points beyond the
/// 1st–99th percentile of any channel (noise outliers would otherwise be picked).
fn farthest_points(points: &[Vec<f64>], classes: usize) -> Vec<Vec<f64>> {
    let d = points[0].len();
    let bounds: Vec<(f64, f64)> = (0..d)
        .map(|c| {
            let mut values: Vec<f64> = points.iter().map(|p| p[c]).collect();
            values.sort_by(f64::total_cmp);
            (values[values.len() / 100], values[values.len() - 1 - values.len() / 100])
        })
        .collect();
    let step = (points.len() / 20_000).max(1);
    let sample: Vec<&Vec<f64>> = points
        .iter()
        .step_by(step)
        .filter(|p| p.iter().zip(&bounds).all(|(v, (lo, hi))| v >= lo && v <= hi))
        .collect();
    let mean: Vec<f64> =
        (0..d).map(|c| sample.iter().map(|p| p[c]).sum::<f64>() / sample.len() as f64).collect();
    let mut seeds = vec![
        sample.iter().max_by(|a, b| distance2(a, &mean).total_cmp(&distance2(b, &mean))).unwrap().to_vec(),
    ];
    while seeds.len() < classes {
        let next = sample
            .iter()
            .max_by(|a, b| {
                let nearest =
                    |p: &Vec<f64>| seeds.iter().map(|s| distance2(p, s)).fold(f64::INFINITY, f64::min);
                nearest(a).total_cmp(&nearest(b))
            })
            .unwrap();
        seeds.push(next.to_vec());
    }
    seeds
}

/// Lloyd's iterations from `centres`: the final centres and each point's class.
fn lloyd(points: &[Vec<f64>], mut centres: Vec<Vec<f64>>) -> (Vec<Vec<f64>>, Vec<usize>) {
    let classes = centres.len();
    let d = points[0].len();
    let mut assignment = vec![usize::MAX; points.len()];
    for _ in 0..50 {
        let nearest: Vec<usize> = points
            .par_iter()
            .map(|x| {
                (0..classes)
                    .min_by(|&a, &b| distance2(x, &centres[a]).total_cmp(&distance2(x, &centres[b])))
                    .unwrap()
            })
            .collect();
        let changed = nearest != assignment;
        assignment = nearest;
        let mut sums = vec![vec![0.0; d]; classes];
        let mut counts = vec![0usize; classes];
        for (x, &k) in points.iter().zip(&assignment) {
            counts[k] += 1;
            sums[k].iter_mut().zip(x).for_each(|(s, v)| *s += v);
        }
        for k in 0..classes {
            if counts[k] > 0 {
                centres[k] = sums[k].iter().map(|s| s / counts[k] as f64).collect();
            }
        }
        if !changed {
            break;
        }
    }
    (centres, assignment)
}

fn scatter(points: &[Vec<f64>], centres: &[Vec<f64>], assignment: &[usize]) -> f64 {
    points.iter().zip(assignment).map(|(x, &k)| distance2(x, &centres[k])).sum()
}

fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum()
}

/// M-step: proportions, means and covariances weighted by the memberships. Covariances get a
/// small ridge (10⁻⁴ of each channel's overall variance) so an almost pure class stays
/// invertible.
fn fit_classes(
    voxels: &Voxels,
    probabilities: &[f32],
    classes: usize,
) -> (Vec<f64>, Vec<ClassModel>, Vec<Vec<f64>>) {
    let d = voxels.channels;
    let n = voxels.len();
    let mut weight = vec![0.0; classes];
    let mut sums = vec![DVector::<f64>::zeros(d); classes];
    for voxel in 0..n {
        let x = DVector::from_column_slice(voxels.sample(voxel));
        for k in 0..classes {
            let p = probabilities[voxel * classes + k] as f64;
            weight[k] += p;
            sums[k] += &x * p;
        }
    }
    let means: Vec<DVector<f64>> = (0..classes)
        .map(|k| if weight[k] > 0.0 { &sums[k] / weight[k] } else { DVector::zeros(d) })
        .collect();
    let mut scatter = vec![DMatrix::<f64>::zeros(d, d); classes];
    for voxel in 0..n {
        let x = DVector::from_column_slice(voxels.sample(voxel));
        for k in 0..classes {
            let p = probabilities[voxel * classes + k] as f64;
            if p > 0.0 {
                let centred = &x - &means[k];
                scatter[k] += &centred * centred.transpose() * p;
            }
        }
    }
    let total: f64 = weight.iter().sum();
    let mut models = Vec::with_capacity(classes);
    let mut covariances = Vec::with_capacity(classes);
    for k in 0..classes {
        let mut covariance = if weight[k] > 0.0 { &scatter[k] / weight[k] } else { DMatrix::zeros(d, d) };
        for (c, variance) in voxels.channel_variance.iter().enumerate() {
            covariance[(c, c)] += 1e-4 * variance.max(1e-12);
        }
        covariances.push(covariance.transpose().iter().cloned().collect());
        models.push(ClassModel::new(means[k].clone(), &covariance));
    }
    let proportions = weight.iter().map(|w| (w / total).max(1e-6)).collect();
    (proportions, models, covariances)
}

type Fitted = (Vec<f64>, Vec<ClassModel>, Vec<Vec<f64>>);

/// E-step with the mean-field MRF: new memberships from the current model and the neighbours'
/// current memberships; returns them with the data log-likelihood (without the field term).
fn expectation(
    voxels: &Voxels,
    (proportions, models, _): &Fitted,
    current: &[f32],
    priors: Option<&[f32]>,
    classes: usize,
    options: &SegmentationOptions,
) -> (Vec<f32>, f64) {
    let rows: Vec<(Vec<f32>, f64)> = (0..voxels.len())
        .into_par_iter()
        .map(|voxel| {
            let x = voxels.sample(voxel);
            let mut field = vec![0.0; classes];
            if options.mrf_weight > 0.0 {
                voxels.neighbour_sums(voxel, current, classes, &mut field);
            }
            let densities: Vec<f64> = models.iter().map(|m| m.log_density(x)).collect();
            // The data log-likelihood of the mixture, for convergence.
            let mixture: Vec<f64> = (0..classes).map(|k| proportions[k].ln() + densities[k]).collect();
            let data = log_sum_exp(&mixture);
            let terms: Vec<f64> = (0..classes)
                .map(|k| {
                    let evidence = densities[k] + options.mrf_weight * field[k];
                    match priors {
                        // Atropos's "Socrates" formulation: prior^w · (likelihood · field)^(1−w).
                        Some(p) => {
                            let w = options.prior_weight;
                            w * (p[voxel * classes + k] as f64).max(1e-10).ln() + (1.0 - w) * evidence
                        }
                        None => proportions[k].ln() + evidence,
                    }
                })
                .collect();
            let norm = log_sum_exp(&terms);
            (terms.iter().map(|t| (t - norm).exp() as f32).collect(), data)
        })
        .collect();
    let log_likelihood = rows.iter().map(|(_, l)| l).sum();
    (rows.into_iter().flat_map(|(row, _)| row).collect(), log_likelihood)
}

fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn result(
    voxels: &Voxels,
    reference: &Image<f32>,
    probabilities: Vec<f32>,
    (proportions, models, covariances): Fitted,
    classes: usize,
    iterations: usize,
    converged: bool,
) -> Segmentation {
    let mut posteriors: Vec<Image<f32>> = (0..classes).map(|_| reference.map(|_| 0.0f32)).collect();
    let mut labels = reference.map(|_| 0.0f32);
    for (voxel, &index) in voxels.full_index.iter().enumerate() {
        let row = &probabilities[voxel * classes..(voxel + 1) * classes];
        let mut best = 0;
        for k in 0..classes {
            posteriors[k].as_mut_slice()[index] = row[k];
            if row[k] > row[best] {
                best = k;
            }
        }
        labels.as_mut_slice()[index] = (best + 1) as f32;
    }
    Segmentation {
        posteriors,
        labels,
        means: models.iter().map(|m| m.mean.iter().cloned().collect()).collect(),
        covariances,
        proportions,
        iterations,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grid;
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Three nested shells (1 centre, 2 middle, 3 outer) inside a spherical mask.
    fn phantom() -> (Image<f32>, Image<f32>) {
        let grid = Grid::axis_aligned([40, 40, 40], [1.0; 3], [0.0; 3]).unwrap();
        let truth = Array3::from_shape_fn((40, 40, 40), |(i, j, k)| {
            let r =
                ((i as f64 - 20.0).powi(2) + (j as f64 - 20.0).powi(2) + (k as f64 - 20.0).powi(2)).sqrt();
            if r < 7.0 {
                1.0
            } else if r < 12.0 {
                2.0
            } else if r < 18.0 {
                3.0
            } else {
                0.0
            }
        });
        let truth = Image::new(truth, grid.clone()).unwrap();
        let mask = truth.map(|&l| if l > 0.0 { 1.0 } else { 0.0 });
        (truth, mask)
    }

    fn render(truth: &Image<f32>, levels: [f32; 3], noise: f32, seed: u64) -> Image<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut image = truth.clone();
        for value in image.as_mut_slice() {
            let base = if *value > 0.0 { levels[*value as usize - 1] } else { 0.0 };
            // Box–Muller from two uniforms.
            let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
            *value = base + noise * ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32;
        }
        image
    }

    fn agreement(labels: &Image<f32>, truth: &Image<f32>) -> f64 {
        let inside: Vec<(f32, f32)> = labels
            .as_slice()
            .iter()
            .zip(truth.as_slice())
            .filter(|(_, t)| **t > 0.0)
            .map(|(l, t)| (*l, *t))
            .collect();
        inside.iter().filter(|(l, t)| l == t).count() as f64 / inside.len() as f64
    }

    fn smooth_priors(truth: &Image<f32>) -> Vec<Image<f32>> {
        (1..=3)
            .map(|class| crate::smooth::smooth_mm(&truth.map(|&l| (l == class as f32) as u8 as f32), 2.0))
            .collect()
    }

    #[test]
    fn kmeans_classes_come_out_in_intensity_order_whatever_the_contrast() {
        let (truth, mask) = phantom();
        // Adult-T1-like (1 < 2 < 3) and infant-like (middle brightest): ordered by intensity.
        let image = render(&truth, [30.0, 60.0, 90.0], 6.0, 1);
        let result = segment(&[&image], &mask, None, &SegmentationOptions::default()).unwrap();
        assert!(agreement(&result.labels, &truth) > 0.97, "{}", agreement(&result.labels, &truth));
        assert!(result.means[0][0] < result.means[1][0] && result.means[1][0] < result.means[2][0]);
        let inverted = render(&truth, [30.0, 90.0, 60.0], 6.0, 2);
        let result = segment(&[&inverted], &mask, None, &SegmentationOptions::default()).unwrap();
        let remapped = result.labels.map(|&l| [0.0, 1.0, 3.0, 2.0][l as usize]);
        assert!(agreement(&remapped, &truth) > 0.97);
    }

    #[test]
    fn the_markov_field_cleans_up_noise() {
        let (truth, mask) = phantom();
        let image = render(&truth, [30.0, 60.0, 90.0], 16.0, 3);
        let plain = SegmentationOptions { mrf_weight: 0.0, ..SegmentationOptions::default() };
        let without = agreement(&segment(&[&image], &mask, None, &plain).unwrap().labels, &truth);
        let with = agreement(
            &segment(&[&image], &mask, None, &SegmentationOptions::default()).unwrap().labels,
            &truth,
        );
        assert!(with > without + 0.03, "with MRF {with:.3}, without {without:.3}");
    }

    #[test]
    fn priors_name_the_classes_and_separate_isointense_tissues() {
        let (truth, mask) = phantom();
        // Classes 2 and 3 share one intensity: only the priors (and the field) tell them apart.
        let image = render(&truth, [30.0, 70.0, 70.0], 5.0, 4);
        let priors = smooth_priors(&truth);
        let result = segment(&[&image], &mask, Some(&priors), &SegmentationOptions::default()).unwrap();
        let score = agreement(&result.labels, &truth);
        assert!(score > 0.9, "{score:.3}");
        // Volumes add up to the mask's.
        let total: f64 = result.volumes_ml().iter().sum();
        let mask_ml = mask.as_slice().iter().filter(|&&m| m > 0.5).count() as f64 / 1000.0;
        assert!((total - mask_ml).abs() < 1e-3 * mask_ml, "{total} vs {mask_ml}");
    }

    #[test]
    fn a_second_channel_separates_what_the_first_cannot() {
        let (truth, mask) = phantom();
        let first = render(&truth, [30.0, 70.0, 70.0], 5.0, 5);
        let second = render(&truth, [80.0, 80.0, 30.0], 5.0, 6);
        let one = segment(&[&first], &mask, None, &SegmentationOptions::default()).unwrap();
        let two = segment(&[&first, &second], &mask, None, &SegmentationOptions::default()).unwrap();
        let best_of = |labels: &Image<f32>| {
            // Classes without priors are ordered by the first channel only: try each naming.
            let perms = [[1, 2, 3], [1, 3, 2], [2, 1, 3], [2, 3, 1], [3, 1, 2], [3, 2, 1]];
            perms
                .iter()
                .map(|p| {
                    agreement(&labels.map(|&l| if l > 0.0 { p[l as usize - 1] as f32 } else { 0.0 }), &truth)
                })
                .fold(0.0, f64::max)
        };
        assert!(best_of(&two.labels) > 0.97, "{}", best_of(&two.labels));
        assert!(best_of(&one.labels) < 0.9, "{}", best_of(&one.labels));
    }

    #[test]
    fn bad_inputs_are_named() {
        let (truth, mask) = phantom();
        let other =
            Image::new(Array3::zeros((4, 4, 4)), Grid::axis_aligned([4, 4, 4], [1.0; 3], [0.0; 3]).unwrap())
                .unwrap();
        assert_eq!(
            segment(&[&truth, &other], &mask, None, &SegmentationOptions::default()).unwrap_err(),
            SegmentationError::GridMismatch { what: "channel 2".into() }
        );
        let empty = mask.map(|_| 0.0);
        assert!(matches!(
            segment(&[&truth], &empty, None, &SegmentationOptions::default()),
            Err(SegmentationError::TooFewVoxels { .. })
        ));
        assert!(segment(&[], &mask, None, &SegmentationOptions::default()).is_err());
    }
}
