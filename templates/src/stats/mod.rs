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
//!
//! One job per module: [`age_node`] (the age nodes and their kernels), [`moments`] (the
//! weighted moments of one group and their Welford, removal and merge updates),
//! [`accumulator`] (a channel's moments per node and sex); this module holds the errors and
//! the sex covariate.

use serde::{Deserialize, Serialize};

mod accumulator;
mod age_node;
mod moments;

pub use accumulator::NormativeAccumulator;
pub use age_node::AgeNode;
pub use moments::GroupMoments;

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

    pub(super) fn random_subjects(seed: u64, n: usize, voxels: usize) -> Vec<(f64, Sex, Vec<f32>)> {
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

    pub(super) fn nodes() -> Vec<AgeNode> {
        vec![
            AgeNode { age_years: 2.0, sigma_years: 2.0 },
            AgeNode { age_years: 8.0, sigma_years: 3.0 },
            AgeNode { age_years: 15.0, sigma_years: 3.0 },
        ]
    }

    /// Direct two-pass weighted moments, the reference.
    pub(super) fn direct(
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
}
