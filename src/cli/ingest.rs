//! `pedinorm ingest`: de-identify, pseudonymize and admit a DICOM study into database A or B.

use pedinorm::ingest::admission::Database;
use pedinorm::ingest::{IdentifierSource, IngestOptions, IngestProgress, IngestStatus};
use std::path::PathBuf;

/// Arguments of `pedinorm ingest`.
#[derive(Debug, clap::Args)]
#[command(long_about = "De-identify, pseudonymize and admit one DICOM study.\n\n\
The study is checked against the database's admission rules (database B: MR of the brain at \
3 T, age 0-17, with a usable T1w or T2w series; database A: MR at 1.5 T or 3 T with a class A1 \
or A2). Every series is classified T1w, T2w, FLAIR, DWI, localizer or other from its \
acquisition headers, and its class and the rule that decided it are recorded in its sidecar \
and the index. A refused study writes \
nothing and every reason is listed. An accepted study is stored under DATA_DIR as \
<database>/<pseudonym>/<study-uid>/<series-uid>/ with volume.nii.gz, sidecar.json and \
de-identified DICOM copies (DICOM PS3.15 Annex E Basic Profile, retaining patient \
characteristics, dates shifted per patient), and recorded in DATA_DIR/index.sqlite. \
Ingesting the same study again adds nothing.\n\n\
The pseudonym is HMAC-SHA-256 of the national identifier (Italian codice fiscale) under the \
key in --key-file or in the file named by PEDINORM_PSEUDONYM_KEY_FILE.")]
pub struct Args {
    /// Database the study is offered to: A (rare-disease cases) or B (normal controls).
    #[arg(long, value_parser = ["A", "B", "a", "b"])]
    pub database: String,
    /// Class of a database-A case: A1 (diagnosis confirmed) or A2 (to be confirmed).
    #[arg(long, value_parser = ["A1", "A2", "a1", "a2"])]
    pub class: Option<String>,
    /// Data directory holding the store and its index (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The patient's national identifier (codice fiscale). Never printed or stored.
    #[arg(long, conflicts_with = "id_issuer")]
    pub national_id: Option<String>,
    /// Take the national identifier from OtherPatientIDsSequence (or Patient ID) entries whose
    /// IssuerOfPatientID is ISSUER.
    #[arg(long, value_name = "ISSUER")]
    pub id_issuer: Option<String>,
    /// Accept a study without a national identifier (its pseudonym then links to nothing).
    #[arg(long)]
    pub allow_unlinked: bool,
    /// File holding the pseudonym key (default: the file named by PEDINORM_PSEUDONYM_KEY_FILE).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// DICOM files, folders (walked recursively) or zip archives of one study.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
}

/// Runs `pedinorm ingest`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let database = Database::parse(&args.database, args.class.as_deref()).map_err(anyhow::Error::msg)?;
    let identifier = match (args.national_id, args.id_issuer) {
        (Some(id), _) => IdentifierSource::Explicit(id),
        (None, Some(issuer)) => IdentifierSource::Issuer(issuer),
        (None, None) => IdentifierSource::None,
    };
    let options = IngestOptions {
        database,
        data_dir: args.data_dir,
        identifier,
        allow_unlinked: args.allow_unlinked,
        key_file: args.key_file,
    };
    let bar = super::progress::bar(0, "ingest");
    let result = pedinorm::ingest::ingest_study_with_progress(&args.inputs, &options, &|event| match event {
        IngestProgress::Scanning(done, total) => {
            bar.set_message("reading headers");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        IngestProgress::Storing(done, total) => {
            bar.set_message("storing series");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    });
    bar.finish_and_clear();
    // One line: a refusal lists every reason, separated by `;`.
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let status = match report.status {
        IngestStatus::Ingested => "ingested",
        IngestStatus::SeriesAdded => "series added to an ingested study",
        IngestStatus::AlreadyIngested => "already ingested",
    };
    println!(
        "{status}: database {}{} patient {} study {}",
        report.database,
        report.class.as_deref().map(|c| format!(" class {c}")).unwrap_or_default(),
        &report.pseudonym[..12],
        report.study_uid
    );
    for series in &report.series {
        let marker = if series.newly_stored { "stored" } else { "present" };
        let class = series.series_class.as_deref().unwrap_or("unclassified");
        println!("  {marker} {class} {}", options.data_dir.join(&series.path).display());
    }
    for skipped in &report.skipped_series {
        println!("  skipped {}: {}", skipped.series, skipped.reason);
    }
    if report.skipped_files > 0 {
        println!("  {} non-DICOM file(s) skipped", report.skipped_files);
    }
    Ok(())
}
