//! Command-line subcommands: each module holds one subcommand's arguments and its `run`.

pub mod apply;
pub mod audit;
pub mod centiles;
pub mod classify;
pub mod convert;
pub mod demo;
pub mod deviation;
pub mod executor;
pub mod ingest;
pub mod inspect;
pub mod jacobian;
pub mod normdb;
pub mod plan;
pub mod preprocess;
pub mod progress;
pub mod register;
pub mod scan;
pub mod segment;
pub mod serve;
pub mod similar;
pub mod synth;
pub mod template;
pub mod users;
pub mod volumes;
