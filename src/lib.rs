//! pedinorm: paediatric brain-MR normative templates and calibrated deviation maps.
//!
//! This crate is everything that touches the outside world — file formats, DICOM, ingest and
//! privacy, the HDF5 normative database, pipelines, the HTTP service, batch executors and the
//! command line — over the pure compute crates `pedinorm-registration` and
//! `pedinorm-templates`.

pub mod atomic;
pub mod batch;
pub mod cli;
pub mod formats;
pub mod ingest;
pub mod normdb;
pub mod pipeline;
pub mod report;
pub mod service;
pub mod synth_io;
