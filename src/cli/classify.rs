//! `pedinorm classify`: the class of every DICOM series in files, folders or zip archives,
//! from the headers alone, with the rule that decided (no identities printed).

use pedinorm::ingest::classify_inputs;
use std::path::PathBuf;

/// Arguments of `pedinorm classify`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Classify every DICOM series in the inputs as T1w, T2w, FLAIR, DWI, \
localizer or other from its acquisition headers (ScanningSequence, SequenceVariant, ScanOptions, \
TR/TE/TI in 1.5 T or 3 T ranges, ImageType, 2D/3D, image count, diffusion b-values), the rule \
`pedinorm ingest` applies and records. Pixel data is not decoded. Objects that are not DICOM \
are listed with the reason.")]
pub struct Args {
    /// DICOM files, folders or zip archives.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Classify every object on its own, as a sample of its series (one instance per series,
    /// as a PACS query returns): the image count then decides nothing.
    #[arg(long)]
    pub each_object: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pedinorm classify`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (series, unreadable) = classify_inputs(&args.inputs, args.each_object)?;
    if args.json {
        let report = serde_json::json!({ "series": series, "unreadable": unreadable });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for entry in &series {
        println!(
            "{}\t{}\t{} object(s)\t{}\t{}\t{}",
            entry.first_object.display(),
            entry.series,
            entry.objects,
            entry.class,
            entry.rule,
            entry.reason
        );
    }
    for object in &unreadable {
        println!("{}\tunreadable\t{}", object.object.display(), object.reason);
    }
    Ok(())
}
