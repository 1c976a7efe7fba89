//! pedinorm: paediatric brain-MR normative templates and calibrated deviation maps.
//!
//! This crate is everything that touches the outside world — file formats, DICOM, ingest and
//! privacy, the HDF5 normative database, pipelines, the HTTP service and batch executors —
//! over the pure compute crates `pedinorm-registration` and `pedinorm-templates`. The
//! `pedinorm` binary (`src/main.rs`, `src/cli/`) only parses arguments, calls into this crate
//! and prints.

pub mod atomic;
pub mod batch;
pub mod dicom_results;
pub mod formats;
pub mod ingest;
pub mod normdb;
pub mod pipeline;
pub mod report;
pub mod service;
pub mod synth_io;
