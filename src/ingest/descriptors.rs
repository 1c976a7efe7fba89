//! The *Clean Descriptors* option of DICOM PS3.15 Annex E: free-text descriptors
//! (SeriesDescription, ProtocolName, StudyDescription, ImageComments, …), which the Basic
//! Profile removes, are kept for what they say about the acquisition, with every token that
//! matches one of the patient's identities removed: a part of the name, the national
//! identifier, the patient ID or the birth date in any of its usual spellings. The comparison
//! ignores case and separators (`ROSSI`, `rossi`, `R.O.S.S.I` are the same token; `1980-01-01`,
//! `01.01.1980` and `19800101` are the same date).

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::collections::BTreeSet;
use std::fmt;

/// The option's code in CID 7050 (value, meaning).
pub const CLEAN_DESCRIPTORS_CODE: (&str, &str) = ("113105", "Clean Descriptors Option");

/// Descriptors kept, cleaned, under the option (the Basic Profile removes each of them).
pub const CLEANED_DESCRIPTORS: [Tag; 7] = [
    tags::STUDY_DESCRIPTION,
    tags::SERIES_DESCRIPTION,
    tags::PROTOCOL_NAME,
    tags::IMAGE_COMMENTS,
    tags::PERFORMED_PROCEDURE_STEP_DESCRIPTION,
    tags::REQUESTED_PROCEDURE_DESCRIPTION,
    tags::DERIVATION_DESCRIPTION,
];

/// Identifiers shorter than this are matched only as whole tokens (never inside one).
const MIN_EMBEDDED: usize = 6;

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/// The patient's identities in normalized form (upper case, letters and digits only), held in
/// memory for one ingest. Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdentityTokens {
    /// Name parts and their concatenations.
    names: BTreeSet<String>,
    /// Identifiers and birth-date spellings.
    identifiers: BTreeSet<String>,
}

impl fmt::Debug for IdentityTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityTokens(<redacted>)")
    }
}

fn normalize(text: &str) -> String {
    text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_uppercase).collect()
}

fn text_values(object: &InMemDicomObject, tag: Tag) -> Vec<String> {
    object
        .get(tag)
        .and_then(|element| element.value().to_multi_str().ok())
        .map(|values| {
            values.iter().map(|v| v.trim_matches(|c: char| c == '\0' || c == ' ').to_owned()).collect()
        })
        .unwrap_or_default()
}

impl IdentityTokens {
    /// Adds a person name (DICOM PN `Family^Given^Middle^Prefix^Suffix`, or free text).
    pub fn add_name(&mut self, name: &str) {
        let parts: Vec<String> = name
            .split(|c: char| !c.is_alphanumeric())
            .map(normalize)
            .filter(|part| part.chars().count() >= 2)
            .collect();
        if parts.len() > 1 {
            self.names.insert(parts.concat());
            self.names.insert(parts.iter().rev().cloned().collect::<Vec<_>>().concat());
        }
        self.names.extend(parts);
    }

    /// Adds an identifier (national identifier, patient ID).
    pub fn add_identifier(&mut self, identifier: &str) {
        let normalized = normalize(identifier);
        if !normalized.is_empty() {
            self.identifiers.insert(normalized);
        }
    }

    /// Adds a DICOM date `YYYYMMDD` in its usual spellings: year first or last, day before or
    /// after month, four- or two-digit year, and the English month abbreviation.
    pub fn add_birth_date(&mut self, date: &str) {
        let date = date.trim();
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return;
        }
        let (year, month, day) = (&date[0..4], &date[4..6], &date[6..8]);
        let short = &year[2..];
        let mut forms = vec![
            format!("{year}{month}{day}"),
            format!("{day}{month}{year}"),
            format!("{month}{day}{year}"),
            format!("{short}{month}{day}"),
            format!("{day}{month}{short}"),
            format!("{month}{day}{short}"),
        ];
        if let Some(name) = month.parse::<usize>().ok().and_then(|m| MONTHS.get(m.wrapping_sub(1))) {
            forms.push(format!("{day}{name}{year}"));
            forms.push(format!("{}{name}{year}", day.trim_start_matches('0')));
        }
        self.identifiers.extend(forms);
    }

    /// The identities an object carries: patient name (and other, birth and mother's birth
    /// names), patient ID and other IDs, birth date.
    pub fn from_object(object: &InMemDicomObject) -> Self {
        let mut tokens = IdentityTokens::default();
        for tag in [
            tags::PATIENT_NAME,
            tags::OTHER_PATIENT_NAMES,
            tags::PATIENT_BIRTH_NAME,
            tags::PATIENT_MOTHER_BIRTH_NAME,
        ] {
            for name in text_values(object, tag) {
                tokens.add_name(&name);
            }
        }
        for id in text_values(object, tags::PATIENT_ID) {
            tokens.add_identifier(&id);
        }
        if let Some(items) = object.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).and_then(|e| e.items()) {
            for item in items {
                for id in text_values(item, tags::PATIENT_ID) {
                    tokens.add_identifier(&id);
                }
            }
        }
        for date in text_values(object, tags::PATIENT_BIRTH_DATE) {
            tokens.add_birth_date(&date);
        }
        tokens
    }

    /// Adds every identity of `other`.
    pub fn merge(&mut self, other: IdentityTokens) {
        self.names.extend(other.names);
        self.identifiers.extend(other.identifiers);
    }

    fn identifies(&self, token: &str) -> bool {
        let whole = normalize(token);
        if whole.is_empty() {
            return false;
        }
        if self.names.contains(&whole) || self.identifiers.contains(&whole) {
            return true;
        }
        let part_matches = token
            .split(|c: char| !c.is_alphanumeric())
            .map(normalize)
            .any(|part| self.names.contains(&part) || self.identifiers.contains(&part));
        part_matches
            || self
                .identifiers
                .iter()
                .any(|id| id.chars().count() >= MIN_EMBEDDED && whole.contains(id.as_str()))
    }

    /// The descriptor without the tokens that match an identity. Tokens are separated by
    /// white space and `_ ^ , ; : ( ) [ ]`; `.`, `-` and `/` stay inside a token (dates).
    pub fn clean(&self, text: &str) -> String {
        let is_separator = |c: char| c.is_whitespace() || "_^,;:()[]".contains(c);
        let mut out = String::with_capacity(text.len());
        let mut token = String::new();
        let flush = |token: &mut String, out: &mut String| {
            if !self.identifies(token) {
                out.push_str(token);
            }
            token.clear();
        };
        for c in text.chars() {
            if is_separator(c) {
                flush(&mut token, &mut out);
                out.push(c);
            } else {
                token.push(c);
            }
        }
        flush(&mut token, &mut out);
        // Separators left around removed tokens are folded.
        let words: Vec<&str> = out.split_whitespace().collect();
        words.join(" ").trim_matches(|c: char| is_separator(c) || c == '-').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rossi() -> IdentityTokens {
        let mut tokens = IdentityTokens::default();
        tokens.add_name("ROSSI^MARIO");
        tokens.add_identifier("RSSMRA80A01H501U");
        tokens.add_identifier("PID-00042");
        tokens.add_birth_date("19800101");
        tokens
    }

    #[test]
    fn identities_are_removed_whatever_their_case_and_separators() {
        let tokens = rossi();
        for (input, expected) in [
            ("T1 BRAIN ROSSI MARIO", "T1 BRAIN"),
            ("BRAIN RSSMRA80A01H501U", "BRAIN"),
            ("brain rssmra80a01h501u", "brain"),
            ("BRAIN rss-mra-80a01-h501u", "BRAIN"),
            ("T1_MPRAGE_Rossi_Mario", "T1_MPRAGE"),
            ("Mario.Rossi T2", "T2"),
            ("RossiMario FLAIR", "FLAIR"),
            ("born 1980-01-01", "born"),
            ("01.01.1980 T1", "T1"),
            ("T1 19800101", "T1"),
            ("T1 01/01/80", "T1"),
            ("T1 1-JAN-1980", "T1"),
            ("T1 PID00042", "T1"),
            ("T1 x19800101y", "T1"),
            ("T1 MPRAGE sag 1mm", "T1 MPRAGE sag 1mm"),
            ("FLAIR AX", "FLAIR AX"),
        ] {
            assert_eq!(tokens.clean(input), expected, "{input}");
        }
        assert!(!format!("{tokens:?}").contains("ROSSI"));
    }

    #[test]
    fn short_name_parts_do_not_eat_ordinary_words() {
        let mut tokens = IdentityTokens::default();
        tokens.add_name("LI^T");
        assert_eq!(tokens.clean("T1 FLAIR LI"), "T1 FLAIR");
        assert_eq!(tokens.clean("T1 SLICE"), "T1 SLICE");
    }
}
