//! The series the result objects lie on and reference: the case's own DICOM series (its slice
//! geometry, frame of reference, SOP instances and study), or — for a case that did not come
//! from DICOM — the case image written as a new MR series in a new study.

use super::ResultsError;
use crate::formats::dicom::{SeriesVolume, SliceSource};
use crate::formats::dicom_common::{DateTime, MANUFACTURER, StudyContext, put_equipment, put_text};
use crate::formats::dicom_write::{EncodedSeries, PixelScaling, SeriesSpec, UidSource, encode_series};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pedinorm_registration::{Grid, Image};
use std::path::Path;

/// Purpose number of the StudyInstanceUID of a new study (the series writer numbers the others
/// from 11 up).
const NEW_STUDY_PURPOSE: u64 = 10;

/// SeriesNumber of the case image written into a study that holds no series on its grid,
/// beside the result series (99xx).
pub const CASE_SERIES_NUMBER: u32 = 9900;

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
    /// The source series' image (what the fused series shows in grey).
    pub image: Image<f32>,
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
            image: volume.image.clone(),
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
        Self::new_series(image, study, ("case image (from NIfTI)", 1), uids)
    }

    /// The case image written as a new MR series of `study`, described and numbered by
    /// `(description, number)`: what results lie on when the study holds no series on the
    /// case's grid (see [`CASE_SERIES_NUMBER`]).
    pub fn new_series(
        image: &Image<f32>,
        study: StudyContext,
        (description, number): (&str, u32),
        uids: UidSource,
    ) -> Result<Self, ResultsError> {
        let mut attributes = InMemDicomObject::new_empty();
        study.put_into(&mut attributes);
        put_text(&mut attributes, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put_text(&mut attributes, tags::SERIES_DESCRIPTION, VR::LO, description);
        put_text(&mut attributes, tags::SERIES_NUMBER, VR::IS, number.to_string());
        // An unpaired body part: General Series then needs no Laterality.
        put_text(&mut attributes, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
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
            image: image.clone(),
            slices,
            written: Some(series),
        })
    }

    /// Among the objects of a study (Part 10 bytes, e.g. from WADO-RS), the MR series whose
    /// grid is `grid` (within 0.01 mm): the series a case volume of that grid was made from.
    /// Objects pedinorm wrote (Manufacturer `pedinorm`: results stored back earlier) and
    /// objects that are not MR images are never candidates; a series that does not form a
    /// volume is passed over. `study_name` names the study in errors. `None` when no series
    /// lies on the grid.
    pub fn find_in_study(
        objects: Vec<Vec<u8>>,
        grid: &Grid,
        study: &StudyContext,
        study_name: &str,
    ) -> Result<Option<Self>, ResultsError> {
        const MR_CLASSES: [&str; 3] = [
            uids::MR_IMAGE_STORAGE,
            uids::ENHANCED_MR_IMAGE_STORAGE,
            uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
        ];
        let mut series: std::collections::BTreeMap<String, Vec<(std::path::PathBuf, Vec<u8>)>> =
            Default::default();
        for (index, bytes) in objects.into_iter().enumerate() {
            let Ok(object) = dicom_object::OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .from_reader(bytes.as_slice())
            else {
                continue;
            };
            let text = |tag| {
                object
                    .get(tag)
                    .and_then(|e| e.to_str().ok())
                    .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
                    .unwrap_or_default()
            };
            if !MR_CLASSES.contains(&text(tags::SOP_CLASS_UID).as_str())
                || text(tags::MANUFACTURER) == MANUFACTURER
            {
                continue;
            }
            let label = std::path::PathBuf::from(format!("{study_name}/object-{index}"));
            series.entry(text(tags::SERIES_INSTANCE_UID)).or_default().push((label, bytes));
        }
        let on_grid = |volume: &SeriesVolume| {
            volume.image.grid().dims() == grid.dims() && volume.image.grid().same_as(grid, 0.01)
        };
        for objects in series.into_values() {
            let Ok(volumes) = crate::formats::dicom::load_series_from_memory(objects) else { continue };
            if let Some(volume) = volumes.iter().find(|v| on_grid(v)) {
                return Self::from_volume(volume, study.clone(), Path::new(study_name)).map(Some);
            }
        }
        Ok(None)
    }
}
