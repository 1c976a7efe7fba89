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

/// Segments the request's images and writes into `out_dir`: `<tissue>.nii.gz` (probability,
/// float32), `labels.nii.gz` (0 outside the mask, else the tissue's 1-based index),
/// `volumes.tsv` and `segmentation.json`.
pub fn run_segment(request: &SegmentRequest, out_dir: &Path) -> Result<SegmentSummary, SegmentError> {
    if request.images.is_empty() {
        return Err(SegmentError::Request("--image: at least one image is required".into()));
    }
    let tissues = tissue_names(request)?;
    let images: Vec<Image<f32>> = request.images.iter().map(|p| read_image(p)).collect::<Result<_, _>>()?;
    let grid_of = |path: &Path, image: &Image<f32>, what: &str| {
        if image.grid() == images[0].grid() {
            Ok(())
        } else {
            Err(SegmentError::Request(format!(
                "{}: {what} is not on the grid of {} (resample it onto that image first, e.g. with `pedinorm apply`)",
                path.display(),
                request.images[0].display()
            )))
        }
    };
    for (path, image) in request.images.iter().zip(&images).skip(1) {
        grid_of(path, image, "the image")?;
    }
    let mask = match &request.mask {
        Some(path) => {
            let mask = read_image(path)?;
            grid_of(path, &mask, "the mask")?;
            mask
        }
        None => images[0].map(|&v| if v > 0.0 { 1.0 } else { 0.0 }),
    };
    let priors: Vec<Image<f32>> = request.priors.iter().map(|p| read_image(p)).collect::<Result<_, _>>()?;
    for (path, prior) in request.priors.iter().zip(&priors) {
        grid_of(path, prior, "the prior")?;
    }
    let channels: Vec<&Image<f32>> = images.iter().collect();
    let prior_maps = (!priors.is_empty()).then_some(priors.as_slice());
    let options = SegmentationOptions { classes: tissues.len(), ..request.options.clone() };
    let result = segment(&channels, &mask, prior_maps, &options)?;
    let summary = summarise(request, &tissues, &result, &options);
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

/// The tissue names of a request, checked: one per prior (or per class), plain file names,
/// no repeats.
fn tissue_names(request: &SegmentRequest) -> Result<Vec<String>, SegmentError> {
    let names: Vec<String> = if !request.tissues.is_empty() {
        request.tissues.clone()
    } else if !request.priors.is_empty() {
        request
            .priors
            .iter()
            .map(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                name.trim_end_matches(".gz").trim_end_matches(".nii").to_string()
            })
            .collect()
    } else {
        (1..=request.options.classes).map(|k| format!("class{k}")).collect()
    };
    if !request.priors.is_empty() && names.len() != request.priors.len() {
        return Err(SegmentError::Request(format!(
            "--tissues: {} names for {} prior maps (one name per prior)",
            names.len(),
            request.priors.len()
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
    request: &SegmentRequest,
    tissues: &[String],
    result: &Segmentation,
    options: &SegmentationOptions,
) -> SegmentSummary {
    let volumes = result.volumes_ml();
    SegmentSummary {
        images: request.images.clone(),
        priors: !request.priors.is_empty(),
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
