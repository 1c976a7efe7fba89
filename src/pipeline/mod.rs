//! Pipelines that chain steps over files: preprocessing, template builds, normative statistics, deviation maps.
pub mod batch_deviation;
pub mod centiles;
pub mod cohort;
pub mod convert;
pub mod database;
pub mod demo;
pub mod deviation;
pub mod held_out;
pub mod normdb_build;
pub mod preprocess;
pub mod segment;
pub mod similar;
pub mod steps;
pub mod synth;
pub mod template_build;
pub mod template_set;
pub mod volumes;
