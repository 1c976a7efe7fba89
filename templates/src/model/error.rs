//! Why mapping a subject, accumulating or calibrating fails.

use crate::stats::StatsError;

/// Why a step of the normative model failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A subject could not be processed.
    #[error("subject {subject}: {stage}: {message}")]
    Subject {
        /// Pseudonym or file of the subject.
        subject: String,
        /// Processing stage.
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The cohort or configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// A statistics update failed.
    #[error("statistics: {0}")]
    Stats(#[from] StatsError),
}
