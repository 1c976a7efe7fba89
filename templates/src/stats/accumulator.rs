//! The statistics of one channel of one age bracket: group moments per age node and sex.

use super::{AgeNode, GroupMoments, Sex, StatsError};

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
mod tests {
    use super::*;
    use crate::stats::tests::{direct, nodes, random_subjects};

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
