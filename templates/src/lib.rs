//! Population-level compute: age model, unbiased template construction (map/reduce), mergeable normative statistics, deviation scoring and calibration. No I/O.

pub mod age;
pub mod calibration;
pub mod centiles;
pub mod model;
pub mod normative;
pub mod qc;
pub mod safeguards;
pub mod similarity;
pub mod site_effects;
pub mod stats;
pub mod template;
