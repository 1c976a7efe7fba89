//! Command-line subcommands: each module holds one subcommand's arguments and its `run`.

pub mod progress;
pub mod convert;
pub mod inspect;
pub mod ingest;
pub mod register;
pub mod apply;
pub mod jacobian;
pub mod preprocess;
pub mod synth;
pub mod template;
pub mod normdb;
pub mod deviation;
pub mod demo;
pub mod serve;
pub mod users;
pub mod audit;
pub mod plan;
