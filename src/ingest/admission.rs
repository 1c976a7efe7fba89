//! Admission rules: which studies each database accepts, reported as a list of named reasons.
//!
//! * Database B (normal paediatric controls): every series is MR of the brain or head
//!   (BodyPartExamined HEAD, BRAIN or SKULL, or — when the body part is missing or a broader
//!   region — a series, protocol or study description naming the brain), acquired at 3 T
//!   (MagneticFieldStrength within 2.9–3.1 T), and the patient's age is known with
//!   0 ≤ age < 18 years; and at least one series is a usable T1w or T2w volume (see
//!   [`super::series_class`]; the other series — FLAIR, DWI, localizers — are stored beside it).
//! * Database A (rare-disease cases): every series is MR at 1.5 T (1.4–1.6 T) or 3 T
//!   (2.9–3.1 T), and the case carries a class: A1 (diagnosis confirmed) or A2 (to be
//!   confirmed).
//!
//! Every rule is checked and every failure is reported, not just the first.

use super::series_class::Classification;
use std::fmt;

/// Field strengths (tesla) accepted as 3 T.
pub const THREE_TESLA: (f64, f64) = (2.9, 3.1);
/// Field strengths (tesla) accepted as 1.5 T.
pub const ONE_AND_A_HALF_TESLA: (f64, f64) = (1.4, 1.6);
/// Oldest age (exclusive, years) accepted into database B.
pub const MAXIMUM_AGE_YEARS: f64 = 18.0;

/// The class of a rare-disease case in database A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CaseClass {
    /// Diagnosis confirmed.
    A1,
    /// Diagnosis to be confirmed.
    A2,
}

impl CaseClass {
    /// `"A1"` or `"A2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseClass::A1 => "A1",
            CaseClass::A2 => "A2",
        }
    }
}

/// The database a study is offered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Database {
    /// Rare-disease cases, with their class.
    A(CaseClass),
    /// Normal paediatric 3 T brain studies.
    B,
}

impl Database {
    /// Parses `--database A|B` and `--class A1|A2`; a class is required for A and refused for B.
    pub fn parse(database: &str, class: Option<&str>) -> Result<Self, String> {
        let class = match class.map(|c| c.trim().to_ascii_uppercase()) {
            None => None,
            Some(c) if c == "A1" => Some(CaseClass::A1),
            Some(c) if c == "A2" => Some(CaseClass::A2),
            Some(_) => return Err("class must be A1 (confirmed) or A2 (to be confirmed)".into()),
        };
        match (database.trim().to_ascii_uppercase().as_str(), class) {
            ("A", Some(class)) => Ok(Database::A(class)),
            ("A", None) => Err("database A needs a class: A1 (confirmed) or A2 (to be confirmed)".into()),
            ("B", None) => Ok(Database::B),
            ("B", Some(_)) => Err("database B takes no class (classes A1/A2 are for database A)".into()),
            _ => Err("database must be A or B".into()),
        }
    }

    /// The directory name and index value: `"A"` or `"B"`.
    pub fn name(self) -> &'static str {
        match self {
            Database::A(_) => "A",
            Database::B => "B",
        }
    }

    /// The case class (database A only).
    pub fn class(self) -> Option<CaseClass> {
        match self {
            Database::A(class) => Some(class),
            Database::B => None,
        }
    }
}

/// What admission needs to know about one series (no identities).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesFacts {
    /// How reasons name the series: `series <SeriesNumber>` or its position.
    pub label: String,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Body Part Examined (0018,0015).
    pub body_part_examined: Option<String>,
    /// Series Description, Protocol Name and Study Description, where present.
    pub descriptions: Vec<String>,
    /// Magnetic Field Strength (0018,0087) in tesla.
    pub magnetic_field_strength: Option<f64>,
    /// The series' class and the rule that decided it.
    pub classification: Option<Classification>,
}

impl SeriesFacts {
    /// `series 4 FLAIR (fluid-attenuated-inversion)`, or `series 4 unclassified`.
    pub fn class_label(&self) -> String {
        match &self.classification {
            Some(c) => format!("{} {} ({})", self.label, c.class, c.rule),
            None => format!("{} unclassified", self.label),
        }
    }

    /// Whether the series is T1w or T2w.
    pub fn is_structural(&self) -> bool {
        self.classification.as_ref().is_some_and(|c| c.class.is_structural())
    }
}

/// What admission needs to know about a study.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StudyFacts {
    /// The patient's age at the study, in years.
    pub age_years: Option<f64>,
    /// The study's series.
    pub series: Vec<SeriesFacts>,
}

/// One named reason a study is refused.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum RefusalReason {
    /// A series is not MR.
    NotMr {
        /// The series.
        series: String,
        /// Its modality, or empty when missing.
        modality: String,
    },
    /// A series is not of the brain or head.
    NotBrain {
        /// The series.
        series: String,
    },
    /// A series has no Magnetic Field Strength.
    FieldStrengthUnknown {
        /// The series.
        series: String,
    },
    /// A series was acquired at a field strength the database does not accept.
    FieldStrengthNotAccepted {
        /// The series.
        series: String,
        /// Its field strength in tesla.
        tesla: f64,
        /// What the database accepts.
        accepted: String,
    },
    /// The patient's age is unknown (no PatientAge, and no birth and study dates).
    AgeUnknown,
    /// The patient's age is outside 0 ≤ age < 18 years.
    AgeOutOfRange {
        /// The age in years.
        age_years: f64,
    },
    /// The study holds no image series that could be read.
    NoSeries,
    /// The inputs hold more than one study.
    MultipleStudies {
        /// How many.
        studies: usize,
    },
    /// A file declares BurnedInAnnotation YES.
    BurnedInAnnotation {
        /// How many files.
        files: usize,
    },
    /// No national identifier was found and unlinked studies were not allowed.
    Unlinked,
    /// The national identifier breaks a rule (the rule is named, never the value).
    InvalidIdentifier {
        /// The rule.
        problem: String,
    },
    /// Files of the study carry different national identifiers.
    ConflictingIdentifiers,
    /// Database B needs a usable T1w or T2w volume and the study has none.
    NoStructuralSeries {
        /// Each series with its class and rule (`series 4 FLAIR (fluid-attenuated-inversion)`),
        /// or why it could not be used.
        series: Vec<String>,
    },
}

impl RefusalReason {
    /// The stable short name of the reason (`not-mr`, `not-brain`, …).
    pub fn code(&self) -> &'static str {
        match self {
            RefusalReason::NotMr { .. } => "not-mr",
            RefusalReason::NotBrain { .. } => "not-brain",
            RefusalReason::FieldStrengthUnknown { .. } => "field-strength-unknown",
            RefusalReason::FieldStrengthNotAccepted { .. } => "field-strength-not-accepted",
            RefusalReason::AgeUnknown => "age-unknown",
            RefusalReason::AgeOutOfRange { .. } => "age-out-of-range",
            RefusalReason::NoSeries => "no-series",
            RefusalReason::MultipleStudies { .. } => "multiple-studies",
            RefusalReason::BurnedInAnnotation { .. } => "burned-in-annotation",
            RefusalReason::Unlinked => "unlinked",
            RefusalReason::InvalidIdentifier { .. } => "invalid-identifier",
            RefusalReason::ConflictingIdentifiers => "conflicting-identifiers",
            RefusalReason::NoStructuralSeries { .. } => "no-t1w-or-t2w",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.code())?;
        match self {
            RefusalReason::NotMr { series, modality } if modality.is_empty() => {
                write!(f, "{series} has no Modality (MR required)")
            }
            RefusalReason::NotMr { series, modality } => write!(f, "{series} is {modality}, not MR"),
            RefusalReason::NotBrain { series } => write!(
                f,
                "{series} is not a brain/head study (BodyPartExamined HEAD/BRAIN or a description naming the brain required)"
            ),
            RefusalReason::FieldStrengthUnknown { series } => {
                write!(f, "{series} has no MagneticFieldStrength")
            }
            RefusalReason::FieldStrengthNotAccepted { series, tesla, accepted } => {
                write!(f, "{series} was acquired at {tesla} T; accepted: {accepted}")
            }
            RefusalReason::AgeUnknown => {
                write!(f, "patient age unknown (no PatientAge and no birth and study dates)")
            }
            RefusalReason::AgeOutOfRange { age_years } => {
                write!(f, "patient age {age_years:.2} years is outside 0 ≤ age < 18")
            }
            RefusalReason::NoSeries => write!(f, "no readable image series in the inputs"),
            RefusalReason::MultipleStudies { studies } => {
                write!(f, "inputs hold {studies} studies; ingest one study at a time")
            }
            RefusalReason::BurnedInAnnotation { files } => {
                write!(f, "{files} file(s) declare BurnedInAnnotation YES")
            }
            RefusalReason::Unlinked => write!(
                f,
                "no national identifier (give one, or an issuer found in OtherPatientIDsSequence, or allow unlinked studies)"
            ),
            RefusalReason::InvalidIdentifier { problem } => {
                write!(f, "national identifier invalid: {problem}")
            }
            RefusalReason::ConflictingIdentifiers => {
                write!(f, "files of the study carry different national identifiers")
            }
            RefusalReason::NoStructuralSeries { series } => write!(
                f,
                "database B needs a usable T1w or T2w series; the study has {}",
                if series.is_empty() { "no series".to_owned() } else { series.join(", ") }
            ),
        }
    }
}

/// Body parts that are the brain or head.
const BRAIN_BODY_PARTS: [&str; 3] = ["HEAD", "BRAIN", "SKULL"];
/// Body parts broader than the head, for which the descriptions decide.
const BROADER_BODY_PARTS: [&str; 3] = ["HEADNECK", "HEAD NECK", "WHOLEBODY"];
/// Words (upper case, English and Italian) in descriptions that name the brain or head.
const BRAIN_WORDS: [&str; 9] =
    ["BRAIN", "HEAD", "NEURO", "CEREB", "CRANI", "ENCEPHAL", "ENCEFAL", "CERVELLO", "ENCEFALO"];

/// Whether a series is of the brain or head.
pub fn is_brain(series: &SeriesFacts) -> bool {
    let body_part = series.body_part_examined.as_deref().map(|b| b.trim().to_ascii_uppercase());
    match body_part.as_deref() {
        Some(part) if BRAIN_BODY_PARTS.contains(&part) => true,
        Some(part) if !part.is_empty() && !BROADER_BODY_PARTS.contains(&part) => false,
        _ => series.descriptions.iter().any(|description| {
            let upper = description.to_uppercase();
            BRAIN_WORDS.iter().any(|word| upper.contains(word))
        }),
    }
}

fn within(tesla: f64, (low, high): (f64, f64)) -> bool {
    tesla >= low && tesla <= high
}

/// Checks a study against a database's rules; an empty list means admitted.
pub fn admission_reasons(database: Database, facts: &StudyFacts) -> Vec<RefusalReason> {
    let mut reasons = Vec::new();
    if facts.series.is_empty() {
        reasons.push(RefusalReason::NoSeries);
    }
    for series in &facts.series {
        let modality = series.modality.as_deref().unwrap_or("").trim().to_ascii_uppercase();
        if modality != "MR" {
            reasons.push(RefusalReason::NotMr { series: series.label.clone(), modality });
        }
        if database == Database::B && !is_brain(series) {
            reasons.push(RefusalReason::NotBrain { series: series.label.clone() });
        }
        match series.magnetic_field_strength {
            None => reasons.push(RefusalReason::FieldStrengthUnknown { series: series.label.clone() }),
            Some(tesla) => {
                let (accepted, text) = match database {
                    Database::B => (within(tesla, THREE_TESLA), "3 T (2.9–3.1 T)"),
                    Database::A(_) => (
                        within(tesla, THREE_TESLA) || within(tesla, ONE_AND_A_HALF_TESLA),
                        "1.5 T (1.4–1.6 T) or 3 T (2.9–3.1 T)",
                    ),
                };
                if !accepted {
                    reasons.push(RefusalReason::FieldStrengthNotAccepted {
                        series: series.label.clone(),
                        tesla,
                        accepted: text.to_owned(),
                    });
                }
            }
        }
    }
    if database == Database::B
        && !facts.series.is_empty()
        && !facts.series.iter().any(SeriesFacts::is_structural)
    {
        reasons.push(RefusalReason::NoStructuralSeries {
            series: facts.series.iter().map(SeriesFacts::class_label).collect(),
        });
    }
    if database == Database::B {
        match facts.age_years {
            None => reasons.push(RefusalReason::AgeUnknown),
            Some(age) if !(0.0..MAXIMUM_AGE_YEARS).contains(&age) => {
                reasons.push(RefusalReason::AgeOutOfRange { age_years: age })
            }
            Some(_) => {}
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::series_class::SeriesClass;

    fn brain_3t() -> SeriesFacts {
        SeriesFacts {
            label: "series 1".into(),
            modality: Some("MR".into()),
            body_part_examined: Some("HEAD".into()),
            descriptions: vec!["T1 MPRAGE".into()],
            magnetic_field_strength: Some(3.0),
            classification: Some(classified(SeriesClass::T1w)),
        }
    }

    fn classified(class: SeriesClass) -> Classification {
        use crate::ingest::series_class::Rule;
        let rule = match class {
            SeriesClass::T1w => Rule::PreparedGradientEcho,
            SeriesClass::Flair => Rule::FluidAttenuatedInversion,
            _ => Rule::TooFewSlices,
        };
        Classification { class, rule, reason: String::new(), hint: None }
    }

    #[test]
    fn database_b_needs_a_t1w_or_t2w_series_and_names_every_other_one() {
        let mut flair = brain_3t();
        flair.label = "series 4".into();
        flair.classification = Some(classified(SeriesClass::Flair));
        let mut scout = brain_3t();
        scout.label = "series 1".into();
        scout.classification = Some(classified(SeriesClass::Localizer));
        let reasons = admission_reasons(Database::B, &study(Some(5.0), vec![scout.clone(), flair.clone()]));
        assert_eq!(codes(&reasons), ["no-t1w-or-t2w"]);
        let text = reasons[0].to_string();
        assert!(
            text.contains("series 4 FLAIR (fluid-attenuated-inversion)")
                && text.contains("series 1 localizer (too-few-slices)"),
            "{text}"
        );
        // With a T1w beside them the study is admitted; database A takes any contrast.
        assert!(
            admission_reasons(Database::B, &study(Some(5.0), vec![scout, flair.clone(), brain_3t()]))
                .is_empty()
        );
        assert!(admission_reasons(Database::A(CaseClass::A1), &study(Some(5.0), vec![flair])).is_empty());
    }

    fn study(age: Option<f64>, series: Vec<SeriesFacts>) -> StudyFacts {
        StudyFacts { age_years: age, series }
    }

    fn codes(reasons: &[RefusalReason]) -> Vec<&'static str> {
        reasons.iter().map(RefusalReason::code).collect()
    }

    #[test]
    fn a_normal_3t_child_brain_is_admitted_to_b() {
        assert!(admission_reasons(Database::B, &study(Some(7.5), vec![brain_3t()])).is_empty());
        assert!(admission_reasons(Database::B, &study(Some(0.0), vec![brain_3t()])).is_empty());
    }

    #[test]
    fn each_b_rule_has_its_reason() {
        let mut ct = brain_3t();
        ct.modality = Some("CT".into());
        assert_eq!(codes(&admission_reasons(Database::B, &study(Some(5.0), vec![ct]))), ["not-mr"]);

        let mut knee = brain_3t();
        knee.body_part_examined = Some("KNEE".into());
        knee.descriptions = vec!["brain".into()];
        assert_eq!(codes(&admission_reasons(Database::B, &study(Some(5.0), vec![knee]))), ["not-brain"]);

        let mut one_five = brain_3t();
        one_five.magnetic_field_strength = Some(1.5);
        assert_eq!(
            codes(&admission_reasons(Database::B, &study(Some(5.0), vec![one_five]))),
            ["field-strength-not-accepted"]
        );
        let mut unknown_field = brain_3t();
        unknown_field.magnetic_field_strength = None;
        assert_eq!(
            codes(&admission_reasons(Database::B, &study(Some(5.0), vec![unknown_field]))),
            ["field-strength-unknown"]
        );

        assert_eq!(codes(&admission_reasons(Database::B, &study(None, vec![brain_3t()]))), ["age-unknown"]);
        assert_eq!(
            codes(&admission_reasons(Database::B, &study(Some(18.0), vec![brain_3t()]))),
            ["age-out-of-range"]
        );
        assert_eq!(
            codes(&admission_reasons(Database::B, &study(Some(-0.1), vec![brain_3t()]))),
            ["age-out-of-range"]
        );
        assert_eq!(codes(&admission_reasons(Database::B, &study(Some(3.0), vec![]))), ["no-series"]);
    }

    #[test]
    fn field_strength_bounds_are_inclusive() {
        for (tesla, accepted) in [(2.9, true), (3.1, true), (2.89, false), (3.11, false)] {
            let mut series = brain_3t();
            series.magnetic_field_strength = Some(tesla);
            assert_eq!(
                admission_reasons(Database::B, &study(Some(1.0), vec![series])).is_empty(),
                accepted,
                "{tesla}"
            );
        }
    }

    #[test]
    fn all_reasons_are_listed_not_just_the_first() {
        let series = SeriesFacts {
            label: "series 4".into(),
            modality: Some("CT".into()),
            body_part_examined: Some("CHEST".into()),
            descriptions: vec![],
            magnetic_field_strength: Some(1.5),
            classification: Some(classified(SeriesClass::T1w)),
        };
        let reasons = admission_reasons(Database::B, &study(Some(40.0), vec![series]));
        assert_eq!(
            codes(&reasons),
            ["not-mr", "not-brain", "field-strength-not-accepted", "age-out-of-range"]
        );
        assert!(reasons[0].to_string().contains("series 4"));
    }

    #[test]
    fn brain_by_description_when_body_part_is_missing() {
        let mut series = brain_3t();
        series.body_part_examined = None;
        series.descriptions = vec!["RM ENCEFALO".into()];
        assert!(is_brain(&series));
        series.descriptions = vec!["T1 SAG".into()];
        assert!(!is_brain(&series));
        series.body_part_examined = Some("HEADNECK".into());
        series.descriptions = vec!["Neuro protocol".into()];
        assert!(is_brain(&series));
        series.body_part_examined = Some("brain".into());
        series.descriptions.clear();
        assert!(is_brain(&series));
    }

    #[test]
    fn database_a_accepts_1_5t_and_3t_any_body_part_and_age() {
        let mut series = brain_3t();
        series.body_part_examined = Some("SPINE".into());
        series.magnetic_field_strength = Some(1.5);
        assert!(
            admission_reasons(Database::A(CaseClass::A2), &study(Some(40.0), vec![series.clone()]))
                .is_empty()
        );
        series.magnetic_field_strength = Some(7.0);
        assert_eq!(
            codes(&admission_reasons(Database::A(CaseClass::A1), &study(None, vec![series]))),
            ["field-strength-not-accepted"]
        );
    }

    #[test]
    fn database_and_class_parse() {
        assert_eq!(Database::parse("b", None), Ok(Database::B));
        assert_eq!(Database::parse("A", Some("a1")), Ok(Database::A(CaseClass::A1)));
        assert!(Database::parse("A", None).is_err());
        assert!(Database::parse("B", Some("A2")).is_err());
        assert!(Database::parse("C", None).is_err());
        assert!(Database::parse("A", Some("A3")).is_err());
    }
}
