//! `pedinorm segment`: tissue probability maps, a label map and tissue volumes of one subject
//! from its images (one per contrast), a brain mask and optional prior maps. The algorithm is
//! `pedinorm_registration::segmentation`; this module reads and writes the files. The output
//! folder appears whole (computed in a temporary sibling, renamed into place).

use crate::formats::nifti::{NiftiIoError, VoxelType, read_image, write_image};
use crate::pipeline::steps::{is_valid_name, write_folder_atomically};
use pedinorm_registration::Image;
use pedinorm_registration::segmentation::{Segmentation, SegmentationError, SegmentationOptions, segment};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What to segment and how.
#[derive(Debug, Clone)]
pub struct SegmentRequest {
    /// The subject's images, one per contrast, on one grid (the first decides class order
    /// without priors).
    pub images: Vec<PathBuf>,
    /// Brain mask (> 0.5 inside); default: the voxels of the first image above 0.
    pub mask: Option<PathBuf>,
    /// Prior probability maps, one per class, on the images' grid.
    pub priors: Vec<PathBuf>,
    /// Tissue names: with priors, one per prior (default: the priors' file names without
    /// `.nii.gz`); without, in ascending order of the first image's class means (default
    /// `class1`, `class2`, …).
    pub tissues: Vec<String>,
    /// Algorithm settings.
    pub options: SegmentationOptions,
}

/// Why a segmentation failed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// An image cannot be read or written (the error names the file).
    #[error(transparent)]
    Image(#[from] NiftiIoError),
    /// The request does not hold together (names the argument and the rule).
    #[error("{0}")]
    Request(String),
    /// The algorithm refused its inputs.
    #[error("segmentation: {0}")]
    Segmentation(#[from] SegmentationError),
    /// The output folder cannot be made or moved into place (named by [`run_segment`]).
    #[error("output folder: {0}")]
    Folder(#[from] std::io::Error),
    /// An output cannot be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One tissue's result.
#[derive(Debug, Clone, Serialize)]
pub struct TissueSummary {
    /// Tissue name (its probability map is `<name>.nii.gz`; its label is its 1-based index).
    pub name: String,
    /// Volume in ml, counting partial probabilities.
    pub volume_ml: f64,
    /// Class mean, one value per image.
    pub mean: Vec<f64>,
    /// Class covariance, images × images, row by row.
    pub covariance: Vec<f64>,
    /// Class proportion.
    pub proportion: f64,
}

/// What `segmentation.json` (and `done.json`) record.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    /// The images segmented.
    pub images: Vec<PathBuf>,
    /// Whether prior maps were used.
    pub priors: bool,
    /// Per tissue, in label order.
    pub tissues: Vec<TissueSummary>,
    /// EM iterations run.
    pub iterations: usize,
    /// Whether EM converged before its iteration limit.
    pub converged: bool,
    /// Markov random field weight.
    pub mrf_weight: f64,
    /// Prior weight (with priors).
    pub prior_weight: f64,
}

/// A subject's images in memory, each with the name its errors give (its file, or the
/// argument it came from).
#[derive(Debug, Clone)]
pub struct SubjectImages {
    /// The images, one per contrast, on one grid (the first decides class order without
    /// priors).
    pub images: Vec<(String, Image<f32>)>,
    /// Brain mask (> 0.5 inside); default: the voxels of the first image above 0.
    pub mask: Option<(String, Image<f32>)>,
    /// Prior probability maps, one per class, on the images' grid; without tissue names a
    /// prior's tissue is named by its file name without `.nii.gz`.
    pub priors: Vec<(String, Image<f32>)>,
}

/// A segmentation in memory with its tissue names and summary.
#[derive(Debug, Clone)]
pub struct Segmented {
    /// Tissue names in label order (`<name>.nii.gz` in the output folder).
    pub tissues: Vec<String>,
    /// The probability maps, labels and class parameters.
    pub segmentation: Segmentation,
    /// What `segmentation.json` records.
    pub summary: SegmentSummary,
}

/// Segments a subject's images in memory: the one path of `pedinorm segment` (after reading
/// its files) and of the Python package. `tissues` and `options` are as in [`SegmentRequest`].
pub fn segment_images(
    inputs: &SubjectImages,
    tissues: &[String],
    options: &SegmentationOptions,
) -> Result<Segmented, SegmentError> {
    let Some((first_name, first)) = inputs.images.first() else {
        return Err(SegmentError::Request("--image: at least one image is required".into()));
    };
    let prior_names: Vec<&str> = inputs.priors.iter().map(|(name, _)| name.as_str()).collect();
    let tissues = tissue_names(tissues, &prior_names, options.classes)?;
    let grid_of = |name: &str, image: &Image<f32>, what: &str| {
        if image.grid() == first.grid() {
            Ok(())
        } else {
            Err(SegmentError::Request(format!(
                "{name}: {what} is not on the grid of {first_name} (resample it onto that image first, e.g. with `pedinorm apply`)"
            )))
        }
    };
    for (name, image) in inputs.images.iter().skip(1) {
        grid_of(name, image, "the image")?;
    }
    let default_mask;
    let mask = match &inputs.mask {
        Some((name, mask)) => {
            grid_of(name, mask, "the mask")?;
            mask
        }
        None => {
            default_mask = first.map(|&v| if v > 0.0 { 1.0 } else { 0.0 });
            &default_mask
        }
    };
    for (name, prior) in &inputs.priors {
        grid_of(name, prior, "the prior")?;
    }
    let channels: Vec<&Image<f32>> = inputs.images.iter().map(|(_, image)| image).collect();
    let priors: Vec<Image<f32>> = inputs.priors.iter().map(|(_, prior)| prior.clone()).collect();
    let prior_maps = (!priors.is_empty()).then_some(priors.as_slice());
    let options = SegmentationOptions { classes: tissues.len(), ..options.clone() };
    let segmentation = segment(&channels, mask, prior_maps, &options)?;
    let images = inputs.images.iter().map(|(name, _)| PathBuf::from(name)).collect();
    let summary = summarise(images, !priors.is_empty(), &tissues, &segmentation, &options);
    Ok(Segmented { tissues, segmentation, summary })
}

/// Segments the request's images and writes into `out_dir`: `<tissue>.nii.gz` (probability,
/// float32), `labels.nii.gz` (0 outside the mask, else the tissue's 1-based index),
/// `volumes.tsv` and `segmentation.json`.
pub fn run_segment(request: &SegmentRequest, out_dir: &Path) -> Result<SegmentSummary, SegmentError> {
    let read = |path: &PathBuf| read_image(path).map(|image| (path.display().to_string(), image));
    let inputs = SubjectImages {
        images: request.images.iter().map(read).collect::<Result<_, _>>()?,
        mask: request.mask.as_ref().map(read).transpose()?,
        priors: request.priors.iter().map(read).collect::<Result<_, _>>()?,
    };
    let Segmented { tissues, segmentation: result, summary } =
        segment_images(&inputs, &request.tissues, &request.options)?;
    write_folder_atomically(out_dir, |tmp| -> Result<SegmentSummary, SegmentError> {
        for (name, posterior) in tissues.iter().zip(&result.posteriors) {
            write_image(&tmp.join(format!("{name}.nii.gz")), posterior, VoxelType::F32)?;
        }
        write_image(&tmp.join("labels.nii.gz"), &result.labels, VoxelType::U8)?;
        let mut table = String::from("tissue\tvolume_ml\n");
        for tissue in &summary.tissues {
            table.push_str(&format!("{}\t{:.3}\n", tissue.name, tissue.volume_ml));
        }
        let total: f64 = summary.tissues.iter().map(|t| t.volume_ml).sum();
        table.push_str(&format!("total\t{total:.3}\n"));
        let write = |name: &str, bytes: &[u8]| {
            let path = tmp.join(name);
            std::fs::write(&path, bytes).map_err(|source| SegmentError::Write { path, source })
        };
        write("volumes.tsv", table.as_bytes())?;
        let json = serde_json::to_vec_pretty(&summary).expect("a summary serialises");
        write("segmentation.json", &json)?;
        Ok(summary.clone())
    })
    // Making, filling or renaming the folder failed: name the folder.
    .map_err(|error| match error {
        SegmentError::Folder(source) => SegmentError::Write { path: out_dir.to_owned(), source },
        other => other,
    })
}

/// The tissue names, checked: one per prior (or per class), plain file names, no repeats.
/// Without names, a prior's is its file name without `.nii.gz`.
fn tissue_names(given: &[String], priors: &[&str], classes: usize) -> Result<Vec<String>, SegmentError> {
    let names: Vec<String> = if !given.is_empty() {
        given.to_vec()
    } else if !priors.is_empty() {
        priors
            .iter()
            .map(|p| {
                let name =
                    Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                name.trim_end_matches(".gz").trim_end_matches(".nii").to_string()
            })
            .collect()
    } else {
        (1..=classes).map(|k| format!("class{k}")).collect()
    };
    if !priors.is_empty() && names.len() != priors.len() {
        return Err(SegmentError::Request(format!(
            "--tissues: {} names for {} prior maps (one name per prior)",
            names.len(),
            priors.len()
        )));
    }
    for name in &names {
        if !is_valid_name(name) || name == "labels" {
            return Err(SegmentError::Request(format!(
                "--tissues: {name:?} must be letters, digits, `-`, `_` or `.`, not `labels`"
            )));
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != names.len() {
        return Err(SegmentError::Request("--tissues: a name is given twice".into()));
    }
    Ok(names)
}

fn summarise(
    images: Vec<PathBuf>,
    priors: bool,
    tissues: &[String],
    result: &Segmentation,
    options: &SegmentationOptions,
) -> SegmentSummary {
    let volumes = result.volumes_ml();
    SegmentSummary {
        images,
        priors,
        tissues: tissues
            .iter()
            .enumerate()
            .map(|(k, name)| TissueSummary {
                name: name.clone(),
                volume_ml: volumes[k],
                mean: result.means[k].clone(),
                covariance: result.covariances[k].clone(),
                proportion: result.proportions[k],
            })
            .collect(),
        iterations: result.iterations,
        converged: result.converged,
        mrf_weight: options.mrf_weight,
        prior_weight: options.prior_weight,
    }
}
