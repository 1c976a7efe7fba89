//! Derived DICOM series: a z-map on the case's own grid written as an MR series
//! (`DERIVED\SECONDARY`) that joins the original study in the PACS, so radiologists open it
//! in their viewer next to the images it was computed from. The series itself is built by
//! `dicom_results::zmap` through the one series writer, whose voxel order keeps the case's grid.
//!
//! Patient and study attributes are copied from the PACS's own QIDO-RS answer for the study
//! (`formats::dicom_common::StudyContext`) and go straight back to that PACS: they are held in
//! memory only, never stored or logged.

use crate::dicom_results::zmap::{ZMAP_SERIES_NUMBER, zmap_series};
use crate::formats::dicom_common::StudyContext;
use crate::formats::dicom_write::{DicomWriteError, EncodedSeries, UidSource};
use pedinorm_registration::Image;
use serde_json::Value;

/// Errors while building the series.
#[derive(Debug, thiserror::Error)]
pub enum DerivedError {
    /// The study attributes from the PACS lack a required field.
    #[error("the PACS answer for the study lacks {0}")]
    MissingAttribute(&'static str),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] DicomWriteError),
}

/// Builds the derived series of `image` (a z-map, RAS+ grid) for the study described by the
/// PACS's QIDO-RS answer `study`, one Part 10 object per slice.
pub fn derived_series(
    image: &Image<f32>,
    study: &Value,
    description: &str,
) -> Result<EncodedSeries, DerivedError> {
    let study = StudyContext::from_qido(study).ok_or(DerivedError::MissingAttribute("StudyInstanceUID"))?;
    Ok(zmap_series(image, &study, description, ZMAP_SERIES_NUMBER, UidSource::Random)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use ndarray::Array3;
    use pedinorm_registration::Grid;

    /// SeriesInstanceUID of an encoded object.
    fn series_uid_of(bytes: &[u8]) -> String {
        let object = dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(std::io::Cursor::new(bytes))
            .unwrap();
        object
            .element(tags::SERIES_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn derived_series_round_trips_through_the_dicom_loader() {
        let grid = Grid::axis_aligned([4, 3, 2], [1.0, 2.0, 3.0], [10.0, -5.0, 7.0]).unwrap();
        let data =
            Array3::from_shape_fn((4, 3, 2), |(i, j, k)| (i as f32) - (j as f32) * 0.5 + k as f32 * 2.0);
        let image = Image::new(data, grid).unwrap();
        let study = serde_json::json!({
            "0020000D": { "vr": "UI", "Value": ["1.2.3.4"] },
            "00100010": { "vr": "PN", "Value": [{ "Alphabetic": "Test^Patient" }] },
        });
        let series = derived_series(&image, &study, "z").unwrap();
        let objects = &series.objects;
        assert_eq!(objects.len(), 2);
        assert_eq!(series_uid_of(&objects[0]), series.series_uid);
        assert_eq!(series_uid_of(&objects[1]), series.series_uid);
        let loaded = crate::formats::dicom::load_series_from_memory(
            objects
                .iter()
                .enumerate()
                .map(|(i, o)| (std::path::PathBuf::from(format!("{i}.dcm")), o.clone()))
                .collect(),
        )
        .unwrap();
        assert_eq!(loaded.len(), 1);
        let volume = &loaded[0].image;
        assert_eq!(volume.grid().dims(), [4, 3, 2]);
        for (a, b) in volume.grid().affine().iter().zip(image.grid().affine().iter()) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        for ((i, j, k), value) in image.data().indexed_iter() {
            assert!((volume.data()[[i, j, k]] - value).abs() < 0.006, "{i} {j} {k}");
        }
        assert!(derived_series(&image, &serde_json::json!({}), "z").is_err());
    }
}
