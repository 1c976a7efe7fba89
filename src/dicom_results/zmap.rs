//! A z-map as a derived MR series (`DERIVED\SECONDARY\ZMAP`, signed 16-bit, z = 0.01 × stored
//! value) on the case's grid, through the one series writer: one object per slice, in the
//! study of the case, which PACS viewers show next to the images it was computed from.

use crate::formats::dicom_common::{MANUFACTURER, StudyContext, put_text};
use crate::formats::dicom_write::{
    DicomWriteError, EncodedSeries, PixelScaling, SeriesSpec, UidSource, encode_series,
};
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pedinorm_registration::Image;

/// Stored value = z / slope.
pub const Z_SLOPE: f64 = 0.01;

/// SeriesNumber of the intensity z-map series (the log-Jacobian one is the next number).
pub const ZMAP_SERIES_NUMBER: u32 = 9901;

/// The derived series of `image` (a z-map, RAS+ grid) in `study`, numbered `number`.
pub fn zmap_series(
    image: &Image<f32>,
    study: &StudyContext,
    description: &str,
    number: u32,
    uids: UidSource,
) -> Result<EncodedSeries, DicomWriteError> {
    let mut attributes = InMemDicomObject::new_empty();
    put_text(&mut attributes, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_text(&mut attributes, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY\\ZMAP");
    put_text(
        &mut attributes,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        description.chars().take(64).collect::<String>(),
    );
    put_text(&mut attributes, tags::SERIES_NUMBER, VR::IS, number.to_string());
    put_text(&mut attributes, tags::MANUFACTURER, VR::LO, MANUFACTURER);
    put_text(
        &mut attributes,
        tags::DERIVATION_DESCRIPTION,
        VR::ST,
        "voxelwise z-score against the paediatric normative database",
    );
    // An unpaired body part: General Series then needs no Laterality.
    put_text(&mut attributes, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
    put_text(&mut attributes, tags::WINDOW_CENTER, VR::DS, "0");
    put_text(&mut attributes, tags::WINDOW_WIDTH, VR::DS, "1000");
    study.put_into(&mut attributes);
    let spec = SeriesSpec {
        study_uid: study.study_uid.clone(),
        uids,
        scaling: PixelScaling::Signed { slope: Z_SLOPE },
        attributes,
    };
    encode_series(image, &spec)
}
