//! De-identification of DICOM objects following DICOM PS3.15 Annex E: the Basic Application
//! Level Confidentiality Profile with the *Retain Patient Characteristics* and *Retain
//! Longitudinal Temporal Information with Modified Dates* options.
//!
//! Every element, at every depth of every sequence, gets one [`Action`]:
//!
//! * attributes listed in Table E.1-1 take their Basic Profile action, overridden by the two
//!   options (patient age, sex, size and weight kept; dates shifted);
//! * conditional actions (`X/Z`, `X/D`, `Z/D`, `X/Z/D`, `X/Z/U*`) resolve to the choice that
//!   discloses least while keeping the object valid: empty value (Z) where Z is allowed,
//!   removal for `X/D`, and — for `X/Z/U*` reference sequences — keeping the sequence with its
//!   UIDs remapped, so references between instances survive;
//! * private elements, curves (50xx), overlays (60xx) and group lengths are removed;
//! * attributes not in the table are kept, except that any other person name or element of
//!   unknown VR (UN) is removed, any other date is shifted and any other UID outside the DICOM
//!   root `1.2.840.10008.` is remapped (stricter than the standard, which keeps them);
//! * Patient ID becomes the national pseudonym, so the de-identified files still link;
//! * with the *Clean Descriptors* option ([`Deidentifier::with_clean_descriptors`], which
//!   ingest applies), free-text descriptors are kept without the tokens naming the patient
//!   ([`super::descriptors`]); without it they are removed as the Basic Profile says.
//!
//! Dates move by a per-patient number of days derived from the pseudonym under the secret key,
//! so every interval between a patient's studies survives. UIDs are replaced by
//! `2.25.<decimal>` where the decimal is the first 128 bits of a keyed HMAC of the original UID:
//! re-ingesting gives identical UIDs, and a reference in one file to another file's UID maps to
//! that file's new UID.

use super::descriptors::{CLEAN_DESCRIPTORS_CODE, CLEANED_DESCRIPTORS, IdentityTokens};
use super::profile_table::BASIC_PROFILE;
use super::pseudonym::{Pseudonym, PseudonymKey};
use dicom_core::header::Header;
use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};
use std::path::{Path, PathBuf};

/// The Basic Profile action of Table E.1-1, including its conditional forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicAction {
    /// Replace with a non-zero length dummy value.
    D,
    /// Replace with a zero length value.
    Z,
    /// Remove.
    X,
    /// Keep.
    K,
    /// Clean.
    C,
    /// Replace the UID consistently.
    U,
    /// Z or D depending on the IOD.
    ZD,
    /// X or Z depending on the IOD.
    XZ,
    /// X or D depending on the IOD.
    XD,
    /// X, Z or D depending on the IOD.
    XZD,
    /// X, Z or consistent UID replacement inside the referenced items.
    XZUStar,
}

/// What pedinorm does to one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy unchanged (sequences: keep, with their items de-identified recursively).
    Keep,
    /// Drop the element.
    Remove,
    /// Keep the element with a zero-length value (an empty sequence for SQ).
    Empty,
    /// Replace with a dummy value of the same VR.
    Dummy,
    /// Shift every date by the patient's day offset (DA, and the date part of DT).
    ShiftDate,
    /// Replace every UID with its keyed `2.25.` mapping.
    ReplaceUid,
    /// Replace with the patient's pseudonym (Patient ID).
    Pseudonym,
    /// A free-text descriptor: cleaned under the Clean Descriptors option, else removed.
    CleanDescriptor,
}

/// Attributes kept under *Retain Patient Characteristics* (age, sex, size, weight).
pub const RETAINED_PATIENT_CHARACTERISTICS: [Tag; 4] =
    [tags::PATIENT_AGE, tags::PATIENT_SEX, tags::PATIENT_SIZE, tags::PATIENT_WEIGHT];

/// Elements this module writes itself after de-identification (so any incoming value is
/// dropped first).
const WRITTEN_HERE: [Tag; 4] = [
    tags::PATIENT_IDENTITY_REMOVED,
    tags::DEIDENTIFICATION_METHOD,
    tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
    tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
];

/// The UID root of the DICOM standard's own well-known UIDs (SOP classes, transfer
/// syntaxes, coding schemes): these identify nothing and are kept.
pub const DICOM_UID_ROOT: &str = "1.2.840.10008.";

/// Errors of de-identification.
#[derive(Debug, thiserror::Error)]
pub enum DeidentifyError {
    /// A file could not be read as DICOM.
    #[error("{path}: not a readable DICOM file: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// The object declares burned-in annotation, which may show identity in the pixels.
    #[error("{path}: BurnedInAnnotation is YES (identity may be burned into the pixels)")]
    BurnedInAnnotation {
        /// The file.
        path: PathBuf,
    },
    /// The de-identified object could not be encoded.
    #[error("{path}: cannot encode the de-identified object: {message}")]
    Encode {
        /// The source file.
        path: PathBuf,
        /// What the encoder said.
        message: String,
    },
}

/// The Table E.1-1 entry of a tag: Basic Profile action and attribute name.
pub fn basic_action(tag: Tag) -> Option<(BasicAction, &'static str)> {
    let key = (u32::from(tag.group()) << 16) | u32::from(tag.element());
    BASIC_PROFILE
        .binary_search_by_key(&key, |&(t, _, _)| t)
        .ok()
        .map(|index| (BASIC_PROFILE[index].1, BASIC_PROFILE[index].2))
}

/// The action pedinorm applies to an element with this tag and VR, anywhere in a data set.
pub fn action(tag: Tag, vr: VR) -> Action {
    let group = tag.group();
    if group % 2 == 1 || group == 0x0002 || tag.element() == 0x0000 {
        // Private elements (and their creators), file meta (rewritten) and group lengths.
        return Action::Remove;
    }
    if matches!(group & 0xFF00, 0x5000 | 0x6000) {
        // Curves and overlays: overlay data and comments are X, and the rest of an overlay
        // is meaningless without them.
        return Action::Remove;
    }
    if WRITTEN_HERE.contains(&tag) {
        return Action::Remove;
    }
    if tag == tags::PATIENT_ID {
        return Action::Pseudonym;
    }
    if CLEANED_DESCRIPTORS.contains(&tag) {
        return Action::CleanDescriptor;
    }
    if RETAINED_PATIENT_CHARACTERISTICS.contains(&tag) {
        return Action::Keep;
    }
    let is_birth = tag == tags::PATIENT_BIRTH_DATE || tag == tags::PATIENT_BIRTH_TIME;
    match basic_action(tag) {
        Some((basic, _)) => {
            // Retain Longitudinal Temporal Information with Modified Dates: C for every
            // listed date and time except the birth date and time. Shifts are whole days, so
            // the cleaned value of a time is the time itself.
            if !is_birth {
                match vr {
                    VR::DA | VR::DT => return Action::ShiftDate,
                    VR::TM => return Action::Keep,
                    _ => {}
                }
            }
            match basic {
                BasicAction::D => Action::Dummy,
                BasicAction::Z | BasicAction::ZD | BasicAction::XZ | BasicAction::XZD => Action::Empty,
                BasicAction::X | BasicAction::XD | BasicAction::C => Action::Remove,
                BasicAction::K | BasicAction::XZUStar => Action::Keep,
                BasicAction::U => Action::ReplaceUid,
            }
        }
        None => match vr {
            // Unknown VR: an attribute the dictionary does not know cannot be judged safe.
            VR::PN | VR::UN => Action::Remove,
            VR::DA | VR::DT => Action::ShiftDate,
            VR::UI => Action::ReplaceUid,
            _ => Action::Keep,
        },
    }
}

/// Whether a data set declares BurnedInAnnotation YES.
pub fn has_burned_in_annotation(object: &InMemDicomObject) -> bool {
    object
        .get(tags::BURNED_IN_ANNOTATION)
        .and_then(|element| element.value().to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("YES"))
}

/// The per-patient date offset in days: ±1–365, from the pseudonym under the key.
pub fn day_shift(key: &PseudonymKey, pseudonym: &Pseudonym) -> i64 {
    let mac = key.mac_in_domain("pedinorm-date-shift", pseudonym.as_str().as_bytes());
    let magnitude = 1 + i64::from(u16::from_be_bytes([mac[0], mac[1]]) % 365);
    if mac[2] & 1 == 0 { magnitude } else { -magnitude }
}

/// The keyed replacement of a UID: `2.25.` and the first 128 bits of
/// HMAC-SHA-256(key, "pedinorm-uid" NUL uid) in decimal. UIDs under [`DICOM_UID_ROOT`] are
/// returned unchanged.
pub fn remap_uid(key: &PseudonymKey, uid: &str) -> String {
    let uid = uid.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if uid.is_empty() || uid.starts_with(DICOM_UID_ROOT) {
        return uid.to_owned();
    }
    let mac = key.mac_in_domain("pedinorm-uid", uid.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&mac[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// Shifts a DICOM date `YYYYMMDD` by `days`; `None` if it is not a valid date.
pub fn shift_date(date: &str, days: i64) -> Option<String> {
    let date = date.trim();
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = date[0..4].parse().ok()?;
    let month: u8 = date[4..6].parse().ok()?;
    let day: u8 = date[6..8].parse().ok()?;
    let parsed = time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let shifted = parsed.checked_add(time::Duration::days(days))?;
    Some(format!("{:04}{:02}{:02}", shifted.year(), u8::from(shifted.month()), shifted.day()))
}

/// Shifts the date part of a DICOM date-time (`YYYYMMDD…`); `None` without a full date.
pub fn shift_datetime(datetime: &str, days: i64) -> Option<String> {
    let datetime = datetime.trim();
    if datetime.len() < 8 || !datetime.is_char_boundary(8) {
        return None;
    }
    Some(format!("{}{}", shift_date(&datetime[..8], days)?, &datetime[8..]))
}

/// Everything de-identification needs about one patient.
#[derive(Debug, Clone)]
pub struct Deidentifier<'a> {
    key: &'a PseudonymKey,
    pseudonym: &'a Pseudonym,
    day_shift: i64,
    descriptors: Option<&'a IdentityTokens>,
}

impl<'a> Deidentifier<'a> {
    /// A de-identifier for one patient.
    pub fn new(key: &'a PseudonymKey, pseudonym: &'a Pseudonym) -> Self {
        Self { key, pseudonym, day_shift: day_shift(key, pseudonym), descriptors: None }
    }

    /// Applies the Clean Descriptors option: descriptors are kept without the tokens that
    /// match `identity`.
    pub fn with_clean_descriptors(mut self, identity: &'a IdentityTokens) -> Self {
        self.descriptors = Some(identity);
        self
    }

    /// A descriptor cleaned of the patient's identities; `None` without the option (the
    /// descriptor is then not kept at all) or when nothing is left.
    pub fn clean_descriptor(&self, text: &str) -> Option<String> {
        self.descriptors.map(|identity| identity.clean(text)).filter(|cleaned| !cleaned.is_empty())
    }

    /// The de-identification methods applied (CID 7050 code value and meaning).
    pub fn method_codes(&self) -> Vec<(&'static str, &'static str)> {
        let mut codes = METHOD_CODES.to_vec();
        if self.descriptors.is_some() {
            codes.push(CLEAN_DESCRIPTORS_CODE);
        }
        codes
    }

    /// This patient's date offset in days.
    pub fn day_shift(&self) -> i64 {
        self.day_shift
    }

    /// The keyed replacement of a UID (see [`remap_uid`]).
    pub fn uid(&self, uid: &str) -> String {
        remap_uid(self.key, uid)
    }

    /// De-identifies a data set (recursively) and adds the PS3.15 de-identification markers.
    pub fn deidentify(&self, object: &InMemDicomObject) -> InMemDicomObject {
        let mut output = self.deidentify_items(object);
        output.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(self.pseudonym.as_str())));
        output.put(DataElement::new(tags::PATIENT_IDENTITY_REMOVED, VR::CS, PrimitiveValue::from("YES")));
        output.put(DataElement::new(
            tags::DEIDENTIFICATION_METHOD,
            VR::LO,
            PrimitiveValue::Strs(
                self.method_codes().iter().map(|&(_, meaning)| meaning.to_owned()).collect::<Vec<_>>().into(),
            ),
        ));
        let codes: Vec<InMemDicomObject> = self
            .method_codes()
            .iter()
            .map(|&(value, meaning)| {
                InMemDicomObject::from_element_iter([
                    DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
                    DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
                    DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
                ])
            })
            .collect();
        output.put(DataElement::new(
            tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE,
            VR::SQ,
            DataSetSequence::new(codes, Length::UNDEFINED),
        ));
        output.put(DataElement::new(
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            VR::CS,
            PrimitiveValue::from("MODIFIED"),
        ));
        output
    }

    /// De-identifies the elements of one data set or sequence item, without adding markers.
    fn deidentify_items(&self, object: &InMemDicomObject) -> InMemDicomObject {
        let mut output = InMemDicomObject::new_empty();
        for element in object.iter() {
            if let Some(new) = self.deidentify_element(element) {
                output.put(new);
            }
        }
        output
    }

    fn deidentify_element(&self, element: &InMemElement) -> Option<InMemElement> {
        let tag = element.tag();
        let vr = element.vr();
        match action(tag, vr) {
            Action::Remove => None,
            Action::Keep => Some(match element.value() {
                Value::Sequence(sequence) => self.sequence(tag, sequence),
                _ => element.clone(),
            }),
            Action::Empty => Some(empty_element(tag, vr)),
            Action::CleanDescriptor => {
                let cleaned: Vec<String> =
                    strings(element).iter().filter_map(|text| self.clean_descriptor(text)).collect();
                (!cleaned.is_empty()).then(|| DataElement::new(tag, vr, PrimitiveValue::Strs(cleaned.into())))
            }
            Action::Dummy => Some(dummy_element(tag, vr, self)),
            Action::Pseudonym => {
                Some(DataElement::new(tag, vr, PrimitiveValue::from(self.pseudonym.as_str())))
            }
            Action::ShiftDate => Some(match element.value() {
                Value::Primitive(_) => {
                    let shift: fn(&str, i64) -> Option<String> =
                        if vr == VR::DT { shift_datetime } else { shift_date };
                    let values = strings(element);
                    let shifted: Option<Vec<String>> =
                        values.iter().map(|value| shift(value, self.day_shift)).collect();
                    match shifted {
                        Some(shifted) if !shifted.is_empty() => {
                            DataElement::new(tag, vr, PrimitiveValue::Strs(shifted.into()))
                        }
                        // An unparseable date cannot be shifted: empty it rather than keep it.
                        _ => empty_element(tag, vr),
                    }
                }
                _ => empty_element(tag, vr),
            }),
            Action::ReplaceUid => Some(match element.value() {
                Value::Primitive(PrimitiveValue::Empty) => element.clone(),
                Value::Primitive(_) => {
                    let mapped: Vec<String> = strings(element).iter().map(|uid| self.uid(uid)).collect();
                    DataElement::new(tag, VR::UI, PrimitiveValue::Strs(mapped.into()))
                }
                _ => empty_element(tag, vr),
            }),
        }
    }

    fn sequence(&self, tag: Tag, sequence: &DataSetSequence<InMemDicomObject>) -> InMemElement {
        let items: Vec<InMemDicomObject> =
            sequence.items().iter().map(|item| self.deidentify_items(item)).collect();
        DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
    }

    /// Reads, checks and de-identifies a DICOM file; returns the encoded file (preamble,
    /// regenerated file meta with the new SOP Instance UID, same transfer syntax) and the
    /// de-identified object.
    pub fn deidentify_file(&self, path: &Path) -> Result<(Vec<u8>, InMemDicomObject), DeidentifyError> {
        let file = dicom_object::open_file(path).map_err(|error| DeidentifyError::Read {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        self.deidentify_object(path, &file)
    }

    /// [`Self::deidentify_file`] for a file already read into memory (a zip entry, for
    /// instance); `label` names it in errors.
    pub fn deidentify_bytes(
        &self,
        label: &Path,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, InMemDicomObject), DeidentifyError> {
        let read_error = |message: String| DeidentifyError::Read { path: label.to_path_buf(), message };
        let file =
            crate::formats::dicom::guard(label, || dicom_object::OpenFileOptions::new().from_reader(bytes))
                .map_err(|error| read_error(error.to_string()))?
                .map_err(|error| read_error(error.to_string()))?;
        self.deidentify_object(label, &file)
    }

    /// De-identifies an already opened file object (see [`Self::deidentify_file`]).
    pub fn deidentify_object(
        &self,
        path: &Path,
        file: &FileDicomObject<InMemDicomObject>,
    ) -> Result<(Vec<u8>, InMemDicomObject), DeidentifyError> {
        if has_burned_in_annotation(file) {
            return Err(DeidentifyError::BurnedInAnnotation { path: path.to_path_buf() });
        }
        let transfer_syntax = file.meta().transfer_syntax().to_owned();
        let object = self.deidentify(file);
        let encode_error = |message: String| DeidentifyError::Encode { path: path.to_path_buf(), message };
        let with_meta = object
            .clone()
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(transfer_syntax))
            .map_err(|error| encode_error(error.to_string()))?;
        let mut bytes = Vec::new();
        with_meta.write_all(&mut bytes).map_err(|error| encode_error(error.to_string()))?;
        Ok((bytes, object))
    }
}

/// Codes of the de-identification method (DICOM CID 7050).
const METHOD_CODES: [(&str, &str); 3] = [
    ("113100", "Basic Application Confidentiality Profile"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
];

/// The text values of a primitive element (numbers and dates as their DICOM text).
fn strings(element: &InMemElement) -> Vec<String> {
    element
        .value()
        .to_multi_str()
        .map(|values| {
            values.iter().map(|v| v.trim_matches(|c: char| c == '\0' || c == ' ').to_owned()).collect()
        })
        .unwrap_or_default()
}

fn empty_element(tag: Tag, vr: VR) -> InMemElement {
    if vr == VR::SQ {
        DataElement::new(tag, VR::SQ, DataSetSequence::<InMemDicomObject>::new(Vec::new(), Length::UNDEFINED))
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    }
}

/// A dummy value consistent with the VR that says nothing about anyone.
fn dummy_element(tag: Tag, vr: VR, deidentifier: &Deidentifier<'_>) -> InMemElement {
    let text = |value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
    match vr {
        VR::SQ => empty_element(tag, vr),
        VR::UI => DataElement::new(tag, vr, PrimitiveValue::from(deidentifier.uid("0").as_str())),
        VR::DA => text("19000101"),
        VR::TM => text("000000"),
        VR::DT => text("19000101000000"),
        VR::AS => text("000D"),
        VR::IS | VR::DS => text("0"),
        VR::US => DataElement::new(tag, vr, PrimitiveValue::from(0u16)),
        VR::SS => DataElement::new(tag, vr, PrimitiveValue::from(0i16)),
        VR::UL => DataElement::new(tag, vr, PrimitiveValue::from(0u32)),
        VR::SL => DataElement::new(tag, vr, PrimitiveValue::from(0i32)),
        VR::FL => DataElement::new(tag, vr, PrimitiveValue::from(0f32)),
        VR::FD => DataElement::new(tag, vr, PrimitiveValue::from(0f64)),
        VR::AE | VR::CS | VR::SH | VR::LO | VR::LT | VR::ST | VR::UT | VR::UC | VR::PN => {
            text("DEIDENTIFIED")
        }
        _ => empty_element(tag, vr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PseudonymKey {
        PseudonymKey::from_bytes(&[42u8; 32]).unwrap()
    }

    #[test]
    fn profile_table_is_sorted_and_unique() {
        assert!(BASIC_PROFILE.len() > 600);
        assert!(BASIC_PROFILE.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn actions_follow_the_profile_and_options() {
        assert_eq!(action(tags::PATIENT_NAME, VR::PN), Action::Empty);
        assert_eq!(action(tags::PATIENT_BIRTH_DATE, VR::DA), Action::Empty);
        assert_eq!(action(tags::PATIENT_BIRTH_TIME, VR::TM), Action::Remove);
        assert_eq!(action(tags::OTHER_PATIENT_I_DS_SEQUENCE, VR::SQ), Action::Remove);
        assert_eq!(action(tags::PATIENT_ID, VR::LO), Action::Pseudonym);
        assert_eq!(action(tags::PATIENT_AGE, VR::AS), Action::Keep);
        assert_eq!(action(tags::PATIENT_SEX, VR::CS), Action::Keep);
        assert_eq!(action(tags::PATIENT_WEIGHT, VR::DS), Action::Keep);
        assert_eq!(action(tags::STUDY_DATE, VR::DA), Action::ShiftDate);
        assert_eq!(action(tags::ACQUISITION_DATE_TIME, VR::DT), Action::ShiftDate);
        assert_eq!(action(tags::STUDY_TIME, VR::TM), Action::Keep);
        assert_eq!(action(tags::SOP_INSTANCE_UID, VR::UI), Action::ReplaceUid);
        assert_eq!(action(tags::FRAME_OF_REFERENCE_UID, VR::UI), Action::ReplaceUid);
        assert_eq!(action(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI), Action::ReplaceUid);
        assert_eq!(action(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ), Action::Keep);
        assert_eq!(action(tags::INSTITUTION_NAME, VR::LO), Action::Empty);
        assert_eq!(action(tags::REFERRING_PHYSICIAN_NAME, VR::PN), Action::Empty);
        assert_eq!(action(tags::PERFORMING_PHYSICIAN_NAME, VR::PN), Action::Remove);
        assert_eq!(action(tags::ACCESSION_NUMBER, VR::SH), Action::Empty);
        assert_eq!(action(tags::MAGNETIC_FIELD_STRENGTH, VR::DS), Action::Keep);
        assert_eq!(action(tags::PIXEL_DATA, VR::OW), Action::Keep);
        assert_eq!(action(Tag(0x0029, 0x1010), VR::OB), Action::Remove);
        assert_eq!(action(Tag(0x6000, 0x3000), VR::OW), Action::Remove);
        // Not in the table: names go, dates shift.
        assert_eq!(action(Tag(0x0018, 0x9999), VR::PN), Action::Remove);
        assert_eq!(action(Tag(0x0018, 0x9998), VR::DA), Action::ShiftDate);
        assert_eq!(action(Tag(0x0018, 0x9997), VR::UN), Action::Remove);
    }

    #[test]
    fn dates_shift_by_whole_days_and_keep_intervals() {
        assert_eq!(shift_date("20240228", 2).as_deref(), Some("20240301"));
        assert_eq!(shift_date("20240101", -1).as_deref(), Some("20231231"));
        assert_eq!(shift_datetime("20240228101530.5+0100", 1).as_deref(), Some("20240229101530.5+0100"));
        assert_eq!(shift_date("2024", 1), None);
        assert_eq!(shift_date("20241340", 1), None);
        let key = key();
        let pseudonym = Pseudonym::unlinked(&key, "1.2.3");
        let shift = day_shift(&key, &pseudonym);
        assert!((1..=365).contains(&shift.abs()));
        assert_eq!(shift, day_shift(&key, &pseudonym));
    }

    #[test]
    fn uids_map_deterministically_and_keep_the_dicom_root() {
        let key = key();
        let mapped = remap_uid(&key, "1.2.826.0.1.3680043.2.1125.1.2");
        assert!(mapped.starts_with("2.25.") && mapped.len() <= 64);
        assert!(mapped[5..].bytes().all(|b| b.is_ascii_digit()) && !mapped[5..].starts_with('0'));
        assert_eq!(mapped, remap_uid(&key, "1.2.826.0.1.3680043.2.1125.1.2\0"));
        assert_ne!(mapped, remap_uid(&key, "1.2.826.0.1.3680043.2.1125.1.3"));
        assert_eq!(remap_uid(&key, "1.2.840.10008.5.1.4.1.1.4"), "1.2.840.10008.5.1.4.1.1.4");
        let other_key = PseudonymKey::from_bytes(&[43u8; 32]).unwrap();
        assert_ne!(mapped, remap_uid(&other_key, "1.2.826.0.1.3680043.2.1125.1.2"));
    }

    #[test]
    fn implicit_vr_files_keep_pixels_and_ambiguous_vr_attributes() {
        // Implicit VR gives no VR in the file: the dictionary's must be used, never UN for
        // known attributes (UN is removed).
        let key = key();
        let pseudonym = Pseudonym::unlinked(&key, "1.2.3");
        let deidentifier = Deidentifier::new(&key, &pseudonym);
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.4")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^John")),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20200102")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(2u16)),
            DataElement::new(tags::SMALLEST_IMAGE_PIXEL_VALUE, VR::US, PrimitiveValue::from(3u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(vec![3u16, 9].into())),
        ]);
        let file =
            object.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("implicit.dcm");
        file.write_to_file(&path).unwrap();
        let (bytes, output) = deidentifier.deidentify_file(&path).unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(output.get(tags::PIXEL_DATA).unwrap().value().to_bytes().unwrap().len(), 4);
        assert!(output.get(tags::SMALLEST_IMAGE_PIXEL_VALUE).is_some());
        assert_eq!(
            output.get(tags::STUDY_DATE).unwrap().value().to_str().unwrap(),
            shift_date("20200102", deidentifier.day_shift()).unwrap()
        );
        let reread = dicom_object::from_reader(&bytes[128..]).unwrap();
        assert_eq!(reread.meta().transfer_syntax().trim_end_matches('\0'), "1.2.840.10008.1.2");
        assert_eq!(
            reread.get(tags::SOP_INSTANCE_UID).unwrap().value().to_str().unwrap().trim_end_matches('\0'),
            remap_uid(&key, "1.2.3.4")
        );
    }

    #[test]
    fn nested_sequences_are_cleaned() {
        let key = key();
        let pseudonym = Pseudonym::unlinked(&key, "1.2.3");
        let deidentifier = Deidentifier::new(&key, &pseudonym);
        let inner = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.4"),
            ),
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5")),
            DataElement::new(tags::PERSON_NAME, VR::PN, PrimitiveValue::from("Doe^John")),
            DataElement::new(Tag(0x0009, 0x0010), VR::LO, PrimitiveValue::from("ACME")),
        ]);
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^John")),
            DataElement::new(
                tags::REFERENCED_IMAGE_SEQUENCE,
                VR::SQ,
                DataSetSequence::new(vec![inner], Length::UNDEFINED),
            ),
        ]);
        let output = deidentifier.deidentify(&object);
        assert!(output.get(tags::PATIENT_NAME).unwrap().value().to_str().unwrap().is_empty());
        let Value::Sequence(sequence) = output.get(tags::REFERENCED_IMAGE_SEQUENCE).unwrap().value() else {
            panic!("sequence expected")
        };
        let item = &sequence.items()[0];
        assert_eq!(
            item.get(tags::REFERENCED_SOP_INSTANCE_UID).unwrap().value().to_str().unwrap(),
            remap_uid(&key, "1.2.3.4.5")
        );
        assert_eq!(
            item.get(tags::REFERENCED_SOP_CLASS_UID).unwrap().value().to_str().unwrap(),
            "1.2.840.10008.5.1.4.1.1.4"
        );
        assert_eq!(item.get(tags::PERSON_NAME).unwrap().value().to_str().unwrap(), "DEIDENTIFIED");
        assert!(item.get(Tag(0x0009, 0x0010)).is_none());
        assert_eq!(output.get(tags::PATIENT_ID).unwrap().value().to_str().unwrap(), pseudonym.as_str());
    }
}
