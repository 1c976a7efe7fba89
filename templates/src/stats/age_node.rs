//! Age nodes: the ages statistics are kept at and the width of each node's Gaussian kernel.

use super::MIN_KERNEL_WEIGHT;
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_kernel_widens_where_sparse() {
        let ages = [1.0, 1.2, 1.5, 2.0, 10.0];
        let nodes = AgeNode::adaptive(&[1.5, 6.0], &ages, 0.5, 8.0, 3.0);
        assert!(nodes[0].kernel_mass(&ages) >= 3.0);
        assert!((nodes[0].sigma_years - 0.5).abs() < 1e-12, "dense node keeps its width");
        assert!(nodes[1].sigma_years > 2.0, "sparse node widened: {}", nodes[1].sigma_years);
        assert!(nodes[1].kernel_mass(&ages) >= 3.0);
    }
}
