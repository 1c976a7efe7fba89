//! Pairwise registration as `pedinorm register` and the Python package run it: the plan a
//! transform model and metric name, and the ANTs-compatible files of a result.

use crate::formats::nifti::{NiftiIoError, VoxelType, write_image};
use crate::formats::transform::{TransformIoError, write_affine, write_field};
use pedinorm_registration::affine_registration::AffineKind;
use pedinorm_registration::metrics::{LocalCc, MattesMi, MeanSquares, Metric, Ncc, SquaredLocalCc};
use pedinorm_registration::{AffineTransform, DisplacementField, Image, RegistrationPlan};
use std::path::PathBuf;
use std::sync::Arc;

/// The transform model of a pairwise registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformModel {
    /// Rotation + translation.
    Rigid,
    /// 12-parameter affine (after a similarity stage).
    Affine,
    /// Affine, then greedy diffeomorphic with forward and inverse fields.
    Syn,
}

impl std::str::FromStr for TransformModel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "rigid" => Ok(Self::Rigid),
            "affine" => Ok(Self::Affine),
            "syn" => Ok(Self::Syn),
            other => Err(format!("unknown transform `{other}` (rigid, affine, syn)")),
        }
    }
}

/// The similarity metric of a pairwise registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricChoice {
    /// Mattes mutual information (any contrast; default of rigid/affine).
    Mi,
    /// Global normalized cross-correlation (rigid/affine, same contrast).
    Ncc,
    /// Mean squares (rigid/affine, same contrast and scaling).
    MeanSquares,
    /// Signed local cross-correlation, radius 2 (syn, same contrast polarity).
    Cc,
    /// Squared local cross-correlation, radius 2 (syn default; tolerates inverted contrast).
    SquaredCc,
}

impl MetricChoice {
    /// The name used on the command line and in Python.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mi => "mi",
            Self::Ncc => "ncc",
            Self::MeanSquares => "meansquares",
            Self::Cc => "cc",
            Self::SquaredCc => "squared-cc",
        }
    }
}

impl std::str::FromStr for MetricChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Self::Mi, Self::Ncc, Self::MeanSquares, Self::Cc, Self::SquaredCc]
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| format!("unknown metric `{text}` (mi, ncc, meansquares, cc, squared-cc)"))
    }
}

/// The plan of `pedinorm register`: the default plan (`antsRegistrationSyN.sh`'s stages) cut
/// to the transform model, with `metric` as the affine metric of rigid/affine and the
/// deformable metric of syn (whose affine stage keeps mutual information). A metric that does
/// not fit the model is refused with the rule.
pub fn pairwise_plan(
    model: TransformModel,
    metric: Option<MetricChoice>,
    fixed_mask: Option<Image<f32>>,
    moving_mask: Option<Image<f32>>,
) -> Result<RegistrationPlan, String> {
    let mutual_information = || Arc::new(MattesMi { bins: 32, sampling_fraction: 0.25, seed: 1 });
    let affine_metric: Arc<dyn Metric> = match (model, metric) {
        (TransformModel::Syn, _) | (_, None | Some(MetricChoice::Mi)) => mutual_information(),
        (_, Some(MetricChoice::Ncc)) => Arc::new(Ncc),
        (_, Some(MetricChoice::MeanSquares)) => Arc::new(MeanSquares),
        (_, Some(other)) => {
            return Err(format!("metric {}: a deformable metric, use it with transform syn", other.name()));
        }
    };
    let mut plan = RegistrationPlan { fixed_mask, moving_mask, ..RegistrationPlan::default() };
    if let Some(stage) = plan.affine.as_mut() {
        stage.kind = if model == TransformModel::Rigid { AffineKind::Rigid } else { AffineKind::Affine };
        stage.metric = affine_metric;
    }
    if model != TransformModel::Syn {
        plan.deformable = None;
        return Ok(plan);
    }
    let deformable_metric: Arc<dyn Metric> = match metric {
        None | Some(MetricChoice::SquaredCc) => Arc::new(SquaredLocalCc { radius: 2 }),
        Some(MetricChoice::Cc) => Arc::new(LocalCc { radius: 2 }),
        Some(MetricChoice::Mi) => mutual_information(),
        Some(other) => {
            return Err(format!(
                "metric {}: an affine metric, use squared-cc, cc or mi with transform syn",
                other.name()
            ));
        }
    };
    if let Some(stage) = plan.deformable.as_mut() {
        stage.metric = deformable_metric;
    }
    Ok(plan)
}

/// Why a registration's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationWriteError {
    /// A transform file (names the file).
    #[error(transparent)]
    Transform(#[from] TransformIoError),
    /// The warped image (names the file).
    #[error(transparent)]
    Image(#[from] NiftiIoError),
}

/// The files of a registration under `prefix` (a folder must end with `/`), as
/// `antsRegistration` names them.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationFiles {
    /// `PREFIXaffine.txt`: ITK text affine, LPS, fixed → moving.
    pub affine: PathBuf,
    /// `PREFIXwarp.nii.gz`: the forward displacement field, with a deformable stage.
    pub warp: Option<PathBuf>,
    /// `PREFIXinverse_warp.nii.gz`: the inverse field, with a deformable stage.
    pub inverse_warp: Option<PathBuf>,
    /// `PREFIXwarped.nii.gz`: the moving image on the fixed grid, when one was given.
    pub warped: Option<PathBuf>,
}

/// Writes a registration's `affine`, its forward and inverse `fields` (with a deformable
/// stage) and `warped` (the moving image resampled on the fixed grid, when given) under
/// `prefix`; returns the files written.
pub fn write_registration(
    prefix: &str,
    affine: &AffineTransform,
    fields: Option<(&DisplacementField, &DisplacementField)>,
    warped: Option<&Image<f32>>,
) -> Result<RegistrationFiles, RegistrationWriteError> {
    let path = |suffix: &str| PathBuf::from(format!("{prefix}{suffix}"));
    let files = RegistrationFiles {
        affine: path("affine.txt"),
        warp: fields.map(|_| path("warp.nii.gz")),
        inverse_warp: fields.map(|_| path("inverse_warp.nii.gz")),
        warped: warped.map(|_| path("warped.nii.gz")),
    };
    write_affine(&files.affine, affine)?;
    if let (Some((forward, inverse)), Some(warp), Some(inverse_warp)) =
        (fields, &files.warp, &files.inverse_warp)
    {
        write_field(warp, forward)?;
        write_field(inverse_warp, inverse)?;
    }
    if let (Some(image), Some(file)) = (warped, &files.warped) {
        write_image(file, image, VoxelType::F32)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for metric in [
            MetricChoice::Mi,
            MetricChoice::Ncc,
            MetricChoice::MeanSquares,
            MetricChoice::Cc,
            MetricChoice::SquaredCc,
        ] {
            assert_eq!(metric.name().parse::<MetricChoice>(), Ok(metric));
        }
        assert!("mutual".parse::<MetricChoice>().is_err());
        assert_eq!("syn".parse::<TransformModel>(), Ok(TransformModel::Syn));
        assert!("bspline".parse::<TransformModel>().is_err());
    }

    #[test]
    fn plans_follow_the_model_and_refuse_misplaced_metrics() {
        let rigid = pairwise_plan(TransformModel::Rigid, Some(MetricChoice::Ncc), None, None).unwrap();
        assert_eq!(rigid.affine.as_ref().unwrap().kind, AffineKind::Rigid);
        assert!(rigid.deformable.is_none());
        let syn = pairwise_plan(TransformModel::Syn, None, None, None).unwrap();
        assert!(syn.deformable.is_some());
        let error = pairwise_plan(TransformModel::Affine, Some(MetricChoice::Cc), None, None).unwrap_err();
        assert!(error.contains("metric cc") && error.contains("syn"), "{error}");
        let error = pairwise_plan(TransformModel::Syn, Some(MetricChoice::Ncc), None, None).unwrap_err();
        assert!(error.contains("metric ncc"), "{error}");
    }
}
