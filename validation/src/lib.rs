//! Synthetic paediatric cohort with known ground truth, for tests, the demo and validation.
//!
//! Everything here is **synthetic**: an adult base brain (the MNI152 2009 T1 with its tissue
//! maps, or a procedural phantom) is shrunk along a brain-growth curve, given an age-dependent
//! T1 grey/white contrast, an individual smooth diffeomorphic warp, a head pose, optional
//! abnormalities (focal lesions, focal atrophy, enlarged ventricles), a bias field and Rician
//! noise. Every step is recorded as ground truth. Pure compute, no I/O; deterministic from a
//! seed at any thread count.
//!
//! ```
//! use pedinorm_registration::Grid;
//! use pedinorm_validation::{BaseBrain, Sex, SubjectSpec, generate_subject};
//!
//! let grid = Grid::axis_aligned([36, 42, 32], [4.0; 3], [-70.0, -82.0, -62.0]).unwrap();
//! let base = BaseBrain::phantom(&grid);
//! let mut spec = SubjectSpec::normal(0.3, Sex::Female, 7);
//! spec.resolution_mm = 4.0;
//! let subject = generate_subject(&base, &spec).unwrap();
//! assert_eq!(subject.image.grid().dims(), subject.brain_mask.grid().dims());
//! ```

pub mod abnormality;
pub mod base;
pub mod bias;
pub mod cohort;
pub mod contrast;
pub mod disease_classes;
pub mod growth;
pub mod phantom_database;
pub mod rescan;
pub mod rng;
pub mod scoring;
pub mod site;
pub mod subject;
pub mod variability;
pub mod warp;

pub use abnormality::{Abnormality, LesionTissue, SubjectKind};
pub use base::BaseBrain;
pub use cohort::{AgeSpec, CohortMember, CohortSpec, base_of_subject, cohort_plan, generate_cohort};
pub use contrast::TissueIntensities;
pub use growth::Sex;
pub use rescan::Rescan;
pub use site::Site;
pub use subject::{
    Generator, GeneratorOptions, IndividualAnatomy, SubjectSpec, SyntheticSubject, Truth, generate_subject,
    resampled_grid,
};

/// Why a synthetic subject or cohort cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The base brain images are unusable.
    #[error("base brain: {field}: {rule}")]
    InvalidBase {
        /// The offending image or property.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// A parameter of a subject or cohort is out of range.
    #[error("synthetic subject specification: {field}: {rule}")]
    InvalidSpec {
        /// The offending parameter.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// No place in the base brain suits the requested abnormality.
    #[error("cannot place the abnormality: {0}")]
    NoLocation(String),
}
