//! The normative model as in-memory values: a subject mapped to its bracket's template
//! ([`mapping`], [`space`], [`differential_bias`]), mapped normals accumulated into age-node
//! statistics ([`accumulate`](mod@accumulate)), leave-one-out calibration ([`calibrate`](mod@calibrate)), the whole database
//! built, extended ([`build`]) and merged ([`merge`]) as a [`NormativeDb`] value, its
//! safeguard reference ([`reference`](mod@reference)), a case scored against it ([`score`]), the site-aware part of the model
//! ([`site`]), an atlas carried to a template ([`atlas`]), the tissue priors of a template
//! ([`tissue_priors`]) and a subject's regional volumes ([`regional`]).
//!
//! Nothing here reads or writes a file or reads the clock: the caller stores the database and
//! passes the time operations are recorded at.

pub mod accumulate;
pub mod atlas;
pub mod build;
pub mod calibrate;
pub mod case_local_volume;
pub mod case_regional;
pub mod centiles;
pub mod database;
pub mod differential_bias;
mod error;
pub mod mapping;
pub mod merge;
pub mod reference;
pub mod regional;
pub mod score;
pub mod site;
pub mod space;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod tissue_priors;

pub use accumulate::{
    BracketInput, BuildOptions, MIN_CALIBRATION_NULLS, MappedNormal, NormalSubject, accumulate,
    bracket_nodes, calibrates_on_members, map_again_if_calibrated, map_as_new_case, map_normals,
    recorded_quality, template_members_of,
};
pub use atlas::{carry_atlas, parse_label_names};
pub use build::{add_subject, assemble, assemble_with_stats};
pub use calibrate::{calibrate, calibration_normals, held_out_z, null_from_z, with_added_normal};
pub use database::{
    AtlasTable, BracketDb, BuildParameters, CalibrationRecord, Channel, ChannelCalibration, DatabaseError,
    Metadata, NormativeDb, SubjectNull, SubjectRecord, mask_indices, software,
};
pub use differential_bias::{DIFFERENTIAL_BIAS_SIGMA_MM, remove_differential_bias};
pub use error::ModelError;
pub use mapping::{JacobianRefinement, MappingParams, SubjectMaps, map_to_template};
pub use regional::{
    NativeSubject, RegionalMeasures, RegionalRow, RegionalTable, RegionalVolumes, TOTAL_MEASURES,
    measure_names, normals_table, region_key, regional_volumes, row_of,
};
pub use score::{
    AGE_MARGIN_FRACTION, AGE_MARGIN_MAX_YEARS, ClusterReport, DeviationOptions, DeviationResult,
    RegionReport, ScoreError, SdFloorReport, ThresholdReport, compute_deviation,
};
pub use space::{
    MATCH_PERCENTILES, TemplateSpace, gather, masked_correlation, recorded_similarity, scatter,
    template_mask, without_member,
};
pub use tissue_priors::{TISSUES, TissuePriors, member_tissues, template_tissues};
