//! The series the result objects lie on and reference: the case's own DICOM series (its slice
//! geometry, frame of reference, SOP instances and study), or — for a case that did not come
//! from DICOM — the case image written as a new MR series in a new study.

use super::ResultsError;
use crate::formats::dicom::{SeriesVolume, SliceSource};
use crate::formats::dicom_common::{DateTime, StudyContext, put_equipment, put_text};
use crate::formats::dicom_write::{EncodedSeries, PixelScaling, SeriesSpec, UidSource, encode_series};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pedinorm_registration::{Grid, Image};
use std::path::Path;

/// Purpose number of the StudyInstanceUID of a new study (the series writer numbers the others
/// from 11 up).
const NEW_STUDY_PURPOSE: u64 = 10;

/// The source series of the result objects.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    /// The study every result object joins.
    pub study: StudyContext,
    /// SeriesInstanceUID of the source series.
    pub series_uid: String,
    /// FrameOfReferenceUID the results share with the source series.
    pub frame_of_reference_uid: String,
    /// The source series' voxel grid (RAS+): slice k of every result lies on slice k here.
    pub grid: Grid,
    /// The SOP instance (and frame) of each slice, slice 0 first.
    pub slices: Vec<SliceSource>,
    /// The source series itself when it was written here (a case that did not come from
    /// DICOM): it must be stored with the results for their references to resolve.
    pub written: Option<EncodedSeries>,
}

impl SourceSeries {
    /// The case's own DICOM series, in `study`. `name` names the series in errors.
    pub fn from_volume(
        volume: &SeriesVolume,
        study: StudyContext,
        name: &Path,
    ) -> Result<Self, ResultsError> {
        let invalid =
            |field: &'static str, rule: String| ResultsError::Source { path: name.to_owned(), field, rule };
        let dims = volume.image.grid().dims();
        if volume.slices.len() != dims[2] {
            return Err(invalid(
                "SOPInstanceUID",
                format!("{} slice references for {} slices", volume.slices.len(), dims[2]),
            ));
        }
        if let Some(slice) =
            volume.slices.iter().find(|s| s.sop_instance_uid.is_empty() || s.sop_class_uid.is_empty())
        {
            return Err(invalid(
                "SOPInstanceUID/SOPClassUID",
                format!("every slice's object must have both to be referenced ({slice:?})"),
            ));
        }
        if volume.frame_of_reference_uid.is_empty() {
            return Err(invalid(
                "FrameOfReferenceUID",
                "the series must have one for results to share it".into(),
            ));
        }
        if volume.series_instance_uid.is_empty() {
            return Err(invalid("SeriesInstanceUID", "the series must have one to be referenced".into()));
        }
        Ok(SourceSeries {
            study,
            series_uid: volume.series_instance_uid.clone(),
            frame_of_reference_uid: volume.frame_of_reference_uid.clone(),
            grid: volume.image.grid().clone(),
            slices: volume.slices.clone(),
            written: None,
        })
    }

    /// The series of a case read from DICOM at `path` (the same inputs `load_series` read):
    /// the study's patient and study attributes come from the first object of `volume`.
    pub fn from_case_files(path: &Path, volume: &SeriesVolume) -> Result<Self, ResultsError> {
        let first = volume.files.first().ok_or_else(|| ResultsError::Source {
            path: path.to_owned(),
            field: "files",
            rule: "the series has no object".into(),
        })?;
        let objects = crate::formats::dicom::enumerate_inputs(&[path.to_owned()]).map_err(|e| {
            ResultsError::Source { path: path.to_owned(), field: "files", rule: e.to_string() }
        })?;
        let object = objects.iter().find(|o| &o.label() == first).ok_or_else(|| ResultsError::Source {
            path: first.clone(),
            field: "files",
            rule: "the series' first object is no longer among the inputs".into(),
        })?;
        let unreadable =
            |rule: String| ResultsError::Source { path: first.clone(), field: "StudyInstanceUID", rule };
        let bytes = object.read().map_err(|e| unreadable(e.to_string()))?;
        let parsed = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .from_reader(bytes.as_slice())
            .map_err(|e| unreadable(e.to_string()))?;
        let dataset: &InMemDicomObject = &parsed;
        let study = StudyContext::from_object(dataset)
            .ok_or_else(|| unreadable("the object has no StudyInstanceUID".into()))?;
        Self::from_volume(volume, study, first)
    }

    /// The case image written as a new MR series (unsigned 16-bit over its range) in a new
    /// study: what results of a case that did not come from DICOM lie on. `pseudonym` is the
    /// new study's PatientID.
    pub fn new_study(
        image: &Image<f32>,
        pseudonym: &str,
        uids: UidSource,
        when: &DateTime,
    ) -> Result<Self, ResultsError> {
        let study = StudyContext::new_study(uids.uid(NEW_STUDY_PURPOSE), pseudonym, &when.date, &when.time);
        let mut attributes = InMemDicomObject::new_empty();
        study.put_into(&mut attributes);
        put_text(&mut attributes, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put_text(&mut attributes, tags::SERIES_DESCRIPTION, VR::LO, "case image (from NIfTI)");
        put_text(&mut attributes, tags::SERIES_NUMBER, VR::IS, "1");
        put_text(&mut attributes, tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY\\OTHER");
        put_equipment(&mut attributes);
        let spec = SeriesSpec {
            study_uid: study.study_uid.clone(),
            uids,
            scaling: PixelScaling::unsigned_full_range(image),
            attributes,
        };
        let series = encode_series(image, &spec)?;
        let slices = series
            .instance_uids
            .iter()
            .map(|uid| SliceSource {
                sop_class_uid: uids::MR_IMAGE_STORAGE.to_owned(),
                sop_instance_uid: uid.clone(),
                frame_number: None,
            })
            .collect();
        Ok(SourceSeries {
            study,
            series_uid: series.series_uid.clone(),
            frame_of_reference_uid: series.frame_of_reference_uid.clone(),
            grid: image.grid().clone(),
            slices,
            written: Some(series),
        })
    }

    /// Among the series of a study, the one whose grid is `grid` (within 0.01 mm): the series
    /// a case volume of that grid was made from.
    pub fn matching<'a>(volumes: &'a [SeriesVolume], grid: &Grid) -> Option<&'a SeriesVolume> {
        volumes.iter().find(|v| v.image.grid().dims() == grid.dims() && v.image.grid().same_as(grid, 0.01))
    }
}
