//! Mergeable voxelwise normative statistics.
//!
//! Every normal subject, registered to its age-bracket template, contributes one value per
//! voxel (normalized intensity or log-Jacobian). Statistics are kept at fixed *age nodes*:
//! a subject of age `a` enters node `n` with the Gaussian age-kernel weight
//! `w = exp(-(a - age_n)² / (2 σ_n²))`. Per node and per sex the accumulator keeps the
//! weighted sufficient statistics in their numerically stable form — the weight sums `Σw` and
//! `Σw²` (one per node and sex: every subject covers every voxel) and, per voxel, the weighted
//! mean `x̄ = Σw·x / Σw` and the weighted sum of squared deviations `M2 = Σw·(x − x̄)²` — from
//! which `Σw·x = Σw·x̄` and `Σw·x² = M2 + Σw·x̄²` follow exactly. Adding a subject is a
//! weighted Welford update, merging two accumulators is Chan's pairwise update, and removing a
//! subject (for leave-one-out calibration) is the inverse Welford update, so a database can
//! grow subject by subject and two centres' databases merge without sharing images.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Voxels per parallel work unit: per-voxel updates are independent, so the split does not
/// change results (bit-identical at any thread count).
const CHUNK: usize = 16 * 1024;

/// Kernel weights below this are treated as zero so far-away subjects do not touch a node
/// (the same rule applies when adding, removing and estimating, keeping them consistent).
pub const MIN_KERNEL_WEIGHT: f64 = 1e-3;

/// Why statistics cannot be updated or combined.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StatsError {
    /// A value vector has the wrong length.
    #[error("expected {expected} voxel values, got {found}")]
    VoxelCount {
        /// Voxels in the accumulator.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A weight or age is not finite or a weight is negative.
    #[error("{field} must be finite{rule}, got {value}")]
    InvalidNumber {
        /// Which number.
        field: &'static str,
        /// Extra rule (e.g. ", non-negative").
        rule: &'static str,
        /// The value.
        value: f64,
    },
    /// A voxel value is not finite.
    #[error("voxel {index} is not finite ({value})")]
    NonFiniteValue {
        /// Flat index in the value vector.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Two accumulators with different node definitions or voxel counts.
    #[error("accumulators are not compatible: {0}")]
    Incompatible(String),
    /// Removing more weight than was added.
    #[error("cannot remove a subject that was not added (weight sum would become {0})")]
    RemoveTooMuch(f64),
    /// No age nodes were given.
    #[error("at least one age node is required")]
    NoNodes,
}

/// Biological sex, the second covariate of the normative model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
}

impl Sex {
    /// Both values, in storage order.
    pub const ALL: [Sex; 2] = [Sex::Female, Sex::Male];

    /// Index in storage order (female 0, male 1).
    pub fn index(self) -> usize {
        match self {
            Sex::Female => 0,
            Sex::Male => 1,
        }
    }

    /// One-letter code used in files (`F`, `M`).
    pub fn code(self) -> &'static str {
        match self {
            Sex::Female => "F",
            Sex::Male => "M",
        }
    }

    /// Parses `F`/`M`/`female`/`male` (any case).
    pub fn parse(text: &str) -> Option<Sex> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f" | "female" => Some(Sex::Female),
            "m" | "male" => Some(Sex::Male),
            _ => None,
        }
    }
}

impl std::fmt::Display for Sex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// An age node: the age at which statistics are kept and the width of its Gaussian kernel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AgeNode {
    /// Node age in years.
    pub age_years: f64,
    /// Standard deviation of the Gaussian age kernel in years.
    pub sigma_years: f64,
}

impl AgeNode {
    /// Kernel weight of a subject of `age_years` at this node; exactly 0 below
    /// [`MIN_KERNEL_WEIGHT`].
    pub fn weight(&self, age_years: f64) -> f64 {
        let d = (age_years - self.age_years) / self.sigma_years;
        let w = (-0.5 * d * d).exp();
        if w < MIN_KERNEL_WEIGHT { 0.0 } else { w }
    }

    /// Nodes with adaptive kernel widths (Serag et al. 2012): start from `base_sigma_years`
    /// and widen each node's kernel (×1.25 steps, at most `max_sigma_years`) until the kernel
    /// mass `Σw` of `subject_ages` at the node — subjects' worth of weight, never more than
    /// Kish's effective sample — reaches `min_subjects`.
    pub fn adaptive(
        node_ages: &[f64],
        subject_ages: &[f64],
        base_sigma_years: f64,
        max_sigma_years: f64,
        min_subjects: f64,
    ) -> Vec<AgeNode> {
        node_ages
            .iter()
            .map(|&age_years| {
                let mut node = AgeNode { age_years, sigma_years: base_sigma_years };
                while node.sigma_years < max_sigma_years && node.kernel_mass(subject_ages) < min_subjects {
                    node.sigma_years = (node.sigma_years * 1.25).min(max_sigma_years);
                }
                node
            })
            .collect()
    }

    /// Kernel mass `Σw` of subjects of the given ages at this node.
    pub fn kernel_mass(&self, subject_ages: &[f64]) -> f64 {
        subject_ages.iter().map(|&a| self.weight(a)).sum()
    }

    /// Kish effective sample size `(Σw)² / Σw²` of subjects of the given ages at this node.
    pub fn effective_n(&self, subject_ages: &[f64]) -> f64 {
        let (s, s2) = subject_ages.iter().fold((0.0, 0.0), |(s, s2), &a| {
            let w = self.weight(a);
            (s + w, s2 + w * w)
        });
        if s2 > 0.0 { s * s / s2 } else { 0.0 }
    }
}

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

/// Statistics of one channel (e.g. intensity) of one age bracket: moments per age node and sex.
#[derive(Debug, Clone, PartialEq)]
pub struct NormativeAccumulator {
    nodes: Vec<AgeNode>,
    voxel_count: usize,
    /// `groups[node][sex.index()]`.
    groups: Vec<[GroupMoments; 2]>,
}

impl NormativeAccumulator {
    /// An empty accumulator over `voxel_count` voxels at the given age nodes.
    pub fn new(nodes: Vec<AgeNode>, voxel_count: usize) -> Result<Self, StatsError> {
        if nodes.is_empty() {
            return Err(StatsError::NoNodes);
        }
        for node in &nodes {
            if !node.age_years.is_finite() {
                return Err(StatsError::InvalidNumber { field: "node age", rule: "", value: node.age_years });
            }
            if !(node.sigma_years.is_finite() && node.sigma_years > 0.0) {
                return Err(StatsError::InvalidNumber {
                    field: "node kernel width",
                    rule: ", positive",
                    value: node.sigma_years,
                });
            }
        }
        let groups =
            nodes.iter().map(|_| [GroupMoments::new(voxel_count), GroupMoments::new(voxel_count)]).collect();
        Ok(Self { nodes, voxel_count, groups })
    }

    /// Rebuilds an accumulator from stored moments (`groups[node][sex.index()]`).
    pub fn from_parts(nodes: Vec<AgeNode>, groups: Vec<[GroupMoments; 2]>) -> Result<Self, StatsError> {
        let voxel_count = groups.first().map(|g| g[0].voxel_count()).unwrap_or(0);
        let mut accumulator = Self::new(nodes, voxel_count)?;
        if groups.len() != accumulator.nodes.len() {
            return Err(StatsError::Incompatible(format!(
                "{} nodes but {} groups of moments",
                accumulator.nodes.len(),
                groups.len()
            )));
        }
        for pair in &groups {
            for g in pair {
                if g.voxel_count() != voxel_count || g.m2.len() != voxel_count {
                    return Err(StatsError::Incompatible("moments of different voxel counts".into()));
                }
            }
        }
        accumulator.groups = groups;
        Ok(accumulator)
    }

    /// The age nodes.
    pub fn nodes(&self) -> &[AgeNode] {
        &self.nodes
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.voxel_count
    }

    /// Moments of one node and sex.
    pub fn group(&self, node: usize, sex: Sex) -> &GroupMoments {
        &self.groups[node][sex.index()]
    }

    /// All moments, `[node][sex.index()]`.
    pub fn groups(&self) -> &[[GroupMoments; 2]] {
        &self.groups
    }

    /// Adds one subject's values at every node where its kernel weight is non-zero.
    pub fn add_subject(&mut self, age_years: f64, sex: Sex, values: &[f32]) -> Result<(), StatsError> {
        self.update_subject(age_years, sex, values, false)
    }

    /// Removes one subject added before with the same age, sex and values.
    pub fn remove_subject(&mut self, age_years: f64, sex: Sex, values: &[f32]) -> Result<(), StatsError> {
        self.update_subject(age_years, sex, values, true)
    }

    fn update_subject(
        &mut self,
        age_years: f64,
        sex: Sex,
        values: &[f32],
        remove: bool,
    ) -> Result<(), StatsError> {
        if !age_years.is_finite() {
            return Err(StatsError::InvalidNumber { field: "subject age", rule: "", value: age_years });
        }
        if values.len() != self.voxel_count {
            return Err(StatsError::VoxelCount { expected: self.voxel_count, found: values.len() });
        }
        for (node, pair) in self.nodes.iter().zip(self.groups.iter_mut()) {
            let weight = node.weight(age_years);
            if weight > 0.0 {
                let group = &mut pair[sex.index()];
                if remove {
                    group.remove(values, age_years, weight)?
                } else {
                    group.add(values, age_years, weight)?
                }
            }
        }
        Ok(())
    }

    /// Merges another accumulator with the same nodes and voxel count.
    pub fn merge(&mut self, other: &NormativeAccumulator) -> Result<(), StatsError> {
        if other.nodes != self.nodes {
            return Err(StatsError::Incompatible(format!(
                "age nodes {:?} against {:?}",
                self.nodes, other.nodes
            )));
        }
        if other.voxel_count != self.voxel_count {
            return Err(StatsError::Incompatible(format!(
                "{} voxels against {}",
                self.voxel_count, other.voxel_count
            )));
        }
        for (mine, theirs) in self.groups.iter_mut().zip(&other.groups) {
            mine[0].merge(&theirs[0])?;
            mine[1].merge(&theirs[1])?;
        }
        Ok(())
    }

    /// Both sexes of one node combined (Chan merge).
    pub fn node_combined(&self, node: usize) -> GroupMoments {
        let mut combined = self.groups[node][0].clone();
        combined.merge(&self.groups[node][1]).expect("same voxel count");
        combined
    }

    /// Interpolation of a target age between nodes: pairs of (node index, weight) summing to
    /// one. Nodes are taken in age order; ages outside the node range use the nearest node.
    pub fn node_weights(&self, age_years: f64) -> Vec<(usize, f64)> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by(|&a, &b| self.nodes[a].age_years.total_cmp(&self.nodes[b].age_years));
        let first = order[0];
        let last = *order.last().expect("at least one node");
        if age_years <= self.nodes[first].age_years {
            return vec![(first, 1.0)];
        }
        if age_years >= self.nodes[last].age_years {
            return vec![(last, 1.0)];
        }
        for pair in order.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (age_a, age_b) = (self.nodes[a].age_years, self.nodes[b].age_years);
            if age_years >= age_a && age_years <= age_b {
                let span = age_b - age_a;
                let t = if span > 0.0 { (age_years - age_a) / span } else { 0.0 };
                return vec![(a, 1.0 - t), (b, t)];
            }
        }
        vec![(last, 1.0)]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator of uniform numbers in [0, 1) (SplitMix64).
    pub(crate) struct Uniform(pub u64);
    impl Uniform {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
        }
    }

    fn random_subjects(seed: u64, n: usize, voxels: usize) -> Vec<(f64, Sex, Vec<f32>)> {
        let mut rng = Uniform(seed);
        (0..n)
            .map(|_| {
                let age = rng.next() * 18.0;
                let sex = if rng.next() < 0.5 { Sex::Female } else { Sex::Male };
                let values = (0..voxels)
                    .map(|v| 1000.0 + v as f32 + (rng.next() * 10.0 - 5.0) as f32 + age as f32)
                    .collect();
                (age, sex, values)
            })
            .collect()
    }

    fn nodes() -> Vec<AgeNode> {
        vec![
            AgeNode { age_years: 2.0, sigma_years: 2.0 },
            AgeNode { age_years: 8.0, sigma_years: 3.0 },
            AgeNode { age_years: 15.0, sigma_years: 3.0 },
        ]
    }

    /// Direct two-pass weighted moments, the reference.
    fn direct(
        subjects: &[(f64, Sex, Vec<f32>)],
        node: AgeNode,
        sex: Sex,
        voxel: usize,
    ) -> (f64, f64, f64, f64) {
        let mut sw = 0.0;
        let mut swx = 0.0;
        let mut swa = 0.0;
        for (age, s, values) in subjects {
            if *s == sex {
                let w = node.weight(*age);
                sw += w;
                swx += w * values[voxel] as f64;
                swa += w * age;
            }
        }
        let mean = swx / sw;
        let age_mean = swa / sw;
        let of_sex = || subjects.iter().filter(|(_, s, _)| *s == sex);
        let m2: f64 =
            of_sex().map(|(age, _, values)| node.weight(*age) * (values[voxel] as f64 - mean).powi(2)).sum();
        let cross: f64 = of_sex()
            .map(|(age, _, values)| node.weight(*age) * (age - age_mean) * (values[voxel] as f64 - mean))
            .sum();
        (sw, mean, m2, cross)
    }

    #[test]
    fn welford_matches_two_pass_moments() {
        let subjects = random_subjects(1, 60, 50);
        let mut acc = NormativeAccumulator::new(nodes(), 50).unwrap();
        for (age, sex, values) in &subjects {
            acc.add_subject(*age, *sex, values).unwrap();
        }
        for (n, node) in nodes().into_iter().enumerate() {
            for sex in Sex::ALL {
                for voxel in [0, 17, 49] {
                    let (sw, mean, m2, cross) = direct(&subjects, node, sex, voxel);
                    let g = acc.group(n, sex);
                    assert!((g.weight_sum - sw).abs() < 1e-9 * sw);
                    assert!(
                        (g.mean[voxel] - mean).abs() < 1e-9 * mean.abs(),
                        "mean {} vs {}",
                        g.mean[voxel],
                        mean
                    );
                    assert!((g.m2[voxel] - m2).abs() < 1e-7 * m2.max(1.0), "m2 {} vs {}", g.m2[voxel], m2);
                    assert!((g.age_cross[voxel] - cross).abs() < 1e-7 * cross.abs().max(1.0), "cross");
                    let sum = g.weighted_sum(voxel);
                    assert!((sum - sw * mean).abs() < 1e-9 * sum.abs());
                }
            }
        }
    }

    #[test]
    fn merge_equals_union() {
        let subjects = random_subjects(2, 40, 30);
        let (a, b) = subjects.split_at(17);
        let build = |set: &[(f64, Sex, Vec<f32>)]| {
            let mut acc = NormativeAccumulator::new(nodes(), 30).unwrap();
            for (age, sex, values) in set {
                acc.add_subject(*age, *sex, values).unwrap();
            }
            acc
        };
        let union = build(&subjects);
        let mut merged = build(a);
        merged.merge(&build(b)).unwrap();
        for n in 0..3 {
            for sex in Sex::ALL {
                let (u, m) = (union.group(n, sex), merged.group(n, sex));
                assert_eq!(u.count, m.count);
                assert!((u.weight_sum - m.weight_sum).abs() < 1e-12 * u.weight_sum.max(1.0));
                for v in 0..30 {
                    assert!((u.mean[v] - m.mean[v]).abs() < 1e-10 * u.mean[v].abs());
                    assert!((u.m2[v] - m.m2[v]).abs() < 1e-8 * u.m2[v].max(1.0));
                    assert!((u.age_cross[v] - m.age_cross[v]).abs() < 1e-8 * u.age_cross[v].abs().max(1.0));
                }
                assert!((u.age_m2 - m.age_m2).abs() < 1e-9 * u.age_m2.max(1.0));
            }
        }
        // Merging with an empty accumulator changes nothing, in either order.
        let empty = NormativeAccumulator::new(nodes(), 30).unwrap();
        let mut copy = union.clone();
        copy.merge(&empty).unwrap();
        assert_eq!(copy, union);
        let mut from_empty = empty.clone();
        from_empty.merge(&union).unwrap();
        assert_eq!(from_empty, union);
    }

    #[test]
    fn remove_undoes_add() {
        let subjects = random_subjects(3, 20, 10);
        let mut acc = NormativeAccumulator::new(nodes(), 10).unwrap();
        for (age, sex, values) in &subjects[..19] {
            acc.add_subject(*age, *sex, values).unwrap();
        }
        let reference = acc.clone();
        let (age, sex, values) = &subjects[19];
        acc.add_subject(*age, *sex, values).unwrap();
        acc.remove_subject(*age, *sex, values).unwrap();
        for n in 0..3 {
            for s in Sex::ALL {
                let (a, r) = (acc.group(n, s), reference.group(n, s));
                assert_eq!(a.count, r.count);
                for v in 0..10 {
                    assert!((a.mean[v] - r.mean[v]).abs() < 1e-9 * r.mean[v].abs().max(1.0));
                    assert!((a.m2[v] - r.m2[v]).abs() < 1e-6 * r.m2[v].max(1.0));
                    assert!((a.age_cross[v] - r.age_cross[v]).abs() < 1e-6 * r.age_cross[v].abs().max(1.0));
                }
                assert!((a.age_mean - r.age_mean).abs() < 1e-9 && (a.age_m2 - r.age_m2).abs() < 1e-6);
            }
        }
    }

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

    #[test]
    fn refuses_bad_input() {
        let mut acc = NormativeAccumulator::new(nodes(), 3).unwrap();
        assert!(matches!(acc.add_subject(5.0, Sex::Male, &[1.0, 2.0]), Err(StatsError::VoxelCount { .. })));
        assert!(matches!(
            acc.add_subject(5.0, Sex::Male, &[1.0, f32::NAN, 2.0]),
            Err(StatsError::NonFiniteValue { index: 1, .. })
        ));
        assert!(matches!(
            acc.add_subject(f64::NAN, Sex::Male, &[1.0; 3]),
            Err(StatsError::InvalidNumber { .. })
        ));
        assert!(matches!(acc.remove_subject(5.0, Sex::Male, &[1.0; 3]), Err(StatsError::RemoveTooMuch(_))));
        let other = NormativeAccumulator::new(vec![AgeNode { age_years: 1.0, sigma_years: 1.0 }], 3).unwrap();
        assert!(matches!(acc.merge(&other), Err(StatsError::Incompatible(_))));
        assert_eq!(NormativeAccumulator::new(vec![], 3), Err(StatsError::NoNodes));
    }

    #[test]
    fn node_weights_interpolate_and_clamp() {
        let acc = NormativeAccumulator::new(nodes(), 1).unwrap();
        assert_eq!(acc.node_weights(0.5), vec![(0, 1.0)]);
        assert_eq!(acc.node_weights(17.0), vec![(2, 1.0)]);
        let w = acc.node_weights(5.0);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].0, w[1].0), (0, 1));
        assert!((w[0].1 - 0.5).abs() < 1e-12 && (w[1].1 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn adaptive_kernel_widens_where_sparse() {
        let ages = [1.0, 1.2, 1.5, 2.0, 10.0];
        let nodes = AgeNode::adaptive(&[1.5, 6.0], &ages, 0.5, 8.0, 3.0);
        assert!(nodes[0].kernel_mass(&ages) >= 3.0);
        assert!((nodes[0].sigma_years - 0.5).abs() < 1e-12, "dense node keeps its width");
        assert!(nodes[1].sigma_years > 2.0, "sparse node widened: {}", nodes[1].sigma_years);
        assert!(nodes[1].kernel_mass(&ages) >= 3.0);
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let subjects = random_subjects(4, 10, 40_000);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let mut acc = NormativeAccumulator::new(nodes(), 40_000).unwrap();
                for (age, sex, values) in &subjects {
                    acc.add_subject(*age, *sex, values).unwrap();
                }
                acc
            })
        };
        assert_eq!(run(1), run(2));
    }
}
