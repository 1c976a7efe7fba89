//! Writing a synthetic cohort to disk: NIfTI images and truth, a `cohort.csv` index, and on
//! request a DICOM series per subject (MR, classic single-frame, explicit VR little endian)
//! so that the whole path from DICOM can be exercised. Everything written is synthetic: names
//! and identifiers are made up (`SYNTHETIC^0001`), UIDs derive from the seed.

use crate::atomic::write_bytes;
use crate::formats::dicom_write::{DicomWriteError, PixelScaling, SeriesSpec, UidSource, write_series};
use crate::formats::nifti::{NiftiIoError, VoxelType, read_image, write_image};
use crate::formats::transform::{TransformIoError, write_field};
use dicom_core::smallvec::SmallVec;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pedinorm_registration::Image;
use pedinorm_validation::rng::derive_seed;
use pedinorm_validation::{BaseBrain, Sex, SynthError, SyntheticSubject};
use std::path::{Path, PathBuf};

/// The base-brain files expected in the base directory.
pub const BASE_FILES: [&str; 3] = ["t1.nii.gz", "gm.nii.gz", "wm.nii.gz"];

/// Why a synthetic cohort could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum SynthIoError {
    /// A base-brain file is missing.
    #[error(
        "{path}: base brain file not found; run scripts/setup.sh to fetch the MNI152 2009 T1 and \
         tissue maps into .data/mni, pass --base-dir, or use --phantom"
    )]
    MissingBase {
        /// The missing file.
        path: PathBuf,
    },
    /// A NIfTI file could not be read or written.
    #[error(transparent)]
    Nifti(#[from] NiftiIoError),
    /// A displacement field could not be written.
    #[error(transparent)]
    Transform(#[from] TransformIoError),
    /// The generator refused its input.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// The DICOM series could not be built or written.
    #[error(transparent)]
    Dicom(#[from] DicomWriteError),
    /// The phantom's grid is invalid.
    #[error("phantom grid: {0}")]
    Grid(#[from] pedinorm_registration::GridError),
    /// A plain file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl From<std::io::Error> for SynthIoError {
    fn from(source: std::io::Error) -> Self {
        SynthIoError::Io { path: PathBuf::new(), source }
    }
}

/// Loads the base brain (`t1.nii.gz`, `gm.nii.gz`, `wm.nii.gz`) from `dir`.
pub fn load_base(dir: &Path) -> Result<BaseBrain, SynthIoError> {
    let paths: Vec<PathBuf> = BASE_FILES.iter().map(|name| dir.join(name)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        return Err(SynthIoError::MissingBase { path: missing.clone() });
    }
    let t1 = read_image(&paths[0])?;
    let gm = read_image(&paths[1])?;
    let wm = read_image(&paths[2])?;
    Ok(BaseBrain::new(t1, gm, wm)?)
}

/// What to write besides the image and brain mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Also write the truth deformation fields (ANTs convention displacement fields).
    pub warps: bool,
    /// Also write a DICOM series.
    pub dicom: bool,
    /// Put a synthetic Italian codice fiscale in OtherPatientIDsSequence of the DICOM series.
    pub national_id: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self { warps: true, dicom: false, national_id: false }
    }
}

/// The files written for one subject (relative to the cohort folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFiles {
    /// The T1-weighted image.
    pub image: PathBuf,
    /// Brain mask.
    pub mask: PathBuf,
    /// Tissue labels (0 background, 1 CSF, 2 GM, 3 WM).
    pub labels: PathBuf,
    /// Ground-truth region of the abnormality in subject space.
    pub lesion: Option<PathBuf>,
    /// Ground-truth region of the abnormality in base space.
    pub lesion_base: Option<PathBuf>,
    /// Subject → base displacement field (fixed = subject).
    pub warp_to_base: Option<PathBuf>,
    /// Base → subject displacement field (fixed = base).
    pub warp_from_base: Option<PathBuf>,
    /// Folder of the DICOM series.
    pub dicom: Option<PathBuf>,
}

/// Writes one subject into `dir` as `<id>.nii.gz`, `<id>_mask.nii.gz`, `<id>_labels.nii.gz`,
/// `<id>_lesion.nii.gz` and `<id>_lesion_base.nii.gz` (cases), `<id>_to_base_warp.nii.gz` and
/// `<id>_from_base_warp.nii.gz` (truth deformations), and `<id>_dicom/` on request.
/// `index` is the subject's 1-based number in the cohort (for the synthetic patient name).
pub fn write_subject(
    dir: &Path,
    subject: &SyntheticSubject,
    index: usize,
    seed: u64,
    options: WriteOptions,
) -> Result<SubjectFiles, SynthIoError> {
    let id = &subject.id;
    let relative = |suffix: &str| PathBuf::from(format!("{id}{suffix}"));
    let files = SubjectFiles {
        image: relative(".nii.gz"),
        mask: relative("_mask.nii.gz"),
        labels: relative("_labels.nii.gz"),
        lesion: subject.truth.lesion_mask.as_ref().map(|_| relative("_lesion.nii.gz")),
        lesion_base: subject.truth.lesion_mask_base.as_ref().map(|_| relative("_lesion_base.nii.gz")),
        warp_to_base: options.warps.then(|| relative("_to_base_warp.nii.gz")),
        warp_from_base: options.warps.then(|| relative("_from_base_warp.nii.gz")),
        dicom: options.dicom.then(|| relative("_dicom")),
    };
    write_image(&dir.join(&files.image), &subject.image, VoxelType::F32)?;
    write_image(&dir.join(&files.mask), &subject.brain_mask, VoxelType::U8)?;
    write_image(&dir.join(&files.labels), &subject.truth.labels, VoxelType::U8)?;
    if let (Some(path), Some(mask)) = (&files.lesion, &subject.truth.lesion_mask) {
        write_image(&dir.join(path), mask, VoxelType::U8)?;
    }
    if let (Some(path), Some(mask)) = (&files.lesion_base, &subject.truth.lesion_mask_base) {
        write_image(&dir.join(path), mask, VoxelType::U8)?;
    }
    if let Some(path) = &files.warp_to_base {
        write_field(&dir.join(path), &subject.truth.deformation)?;
    }
    if let Some(path) = &files.warp_from_base {
        write_field(&dir.join(path), &subject.truth.inverse_deformation)?;
    }
    if let Some(path) = &files.dicom {
        let identity = DicomIdentity::synthetic(index, seed, subject, options.national_id);
        write_dicom_series(&dir.join(path), &subject.image, &identity)?;
    }
    Ok(files)
}

/// The header line of `cohort.csv`.
pub const CSV_HEADER: &str = "id,path,age_years,sex,kind,mask,labels,lesion,lesion_base,warp_to_base,warp_from_base,dicom,brain_volume_ml,lesion_volume_ml,centre_x,centre_y,centre_z,site";

/// One `cohort.csv` line (without newline) for a subject and its files.
pub fn csv_row(subject: &SyntheticSubject, files: &SubjectFiles) -> String {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let lesion_volume = subject
        .truth
        .lesion_mask
        .as_ref()
        .map(|mask| {
            let voxel_ml = mask.grid().linear().determinant().abs() / 1000.0;
            let count = mask.as_slice().iter().filter(|&&v| v > 0.5).count();
            format!("{:.3}", count as f64 * voxel_ml)
        })
        .unwrap_or_default();
    let centre = subject
        .truth
        .abnormality_centre_mm
        .map(|c| format!("{:.2},{:.2},{:.2}", c[0], c[1], c[2]))
        .unwrap_or_else(|| ",,".into());
    format!(
        "{},{},{:.4},{},{},{},{},{},{},{},{},{},{:.2},{},{},{}",
        subject.id,
        files.image.display(),
        subject.age_years,
        subject.sex.code(),
        subject.truth.kind.as_str(),
        files.mask.display(),
        files.labels.display(),
        path(&files.lesion),
        path(&files.lesion_base),
        path(&files.warp_to_base),
        path(&files.warp_from_base),
        path(&files.dicom),
        subject.truth.brain_volume_ml,
        lesion_volume,
        centre,
        subject.site
    )
}

/// Writes `cohort.csv` atomically from its rows.
pub fn write_cohort_csv(path: &Path, rows: &[String]) -> Result<(), SynthIoError> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    write_bytes(path, text.as_bytes()).map_err(|source| SynthIoError::Io { path: path.to_owned(), source })
}

/// Writes the base brain on the cohort's grid (`base_t1.nii.gz`): the space in which
/// `*_lesion_base` masks and `*_from_base_warp` fields are defined.
pub fn write_base_reference(dir: &Path, reference: &Image<f32>) -> Result<PathBuf, SynthIoError> {
    let path = PathBuf::from("base_t1.nii.gz");
    write_image(&dir.join(&path), reference, VoxelType::F32)?;
    Ok(path)
}

/// Who a synthetic DICOM series claims to be: all made up.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomIdentity {
    /// `SYNTHETIC^0001`.
    pub patient_name: String,
    /// `SYN0001`.
    pub patient_id: String,
    /// Sex.
    pub sex: Sex,
    /// Age in years.
    pub age_years: f64,
    /// Study date (synthetic).
    pub study_date: time::Date,
    /// Birth date consistent with the age and study date (synthetic).
    pub birth_date: time::Date,
    /// A synthetic codice fiscale for OtherPatientIDsSequence, when requested.
    pub national_id: Option<String>,
    /// Seed for the UIDs.
    pub seed: u64,
}

impl DicomIdentity {
    /// The synthetic identity of cohort member `index` (1-based).
    pub fn synthetic(index: usize, seed: u64, subject: &SyntheticSubject, national_id: bool) -> Self {
        let base = time::macros::date!(2024 - 01 - 08);
        let study_date = base + time::Duration::days((derive_seed(seed, 1) % 700) as i64);
        let birth_date = study_date - time::Duration::days((subject.age_years * 365.25).round() as i64);
        let national_id =
            national_id.then(|| synthetic_codice_fiscale(derive_seed(seed, 2), subject.sex, birth_date));
        Self {
            patient_name: format!("SYNTHETIC^{index:04}"),
            patient_id: format!("SYN{index:04}"),
            sex: subject.sex,
            age_years: subject.age_years,
            study_date,
            birth_date,
            national_id,
            seed,
        }
    }
}

/// DICOM PatientAge (`nnnD`, `nnnW`, `nnnM` or `nnnY`): weeks under 4 weeks... days under a
/// month, months under 2 years, years otherwise.
pub fn patient_age_string(age_years: f64) -> String {
    let days = (age_years * 365.25).floor().max(0.0);
    if days < 28.0 {
        format!("{:03}D", days as u32)
    } else if age_years < 2.0 {
        format!("{:03}M", (age_years * 12.0).floor() as u32)
    } else {
        format!("{:03}Y", age_years.floor() as u32)
    }
}

/// Character values at odd (1st, 3rd, …) positions in the codice fiscale check algorithm
/// (digits 0–9 share the values of letters A–J).
const ODD_VALUES: [u32; 26] =
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];

/// The check character of an Italian codice fiscale from its first 15 characters (public
/// algorithm: odd positions through a table, even positions by alphabet/digit value, sum mod
/// 26 as a letter). `None` when the input is not 15 ASCII letters/digits.
pub fn codice_fiscale_check_char(first15: &str) -> Option<char> {
    let bytes = first15.as_bytes();
    if bytes.len() != 15 || !bytes.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = bytes
        .iter()
        .enumerate()
        .map(|(position, &b)| {
            let index = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') };
            if position % 2 == 0 { ODD_VALUES[index as usize] } else { index }
        })
        .sum();
    Some(char::from(b'A' + (sum % 26) as u8))
}

/// A synthetic codice fiscale: random consonant name codes, the birth date and sex encoded as
/// the real format does, a made-up place code, and a valid check character.
pub fn synthetic_codice_fiscale(seed: u64, sex: Sex, birth: time::Date) -> String {
    const CONSONANTS: &[u8] = b"BCDFGHLMNPRSTVZ";
    const MONTHS: &[u8] = b"ABCDEHLMPRST";
    let mut state = seed;
    let mut next = |n: u64| {
        state = derive_seed(state, 7);
        (state % n) as usize
    };
    let mut code = String::with_capacity(16);
    for _ in 0..6 {
        code.push(char::from(CONSONANTS[next(CONSONANTS.len() as u64)]));
    }
    code.push_str(&format!("{:02}", birth.year().rem_euclid(100)));
    code.push(char::from(MONTHS[usize::from(u8::from(birth.month())) - 1]));
    let day = u32::from(birth.day()) + if sex == Sex::Female { 40 } else { 0 };
    code.push_str(&format!("{day:02}"));
    code.push(char::from(b'A' + next(12) as u8));
    code.push_str(&format!("{:03}", next(1000)));
    let check = codice_fiscale_check_char(&code).expect("15 upper-case letters and digits");
    code.push(check);
    code
}

fn strings(values: &[String]) -> PrimitiveValue {
    PrimitiveValue::Strs(SmallVec::from_vec(values.to_vec()))
}

/// Purpose number of the seeded StudyInstanceUID (the series writer numbers the others).
const STUDY_UID_PURPOSE: u64 = 10;

/// Writes `image` as a classic single-frame MR series into `dir` (`IM0001.dcm`, …) with the
/// synthetic `identity`, through the one series writer ([`crate::formats::dicom_write`]):
/// unsigned 16-bit pixels spanning the image's range, UIDs derived from the identity's seed.
pub fn write_dicom_series(
    dir: &Path,
    image: &Image<f32>,
    identity: &DicomIdentity,
) -> Result<Vec<PathBuf>, SynthIoError> {
    let uids = UidSource::Seeded(identity.seed);
    let spec = SeriesSpec {
        study_uid: uids.uid(STUDY_UID_PURPOSE),
        uids,
        scaling: PixelScaling::unsigned_full_range(image),
        attributes: synthetic_attributes(identity),
    };
    Ok(write_series(dir, image, &spec)?)
}

/// The patient, study and acquisition attributes of a synthetic series (all made up).
fn synthetic_attributes(identity: &DicomIdentity) -> InMemDicomObject {
    let date = |d: time::Date| format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day());
    let mut object = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| {
        object.put(DataElement::new(tag, vr, value));
    };
    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100".into());
    put(tags::IMAGE_TYPE, VR::CS, strings(&["ORIGINAL".into(), "PRIMARY".into(), "M".into()]));
    put(tags::STUDY_DATE, VR::DA, date(identity.study_date).into());
    put(tags::SERIES_DATE, VR::DA, date(identity.study_date).into());
    put(tags::STUDY_TIME, VR::TM, "100000".into());
    put(tags::MANUFACTURER, VR::LO, "SYNTHETIC".into());
    put(tags::MANUFACTURER_MODEL_NAME, VR::LO, "pedinorm synth".into());
    put(tags::STUDY_DESCRIPTION, VR::LO, "SYNTHETIC BRAIN".into());
    put(tags::SERIES_DESCRIPTION, VR::LO, "T1w_synthetic".into());
    put(tags::PATIENT_NAME, VR::PN, identity.patient_name.as_str().into());
    put(tags::PATIENT_ID, VR::LO, identity.patient_id.as_str().into());
    put(tags::PATIENT_BIRTH_DATE, VR::DA, date(identity.birth_date).into());
    put(tags::PATIENT_SEX, VR::CS, identity.sex.code().into());
    put(tags::PATIENT_AGE, VR::AS, patient_age_string(identity.age_years).into());
    put(tags::BODY_PART_EXAMINED, VR::CS, "HEAD".into());
    put(tags::PATIENT_POSITION, VR::CS, "HFS".into());
    put(tags::SCANNING_SEQUENCE, VR::CS, strings(&["GR".into(), "IR".into()]));
    put(tags::SEQUENCE_VARIANT, VR::CS, strings(&["SP".into(), "MP".into()]));
    put(tags::MR_ACQUISITION_TYPE, VR::CS, "3D".into());
    put(tags::REPETITION_TIME, VR::DS, "2300".into());
    put(tags::ECHO_TIME, VR::DS, "2.98".into());
    put(tags::INVERSION_TIME, VR::DS, "900".into());
    put(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, "3".into());
    put(tags::FLIP_ANGLE, VR::DS, "9".into());
    put(tags::PROTOCOL_NAME, VR::LO, "T1_MPRAGE_SYNTHETIC".into());
    put(tags::STUDY_ID, VR::SH, "1".into());
    put(tags::SERIES_NUMBER, VR::IS, "1".into());
    put(tags::RESCALE_TYPE, VR::LO, "US".into());
    if let Some(national_id) = &identity.national_id {
        let mut item = InMemDicomObject::new_empty();
        item.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(national_id.as_str())));
        item.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from("SYNTHETIC-CF")));
        item.put(DataElement::new(tags::TYPE_OF_PATIENT_ID, VR::CS, PrimitiveValue::from("TEXT")));
        object.put(DataElement::new(
            tags::OTHER_PATIENT_I_DS_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![item]),
        ));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codice_fiscale_check_character_matches_known_codes() {
        // Widely published example codes (fictitious people).
        assert_eq!(codice_fiscale_check_char("RSSMRA85T10A562"), Some('S'));
        assert_eq!(codice_fiscale_check_char("short"), None);
        let code = synthetic_codice_fiscale(5, Sex::Female, time::macros::date!(2019 - 03 - 07));
        assert_eq!(code.len(), 16);
        assert_eq!(&code[6..11], "19C47");
        assert_eq!(codice_fiscale_check_char(&code[..15]), code.chars().last());
    }

    #[test]
    fn patient_age_uses_days_months_or_years() {
        assert_eq!(patient_age_string(0.02), "007D");
        assert_eq!(patient_age_string(0.5), "006M");
        assert_eq!(patient_age_string(1.99), "023M");
        assert_eq!(patient_age_string(7.6), "007Y");
    }
}
