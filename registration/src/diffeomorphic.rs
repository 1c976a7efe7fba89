//! Diffeomorphic registration: symmetric (SyN-style) and greedy, with local cross-correlation or mutual information.
