//! Why DICOM input could not be turned into volumes.

use std::path::PathBuf;

/// Why DICOM input could not be turned into volumes. Every variant names the file (or zip
/// entry, as `archive.zip/entry`) and, where one applies, the DICOM field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    /// A file or folder could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A zip archive could not be read.
    #[error("{path}: cannot read zip archive: {message}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A zip entry names a path outside the archive (`..` or absolute): refused, not skipped.
    #[error("{archive}: entry {entry:?} escapes the archive (absolute path or `..`)")]
    ZipTraversal {
        /// The archive.
        archive: PathBuf,
        /// The entry name as stored.
        entry: String,
    },
    /// A file is not a DICOM Part-10 file or could not be parsed.
    #[error("{file}: not a readable DICOM file: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field needed to build a volume is absent.
    #[error("{file}: field {field} is missing (needed to {purpose})")]
    MissingField {
        /// The file.
        file: PathBuf,
        /// The DICOM keyword.
        field: &'static str,
        /// What it is needed for.
        purpose: &'static str,
    },
    /// A field has a value that breaks a rule.
    #[error("{file}: field {field}: {rule}")]
    InvalidField {
        /// The file.
        file: PathBuf,
        /// The DICOM keyword.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The slices of a series do not form one regular volume.
    #[error("series {series}: {file}: {field}: {rule}")]
    Geometry {
        /// Series number and description (never patient data).
        series: String,
        /// The first file where the rule is broken.
        file: PathBuf,
        /// The DICOM keyword the rule is about.
        field: &'static str,
        /// The rule and the values that break it.
        rule: String,
    },
    /// Pixel data could not be decoded.
    #[error("{file}: cannot decode PixelData (transfer syntax {transfer_syntax}): {message}")]
    Pixels {
        /// The file.
        file: PathBuf,
        /// Transfer syntax UID.
        transfer_syntax: String,
        /// The decoder's message.
        message: String,
    },
    /// No DICOM image was found in the inputs.
    #[error("no DICOM image found in {inputs}")]
    NothingFound {
        /// The inputs, comma-separated.
        inputs: String,
    },
}

impl DicomError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DicomError::Io { path: path.into(), source }
    }
}
