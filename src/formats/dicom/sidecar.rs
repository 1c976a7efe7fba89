//! The JSON sidecar written next to each converted volume: acquisition metadata with the key
//! names of dcm2niix's BIDS sidecar where one exists (times in seconds, as BIDS), the age in
//! years and an optional pseudonym. Never a name, an identifier or a date.

use serde::{Deserialize, Serialize};

/// Acquisition metadata of one series (dcm2niix/BIDS key names; `None` fields are omitted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Sidecar {
    /// Modality (`MR`, `CT`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Main field strength in tesla.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnetic_field_strength: Option<f64>,
    /// Scanner manufacturer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Scanner model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturers_model_name: Option<String>,
    /// Series description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    /// Protocol name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<String>,
    /// Series number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_number: Option<i64>,
    /// Image type values (`ORIGINAL`, `PRIMARY`, `M`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_type: Option<Vec<String>>,
    /// Scanning sequence (`GR`, `SE`, `IR`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanning_sequence: Option<String>,
    /// Sequence variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_variant: Option<String>,
    /// `2D` or `3D`.
    #[serde(rename = "MRAcquisitionType", skip_serializing_if = "Option::is_none")]
    pub mr_acquisition_type: Option<String>,
    /// Repetition time in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_time: Option<f64>,
    /// Echo time in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_time: Option<f64>,
    /// Echo number, when a series holds several echoes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_number: Option<i64>,
    /// Inversion time in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inversion_time: Option<f64>,
    /// Flip angle in degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip_angle: Option<f64>,
    /// Nominal slice thickness in mm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_thickness: Option<f64>,
    /// Spacing between slice centres in mm, as stored in the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spacing_between_slices: Option<f64>,
    /// Voxel size of the volume in mm (columns, rows, slices), from the geometry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voxel_size: Option<[f64; 3]>,
    /// Volume dimensions (columns, rows, slices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<[usize; 3]>,
    /// Body part examined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_part_examined: Option<String>,
    /// Patient sex (`M`, `F`, `O`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_sex: Option<String>,
    /// Age at the study in years, from birth and study dates (day precision) or else from
    /// PatientAge (`nnnD/W/M/Y`). The dates themselves are never kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_years: Option<f64>,
    /// Where the age came from: `dates` or `PatientAge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_source: Option<String>,
    /// The patient's pseudonym, filled by ingest (never by conversion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudonym: Option<String>,
    /// The de-identification methods ingest applied (DICOM CID 7050 meanings, as in the
    /// de-identified objects' DeidentificationMethod); never filled by conversion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deidentification_method: Option<Vec<String>>,
    /// The series class ingest decided (`T1w`, `T2w`, `FLAIR`, `DWI`, `localizer`, `other`);
    /// never filled by conversion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_class: Option<String>,
    /// The code of the classification rule that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_class_rule: Option<String>,
    /// The rule in words, with the header values it read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_class_reason: Option<String>,
    /// Transfer syntax UID of the source files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_syntax_uid: Option<String>,
    /// The program that made the volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_software: Option<String>,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversion_software_version: Option<String>,
}

/// Age in years from a DICOM PatientAge string (`nnnD`, `nnnW`, `nnnM`, `nnnY`).
pub fn age_from_patient_age(value: &str) -> Option<f64> {
    let value = value.trim();
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (number, unit) = value.split_at(value.len() - 1);
    let number: f64 = number.trim().parse::<u32>().ok()? as f64;
    Some(match unit.to_ascii_uppercase().as_str() {
        "D" => number / 365.25,
        "W" => number * 7.0 / 365.25,
        "M" => number / 12.0,
        "Y" => number,
        _ => return None,
    })
}

/// Parses a DICOM DA value (`YYYYMMDD`, also the old `YYYY.MM.DD`).
pub fn parse_dicom_date(value: &str) -> Option<time::Date> {
    let digits: String = value.trim().chars().filter(|c| *c != '.').collect();
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i32 = digits[0..4].parse().ok()?;
    let month: u8 = digits[4..6].parse().ok()?;
    let day: u8 = digits[6..8].parse().ok()?;
    time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
}

/// Age in years between a birth date and a study date: whole years by the calendar, plus the
/// fraction of the current year of life elapsed. `None` when the study precedes the birth.
pub fn age_from_dates(birth: time::Date, study: time::Date) -> Option<f64> {
    if study < birth {
        return None;
    }
    let mut years = study.year() - birth.year();
    let anniversary = |year: i32| {
        // A 29 February birthday is celebrated on 28 February in common years.
        time::Date::from_calendar_date(year, birth.month(), birth.day())
            .or_else(|_| time::Date::from_calendar_date(year, birth.month(), birth.day() - 1))
            .ok()
    };
    let mut last = anniversary(birth.year() + years)?;
    if last > study {
        years -= 1;
        last = anniversary(birth.year() + years)?;
    }
    let next = anniversary(birth.year() + years + 1)?;
    let fraction = (study - last).whole_days() as f64 / (next - last).whole_days() as f64;
    Some(years as f64 + fraction)
}

impl Sidecar {
    /// The sidecar an ingest stored next to `volume` (`volume<suffix>.nii.gz` →
    /// `sidecar<suffix>.json`), when there is one and it parses.
    pub fn next_to(volume: &std::path::Path) -> Option<Sidecar> {
        let name = volume.file_name()?.to_str()?;
        let suffix = name.strip_prefix("volume")?.strip_suffix(".nii.gz")?;
        let bytes = std::fs::read(volume.with_file_name(format!("sidecar{suffix}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The scanner label normals and cases are grouped by for site effects: manufacturer,
    /// model and field strength (`"SIEMENS Prisma 3T"`), upper-cased manufacturer and spaces
    /// collapsed so spellings of one scanner agree. `None` when neither manufacturer nor model
    /// is known.
    pub fn scanner_label(&self) -> Option<String> {
        let clean = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let manufacturer =
            self.manufacturer.as_deref().map(|m| clean(m).to_uppercase()).filter(|m| !m.is_empty());
        let model = self.manufacturers_model_name.as_deref().map(clean).filter(|m| !m.is_empty());
        if manufacturer.is_none() && model.is_none() {
            return None;
        }
        let field = self.magnetic_field_strength.filter(|t| t.is_finite() && *t > 0.0).map(|t| {
            // 2.89 T and 3 T are one field strength on labels.
            let rounded = (t * 2.0).round() / 2.0;
            format!("{rounded}T")
        });
        Some([manufacturer, model, field].into_iter().flatten().collect::<Vec<_>>().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_labels_agree_across_spellings() {
        let a = Sidecar {
            manufacturer: Some("Siemens ".into()),
            manufacturers_model_name: Some("Prisma  fit".into()),
            magnetic_field_strength: Some(2.89362),
            ..Default::default()
        };
        let b =
            Sidecar { manufacturer: Some("SIEMENS".into()), magnetic_field_strength: Some(3.0), ..a.clone() };
        assert_eq!(a.scanner_label().as_deref(), Some("SIEMENS Prisma fit 3T"));
        assert_eq!(a.scanner_label(), b.scanner_label());
        assert_eq!(Sidecar::default().scanner_label(), None);
        let model_only = Sidecar { manufacturers_model_name: Some("Achieva".into()), ..Default::default() };
        assert_eq!(model_only.scanner_label().as_deref(), Some("Achieva"));
    }

    #[test]
    fn the_sidecar_next_to_a_volume_is_found_by_its_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar { manufacturer: Some("GE".into()), ..Default::default() };
        std::fs::write(dir.path().join("sidecar_e2.json"), serde_json::to_vec(&sidecar).unwrap()).unwrap();
        assert_eq!(Sidecar::next_to(&dir.path().join("volume_e2.nii.gz")), Some(sidecar));
        assert_eq!(Sidecar::next_to(&dir.path().join("volume.nii.gz")), None);
        assert_eq!(Sidecar::next_to(&dir.path().join("case.nii.gz")), None);
    }

    #[test]
    fn patient_age_units() {
        assert_eq!(age_from_patient_age("012Y"), Some(12.0));
        assert_eq!(age_from_patient_age("006M"), Some(0.5));
        assert!((age_from_patient_age("052W").unwrap() - 364.0 / 365.25).abs() < 1e-12);
        assert!((age_from_patient_age("010D").unwrap() - 10.0 / 365.25).abs() < 1e-12);
        assert_eq!(age_from_patient_age("12"), None);
        assert_eq!(age_from_patient_age("Y"), None);
        assert_eq!(age_from_patient_age("-01Y"), None);
    }

    #[test]
    fn dates_give_calendar_age() {
        let birth = parse_dicom_date("20100615").unwrap();
        assert_eq!(age_from_dates(birth, parse_dicom_date("20150615").unwrap()), Some(5.0));
        let age = age_from_dates(birth, parse_dicom_date("20151215").unwrap()).unwrap();
        assert!((age - 5.5).abs() < 0.01, "{age}");
        assert!(age_from_dates(birth, parse_dicom_date("20090101").unwrap()).is_none());
        let leap = parse_dicom_date("20080229").unwrap();
        assert_eq!(age_from_dates(leap, parse_dicom_date("20090228").unwrap()), Some(1.0));
        assert!(parse_dicom_date("20101301").is_none());
        assert_eq!(parse_dicom_date("2010.06.15"), Some(birth));
    }

    #[test]
    fn json_uses_bids_keys_and_omits_missing() {
        let sidecar = Sidecar {
            magnetic_field_strength: Some(3.0),
            manufacturers_model_name: Some("Prisma".into()),
            mr_acquisition_type: Some("3D".into()),
            age_years: Some(4.25),
            ..Default::default()
        };
        let json = serde_json::to_value(&sidecar).unwrap();
        assert_eq!(json["MagneticFieldStrength"], 3.0);
        assert_eq!(json["ManufacturersModelName"], "Prisma");
        assert_eq!(json["MRAcquisitionType"], "3D");
        assert_eq!(json["AgeYears"], 4.25);
        assert!(json.get("Pseudonym").is_none());
        let back: Sidecar = serde_json::from_value(json).unwrap();
        assert_eq!(back, sidecar);
    }
}
