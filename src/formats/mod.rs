//! File formats at the boundary of pedinorm: NIfTI images, ITK/ANTs transform files, DICOM
//! series (reading, and the one series writer), PNG pictures. Geometry conversions between pedinorm's RAS+
//! world and the LPS conventions of DICOM and ITK happen here and nowhere else.

pub mod dicom;
pub mod dicom_common;
pub mod dicom_write;
pub mod lps;
pub mod measures;
pub mod nifti;
pub mod orientation;
pub mod png;
pub mod transform;
