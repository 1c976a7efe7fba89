//! Synthetic paediatric cohort with known ground truth (growth, contrast maturation, anatomy warps, bias, noise, lesions) for tests, the demo and validation. Documented as synthetic; no I/O.
