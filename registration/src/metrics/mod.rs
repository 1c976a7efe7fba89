//! Similarity metrics with analytic gradients: Mattes mutual information, normalized cross-correlation, local cross-correlation, mean squares.
