//! How well similar-case retrieval finds a case's own diagnosis: leave-one-out over labelled
//! signatures, against two baselines — drawing cases at random, and matching on age alone.

use super::index::SignatureIndex;
use super::signature::Signature;
use serde::Serialize;

/// Leave-one-out retrieval figures: the fraction of cases whose `k` nearest others (by each
/// method) include a case of their own label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalFigures {
    /// Cases evaluated (those with at least one other case of their label).
    pub cases: usize,
    /// Distinct labels among them.
    pub labels: usize,
    /// The cut-offs, e.g. `[1, 3]`.
    pub cutoffs: Vec<usize>,
    /// Signature similarity: hit rate at each cut-off.
    pub signature: Vec<f64>,
    /// Nearest in age (ties: index order): hit rate at each cut-off.
    pub age_only: Vec<f64>,
    /// Random order: the expected hit rate at each cut-off (exact, hypergeometric).
    pub random: Vec<f64>,
}

/// Leave-one-out over `cases` (label, signature): each case queries all the others.
/// Cases alone with their label are skipped: nothing could be found for them.
pub fn leave_one_out(cases: &[(String, Signature)], cutoffs: &[usize]) -> RetrievalFigures {
    let index = SignatureIndex::new(cases.iter().enumerate().map(|(i, (_, s))| (i, s.clone())).collect());
    let n = cases.len();
    let deepest = cutoffs.iter().copied().max().unwrap_or(0);
    let mut hits = [vec![0usize; cutoffs.len()], vec![0usize; cutoffs.len()]];
    let mut random = vec![0.0f64; cutoffs.len()];
    let mut evaluated = 0usize;
    let mut labels: Vec<&str> = Vec::new();
    for (q, (label, signature)) in cases.iter().enumerate() {
        let same = cases.iter().enumerate().filter(|(i, (l, _))| *i != q && l == label).count();
        if same == 0 {
            continue;
        }
        evaluated += 1;
        if !labels.contains(&label.as_str()) {
            labels.push(label);
        }
        let by_signature: Vec<usize> =
            index.query(signature, deepest, |&i| i != q).into_iter().map(|m| m.key).collect();
        let mut by_age: Vec<usize> = (0..n).filter(|&i| i != q).collect();
        by_age.sort_by(|&a, &b| {
            let gap = |i: usize| (cases[i].1.age_years - signature.age_years).abs();
            gap(a).total_cmp(&gap(b)).then(a.cmp(&b))
        });
        for (c, &k) in cutoffs.iter().enumerate() {
            for (m, ranked) in [&by_signature[..], &by_age[..]].into_iter().enumerate() {
                if ranked.iter().take(k).any(|&i| cases[i].0 == *label) {
                    hits[m][c] += 1;
                }
            }
            random[c] += random_hit_probability(n - 1, same, k);
        }
    }
    let rate = |count: f64| if evaluated == 0 { 0.0 } else { count / evaluated as f64 };
    RetrievalFigures {
        cases: evaluated,
        labels: labels.len(),
        cutoffs: cutoffs.to_vec(),
        signature: hits[0].iter().map(|&h| rate(h as f64)).collect(),
        age_only: hits[1].iter().map(|&h| rate(h as f64)).collect(),
        random: random.iter().map(|&p| rate(p)).collect(),
    }
}

/// The probability that `k` cases drawn at random from `others` include at least one of the
/// `same` cases of the query's label: `1 − C(others − same, k) / C(others, k)`.
fn random_hit_probability(others: usize, same: usize, k: usize) -> f64 {
    let k = k.min(others);
    let mut none = 1.0;
    for j in 0..k {
        none *= (others - same).saturating_sub(j) as f64 / (others - j) as f64;
    }
    1.0 - none
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::similarity::signature::tests::region;

    fn case(label: &str, age: f64, intensity: f64, logjac: f64) -> (String, Signature) {
        // Each pattern deviates in a region of its own and both a little in a shared one.
        let site = if intensity.abs() > logjac.abs() { "frontal" } else { "periventricular" };
        let regions = [region(site, intensity, logjac), region("shared", 0.3, -0.2)];
        (label.to_owned(), Signature::from_findings(age, &regions, &[], &[], &[]).unwrap())
    }

    #[test]
    fn random_baseline_is_hypergeometric() {
        assert!((random_hit_probability(9, 2, 1) - 2.0 / 9.0).abs() < 1e-12);
        assert!(
            (random_hit_probability(9, 2, 3) - (1.0 - (7.0 * 6.0 * 5.0) / (9.0 * 8.0 * 7.0))).abs() < 1e-12
        );
        assert_eq!(random_hit_probability(3, 3, 1), 1.0);
        assert_eq!(random_hit_probability(5, 1, 9), 1.0);
    }

    #[test]
    fn distinct_patterns_are_retrieved_and_age_alone_is_not() {
        // Two patterns; each pattern's cases span the ages of the other's.
        let cases = vec![
            case("a", 2.0, -3.0, 0.0),
            case("b", 2.5, 0.0, 3.0),
            case("a", 9.0, -2.0, 0.5),
            case("b", 9.5, 0.4, 2.0),
            case("a", 15.0, -4.0, 0.0),
            case("b", 15.5, 0.0, 4.0),
        ];
        let figures = leave_one_out(&cases, &[1, 3]);
        assert_eq!((figures.cases, figures.labels), (6, 2));
        assert_eq!(figures.signature, vec![1.0, 1.0]);
        assert_eq!(figures.age_only[0], 0.0, "the nearest age is always the other pattern");
        assert!((figures.random[0] - 0.4).abs() < 1e-12);
    }

    #[test]
    fn a_label_seen_once_is_not_evaluated() {
        let cases = vec![case("a", 2.0, -3.0, 0.0), case("a", 4.0, -3.0, 0.0), case("c", 3.0, 0.0, 3.0)];
        let figures = leave_one_out(&cases, &[1]);
        assert_eq!((figures.cases, figures.labels), (2, 1));
    }
}
