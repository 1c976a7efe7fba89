//! Scores of a detection against the known truth of a synthetic case.

/// Area under the ROC curve of `positives` against `negatives` (Mann–Whitney U with average
/// ranks, so ties count half). NaN when either set is empty.
pub fn auc(positives: &[f32], negatives: &[f32]) -> f64 {
    if positives.is_empty() || negatives.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f32, bool)> =
        positives.iter().map(|&s| (s, true)).chain(negatives.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += all[i..j].iter().filter(|x| x.1).count() as f64 * average_rank;
        i = j;
    }
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// Voxelwise AUC of `score` for the abnormality: positives where `truth` > 0.5, negatives at
/// the other voxels where `brain` > 0.5 (all three on one grid, same length).
pub fn lesion_auc(score: &[f32], truth: &[f32], brain: &[f32]) -> f64 {
    let (mut positives, mut negatives) = (Vec::new(), Vec::new());
    for ((&s, &t), &b) in score.iter().zip(truth).zip(brain) {
        if t > 0.5 {
            positives.push(s);
        } else if b > 0.5 {
            negatives.push(s);
        }
    }
    auc(&positives, &negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_reversed_tied_and_empty_scores() {
        assert!((auc(&[3.0, 4.0], &[1.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!(auc(&[1.0, 2.0], &[3.0, 4.0]).abs() < 1e-12);
        assert!((auc(&[1.0, 1.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
        assert!(auc(&[], &[1.0]).is_nan());
    }

    #[test]
    fn lesion_auc_ignores_voxels_outside_the_brain() {
        let score = [5.0, 4.0, 1.0, 9.0];
        let truth = [1.0, 1.0, 0.0, 0.0];
        let brain = [1.0, 1.0, 1.0, 0.0];
        assert!((lesion_auc(&score, &truth, &brain) - 1.0).abs() < 1e-12);
    }
}
