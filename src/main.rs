//! The `pedinorm` command line.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Paediatric brain-MR normative templates and calibrated deviation maps.
#[derive(Debug, Parser)]
#[command(name = "pedinorm", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. `info`, `pedinorm=debug`); logs go to standard error.
    #[arg(long, global = true, env = "PEDINORM_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert DICOM series (folder, zip or files) to NIfTI volumes with JSON sidecars.
    Convert(cli::convert::Args),
    /// Show geometry and metadata of a NIfTI file or DICOM series (no identities).
    Inspect(cli::inspect::Args),
    /// De-identify, pseudonymize and admit a DICOM study into database A or B.
    Ingest(cli::ingest::Args),
    /// Classify DICOM series as T1w, T2w, FLAIR, DWI, localizer or other from their headers.
    Classify(cli::classify::Args),
    /// Register a moving image to a fixed image (rigid, affine or diffeomorphic).
    Register(cli::register::Args),
    /// Apply transforms to an image (antsApplyTransforms order).
    Apply(cli::apply::Args),
    /// Jacobian determinant (or its log) of a displacement field.
    Jacobian(cli::jacobian::Args),
    /// Bias-field correction, brain mask and intensity normalization.
    Preprocess(cli::preprocess::Args),
    /// Tissue probability maps, labels and volumes of one subject (EM + MRF + priors).
    Segment(cli::segment::Args),
    /// Regional volumes of one subject (ml per atlas region and tissue, total brain, ICV) against a normative database.
    Volumes(cli::volumes::Args),
    /// Growth-chart centile models of regional measures: fit, adapt to a site, score, show.
    Centiles(cli::centiles::Args),
    /// Generate a synthetic paediatric cohort with known ground truth.
    Synth(cli::synth::Args),
    /// Build age-specific templates.
    Template(cli::template::Args),
    /// Build, extend, merge and inspect the HDF5 normative database.
    Normdb(cli::normdb::Args),
    /// Deviation maps of one case, or of a list of cases as a batch, against the normative database.
    Deviation(cli::deviation::Args),
    /// The labelled deviation results most like a case's (similar confirmed cases), or a library's leave-one-out retrieval.
    Similar(cli::similar::Args),
    /// Run the whole job on built-in synthetic data.
    Demo(cli::demo::Args),
    /// Run the HTTP back-end service.
    Serve(cli::serve::Args),
    /// Manage service users and their tokens.
    Users(cli::users::Args),
    /// Verify the service's audit log.
    Audit(cli::audit::Args),
    /// Compute per-task resources for batch builds.
    Plan(cli::plan::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    let result: anyhow::Result<()> = match cli.command {
        Command::Convert(args) => cli::convert::run(args),
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Ingest(args) => cli::ingest::run(args),
        Command::Classify(args) => cli::classify::run(args),
        Command::Register(args) => cli::register::run(args),
        Command::Apply(args) => cli::apply::run(args),
        Command::Jacobian(args) => cli::jacobian::run(args),
        Command::Preprocess(args) => cli::preprocess::run(args),
        Command::Segment(args) => cli::segment::run(args),
        Command::Volumes(args) => cli::volumes::run(args),
        Command::Centiles(args) => cli::centiles::run(args),
        Command::Synth(args) => cli::synth::run(args),
        Command::Template(args) => cli::template::run(args),
        Command::Normdb(args) => cli::normdb::run(args),
        Command::Deviation(args) => cli::deviation::run(args),
        Command::Similar(args) => cli::similar::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Users(args) => cli::users::run(args),
        Command::Audit(args) => cli::audit::run(args),
        Command::Plan(args) => cli::plan::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
