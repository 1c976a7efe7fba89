//! Uniform cubic B-spline control-point lattices over a voxel grid: scattered-data fitting in
//! the manner of Lee, Wolberg & Shin's multilevel B-spline approximation (the fit ITK's
//! `BSplineScatteredDataPointSetToImageFilter` and N4 use), dyadic refinement, and evaluation.
//!
//! Data points are voxels of a regular grid, so every step is separable: fitting and evaluation
//! cost a few passes over the grid, not 64 lattice visits per voxel. Each pass writes disjoint
//! rows or reduces in a fixed order, so results are identical at any thread count.

use rayon::prelude::*;

/// A lattice of cubic B-spline control points spanning a 3-D parametric domain with
/// `spans[a]` knot spans along axis `a` (hence `spans[a] + 3` control points).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlLattice {
    spans: [usize; 3],
    values: Vec<f64>,
}

/// Cubic B-spline basis weights at fraction `t ∈ [0, 1)` of a knot span.
#[inline]
fn basis(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    let s = 1.0 - t;
    [
        s * s * s / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    ]
}

/// Where the voxels of one grid axis fall on one lattice axis: for each voxel, the first of the
/// four control points it depends on and their weights.
#[derive(Debug, Clone)]
pub struct AxisSampling {
    base: Vec<usize>,
    weights: Vec<[f64; 4]>,
}

impl AxisSampling {
    /// Sampling of voxels at parametric coordinates `positions` (each in `[0, spans]`; values
    /// outside are clamped to the domain).
    pub fn new(positions: &[f64], spans: usize) -> Self {
        let top = spans as f64;
        let mut base = Vec::with_capacity(positions.len());
        let mut weights = Vec::with_capacity(positions.len());
        for &u in positions {
            let u = u.clamp(0.0, top);
            let span = (u.floor() as usize).min(spans - 1);
            base.push(span);
            weights.push(basis(u - span as f64));
        }
        Self { base, weights }
    }

    /// Parametric positions of the `len` voxels of an axis whose continuous voxel index `x`
    /// maps linearly to `u = (x · step + first) / (extent − 1) · spans`, where `extent` is the
    /// number of voxels of the reference (full-resolution) axis. `step` and `first` place the
    /// voxels of a shrunken grid on the reference axis.
    pub fn for_axis(len: usize, step: f64, first: f64, extent: usize, spans: usize) -> Self {
        let denominator = (extent.max(2) - 1) as f64;
        let positions: Vec<f64> = (0..len)
            .map(|x| if extent <= 1 { 0.0 } else { (x as f64 * step + first) / denominator * spans as f64 })
            .collect();
        Self::new(&positions, spans)
    }

    fn len(&self) -> usize {
        self.base.len()
    }
}

impl ControlLattice {
    /// A lattice of zeros.
    pub fn zeros(spans: [usize; 3]) -> Self {
        let spans = spans.map(|s| s.max(1));
        let n = (spans[0] + 3) * (spans[1] + 3) * (spans[2] + 3);
        Self { spans, values: vec![0.0; n] }
    }

    /// Knot spans per axis.
    pub fn spans(&self) -> [usize; 3] {
        self.spans
    }

    /// Control points per axis.
    pub fn size(&self) -> [usize; 3] {
        self.spans.map(|s| s + 3)
    }

    /// Control-point values, C order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Adds another lattice of the same size.
    pub fn add(&mut self, other: &ControlLattice) {
        assert_eq!(self.spans, other.spans, "lattices must have the same spans");
        self.values.iter_mut().zip(&other.values).for_each(|(a, b)| *a += b);
    }

    /// Multilevel-B-spline approximation (one level) of the values on a voxel grid whose axes
    /// are sampled by `axes`: each voxel with `weight > 0` proposes for each of its 64 control
    /// points the value that would reproduce it alone, and each control point takes the average
    /// of its proposals weighted by the squared basis weights (Lee et al. 1997). Voxels with zero
    /// weight do not contribute; control points no voxel reaches stay 0.
    pub fn fit(spans: [usize; 3], axes: &[AxisSampling; 3], values: &[f64], weight: &[f64]) -> Self {
        let mut lattice = Self::zeros(spans);
        let dims = [axes[0].len(), axes[1].len(), axes[2].len()];
        assert_eq!(values.len(), dims[0] * dims[1] * dims[2]);
        assert_eq!(weight.len(), values.len());
        // The per-voxel normaliser Σ w² over the 64 neighbours factorizes over axes, so both
        // sums (numerator Σ w³ z / Σw², denominator Σ w²) are separable transforms.
        let sum_squares = |axis: &AxisSampling| -> Vec<f64> {
            axis.weights.iter().map(|w| w.iter().map(|v| v * v).sum()).collect()
        };
        let s = [sum_squares(&axes[0]), sum_squares(&axes[1]), sum_squares(&axes[2])];
        let cube_axes: [Vec<[f64; 4]>; 3] = std::array::from_fn(|a| {
            axes[a].weights.iter().zip(&s[a]).map(|(w, sa)| w.map(|v| v * v * v / sa)).collect()
        });
        let square_axes: [Vec<[f64; 4]>; 3] =
            std::array::from_fn(|a| axes[a].weights.iter().map(|w| w.map(|v| v * v)).collect());
        let weighted: Vec<f64> = values.iter().zip(weight).map(|(z, w)| z * w).collect();
        let bases = [&axes[0].base[..], &axes[1].base[..], &axes[2].base[..]];
        let size = lattice.size();
        let numerator = adjoint(&weighted, dims, bases, &cube_axes, size);
        let denominator = adjoint(weight, dims, bases, &square_axes, size);
        for ((out, n), d) in lattice.values.iter_mut().zip(&numerator).zip(&denominator) {
            *out = if *d > 1e-12 { n / d } else { 0.0 };
        }
        lattice
    }

    /// The same function on a lattice with twice as many knot spans per axis (exact dyadic
    /// subdivision of the uniform cubic B-spline).
    pub fn refine(&self) -> ControlLattice {
        let mut values = self.values.clone();
        let mut size = self.size();
        for axis in 0..3 {
            let old = size[axis];
            let new = 2 * (old - 3) + 3;
            let mut new_size = size;
            new_size[axis] = new;
            let mut out = vec![0.0; new_size[0] * new_size[1] * new_size[2]];
            let stride_old = [size[1] * size[2], size[2], 1];
            let stride_new = [new_size[1] * new_size[2], new_size[2], 1];
            for i in 0..new_size[0] {
                for j in 0..new_size[1] {
                    for k in 0..new_size[2] {
                        let idx = [i, j, k];
                        let q = idx[axis];
                        let at = |p: usize| {
                            let mut o = idx;
                            o[axis] = p;
                            values[o[0] * stride_old[0] + o[1] * stride_old[1] + o[2] * stride_old[2]]
                        };
                        // Subdivision masks: even children (P_m + P_{m+1}) / 2, odd children
                        // (P_m + 6 P_{m+1} + P_{m+2}) / 8.
                        let m = q / 2;
                        let v = if q % 2 == 0 {
                            0.5 * (at(m) + at(m + 1))
                        } else {
                            (at(m) + 6.0 * at(m + 1) + at(m + 2)) / 8.0
                        };
                        out[i * stride_new[0] + j * stride_new[1] + k * stride_new[2]] = v;
                    }
                }
            }
            values = out;
            size = new_size;
        }
        ControlLattice { spans: self.spans.map(|s| 2 * s), values }
    }

    /// The spline's values at every voxel of a grid whose axes are sampled by `axes`, C order.
    pub fn evaluate(&self, axes: &[AxisSampling; 3]) -> Vec<f64> {
        let [l0, l1, l2] = self.size();
        let [d0, d1, d2] = [axes[0].len(), axes[1].len(), axes[2].len()];
        // Contract axis 2, then 1, then 0; each stage's rows are independent.
        let mut t1 = vec![0.0; l0 * l1 * d2];
        t1.par_chunks_mut(d2).enumerate().for_each(|(ab, row)| {
            let src = &self.values[ab * l2..(ab + 1) * l2];
            for (k, out) in row.iter_mut().enumerate() {
                let b = axes[2].base[k];
                let w = &axes[2].weights[k];
                *out = w[0] * src[b] + w[1] * src[b + 1] + w[2] * src[b + 2] + w[3] * src[b + 3];
            }
        });
        let mut t2 = vec![0.0; l0 * d1 * d2];
        t2.par_chunks_mut(d1 * d2).enumerate().for_each(|(a, block)| {
            for j in 0..d1 {
                let b = axes[1].base[j];
                let w = &axes[1].weights[j];
                let row = &mut block[j * d2..(j + 1) * d2];
                for (t, &wt) in w.iter().enumerate() {
                    let src = &t1[(a * l1 + b + t) * d2..(a * l1 + b + t + 1) * d2];
                    row.iter_mut().zip(src).for_each(|(o, s)| *o += wt * s);
                }
            }
        });
        let mut out = vec![0.0; d0 * d1 * d2];
        out.par_chunks_mut(d1 * d2).enumerate().for_each(|(i, block)| {
            let b = axes[0].base[i];
            let w = &axes[0].weights[i];
            for (t, &wt) in w.iter().enumerate() {
                let src = &t2[(b + t) * d1 * d2..(b + t + 1) * d1 * d2];
                block.iter_mut().zip(src).for_each(|(o, s)| *o += wt * s);
            }
        });
        out
    }
}

/// Σ over voxels of `values · W0(i, a) · W1(j, b) · W2(k, c)` for every control point (a, b, c):
/// the transpose of evaluation, contracted one axis at a time in a fixed order.
fn adjoint(
    values: &[f64],
    dims: [usize; 3],
    bases: [&[usize]; 3],
    weights: &[Vec<[f64; 4]>; 3],
    size: [usize; 3],
) -> Vec<f64> {
    let [d0, d1, d2] = dims;
    let [l0, l1, l2] = size;
    // Contract k → c: rows (i, j) independent.
    let mut u1 = vec![0.0; d0 * d1 * l2];
    u1.par_chunks_mut(l2).enumerate().for_each(|(ij, row)| {
        let src = &values[ij * d2..(ij + 1) * d2];
        for (k, &v) in src.iter().enumerate() {
            if v != 0.0 {
                let b = bases[2][k];
                for (t, w) in weights[2][k].iter().enumerate() {
                    row[b + t] += v * w;
                }
            }
        }
    });
    // Contract j → b: blocks i independent.
    let mut u2 = vec![0.0; d0 * l1 * l2];
    u2.par_chunks_mut(l1 * l2).enumerate().for_each(|(i, block)| {
        for j in 0..d1 {
            let src = &u1[(i * d1 + j) * l2..(i * d1 + j + 1) * l2];
            let b = bases[1][j];
            for (t, w) in weights[1][j].iter().enumerate() {
                let row = &mut block[(b + t) * l2..(b + t + 1) * l2];
                row.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    });
    // Contract i → a: sequential in i, so the summation order is fixed.
    let mut out = vec![0.0; l0 * l1 * l2];
    for i in 0..d0 {
        let src = &u2[i * l1 * l2..(i + 1) * l1 * l2];
        let b = bases[0][i];
        for (t, w) in weights[0][i].iter().enumerate() {
            let block = &mut out[(b + t) * l1 * l2..(b + t + 1) * l1 * l2];
            block.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes(dims: [usize; 3], spans: [usize; 3]) -> [AxisSampling; 3] {
        std::array::from_fn(|a| AxisSampling::for_axis(dims[a], 1.0, 0.0, dims[a], spans[a]))
    }

    /// For every sample (in storage order), the control points it depends on: (index in the
    /// lattice, product of the three axis weights), written out in full.
    #[allow(clippy::needless_range_loop)] // index loops mirror the formulas being checked
    fn supports(dims: [usize; 3], sampling: &[AxisSampling; 3], size: [usize; 3]) -> Vec<Vec<(usize, f64)>> {
        let mut out = Vec::new();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let (wi, wj, wk) =
                        (sampling[0].weights[i], sampling[1].weights[j], sampling[2].weights[k]);
                    let mut support = Vec::with_capacity(64);
                    for a in 0..4 {
                        for b in 0..4 {
                            for c in 0..4 {
                                let index = ((sampling[0].base[i] + a) * size[1] + sampling[1].base[j] + b)
                                    * size[2]
                                    + sampling[2].base[k]
                                    + c;
                                support.push((index, wi[a] * wj[b] * wk[c]));
                            }
                        }
                    }
                    out.push(support);
                }
            }
        }
        out
    }

    #[test]
    fn separable_fit_and_evaluation_match_brute_force() {
        let dims = [5, 6, 7];
        let spans = [2, 1, 3];
        let sampling = axes(dims, spans);
        let n = dims[0] * dims[1] * dims[2];
        let values: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64 - 4.0).collect();
        let weight: Vec<f64> = (0..n).map(|i| if i % 5 == 0 { 0.0 } else { 1.0 }).collect();
        let lattice = ControlLattice::fit(spans, &sampling, &values, &weight);
        let supports = supports(dims, &sampling, lattice.size());
        let mut numerator = vec![0.0; lattice.values().len()];
        let mut denominator = vec![0.0; lattice.values().len()];
        for (p, support) in supports.iter().enumerate() {
            let s2: f64 = support.iter().map(|(_, w)| w * w).sum();
            for &(index, w) in support {
                numerator[index] += weight[p] * w * w * (w * values[p] / s2);
                denominator[index] += weight[p] * w * w;
            }
        }
        for (index, v) in lattice.values().iter().enumerate() {
            let expected =
                if denominator[index] > 1e-12 { numerator[index] / denominator[index] } else { 0.0 };
            assert!((v - expected).abs() < 1e-9, "control point {index}: {v} vs {expected}");
        }
        let out = lattice.evaluate(&sampling);
        for (p, support) in supports.iter().enumerate() {
            let v: f64 = support.iter().map(|&(index, w)| w * lattice.values()[index]).sum();
            assert!((out[p] - v).abs() < 1e-9);
        }
    }

    #[test]
    fn basis_is_partition_of_unity() {
        for t in [0.0, 0.25, 0.5, 0.99] {
            assert!((basis(t).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn fit_reproduces_smooth_function_and_refinement_is_exact() {
        let dims = [20, 18, 16];
        let spans = [4, 4, 4];
        let f = |i: usize, j: usize, k: usize| {
            let (x, y, z) = (i as f64 / 19.0, j as f64 / 17.0, k as f64 / 15.0);
            0.3 * x - 0.2 * y * y + 0.1 * (3.0 * z).sin()
        };
        let values: Vec<f64> = (0..dims[0])
            .flat_map(|i| (0..dims[1]).flat_map(move |j| (0..dims[2]).map(move |k| f(i, j, k))))
            .collect();
        let weight = vec![1.0; values.len()];
        let sampling = axes(dims, spans);
        // Multilevel approximation: fit the residual repeatedly, as N4 does.
        let mut lattice = ControlLattice::zeros(spans);
        for _ in 0..30 {
            let fitted = lattice.evaluate(&sampling);
            let residual: Vec<f64> = values.iter().zip(&fitted).map(|(v, f)| v - f).collect();
            lattice.add(&ControlLattice::fit(spans, &sampling, &residual, &weight));
        }
        let fitted = lattice.evaluate(&sampling);
        let max_error = values.iter().zip(&fitted).map(|(v, f)| (v - f).abs()).fold(0.0, f64::max);
        assert!(max_error < 0.03, "max error {max_error}");
        let refined = lattice.refine();
        assert_eq!(refined.spans(), [8, 8, 8]);
        let again = refined.evaluate(&axes(dims, refined.spans()));
        let diff = fitted.iter().zip(&again).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-10, "refinement changed the function by {diff}");
    }

    #[test]
    fn constant_is_approached_by_repeated_fits() {
        let dims = [6, 7, 8];
        let spans = [1, 2, 1];
        let values = vec![2.5; 6 * 7 * 8];
        let weight = vec![1.0; values.len()];
        let sampling = axes(dims, spans);
        // One MBA pass is an approximation (control points at the domain's corners are
        // under-estimated); fitting the residual again converges to the data.
        let worst = |lattice: &ControlLattice| {
            lattice.evaluate(&sampling).iter().map(|v| (v - 2.5).abs()).fold(0.0, f64::max)
        };
        let mut lattice = ControlLattice::zeros(spans);
        let mut first = 0.0;
        for iteration in 0..40 {
            let fitted = lattice.evaluate(&sampling);
            let residual: Vec<f64> = values.iter().zip(&fitted).map(|(v, f)| v - f).collect();
            lattice.add(&ControlLattice::fit(spans, &sampling, &residual, &weight));
            if iteration == 0 {
                first = worst(&lattice);
            }
        }
        let last = worst(&lattice);
        assert!(last < 0.2 * first, "max error {first} after one fit, {last} after 40");
    }
}
