//! The weighted moments of one group (an age node and a sex): weighted Welford updates to add
//! and remove a subject, and Chan's pairwise update to merge two groups.

use super::StatsError;
use rayon::prelude::*;

/// Voxels per parallel work unit: per-voxel updates are independent, so the split does not
/// change results (bit-identical at any thread count).
const CHUNK: usize = 16 * 1024;

/// Weighted moments of one group (a node and a sex): subject ages and, at every voxel, values
/// and their co-moment with age, so a local linear age trend can be removed (without it the
/// age trend inside the kernel would inflate the variance).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMoments {
    /// Number of subjects with a non-zero weight.
    pub count: u64,
    /// Σw.
    pub weight_sum: f64,
    /// Σw² (for the effective sample size).
    pub weight_sq_sum: f64,
    /// Weighted mean age (years).
    pub age_mean: f64,
    /// Σw·(a − ā)².
    pub age_m2: f64,
    /// Weighted mean per voxel.
    pub mean: Vec<f64>,
    /// Σw·(x − x̄)² per voxel.
    pub m2: Vec<f64>,
    /// Σw·(a − ā)·(x − x̄) per voxel.
    pub age_cross: Vec<f64>,
}

/// Per-voxel running moments: mean, M2, age co-moment.
type VoxelMoments<'a> = (&'a mut f64, &'a mut f64, &'a mut f64);

impl GroupMoments {
    /// Empty moments over `voxel_count` voxels.
    pub fn new(voxel_count: usize) -> Self {
        Self {
            count: 0,
            weight_sum: 0.0,
            weight_sq_sum: 0.0,
            age_mean: 0.0,
            age_m2: 0.0,
            mean: vec![0.0; voxel_count],
            m2: vec![0.0; voxel_count],
            age_cross: vec![0.0; voxel_count],
        }
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.mean.len()
    }

    /// Kish effective sample size `(Σw)² / Σw²` (0 when empty).
    pub fn effective_n(&self) -> f64 {
        if self.weight_sq_sum > 0.0 { self.weight_sum * self.weight_sum / self.weight_sq_sum } else { 0.0 }
    }

    /// Adds one subject of age `age_years` with weight `weight` (weighted Welford update).
    pub fn add(&mut self, values: &[f32], age_years: f64, weight: f64) -> Result<(), StatsError> {
        self.check_values(values)?;
        check_weight(weight)?;
        if weight == 0.0 {
            return Ok(());
        }
        let total = self.weight_sum + weight;
        let ratio = weight / total;
        let age_delta = age_years - self.age_mean;
        let new_age_mean = self.age_mean + ratio * age_delta;
        par_update(self, |i, (mean, m2, cross)| {
            let x = values[i] as f64;
            let delta = x - *mean;
            *mean += ratio * delta;
            *m2 += weight * delta * (x - *mean);
            *cross += weight * age_delta * (x - *mean);
        });
        self.age_m2 += weight * age_delta * (age_years - new_age_mean);
        self.age_mean = new_age_mean;
        self.weight_sum = total;
        self.weight_sq_sum += weight * weight;
        self.count += 1;
        Ok(())
    }

    /// Removes one subject previously added with the same values, age and weight (inverse
    /// Welford update), as leave-one-out needs.
    pub fn remove(&mut self, values: &[f32], age_years: f64, weight: f64) -> Result<(), StatsError> {
        self.check_values(values)?;
        check_weight(weight)?;
        if weight == 0.0 {
            return Ok(());
        }
        let total = self.weight_sum - weight;
        // Relative tolerance: sums of kernel weights are not exact in floating point.
        if total < -1e-9 * self.weight_sum.max(1.0) || self.count == 0 {
            return Err(StatsError::RemoveTooMuch(total));
        }
        if self.count == 1 || total <= 1e-12 * self.weight_sum.max(1.0) {
            *self = Self::new(self.voxel_count());
            return Ok(());
        }
        let old_age_mean = (self.age_mean * (total + weight) - weight * age_years) / total;
        let age_delta = age_years - old_age_mean;
        par_update(self, |i, (mean, m2, cross)| {
            let x = values[i] as f64;
            let old_mean = (*mean * (total + weight) - weight * x) / total;
            *m2 = (*m2 - weight * (x - old_mean) * (x - *mean)).max(0.0);
            *cross -= weight * age_delta * (x - *mean);
            *mean = old_mean;
        });
        self.age_m2 = (self.age_m2 - weight * age_delta * (age_years - self.age_mean)).max(0.0);
        self.age_mean = old_age_mean;
        self.weight_sum = total;
        self.weight_sq_sum = (self.weight_sq_sum - weight * weight).max(0.0);
        self.count -= 1;
        Ok(())
    }

    /// Merges `other` into `self` (Chan et al.'s pairwise update): the result equals, up to
    /// floating-point rounding, the moments of the union of both subject sets.
    pub fn merge(&mut self, other: &GroupMoments) -> Result<(), StatsError> {
        if other.voxel_count() != self.voxel_count() {
            return Err(StatsError::Incompatible(format!(
                "{} voxels against {}",
                self.voxel_count(),
                other.voxel_count()
            )));
        }
        if other.weight_sum == 0.0 {
            return Ok(());
        }
        if self.weight_sum == 0.0 {
            *self = other.clone();
            return Ok(());
        }
        let (wa, wb) = (self.weight_sum, other.weight_sum);
        let total = wa + wb;
        let product = wa * wb / total;
        let age_delta = other.age_mean - self.age_mean;
        let (other_mean, other_m2, other_cross) = (&other.mean, &other.m2, &other.age_cross);
        par_update(self, |i, (mean, m2, cross)| {
            let delta = other_mean[i] - *mean;
            *mean += delta * wb / total;
            *m2 += other_m2[i] + delta * delta * product;
            *cross += other_cross[i] + age_delta * delta * product;
        });
        self.age_m2 += other.age_m2 + age_delta * age_delta * product;
        self.age_mean += age_delta * wb / total;
        self.weight_sum = total;
        self.weight_sq_sum += other.weight_sq_sum;
        self.count += other.count;
        Ok(())
    }

    /// Weighted variance `M2 / Σw` at voxel `i` around the constant mean (maximum-likelihood
    /// form; the normative model applies its own small-sample correction).
    pub fn variance(&self, i: usize) -> f64 {
        if self.weight_sum > 0.0 { self.m2[i] / self.weight_sum } else { 0.0 }
    }

    /// Weighted age variance `Σw(a − ā)² / Σw`.
    pub fn age_variance(&self) -> f64 {
        if self.weight_sum > 0.0 { self.age_m2 / self.weight_sum } else { 0.0 }
    }

    /// Local linear fit at voxel `i`: `(value at age_years, residual M2)`. The slope is used
    /// only when the ages spread by at least `min_age_sd_years` (otherwise the constant fit).
    pub fn linear_fit(&self, i: usize, age_years: f64, min_age_sd_years: f64) -> (f64, f64) {
        if self.age_variance() >= min_age_sd_years * min_age_sd_years && self.age_m2 > 0.0 {
            let slope = self.age_cross[i] / self.age_m2;
            let residual = (self.m2[i] - slope * self.age_cross[i]).max(0.0);
            (self.mean[i] + slope * (age_years - self.age_mean), residual)
        } else {
            (self.mean[i], self.m2[i])
        }
    }

    /// `Σw·x` at voxel `i`.
    pub fn weighted_sum(&self, i: usize) -> f64 {
        self.weight_sum * self.mean[i]
    }

    /// `Σw·x²` at voxel `i`.
    pub fn weighted_sum_of_squares(&self, i: usize) -> f64 {
        self.m2[i] + self.weight_sum * self.mean[i] * self.mean[i]
    }

    fn check_values(&self, values: &[f32]) -> Result<(), StatsError> {
        if values.len() != self.voxel_count() {
            return Err(StatsError::VoxelCount { expected: self.voxel_count(), found: values.len() });
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(StatsError::NonFiniteValue { index, value });
        }
        Ok(())
    }
}

fn check_weight(weight: f64) -> Result<(), StatsError> {
    if !weight.is_finite() || weight < 0.0 {
        return Err(StatsError::InvalidNumber {
            field: "subject weight",
            rule: ", non-negative",
            value: weight,
        });
    }
    Ok(())
}

/// Applies `f(voxel, (mean, m2, age_cross))` to every voxel in parallel chunks.
fn par_update(group: &mut GroupMoments, f: impl Fn(usize, VoxelMoments<'_>) + Sync) {
    group
        .mean
        .par_chunks_mut(CHUNK)
        .zip(group.m2.par_chunks_mut(CHUNK))
        .zip(group.age_cross.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((mean, m2), cross))| {
            let base = c * CHUNK;
            for (offset, ((mean, m2), cross)) in
                mean.iter_mut().zip(m2.iter_mut()).zip(cross.iter_mut()).enumerate()
            {
                f(base + offset, (mean, m2, cross));
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_with_large_offsets() {
        // Values near 1e6 with unit spread: the naive Σx² − (Σx)²/n form loses all digits in f32
        // and most in f64; Welford keeps them.
        let mut g = GroupMoments::new(1);
        for i in 0..1000 {
            g.add(&[1.0e6 + (i % 2) as f32], 3.0, 1.0).unwrap();
        }
        assert!((g.variance(0) - 0.25).abs() < 1e-9, "variance {}", g.variance(0));
    }
}
