//! Pipelines that chain steps over files: preprocessing, template builds, normative statistics, deviation maps.
pub mod batch_deviation;
pub mod cohort;
pub mod database;
pub mod deviation;
pub mod held_out;
pub mod normdb_build;
pub mod preprocess;
pub mod steps;
pub mod template_build;
