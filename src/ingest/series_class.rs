//! Series classification: T1w, T2w, FLAIR, DWI, localizer or other, decided from the
//! acquisition physics in the DICOM header, with the rule that decided.
//!
//! The rules follow what the published converters key on — dcm2niix's BIDS guess (Siemens
//! sequence names `tfl`/`tir`/`spcir`/`ep_b`, Philips SequenceVariant `MP`, GE `FSE` with `IR`,
//! diffusion b-values in (0018,9087), (0019,100C) and (0043,1039), localizers by too few
//! slices or scout sequences) — made vendor-neutral by deciding on ScanningSequence,
//! SequenceVariant, ScanOptions, RepetitionTime, EchoTime, InversionTime and the field
//! strength. heudiconv's heuristics key on protocol names; here the SeriesDescription and
//! ProtocolName are only a hint: they choose between the classes the physics leaves open (an
//! intermediate echo time, a repetition time between T1 and T2 ranges) and never override it.
//!
//! [`classify`] is a pure function of [`SeriesAttributes`]; [`SeriesAttributes::from_object`]
//! reads one DICOM object and [`SeriesAttributes::merge`] folds the objects of a series.

use crate::formats::dicom::anywhere;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::fmt;

/// The class of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum SeriesClass {
    /// T1-weighted (MPRAGE, IR-FSPGR/BRAVO, TFE, spoiled gradient echo, T1 spin echo, T1 FLAIR,
    /// the MP2RAGE uniform image).
    #[serde(rename = "T1w")]
    T1w,
    /// T2-weighted (long TR, long TE spin echo / TSE / FSE / SPACE / CUBE / VISTA).
    #[serde(rename = "T2w")]
    T2w,
    /// T2-weighted fluid-attenuated inversion recovery.
    #[serde(rename = "FLAIR")]
    Flair,
    /// Diffusion-weighted (and its derived trace, ADC and FA images).
    #[serde(rename = "DWI")]
    Dwi,
    /// Localizer / scout.
    #[serde(rename = "localizer")]
    Localizer,
    /// Anything else: PD, STIR, T2*, SWI, angiography, EPI, perfusion, derived maps, and
    /// series whose physics is ambiguous or missing.
    #[serde(rename = "other")]
    Other,
}

impl SeriesClass {
    /// All classes, in the order documentation lists them.
    pub const ALL: [SeriesClass; 6] = [
        SeriesClass::T1w,
        SeriesClass::T2w,
        SeriesClass::Flair,
        SeriesClass::Dwi,
        SeriesClass::Localizer,
        SeriesClass::Other,
    ];

    /// The name used in sidecars, the index and cohort files: `T1w`, `T2w`, `FLAIR`, `DWI`,
    /// `localizer`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesClass::T1w => "T1w",
            SeriesClass::T2w => "T2w",
            SeriesClass::Flair => "FLAIR",
            SeriesClass::Dwi => "DWI",
            SeriesClass::Localizer => "localizer",
            SeriesClass::Other => "other",
        }
    }

    /// Parses [`SeriesClass::as_str`] (any case).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// Whether the class is a structural image the pipeline registers (T1w or T2w).
    pub fn is_structural(self) -> bool {
        matches!(self, SeriesClass::T1w | SeriesClass::T2w)
    }
}

impl fmt::Display for SeriesClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule that decided a class. [`Rule::code`] is stable (sidecars and the index store it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Modality is not MR.
    NotMr,
    /// ImageType names LOCALIZER.
    LocalizerImageType,
    /// The images of the series lie in more than one orientation (three-plane scout).
    SeveralOrientations,
    /// Fewer than [`MIN_VOLUME_SLICES`] images: not a volume.
    TooFewSlices,
    /// A scout sequence name (Siemens `fl3d1_ns`, or `fl2d1`/`tfl2d1` with few slices).
    ScoutSequence,
    /// A diffusion b-value above [`DIFFUSION_B_MIN`] s/mm² in (0018,9087), (0019,100C),
    /// (0043,1039) or (2001,1003).
    DiffusionBValue,
    /// DiffusionDirectionality, AcquisitionContrast DIFFUSION, ImageType DIFFUSION/ADC/TRACEW/
    /// FA, or a diffusion sequence name (`ep_b`, `re_b`, `_diff`).
    DiffusionMarker,
    /// ImageType carries the MP2RAGE uniform image (`UNI`).
    Mp2rageUniform,
    /// A quantitative map (ImageType T1 MAP, T2 MAP).
    QuantitativeMap,
    /// A phase image.
    PhaseImage,
    /// A derived image (reformat, projection, subtraction) other than the above.
    Derived,
    /// Enhanced MR AcquisitionContrast (0008,9209) T1 or T2.
    AcquisitionContrast,
    /// AcquisitionContrast names a contrast outside the classes (PD, STIR, T2*, TOF, …).
    AcquisitionContrastOther,
    /// Echo-planar readout without diffusion (BOLD, perfusion, field maps).
    EchoPlanar,
    /// Angiography (time of flight).
    Angiography,
    /// Balanced steady-state free precession (TrueFISP, FIESTA, bFFE).
    BalancedSsfp,
    /// Several echo times in one series (dual-echo PD/T2, multi-echo gradient echo).
    SeveralEchoTimes,
    /// Several inversion times in one series.
    SeveralInversionTimes,
    /// RepetitionTime or EchoTime is missing.
    TimingMissing,
    /// Inversion-prepared gradient echo with a short TE (MPRAGE, IR-FSPGR/BRAVO, TFE).
    PreparedGradientEcho,
    /// Inversion-prepared gradient echo with a late inversion (MP2RAGE second inversion).
    LateInversionGradientEcho,
    /// Inversion-prepared gradient echo with a TE too long for T1 weighting.
    PreparedGradientEchoLongEcho,
    /// Short-tau inversion recovery (fat suppression).
    ShortTauInversion,
    /// Long TI, long TR, long TE: fluid-attenuated inversion recovery.
    FluidAttenuatedInversion,
    /// Long TI with a short TE or a short TR (PD-FLAIR, double inversion).
    LongInversionOther,
    /// Intermediate TI, short TE: T1 FLAIR.
    T1Flair,
    /// Inversion recovery outside the T1 FLAIR and FLAIR ranges.
    InversionAmbiguous,
    /// Inversion recovery without an InversionTime.
    InversionTimeMissing,
    /// Spin echo, long TR, long TE.
    LongTrLongTe,
    /// Spin echo, long TR, short TE: proton density.
    ProtonDensity,
    /// Spin echo, long TR, TE between PD and T2 ranges: the description chose T2w.
    IntermediateEchoT2Hint,
    /// Spin echo, long TR, TE between PD and T2 ranges, no T2 description.
    IntermediateEcho,
    /// Spin echo, short TR, short TE.
    ShortTrShortTe,
    /// Spin echo, TR between T1 and T2 ranges, short TE: the description chose T1w.
    IntermediateRepetitionT1Hint,
    /// Spin echo with a weighting none of the above (e.g. short TR, long TE).
    SpinEchoMixed,
    /// Spoiled gradient echo with a short TR and TE (FLASH, SPGR, T1-FFE).
    SpoiledGradientEcho,
    /// Gradient echo with a long TE (T2*, SWI).
    T2StarGradientEcho,
    /// Gradient echo without T1 weighting (low flip angle or long TR with short TE).
    GradientEchoWeak,
    /// ScanningSequence is missing or is research mode only.
    SequenceUnknown,
}

impl Rule {
    /// The stable short name (`prepared-gradient-echo`, `fluid-attenuated-inversion`, …).
    pub fn code(self) -> &'static str {
        match self {
            Rule::NotMr => "not-mr",
            Rule::LocalizerImageType => "localizer-image-type",
            Rule::SeveralOrientations => "several-orientations",
            Rule::TooFewSlices => "too-few-slices",
            Rule::ScoutSequence => "scout-sequence",
            Rule::DiffusionBValue => "diffusion-b-value",
            Rule::DiffusionMarker => "diffusion-marker",
            Rule::Mp2rageUniform => "mp2rage-uniform",
            Rule::QuantitativeMap => "quantitative-map",
            Rule::PhaseImage => "phase-image",
            Rule::Derived => "derived-image",
            Rule::AcquisitionContrast => "acquisition-contrast",
            Rule::AcquisitionContrastOther => "acquisition-contrast-other",
            Rule::EchoPlanar => "echo-planar",
            Rule::Angiography => "angiography",
            Rule::BalancedSsfp => "balanced-ssfp",
            Rule::SeveralEchoTimes => "several-echo-times",
            Rule::SeveralInversionTimes => "several-inversion-times",
            Rule::TimingMissing => "timing-missing",
            Rule::PreparedGradientEcho => "prepared-gradient-echo",
            Rule::LateInversionGradientEcho => "late-inversion-gradient-echo",
            Rule::PreparedGradientEchoLongEcho => "prepared-gradient-echo-long-te",
            Rule::ShortTauInversion => "short-tau-inversion",
            Rule::FluidAttenuatedInversion => "fluid-attenuated-inversion",
            Rule::LongInversionOther => "long-inversion-other",
            Rule::T1Flair => "t1-flair",
            Rule::InversionAmbiguous => "inversion-ambiguous",
            Rule::InversionTimeMissing => "inversion-time-missing",
            Rule::LongTrLongTe => "long-tr-long-te",
            Rule::ProtonDensity => "proton-density",
            Rule::IntermediateEchoT2Hint => "intermediate-te-t2-description",
            Rule::IntermediateEcho => "intermediate-te",
            Rule::ShortTrShortTe => "short-tr-short-te",
            Rule::IntermediateRepetitionT1Hint => "intermediate-tr-t1-description",
            Rule::SpinEchoMixed => "spin-echo-mixed",
            Rule::SpoiledGradientEcho => "spoiled-gradient-echo",
            Rule::T2StarGradientEcho => "t2star-gradient-echo",
            Rule::GradientEchoWeak => "gradient-echo-weak",
            Rule::SequenceUnknown => "sequence-unknown",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Fewer images than this are not a volume (a single image is a localizer, as dcm2niix
/// decides for Siemens and GE).
pub const MIN_VOLUME_SLICES: usize = 2;
/// Scout sequence names (`fl2d1`, `tfl2d1`) classify as localizer up to this many images.
pub const SCOUT_MAX_SLICES: usize = 16;
/// b-values (s/mm²) above this make a series diffusion-weighted.
pub const DIFFUSION_B_MIN: f64 = 50.0;

/// Timing ranges (milliseconds) of the weightings at one field strength.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranges {
    /// Which field the ranges are for (`1.5 T`, `3 T`, `unknown field`).
    pub label: &'static str,
    /// Spin echo T1w: TR at most this.
    pub t1_tr_max: f64,
    /// T1w (spin echo, T1 FLAIR): TE at most this.
    pub t1_te_max: f64,
    /// Spin echo T2w / PD: TR at least this.
    pub t2_tr_min: f64,
    /// T2w: TE at least this.
    pub t2_te_min: f64,
    /// PD: TE at most this.
    pub pd_te_max: f64,
    /// STIR: TI at most this (fat null: ~150 ms at 1.5 T, ~220 ms at 3 T).
    pub stir_ti_max: f64,
    /// T1 FLAIR: TI in this range.
    pub t1_flair_ti: (f64, f64),
    /// FLAIR: TI at least this (CSF null, ~1600–2800 ms at both fields).
    pub flair_ti_min: f64,
    /// FLAIR: TE at least this.
    pub flair_te_min: f64,
    /// FLAIR: TR at least this for a 2-D acquisition.
    pub flair_tr_min_2d: f64,
    /// FLAIR: TR at least this for a 3-D (variable flip angle) acquisition.
    pub flair_tr_min_3d: f64,
    /// Gradient echo T1w / prepared gradient echo: TE at most this.
    pub gre_t1_te_max: f64,
    /// 3-D spoiled gradient echo T1w: TR at most this.
    pub gre_t1_tr_max: f64,
    /// Gradient echo T2*: TE at least this.
    pub t2star_te_min: f64,
}

/// Ranges at 1.5 T: shorter tissue T1 allows shorter T1w TR; longer T2 wants longer T2w TE.
pub const RANGES_1_5T: Ranges = Ranges {
    label: "1.5 T",
    t1_tr_max: 800.0,
    t1_te_max: 30.0,
    t2_tr_min: 2000.0,
    t2_te_min: 80.0,
    pd_te_max: 40.0,
    stir_ti_max: 250.0,
    t1_flair_ti: (600.0, 1300.0),
    flair_ti_min: 1500.0,
    flair_te_min: 60.0,
    flair_tr_min_2d: 6000.0,
    flair_tr_min_3d: 4000.0,
    gre_t1_te_max: 10.0,
    gre_t1_tr_max: 100.0,
    t2star_te_min: 15.0,
};

/// Ranges at 3 T: longer tissue T1 (T1w spin echo TR up to ~1200 ms, STIR TI ~220 ms),
/// shorter T2 (T2w TE from ~75 ms); every other bound as at 1.5 T.
pub const RANGES_3T: Ranges =
    Ranges { label: "3 T", t1_tr_max: 1200.0, t2_te_min: 75.0, stir_ti_max: 300.0, ..RANGES_1_5T };

impl Ranges {
    /// The ranges for a field strength in tesla: 1.5 T below 2 T, 3 T from 2 T; unknown
    /// takes the wider of the two at every bound.
    pub fn for_field(tesla: Option<f64>) -> Ranges {
        match tesla {
            Some(t) if t.is_finite() && t > 0.0 && t < 2.0 => RANGES_1_5T,
            Some(t) if t.is_finite() && t >= 2.0 => RANGES_3T,
            _ => Ranges {
                label: "unknown field",
                t1_tr_max: RANGES_3T.t1_tr_max,
                t2_te_min: RANGES_3T.t2_te_min,
                stir_ti_max: RANGES_3T.stir_ti_max,
                ..RANGES_1_5T
            },
        }
    }
}

/// What classification reads from the headers of one series (no identities).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesAttributes {
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Manufacturer (0008,0070).
    pub manufacturer: Option<String>,
    /// MagneticFieldStrength (0018,0087), tesla.
    pub magnetic_field_strength: Option<f64>,
    /// ScanningSequence (0018,0020) values: SE, IR, GR, EP, RM.
    pub scanning_sequence: Vec<String>,
    /// SequenceVariant (0018,0021) values: SK, MTC, SS, TRSS, SP, MP, OSP, NONE.
    pub sequence_variant: Vec<String>,
    /// ScanOptions (0018,0022) values (GE: `IR_GEMS`, `FAST_GEMS`, …).
    pub scan_options: Vec<String>,
    /// SequenceName (0018,0024), else PulseSequenceName (0018,9005), else GE's (0019,109C).
    pub sequence_name: Option<String>,
    /// Distinct RepetitionTime values (ms).
    pub repetition_times_ms: Vec<f64>,
    /// Distinct EchoTime / EffectiveEchoTime values (ms).
    pub echo_times_ms: Vec<f64>,
    /// Distinct InversionTime values (ms), zeros dropped (GE writes 0 for no inversion).
    pub inversion_times_ms: Vec<f64>,
    /// FlipAngle (0018,1314), degrees.
    pub flip_angle_deg: Option<f64>,
    /// ImageType (0008,0008) values of any image of the series, upper case.
    pub image_type: Vec<String>,
    /// MRAcquisitionType (0018,0023): `2D` or `3D`.
    pub acquisition_type: Option<String>,
    /// AcquisitionContrast (0008,9209) of enhanced MR objects.
    pub acquisition_contrast: Option<String>,
    /// DiffusionDirectionality (0018,9075).
    pub diffusion_directionality: Option<String>,
    /// Largest diffusion b-value found (s/mm²).
    pub max_b_value: Option<f64>,
    /// Number of images (frames, mosaic tiles).
    pub slices: usize,
    /// The objects are a sample of their series (one instance per series, as a PACS query
    /// returns): the image count is unknown and its rules are skipped.
    pub sample: bool,
    /// Distinct image orientations (rounded row and column cosines).
    pub orientations: Vec<[i32; 6]>,
    /// SeriesDescription and ProtocolName (the hint).
    pub descriptions: Vec<String>,
}

/// The decision: class, rule and the values it read.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The class.
    pub class: SeriesClass,
    /// The rule that decided.
    pub rule: Rule,
    /// The rule in words with the values that fired it.
    pub reason: String,
    /// What the description suggests, if anything (recorded; it decides only where the
    /// physics leaves a choice).
    pub hint: Option<SeriesClass>,
}

fn push_distinct(values: &mut Vec<f64>, value: f64) {
    if !values.iter().any(|v| (v - value).abs() <= 0.01 * v.abs().max(1.0)) {
        values.push(value);
    }
}

fn multi_text(object: &InMemDicomObject, tag: Tag) -> Vec<String> {
    object
        .get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|values| {
            values
                .iter()
                .map(|v| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_ascii_uppercase())
                .filter(|v| !v.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = object.get(tag)?;
    if element.vr() == dicom_core::VR::SQ {
        return None;
    }
    let value = match element.vr() {
        // Private elements of implicit-VR files arrive as raw bytes.
        dicom_core::VR::UN => String::from_utf8_lossy(&element.to_bytes().ok()?).into_owned(),
        _ => element.value().to_str().ok()?.into_owned(),
    };
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

fn float(object: &InMemDicomObject, tag: Tag) -> Option<f64> {
    let element = object.get(tag)?;
    let value = match element.vr() {
        dicom_core::VR::UN | dicom_core::VR::IS | dicom_core::VR::DS | dicom_core::VR::LO => {
            text(object, tag)?.split('\\').next()?.trim().parse().ok()?
        }
        _ => element.to_float64().ok()?,
    };
    value.is_finite().then_some(value)
}

/// Private b-value elements, each for the manufacturer that defines it.
const PRIVATE_B_VALUES: [(&str, Tag); 3] =
    [("SIEMENS", Tag(0x0019, 0x100C)), ("GE", Tag(0x0043, 0x1039)), ("PHILIPS", Tag(0x2001, 0x1003))];

impl SeriesAttributes {
    /// Reads one object's header (enhanced objects: functional groups too).
    pub fn from_object(object: &InMemDicomObject) -> Self {
        let manufacturer = text(object, tags::MANUFACTURER);
        let upper_manufacturer = manufacturer.as_deref().unwrap_or("").to_ascii_uppercase();
        let mut attributes = SeriesAttributes {
            modality: text(object, tags::MODALITY).map(|m| m.to_ascii_uppercase()),
            magnetic_field_strength: float(object, tags::MAGNETIC_FIELD_STRENGTH),
            scanning_sequence: multi_text(object, tags::SCANNING_SEQUENCE),
            sequence_variant: multi_text(object, tags::SEQUENCE_VARIANT),
            scan_options: multi_text(object, tags::SCAN_OPTIONS),
            sequence_name: text(object, tags::SEQUENCE_NAME)
                .or_else(|| anywhere(object, |g| text(g, tags::PULSE_SEQUENCE_NAME)))
                .or_else(|| {
                    upper_manufacturer.starts_with("GE").then(|| text(object, Tag(0x0019, 0x109C))).flatten()
                }),
            flip_angle_deg: anywhere(object, |g| float(g, tags::FLIP_ANGLE)),
            image_type: multi_text(object, tags::IMAGE_TYPE),
            acquisition_type: text(object, tags::MR_ACQUISITION_TYPE).map(|t| t.to_ascii_uppercase()),
            acquisition_contrast: anywhere(object, |g| text(g, tags::ACQUISITION_CONTRAST))
                .map(|t| t.to_ascii_uppercase()),
            diffusion_directionality: anywhere(object, |g| text(g, tags::DIFFUSION_DIRECTIONALITY))
                .map(|t| t.to_ascii_uppercase()),
            descriptions: [tags::SERIES_DESCRIPTION, tags::PROTOCOL_NAME]
                .into_iter()
                .filter_map(|tag| text(object, tag))
                .collect(),
            manufacturer,
            ..Default::default()
        };
        if let Some(tr) = anywhere(object, |g| float(g, tags::REPETITION_TIME)) {
            attributes.repetition_times_ms.push(tr);
        }
        if let Some(te) =
            anywhere(object, |g| float(g, tags::ECHO_TIME).or_else(|| float(g, tags::EFFECTIVE_ECHO_TIME)))
        {
            attributes.echo_times_ms.push(te);
        }
        if let Some(ti) =
            anywhere(object, |g| float(g, tags::INVERSION_TIME).or_else(|| float(g, tags::INVERSION_TIMES)))
            && ti > 0.0
        {
            attributes.inversion_times_ms.push(ti);
        }
        // b-values: the standard element (top level or any frame), then the vendor's own.
        let mut b_values: Vec<f64> = float(object, tags::DIFFUSION_B_VALUE).into_iter().collect();
        if let Some(frames) = object.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|e| e.items()) {
            for frame in frames {
                if let Some(diffusion) = frame.get(tags::MR_DIFFUSION_SEQUENCE).and_then(|e| e.items()) {
                    b_values.extend(diffusion.iter().filter_map(|item| float(item, tags::DIFFUSION_B_VALUE)));
                }
            }
        }
        for (vendor, tag) in PRIVATE_B_VALUES {
            if upper_manufacturer.starts_with(vendor)
                && let Some(b) = float(object, tag)
            {
                // GE adds 10^9 to flag the b-value's origin (dcm2niix issue 602).
                b_values.push(if vendor == "GE" { b % 1e9 } else { b });
            }
        }
        attributes.max_b_value = b_values.into_iter().filter(|b| b.is_finite()).reduce(f64::max);
        attributes.slices = object
            .get(tags::NUMBER_OF_FRAMES)
            .and_then(|e| e.to_int::<i64>().ok())
            .filter(|&n| n > 0)
            .or_else(|| {
                upper_manufacturer
                    .starts_with("SIEMENS")
                    .then(|| float(object, Tag(0x0019, 0x100A)).map(|n| n as i64))
                    .flatten()
                    .filter(|&n| n > 0)
            })
            .unwrap_or(1) as usize;
        let orientation = anywhere(object, |g| {
            g.get(tags::IMAGE_ORIENTATION_PATIENT)
                .and_then(|e| e.to_multi_float64().ok())
                .filter(|v| v.len() == 6)
        });
        if let Some(cosines) = orientation {
            attributes.orientations.push(std::array::from_fn(|i| (cosines[i] * 20.0).round() as i32));
        }
        attributes
    }

    /// Folds another object of the same series in: counts add up, distinct timings and
    /// orientations are kept, the largest b-value wins, ImageType values are united.
    pub fn merge(&mut self, other: &SeriesAttributes) {
        self.slices += other.slices;
        for &tr in &other.repetition_times_ms {
            push_distinct(&mut self.repetition_times_ms, tr);
        }
        for &te in &other.echo_times_ms {
            push_distinct(&mut self.echo_times_ms, te);
        }
        for &ti in &other.inversion_times_ms {
            push_distinct(&mut self.inversion_times_ms, ti);
        }
        for orientation in &other.orientations {
            if !self.orientations.contains(orientation) {
                self.orientations.push(*orientation);
            }
        }
        for value in &other.image_type {
            if !self.image_type.contains(value) {
                self.image_type.push(value.clone());
            }
        }
        self.max_b_value = match (self.max_b_value, other.max_b_value) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let fill = |mine: &mut Option<String>, theirs: &Option<String>| {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        };
        fill(&mut self.diffusion_directionality, &other.diffusion_directionality);
        fill(&mut self.acquisition_contrast, &other.acquisition_contrast);
    }

    /// The one value of a list (the first of several).
    fn first(values: &[f64]) -> Option<f64> {
        values.first().copied()
    }

    fn has(values: &[String], wanted: &str) -> bool {
        values.iter().any(|v| v == wanted)
    }

    /// The values rules read, for reasons: `ScanningSequence GR\IR, SequenceVariant SP\MP,
    /// TR 2300 ms, TE 2.98 ms, TI 900 ms, 3D, 176 images, 3 T`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let list = |values: &[String]| values.join("\\");
        if !self.scanning_sequence.is_empty() {
            parts.push(format!("ScanningSequence {}", list(&self.scanning_sequence)));
        }
        if !self.sequence_variant.is_empty() {
            parts.push(format!("SequenceVariant {}", list(&self.sequence_variant)));
        }
        if let Some(name) = &self.sequence_name {
            parts.push(format!("sequence {name}"));
        }
        let times = |label: &str, values: &[f64]| {
            (!values.is_empty()).then(|| {
                let values: Vec<String> =
                    values.iter().map(|v| format!("{}", (v * 100.0).round() / 100.0)).collect();
                format!("{label} {} ms", values.join("/"))
            })
        };
        parts.extend(times("TR", &self.repetition_times_ms));
        parts.extend(times("TE", &self.echo_times_ms));
        parts.extend(times("TI", &self.inversion_times_ms));
        if let Some(b) = self.max_b_value {
            parts.push(format!("b {b}"));
        }
        if let Some(kind) = &self.acquisition_type {
            parts.push(kind.clone());
        }
        if !self.sample {
            parts.push(format!("{} images", self.slices));
        }
        if let Some(t) = self.magnetic_field_strength {
            parts.push(format!("{t} T"));
        }
        parts.join(", ")
    }
}

/// What a description suggests (upper-cased words of SeriesDescription / ProtocolName).
pub fn description_hint(descriptions: &[String]) -> Option<SeriesClass> {
    let text = descriptions.join(" ").to_uppercase();
    let words: Vec<&str> = text.split(|c: char| !c.is_ascii_alphanumeric() && c != '*').collect();
    let any_word = |candidates: &[&str]| words.iter().any(|w| candidates.contains(w));
    let any_part = |candidates: &[&str]| candidates.iter().any(|c| text.contains(c));
    if any_part(&["LOCALIZER", "LOCALISER", "SCOUT", "SURVEY", "3PLANE", "3-PLANE", "3 PLANE"])
        || any_word(&["LOC", "LOCS"])
    {
        Some(SeriesClass::Localizer)
    } else if any_part(&["DWI", "DTI", "DIFFUSION", "TRACEW", "ADC"]) || any_word(&["DIFF"]) {
        Some(SeriesClass::Dwi)
    } else if any_part(&["FLAIR", "DARK FLUID", "DARK-FLUID", "DARKFLUID"]) {
        // "T1 FLAIR" is a T1w technique.
        if any_word(&["T1", "T1W", "T1FLAIR"]) { Some(SeriesClass::T1w) } else { Some(SeriesClass::Flair) }
    } else if any_word(&["T2", "T2W", "T2TSE", "T2FSE", "SPACE", "CUBE", "VISTA"])
        || any_part(&["T2_", "T2W"])
    {
        Some(SeriesClass::T2w)
    } else if any_word(&["T1", "T1W", "MPRAGE", "MP2RAGE", "SPGR", "FSPGR", "BRAVO", "TFE", "T1TFE"])
        || any_part(&["MPRAGE", "MP-RAGE", "T1_", "T1W"])
    {
        Some(SeriesClass::T1w)
    } else {
        None
    }
}

/// Classifies a series (see the module documentation; the rules are checked in the order
/// below and the first that fires decides).
pub fn classify(attributes: &SeriesAttributes) -> Classification {
    let hint = description_hint(&attributes.descriptions);
    let ranges = Ranges::for_field(attributes.magnetic_field_strength);
    let decided = |class: SeriesClass, rule: Rule, why: String| Classification {
        class,
        rule,
        reason: format!("{why} ({}; {} ranges)", attributes.summary(), ranges.label),
        hint,
    };
    let has = SeriesAttributes::has;
    let image_type = &attributes.image_type;
    let sequence = &attributes.scanning_sequence;
    let variant = &attributes.sequence_variant;
    let name = attributes.sequence_name.as_deref().unwrap_or("").to_ascii_lowercase();

    if let Some(modality) = attributes.modality.as_deref().filter(|m| *m != "MR") {
        return decided(SeriesClass::Other, Rule::NotMr, format!("Modality {modality}, not MR"));
    }
    // Localizers.
    if has(image_type, "LOCALIZER") {
        return decided(SeriesClass::Localizer, Rule::LocalizerImageType, "ImageType LOCALIZER".into());
    }
    if attributes.orientations.len() > 1 {
        return decided(
            SeriesClass::Localizer,
            Rule::SeveralOrientations,
            format!("images in {} orientations (multi-plane scout)", attributes.orientations.len()),
        );
    }
    if !attributes.sample && attributes.slices < MIN_VOLUME_SLICES {
        return decided(
            SeriesClass::Localizer,
            Rule::TooFewSlices,
            format!("{} image(s), fewer than {MIN_VOLUME_SLICES}: not a volume", attributes.slices),
        );
    }
    let scout_name = name.contains("fl3d1_ns")
        || ((name.contains("fl2d1") || name.contains("tfl2d1"))
            && (attributes.sample || attributes.slices <= SCOUT_MAX_SLICES));
    if scout_name {
        return decided(SeriesClass::Localizer, Rule::ScoutSequence, format!("scout sequence {name}"));
    }

    // Diffusion (before derived: ADC and trace images are derived).
    if let Some(b) = attributes.max_b_value.filter(|&b| b > DIFFUSION_B_MIN) {
        return decided(
            SeriesClass::Dwi,
            Rule::DiffusionBValue,
            format!("b-value {b} > {DIFFUSION_B_MIN} s/mm²"),
        );
    }
    let directional = attributes
        .diffusion_directionality
        .as_deref()
        .is_some_and(|d| matches!(d, "DIRECTIONAL" | "ISOTROPIC" | "BMATRIX"));
    let diffusion_image = ["DIFFUSION", "ADC", "TRACEW", "FA", "EADC"].iter().any(|v| has(image_type, v));
    let diffusion_name = ["ep_b", "re_b", "ez_b", "_diff", "dwi", "dti"].iter().any(|n| name.contains(n));
    if directional
        || diffusion_image
        || diffusion_name
        || attributes.acquisition_contrast.as_deref() == Some("DIFFUSION")
    {
        return decided(
            SeriesClass::Dwi,
            Rule::DiffusionMarker,
            "diffusion directionality, acquisition contrast, ImageType or sequence name".into(),
        );
    }

    // Derived images.
    if has(image_type, "UNI") || image_type.iter().any(|v| v.ends_with("_UNI")) {
        return decided(
            SeriesClass::T1w,
            Rule::Mp2rageUniform,
            "ImageType UNI (MP2RAGE uniform image)".into(),
        );
    }
    if image_type.iter().any(|v| v.ends_with(" MAP") || v == "T1MAP" || v == "T2MAP" || v == "R2STAR") {
        return decided(
            SeriesClass::Other,
            Rule::QuantitativeMap,
            "ImageType names a quantitative map".into(),
        );
    }
    if has(image_type, "P") || has(image_type, "PHASE") {
        return decided(SeriesClass::Other, Rule::PhaseImage, "ImageType P/PHASE".into());
    }
    if image_type.first().is_some_and(|v| v == "DERIVED")
        || ["MIP", "MPR", "PROJECTION IMAGE", "SUBTRACTION"].iter().any(|v| has(image_type, v))
    {
        return decided(
            SeriesClass::Other,
            Rule::Derived,
            "ImageType DERIVED / MPR / MIP: not an acquired volume".into(),
        );
    }

    // Enhanced MR states its contrast.
    match attributes.acquisition_contrast.as_deref() {
        Some("T1") => {
            return decided(SeriesClass::T1w, Rule::AcquisitionContrast, "AcquisitionContrast T1".into());
        }
        Some("T2") => {
            return decided(SeriesClass::T2w, Rule::AcquisitionContrast, "AcquisitionContrast T2".into());
        }
        Some(
            contrast @ ("PROTON_DENSITY" | "STIR" | "T2_STAR" | "TOF" | "PERFUSION" | "FLOW_ENCODED"
            | "TAGGING"),
        ) => {
            return decided(
                SeriesClass::Other,
                Rule::AcquisitionContrastOther,
                format!("AcquisitionContrast {contrast}"),
            );
        }
        _ => {}
    }

    // Readouts outside the structural classes.
    if has(sequence, "EP") {
        return decided(SeriesClass::Other, Rule::EchoPlanar, "echo-planar readout without diffusion".into());
    }
    if name.contains("tof") || name.contains("fl3d1r") || has(image_type, "ANGIO") {
        return decided(SeriesClass::Other, Rule::Angiography, "time-of-flight angiography".into());
    }
    let tr = SeriesAttributes::first(&attributes.repetition_times_ms);
    let te = SeriesAttributes::first(&attributes.echo_times_ms);
    let ti = SeriesAttributes::first(&attributes.inversion_times_ms);
    let gradient_echo = has(sequence, "GR") && !has(sequence, "SE");
    let spin_echo = has(sequence, "SE");
    let inversion = has(sequence, "IR")
        || attributes.scan_options.iter().any(|o| o == "IR" || o == "IR_GEMS")
        || ti.is_some()
        || (gradient_echo && has(variant, "MP"));
    let three_d = attributes.acquisition_type.as_deref() == Some("3D");
    let balanced_name = ["trufi", "fiesta", "bffe", "ciss", "fisp"].iter().any(|n| name.contains(n));
    let balanced_timing = gradient_echo
        && !has(variant, "SP")
        && !inversion
        && matches!((tr, te), (Some(tr), Some(te)) if tr < 10.0 && (te - tr / 2.0).abs() <= 0.15 * tr);
    if balanced_name || balanced_timing {
        return decided(
            SeriesClass::Other,
            Rule::BalancedSsfp,
            "balanced steady-state free precession".into(),
        );
    }
    if attributes.echo_times_ms.len() > 1 {
        return decided(
            SeriesClass::Other,
            Rule::SeveralEchoTimes,
            format!("{} echo times in one series", attributes.echo_times_ms.len()),
        );
    }
    if attributes.inversion_times_ms.len() > 1 {
        return decided(
            SeriesClass::Other,
            Rule::SeveralInversionTimes,
            format!("{} inversion times in one series", attributes.inversion_times_ms.len()),
        );
    }
    let (Some(tr), Some(te)) = (tr, te) else {
        return decided(SeriesClass::Other, Rule::TimingMissing, "RepetitionTime or EchoTime missing".into());
    };
    // Inversion recovery.
    if inversion && gradient_echo {
        if let Some(ti) = ti.filter(|&ti| ti >= ranges.flair_ti_min) {
            return decided(
                SeriesClass::Other,
                Rule::LateInversionGradientEcho,
                format!(
                    "gradient echo with TI {ti} ms ≥ {} ms (second inversion, PD-like)",
                    ranges.flair_ti_min
                ),
            );
        }
        if te <= ranges.gre_t1_te_max {
            return decided(
                SeriesClass::T1w,
                Rule::PreparedGradientEcho,
                format!(
                    "inversion-prepared gradient echo, TE {te} ms ≤ {} ms (MPRAGE, IR-FSPGR/BRAVO, TFE)",
                    ranges.gre_t1_te_max
                ),
            );
        }
        return decided(
            SeriesClass::Other,
            Rule::PreparedGradientEchoLongEcho,
            format!("inversion-prepared gradient echo with TE {te} ms > {} ms", ranges.gre_t1_te_max),
        );
    }
    if inversion {
        let Some(ti) = ti else {
            return decided(
                SeriesClass::Other,
                Rule::InversionTimeMissing,
                "inversion recovery without InversionTime".into(),
            );
        };
        if ti <= ranges.stir_ti_max {
            return decided(
                SeriesClass::Other,
                Rule::ShortTauInversion,
                format!("TI {ti} ms ≤ {} ms: fat-nulling STIR", ranges.stir_ti_max),
            );
        }
        if ti >= ranges.flair_ti_min {
            let tr_min = if three_d { ranges.flair_tr_min_3d } else { ranges.flair_tr_min_2d };
            if te >= ranges.flair_te_min && tr >= tr_min {
                return decided(
                    SeriesClass::Flair,
                    Rule::FluidAttenuatedInversion,
                    format!(
                        "TI {ti} ms ≥ {} ms, TR {tr} ms ≥ {tr_min} ms ({}), TE {te} ms ≥ {} ms: CSF-nulled T2w",
                        ranges.flair_ti_min,
                        if three_d { "3D" } else { "2D" },
                        ranges.flair_te_min
                    ),
                );
            }
            return decided(
                SeriesClass::Other,
                Rule::LongInversionOther,
                format!(
                    "TI {ti} ms ≥ {} ms but TE {te} ms < {} ms or TR {tr} ms < {tr_min} ms",
                    ranges.flair_ti_min, ranges.flair_te_min
                ),
            );
        }
        let (low, high) = ranges.t1_flair_ti;
        if (low..=high).contains(&ti) && te <= ranges.t1_te_max {
            return decided(
                SeriesClass::T1w,
                Rule::T1Flair,
                format!("TI {ti} ms in {low}–{high} ms, TE {te} ms ≤ {} ms: T1 FLAIR", ranges.t1_te_max),
            );
        }
        return decided(
            SeriesClass::Other,
            Rule::InversionAmbiguous,
            format!("TI {ti} ms with TE {te} ms fits neither T1 FLAIR nor FLAIR"),
        );
    }

    // Spin echo (SE, TSE/FSE, 3-D variable flip angle).
    if spin_echo {
        if tr >= ranges.t2_tr_min {
            if te >= ranges.t2_te_min {
                return decided(
                    SeriesClass::T2w,
                    Rule::LongTrLongTe,
                    format!("TR {tr} ms ≥ {} ms, TE {te} ms ≥ {} ms", ranges.t2_tr_min, ranges.t2_te_min),
                );
            }
            if te <= ranges.pd_te_max {
                return decided(
                    SeriesClass::Other,
                    Rule::ProtonDensity,
                    format!(
                        "TR {tr} ms ≥ {} ms, TE {te} ms ≤ {} ms: proton density",
                        ranges.t2_tr_min, ranges.pd_te_max
                    ),
                );
            }
            let why = format!(
                "TR {tr} ms ≥ {} ms, TE {te} ms between {} and {} ms",
                ranges.t2_tr_min, ranges.pd_te_max, ranges.t2_te_min
            );
            if hint == Some(SeriesClass::T2w) {
                return decided(
                    SeriesClass::T2w,
                    Rule::IntermediateEchoT2Hint,
                    format!("{why}; the description says T2"),
                );
            }
            return decided(SeriesClass::Other, Rule::IntermediateEcho, why);
        }
        if te <= ranges.t1_te_max {
            if tr <= ranges.t1_tr_max {
                return decided(
                    SeriesClass::T1w,
                    Rule::ShortTrShortTe,
                    format!("TR {tr} ms ≤ {} ms, TE {te} ms ≤ {} ms", ranges.t1_tr_max, ranges.t1_te_max),
                );
            }
            if hint == Some(SeriesClass::T1w) {
                return decided(
                    SeriesClass::T1w,
                    Rule::IntermediateRepetitionT1Hint,
                    format!(
                        "TR {tr} ms between {} and {} ms, TE {te} ms ≤ {} ms; the description says T1",
                        ranges.t1_tr_max, ranges.t2_tr_min, ranges.t1_te_max
                    ),
                );
            }
        }
        return decided(
            SeriesClass::Other,
            Rule::SpinEchoMixed,
            format!("spin echo with TR {tr} ms, TE {te} ms"),
        );
    }

    // Gradient echo without preparation.
    if gradient_echo {
        if te >= ranges.t2star_te_min {
            return decided(
                SeriesClass::Other,
                Rule::T2StarGradientEcho,
                format!("gradient echo TE {te} ms ≥ {} ms: T2*/SWI", ranges.t2star_te_min),
            );
        }
        let flip = attributes.flip_angle_deg;
        let spoiled_3d = three_d && tr <= ranges.gre_t1_tr_max && flip.is_none_or(|f| f >= 8.0);
        let spoiled_2d = tr <= ranges.t1_tr_max && flip.is_some_and(|f| f >= 45.0);
        if te <= ranges.gre_t1_te_max && (spoiled_3d || spoiled_2d) {
            return decided(
                SeriesClass::T1w,
                Rule::SpoiledGradientEcho,
                format!(
                    "spoiled gradient echo TR {tr} ms, TE {te} ms ≤ {} ms, flip {}",
                    ranges.gre_t1_te_max,
                    flip.map(|f| format!("{f}°")).unwrap_or_else(|| "unknown".into())
                ),
            );
        }
        return decided(
            SeriesClass::Other,
            Rule::GradientEchoWeak,
            "gradient echo without T1 weighting (low flip angle, long TR or 2-D with small flip)".into(),
        );
    }
    decided(SeriesClass::Other, Rule::SequenceUnknown, "ScanningSequence missing or research mode".into())
}

#[cfg(test)]
mod tests;
