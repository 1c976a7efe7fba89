//! Pipelines that chain steps over files: preprocessing, template builds, normative statistics, deviation maps.
pub mod preprocess;
pub mod normative;
pub mod deviation;
pub mod cohort;
pub mod template_build;
