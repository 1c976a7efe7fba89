//! Abnormalities a synthetic case can carry, each with a ground-truth region.

use serde::{Deserialize, Serialize};

/// The tissue a focal lesion is centred in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LesionTissue {
    /// Deep white matter.
    WhiteMatter,
    /// Cortical grey matter.
    GreyMatter,
}

/// An abnormality added to a synthetic subject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Abnormality {
    /// A focal lesion: a roughly spherical region (irregular outline) whose intensity is the
    /// local intensity times `1 + contrast` (positive: hyperintense, negative: hypointense).
    Lesion {
        /// Tissue at the lesion centre.
        tissue: LesionTissue,
        /// Mean radius in the subject's space (mm).
        radius_mm: f64,
        /// Intensity change as a fraction of the local intensity, in (−0.95, 3].
        contrast: f64,
    },
    /// Focal cortical atrophy: a local shrinking warp centred in grey matter. Tissue within
    /// `radius_mm` of the centre loses up to `volume_loss` of its volume (at the centre); the
    /// surrounding shell stretches to keep the map a diffeomorphism.
    Atrophy {
        /// Radius of the shrinking region in the subject's space (mm).
        radius_mm: f64,
        /// Fraction of volume lost at the centre, in (0, 0.9).
        volume_loss: f64,
    },
    /// Enlarged lateral ventricles: a warp pushing the ventricle walls outward by up to
    /// `dilation_mm`, compressing the surrounding tissue.
    EnlargedVentricles {
        /// Largest outward displacement of the ventricle walls (mm), in (0, 15].
        dilation_mm: f64,
    },
}

/// What a synthetic subject is: a normal, or a case with one kind of abnormality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubjectKind {
    /// No abnormality.
    Normal,
    /// Focal lesion brighter than its surroundings.
    HyperintenseLesion,
    /// Focal lesion darker than its surroundings.
    HypointenseLesion,
    /// Focal atrophy.
    FocalAtrophy,
    /// Enlarged ventricles.
    EnlargedVentricles,
}

impl SubjectKind {
    /// Short name used in `cohort.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Normal => "normal",
            SubjectKind::HyperintenseLesion => "lesion_hyper",
            SubjectKind::HypointenseLesion => "lesion_hypo",
            SubjectKind::FocalAtrophy => "atrophy",
            SubjectKind::EnlargedVentricles => "ventricles",
        }
    }

    /// Whether the subject carries an abnormality.
    pub fn is_case(self) -> bool {
        self != SubjectKind::Normal
    }
}

impl std::fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Abnormality {
    /// The kind of subject this abnormality makes.
    pub fn kind(&self) -> SubjectKind {
        match self {
            Abnormality::Lesion { contrast, .. } if *contrast >= 0.0 => SubjectKind::HyperintenseLesion,
            Abnormality::Lesion { .. } => SubjectKind::HypointenseLesion,
            Abnormality::Atrophy { .. } => SubjectKind::FocalAtrophy,
            Abnormality::EnlargedVentricles { .. } => SubjectKind::EnlargedVentricles,
        }
    }

    /// Checks the parameters; returns the offending field and rule.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match *self {
            Abnormality::Lesion { radius_mm, contrast, .. } => {
                if !(radius_mm.is_finite() && radius_mm > 0.0 && radius_mm <= 40.0) {
                    return Err(("radius_mm", format!("{radius_mm} must be in (0, 40] mm")));
                }
                if !(contrast.is_finite() && contrast > -0.95 && contrast <= 3.0 && contrast != 0.0) {
                    return Err(("contrast", format!("{contrast} must be non-zero and in (-0.95, 3]")));
                }
            }
            Abnormality::Atrophy { radius_mm, volume_loss } => {
                if !(radius_mm.is_finite() && radius_mm > 0.0 && radius_mm <= 40.0) {
                    return Err(("radius_mm", format!("{radius_mm} must be in (0, 40] mm")));
                }
                if !(volume_loss.is_finite() && volume_loss > 0.0 && volume_loss < 0.9) {
                    return Err(("volume_loss", format!("{volume_loss} must be in (0, 0.9)")));
                }
            }
            Abnormality::EnlargedVentricles { dilation_mm } => {
                if !(dilation_mm.is_finite() && dilation_mm > 0.0 && dilation_mm <= 15.0) {
                    return Err(("dilation_mm", format!("{dilation_mm} must be in (0, 15] mm")));
                }
            }
        }
        Ok(())
    }
}
