//! Similar confirmed cases: a case's deviation result reduced to a [`Signature`] (`signature.rs`),
//! signatures ranked by a standardized cosine in a [`SignatureIndex`] (`index.rs`, where the
//! choice of similarity is argued), and leave-one-out retrieval figures against random and
//! age-only baselines (`retrieval.rs`). No I/O: the root crate reads results and keeps the index.

pub mod index;
pub mod retrieval;
pub mod signature;

pub use index::{Match, SignatureIndex};
pub use retrieval::{RetrievalFigures, leave_one_out};
pub use signature::{ClusterKind, ClusterPoint, Signature, SignatureError};
