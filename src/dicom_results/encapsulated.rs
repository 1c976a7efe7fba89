//! The one-page report as an Encapsulated PDF object, so that the PACS shows it in the study.

use super::ResultsError;
use super::source::SourceSeries;
use crate::formats::dicom_common::{
    DateTime, encode_part10, put_equipment, put_sequence, put_series, put_sop_common, put_text,
};
use dicom_core::smallvec::SmallVec;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

/// SeriesNumber of the encapsulated report.
pub const SERIES_NUMBER: u32 = 9930;

/// `pdf` as an Encapsulated PDF object in the source's study.
pub fn encapsulated_pdf(
    source: &SourceSeries,
    pdf: &[u8],
    series_uid: &str,
    instance_uid: &str,
    when: &DateTime,
) -> Result<Vec<u8>, ResultsError> {
    let mut object = InMemDicomObject::new_empty();
    put_sop_common(&mut object, uids::ENCAPSULATED_PDF_STORAGE, instance_uid, when);
    source.study.put_into(&mut object);
    put_series(&mut object, "DOC", series_uid, SERIES_NUMBER, "pedinorm report (PDF)");
    put_equipment(&mut object);
    put_text(&mut object, tags::CONVERSION_TYPE, VR::CS, "WSD");
    put_text(&mut object, tags::INSTANCE_NUMBER, VR::IS, "1");
    put_text(&mut object, tags::ACQUISITION_DATE_TIME, VR::DT, format!("{}{}", when.date, when.time));
    // The page shows the case's pseudonym, age and sex as text.
    put_text(&mut object, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
    put_text(&mut object, tags::DOCUMENT_TITLE, VR::ST, "pedinorm deviation report");
    put_sequence(&mut object, tags::CONCEPT_NAME_CODE_SEQUENCE, Vec::new());
    put_text(&mut object, tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT, VR::LO, "application/pdf");
    let mut bytes = pdf.to_vec();
    // An OB value has even length; the document's length is stated separately.
    object.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT_LENGTH,
        VR::UL,
        PrimitiveValue::from(bytes.len() as u32),
    ));
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    object.put(DataElement::new(
        tags::ENCAPSULATED_DOCUMENT,
        VR::OB,
        PrimitiveValue::U8(SmallVec::from_vec(bytes)),
    ));
    Ok(encode_part10(object, uids::ENCAPSULATED_PDF_STORAGE, "encapsulated PDF report")?)
}
