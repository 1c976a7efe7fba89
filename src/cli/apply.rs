//! `pedinorm apply`: resample an image through a chain of transforms (antsApplyTransforms).

use anyhow::Context;
use pedinorm::formats::nifti::{VoxelType, read_image, write_image};
use pedinorm::formats::transform::{LoadedTransform, read_transform_spec};
use pedinorm_registration::{Interpolation, SpatialTransform, TransformChain, resample::resample};
use std::path::PathBuf;

/// Interpolation of `pedinorm apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InterpolationChoice {
    /// Trilinear (intensities).
    Linear,
    /// Nearest voxel (masks).
    Nearest,
    /// Nearest voxel, written as integers (label images).
    Label,
}

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
    /// Interpolation.
    #[arg(long, short = 'n', value_enum, default_value = "linear")]
    pub interpolation: InterpolationChoice,
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
    let chain =
        TransformChain::new(loaded.iter().map(|t| t.as_spatial()).collect::<Vec<&dyn SpatialTransform>>());
    let (interpolation, voxel_type) = match args.interpolation {
        InterpolationChoice::Linear => (Interpolation::Linear, VoxelType::F32),
        InterpolationChoice::Nearest => (Interpolation::Nearest, VoxelType::F32),
        InterpolationChoice::Label => (Interpolation::Nearest, label_type(&input)),
    };
    let output = resample(&input, reference.grid(), &chain, interpolation, args.default_value);
    write_image(&args.output, &output, voxel_type)?;
    Ok(())
}

/// The smallest integer type holding the input's labels.
fn label_type(input: &pedinorm_registration::Image<f32>) -> VoxelType {
    match input.finite_range() {
        Some((lo, hi)) if lo >= 0.0 && hi <= 255.0 => VoxelType::U8,
        _ => VoxelType::I16,
    }
}
