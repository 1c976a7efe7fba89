//! `pedinorm apply`: resample an image through a chain of transforms (antsApplyTransforms).

use anyhow::Context;
use pedinorm::formats::nifti::{read_image, write_image};
use pedinorm::formats::transform::{LoadedTransform, read_transform_spec};
use pedinorm::pipeline::apply::{ApplyInterpolation, apply_transforms};
use pedinorm_registration::SpatialTransform;
use std::path::PathBuf;

/// Arguments of `pedinorm apply`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Resample an image through transforms, as antsApplyTransforms does.\n\n\
Transforms are listed in antsApplyTransforms' order: the output of `pedinorm register` (or \
antsRegistration) is applied with `-t PREFIXwarp.nii.gz -t PREFIXaffine.txt`. As a point \
mapping from the reference space, the FIRST listed transform acts first: the chain \
[warp, affine] maps a reference point p to affine(p + warp(p)). Write `[file,1]` to use an \
affine's inverse (e.g. `-t [PREFIXaffine.txt,1] -t PREFIXinverse_warp.nii.gz` maps the fixed \
image into the moving space). Affines: ITK text (.txt/.tfm) or ANTs .mat; fields: ANTs NIfTI \
displacement fields.")]
pub struct Args {
    /// Reference image: the output grid.
    #[arg(long, short = 'r')]
    pub reference: PathBuf,
    /// Image to resample.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// A transform (repeatable), in antsApplyTransforms order.
    #[arg(long = "transform", short = 't')]
    pub transforms: Vec<String>,
    /// Interpolation: linear (intensities), nearest (masks) or label (nearest voxel, written
    /// as integers).
    #[arg(long, short = 'n', default_value = "linear")]
    pub interpolation: ApplyInterpolation,
    /// Output image.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Value outside the input image.
    #[arg(long, default_value_t = 0.0)]
    pub default_value: f32,
}

/// Runs `pedinorm apply`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let reference = read_image(&args.reference)?;
    let input = read_image(&args.input)?;
    let loaded: Vec<LoadedTransform> = args
        .transforms
        .iter()
        .map(|spec| read_transform_spec(spec).with_context(|| format!("transform `{spec}`")))
        .collect::<anyhow::Result<_>>()?;
    let chain: Vec<&dyn SpatialTransform> = loaded.iter().map(LoadedTransform::as_spatial).collect();
    let (output, voxel_type) =
        apply_transforms(reference.grid(), &input, &chain, args.interpolation, args.default_value);
    write_image(&args.output, &output, voxel_type)?;
    Ok(())
}
