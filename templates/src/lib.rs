//! Population-level compute: age model, unbiased template construction (map/reduce), mergeable normative statistics, deviation scoring and calibration. No I/O.
