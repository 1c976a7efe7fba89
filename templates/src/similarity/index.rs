//! An index of signatures and the similarity it ranks them by.
//!
//! **The similarity is a cosine over standardized findings**, with three blocks of evidence:
//! the region table, the clusters and the regional centiles.
//!
//! - Region features and centile z are divided by their root mean square over the indexed
//!   signatures (around zero, not the mean: zero already means "as the normals"), never by
//!   less than a floor stating what is noise ([`NOISE_FLOORS`]), so that a region where no
//!   indexed case deviates does not turn small noise into a feature. A region missing from a
//!   report (the table lists the most deviant regions only) counts as zero.
//! - Clusters are compared as sets of weighted Gaussian blobs at their peaks, one set per
//!   channel and direction: the inner product of two sets is `Σ w_a w_b exp(−d²/4σ²)` over
//!   pairs of the same kind, the inner product of the two blob densities (a kernel mean
//!   embedding). It depends only on distances between peaks, never on where the template's
//!   origin is, and tolerates the few millimetres two brackets' templates disagree by.
//! - Each block is weighted so that its squared norm averages one over the index: each kind of
//!   evidence counts as much as the others whatever its number of features.
//!
//! The cosine of the concatenation then says whether two cases deviate in the same places, in
//! the same directions and in similar proportions, whatever their overall severity — a mild
//! and a severe case of one disease pattern are alike, which Euclidean distance would deny.
//! It is the measure content-based retrieval of images commonly defends for standardized
//! feature vectors; scores lie in [−1, 1].

use super::signature::{ClusterPoint, REGION_FEATURES, Signature};

/// The spread (per region feature, then for centile z) below which variation over the index
/// is treated as noise: a regional mean z of 0.5, 2 % of a region's voxels beyond threshold,
/// a centile z of 1.
pub const NOISE_FLOORS: ([f64; 4], f64) = ([0.5, 0.02, 0.5, 0.02], 1.0);

/// Width (σ, mm) of a cluster's blob: peaks 2σ apart still share `exp(−1)` of their product.
pub const CLUSTER_SIGMA_MM: f64 = 10.0;

/// One ranked signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<K> {
    /// The signature's key.
    pub key: K,
    /// Cosine similarity in [−1, 1].
    pub similarity: f64,
    /// Age at scan of the matched case (years).
    pub age_years: f64,
}

/// A signature laid out on the index's features, weighted and ready for inner products.
#[derive(Debug, Clone)]
struct Embedded {
    /// Region features then centile z, in vocabulary order, standardized and block-weighted.
    dense: Vec<f32>,
    /// Clusters with block-weighted weights.
    clusters: Vec<ClusterPoint>,
    /// Squared norm of everything, including features outside the vocabulary.
    norm2: f64,
}

/// Signatures with the standardization learnt from them (see the module documentation).
#[derive(Debug, Clone)]
pub struct SignatureIndex<K> {
    keys: Vec<K>,
    ages: Vec<f64>,
    regions: Vec<String>,
    measures: Vec<String>,
    /// Divisor of each dense feature (region features, then centile z).
    scales: Vec<f64>,
    /// Block weights (squared): regions, clusters, centiles.
    block_weights: [f64; 3],
    entries: Vec<Embedded>,
}

impl<K: Clone> SignatureIndex<K> {
    /// Indexes `entries`, learning each feature's spread and each block's weight from them.
    pub fn new(entries: Vec<(K, Signature)>) -> SignatureIndex<K> {
        let mut regions: Vec<String> = entries.iter().flat_map(|(_, s)| s.regions.keys().cloned()).collect();
        regions.sort();
        regions.dedup();
        let mut measures: Vec<String> =
            entries.iter().flat_map(|(_, s)| s.centiles.keys().cloned()).collect();
        measures.sort();
        measures.dedup();
        let n = entries.len().max(1) as f64;
        // Sums of squares over the entries, each entry visited once (a missing feature is zero).
        let offset = regions.len() * 4;
        let mut sums = vec![0.0f64; offset + measures.len()];
        for (_, signature) in &entries {
            for (name, values) in &signature.regions {
                let r = regions.binary_search(name).expect("every region is in the vocabulary");
                for (f, value) in values.iter().enumerate() {
                    sums[r * 4 + f] += value * value;
                }
            }
            for (name, z) in &signature.centiles {
                let m = measures.binary_search(name).expect("every measure is in the vocabulary");
                sums[offset + m] += z * z;
            }
        }
        let scales: Vec<f64> = sums
            .iter()
            .enumerate()
            .map(|(i, sum)| {
                let floor = if i < offset { NOISE_FLOORS.0[i % 4] } else { NOISE_FLOORS.1 };
                (sum / n).sqrt().max(floor)
            })
            .collect();
        let mut index = SignatureIndex {
            keys: entries.iter().map(|(k, _)| k.clone()).collect(),
            ages: entries.iter().map(|(_, s)| s.age_years).collect(),
            regions,
            measures,
            scales,
            block_weights: [1.0; 3],
            entries: Vec::new(),
        };
        // Block weights: the inverse of each block's mean squared norm over the index.
        let norms: Vec<[f64; 3]> = entries.iter().map(|(_, s)| index.block_norms(s)).collect();
        let mut block_norms = [0.0f64; 3];
        for entry_norms in &norms {
            for b in 0..3 {
                block_norms[b] += entry_norms[b] / n;
            }
        }
        index.block_weights = block_norms.map(|m| if m > 1e-12 { 1.0 / m } else { 0.0 });
        index.entries =
            entries.iter().zip(&norms).map(|((_, s), norms)| index.embed_with(s, *norms)).collect();
        index
    }

    /// Number of indexed signatures.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `k` signatures most similar to `signature` among those whose key `admit` accepts,
    /// most similar first (ties: index order).
    pub fn query(&self, signature: &Signature, k: usize, admit: impl Fn(&K) -> bool) -> Vec<Match<K>> {
        let query = self.embed(signature);
        let mut scored: Vec<(f64, usize)> = (0..self.entries.len())
            .filter(|&i| admit(&self.keys[i]))
            .map(|i| (self.cosine(&query, &self.entries[i]), i))
            .collect();
        let order = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if k < scored.len() {
            if k > 0 {
                scored.select_nth_unstable_by(k - 1, order);
            }
            scored.truncate(k);
        }
        scored.sort_unstable_by(order);
        scored
            .into_iter()
            .map(|(similarity, i)| Match { key: self.keys[i].clone(), similarity, age_years: self.ages[i] })
            .collect()
    }

    /// The keys in index order with each signature's age.
    pub fn ages(&self) -> impl Iterator<Item = (&K, f64)> {
        self.keys.iter().zip(self.ages.iter().copied())
    }

    fn cosine(&self, a: &Embedded, b: &Embedded) -> f64 {
        let denominator = (a.norm2 * b.norm2).sqrt();
        if denominator <= 0.0 {
            return 0.0;
        }
        let dense: f64 = a.dense.iter().zip(&b.dense).map(|(x, y)| (x * y) as f64).sum();
        (dense + cluster_product(&a.clusters, &b.clusters)) / denominator
    }

    /// The standardized (unweighted) squared norm of each block of `signature`.
    fn block_norms(&self, signature: &Signature) -> [f64; 3] {
        let mut norms = [0.0; 3];
        for (name, values) in &signature.regions {
            let at = self.regions.binary_search(name).ok();
            for (f, value) in values.iter().enumerate() {
                let scale = at.map_or(NOISE_FLOORS.0[f], |r| self.scales[r * 4 + f]);
                norms[0] += (value / scale).powi(2);
            }
        }
        norms[1] = cluster_product(&signature.clusters, &signature.clusters);
        let offset = self.regions.len() * 4;
        for (name, z) in &signature.centiles {
            let scale = self.measures.binary_search(name).map_or(NOISE_FLOORS.1, |m| self.scales[offset + m]);
            norms[2] += (z / scale).powi(2);
        }
        norms
    }

    fn embed(&self, signature: &Signature) -> Embedded {
        self.embed_with(signature, self.block_norms(signature))
    }

    /// [`Self::embed`] with the signature's block norms already known.
    fn embed_with(&self, signature: &Signature, norms: [f64; 3]) -> Embedded {
        let [wr, wc, wm] = self.block_weights.map(f64::sqrt);
        let offset = self.regions.len() * 4;
        let mut dense = vec![0.0f32; offset + self.measures.len()];
        for (r, name) in self.regions.iter().enumerate() {
            if let Some(values) = signature.regions.get(name) {
                for f in 0..REGION_FEATURES.len() {
                    dense[r * 4 + f] = (wr * values[f] / self.scales[r * 4 + f]) as f32;
                }
            }
        }
        for (m, name) in self.measures.iter().enumerate() {
            if let Some(z) = signature.centiles.get(name) {
                dense[offset + m] = (wm * z / self.scales[offset + m]) as f32;
            }
        }
        let clusters: Vec<ClusterPoint> =
            signature.clusters.iter().map(|p| ClusterPoint { weight: wc * p.weight, ..*p }).collect();
        let norm2 = self.block_weights.iter().zip(norms).map(|(w, n)| w * n).sum();
        Embedded { dense, clusters, norm2 }
    }
}

/// The inner product of two cluster sets (see the module documentation).
fn cluster_product(a: &[ClusterPoint], b: &[ClusterPoint]) -> f64 {
    let mut total = 0.0;
    for p in a {
        for q in b.iter().filter(|q| q.kind == p.kind) {
            let d2: f64 =
                (0..3).map(|axis| (p.peak_template_mm[axis] - q.peak_template_mm[axis]).powi(2)).sum();
            total += p.weight * q.weight * (-d2 / (4.0 * CLUSTER_SIGMA_MM * CLUSTER_SIGMA_MM)).exp();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::similarity::signature::ClusterKind;
    use crate::similarity::signature::tests::{cluster, region};

    fn signature(age: f64, regions: &[(&str, f64, f64)], clusters: &[(&str, f32, [f64; 3])]) -> Signature {
        let regions: Vec<_> = regions.iter().map(|(n, i, j)| region(n, *i, *j)).collect();
        let clusters: Vec<_> = clusters.iter().map(|(c, z, at)| cluster(c, *z, 30.0, *at, true)).collect();
        Signature::from_findings(age, &regions, &clusters, &[], &[]).unwrap()
    }

    fn library() -> Vec<(&'static str, Signature)> {
        vec![
            (
                "lesion-a",
                signature(4.0, &[("WM left", -3.0, 0.0)], &[("intensity", -6.0, [-20.0, 10.0, 20.0])]),
            ),
            (
                "lesion-b",
                signature(12.0, &[("WM left", -2.0, 0.2)], &[("intensity", -5.0, [-24.0, 8.0, 18.0])]),
            ),
            ("ventricles", signature(4.2, &[("Fornix", 0.1, 3.0)], &[("logjac", 6.0, [0.0, 0.0, 10.0])])),
            (
                "atrophy",
                signature(11.8, &[("Cerebellum", 0.0, -3.0)], &[("logjac", -5.0, [0.0, -60.0, -30.0])]),
            ),
        ]
    }

    #[test]
    fn the_same_pattern_at_another_age_ranks_first() {
        let index = SignatureIndex::new(library());
        let query = signature(5.0, &[("WM left", -2.5, 0.1)], &[("intensity", -5.5, [-22.0, 9.0, 19.0])]);
        let matches = index.query(&query, 4, |_| true);
        assert_eq!(matches.len(), 4);
        let first_two: Vec<&str> = matches[..2].iter().map(|m| m.key).collect();
        assert!(first_two.contains(&"lesion-a") && first_two.contains(&"lesion-b"), "{matches:?}");
        assert!(matches[0].similarity > 0.8 && matches[3].similarity < 0.3, "{matches:?}");
        assert!(matches.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        // The age-mismatched lesion still beats the age-matched ventricles.
        let rank = |key| matches.iter().position(|m| m.key == key).unwrap();
        assert!(rank("lesion-b") < rank("ventricles"));
    }

    #[test]
    fn severity_does_not_change_the_score_but_direction_does() {
        let index = SignatureIndex::new(library());
        let mild = signature(8.0, &[("Fornix", 0.05, 1.5)], &[]);
        let severe = signature(8.0, &[("Fornix", 0.1, 3.0)], &[]);
        let score = |q: &Signature| index.query(q, 1, |k| *k == "ventricles")[0].similarity;
        // (Below 1: the indexed case also has a cluster, which these queries lack.)
        let (mild, severe) = (score(&mild), score(&severe));
        assert!(mild > 0.5 && (mild - severe).abs() < 1e-6, "{mild} {severe}");
        let opposite = signature(8.0, &[("Fornix", -0.1, -3.0)], &[]);
        assert!(score(&opposite) < 0.0);
    }

    #[test]
    fn clusters_compare_by_distance_and_kind() {
        let at = |x: f64| {
            vec![ClusterPoint {
                kind: ClusterKind::LogjacBelow,
                peak_template_mm: [x, 0.0, 0.0],
                weight: 1.0,
            }]
        };
        assert_eq!(cluster_product(&at(0.0), &at(0.0)), 1.0);
        assert!((cluster_product(&at(0.0), &at(20.0)) - (-1f64).exp()).abs() < 1e-12);
        // Shifting both sets leaves the product unchanged.
        assert!((cluster_product(&at(30.0), &at(50.0)) - cluster_product(&at(0.0), &at(20.0))).abs() < 1e-12);
        let other = vec![ClusterPoint { kind: ClusterKind::LogjacAbove, ..at(0.0)[0] }];
        assert_eq!(cluster_product(&at(0.0), &other), 0.0);
    }

    #[test]
    fn admit_filters_and_k_bounds_the_answer() {
        let index = SignatureIndex::new(library());
        let query = library()[0].1.clone();
        let matches = index.query(&query, 2, |k| *k != "lesion-a");
        assert_eq!(matches.len(), 2);
        assert!(matches.iter().all(|m| m.key != "lesion-a"));
        assert!(index.query(&query, 0, |_| true).is_empty());
        assert_eq!(index.query(&query, 100, |_| true).len(), 4);
        let empty: SignatureIndex<&str> = SignatureIndex::new(Vec::new());
        assert!(empty.is_empty() && empty.query(&query, 3, |_| true).is_empty());
    }

    #[test]
    fn a_case_without_findings_matches_nothing() {
        let index = SignatureIndex::new(library());
        let quiet = signature(8.0, &[], &[]);
        assert!(index.query(&quiet, 4, |_| true).iter().all(|m| m.similarity == 0.0));
    }
}
