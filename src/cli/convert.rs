//! `pedinorm convert`: convert DICOM series (folder, zip or files) to NIfTI volumes with JSON sidecars.

use pedinorm::formats::dicom::load_series_with_progress;
use pedinorm::pipeline::convert::write_volumes;
use std::path::PathBuf;

/// Arguments of `pedinorm convert`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Convert DICOM series to NIfTI.\n\n\
Reads every DICOM image in the inputs (files, folders searched recursively, zip archives), \
groups them by series (split further by orientation, echo, image size or time point), sorts \
slices along the slice normal and writes, per series, DIR/NNNN_DESCRIPTION.nii.gz (int16 when that is lossless, else float32, \
RAS+ affine, oblique geometry kept) and DIR/NNNN_DESCRIPTION.json (acquisition metadata with \
dcm2niix/BIDS key names, age in years, no names, identifiers or dates). File names come from \
the series number and description only. A series with missing slices, uneven spacing or \
gantry tilt is refused with an error naming the file, the field and the rule.")]
pub struct Args {
    /// DICOM files, folders or zip archives.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Replace existing outputs of the same name instead of refusing.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `pedinorm convert`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let bar = super::progress::bar(0, "reading DICOM");
    let progress = |stage: &str, done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(stage.to_owned());
    };
    let volumes = load_series_with_progress(&args.inputs, &progress)?;
    bar.finish_and_clear();
    let bar = super::progress::bar(volumes.len() as u64, "writing NIfTI");
    let written =
        write_volumes(&volumes, &args.out_dir, args.overwrite, &|done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    for (volume, path) in volumes.iter().zip(&written) {
        let dims = volume.image.grid().dims();
        println!("{} ({}×{}×{}, {} files)", path.display(), dims[0], dims[1], dims[2], volume.files.len());
    }
    Ok(())
}
