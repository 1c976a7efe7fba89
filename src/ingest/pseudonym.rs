//! National pseudonym: HMAC-SHA-256 of the normalized national identifier under a secret key.
//!
//! The same patient gets the same pseudonym at every centre that shares the key, so studies
//! of one child made at different hospitals link without any centre learning who the child
//! is. The pseudonym is plain `HMAC-SHA-256(key, normalized identifier)` written as 64 lower
//! case hexadecimal digits, so another centre can reproduce it with any standard tool.
//!
//! Neither the identifier nor the key is ever printed: [`NationalId`] and [`PseudonymKey`]
//! have redacting `Debug` implementations and no `Display`, and every error names the rule
//! that failed, never the value.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Environment variable naming the pseudonym key file when no path is configured.
pub const KEY_FILE_ENV: &str = "PEDINORM_PSEUDONYM_KEY_FILE";

/// Shortest accepted key, in bytes (the HMAC-SHA-256 block output size: shorter keys weaken
/// the hash against guessing the small space of valid identifiers).
pub const MIN_KEY_BYTES: usize = 32;

/// Errors of key loading and identifier validation. None of them carries the identifier or
/// the key.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymError {
    /// Neither a key file path nor the environment variable was given.
    #[error("no pseudonym key file: pass a key file or set {KEY_FILE_ENV}")]
    KeyFileUnset,
    /// The key file could not be read.
    #[error("pseudonym key file {path}: cannot read: {source}")]
    KeyFileRead {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file holds fewer than [`MIN_KEY_BYTES`] bytes.
    #[error("pseudonym key file {path}: key shorter than {MIN_KEY_BYTES} bytes")]
    KeyTooShort {
        /// The key file.
        path: PathBuf,
    },
    /// The national identifier breaks a rule of its scheme.
    #[error("national identifier invalid: {0}")]
    InvalidIdentifier(IdentifierProblem),
}

/// Which rule of the codice fiscale an identifier breaks (never the identifier itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierProblem {
    /// Not 16 characters after normalization.
    #[error("expected 16 characters, found {0}")]
    Length(usize),
    /// A character that is not allowed at its (1-based) position.
    #[error("character not allowed at position {0}")]
    Character(usize),
    /// The month letter (position 9) is not one of `ABCDEHLMPRST`.
    #[error("month letter not valid")]
    Month,
    /// The day of birth (positions 10–11) is not within 1–31 or 41–71.
    #[error("day of birth not valid")]
    Day,
    /// The check character (position 16) does not match the first fifteen.
    #[error("check character mismatch")]
    CheckCharacter,
}

/// The secret HMAC key. Its bytes are never printed.
#[derive(Clone)]
pub struct PseudonymKey {
    bytes: Vec<u8>,
}

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(<redacted>)")
    }
}

impl PseudonymKey {
    /// A key from raw bytes (at least [`MIN_KEY_BYTES`]); `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_BYTES).then(|| Self { bytes: bytes.to_vec() })
    }

    /// Reads the key from a file: its contents with surrounding ASCII whitespace removed (so a
    /// trailing newline left by an editor does not change the key).
    pub fn from_file(path: &Path) -> Result<Self, PseudonymError> {
        let contents = std::fs::read(path)
            .map_err(|source| PseudonymError::KeyFileRead { path: path.to_path_buf(), source })?;
        warn_if_readable_by_others(path, "pseudonym key file");
        Self::from_bytes(contents.trim_ascii())
            .ok_or_else(|| PseudonymError::KeyTooShort { path: path.to_path_buf() })
    }

    /// Reads the key from `configured` if given, otherwise from the file named by the
    /// environment variable [`KEY_FILE_ENV`].
    pub fn load(configured: Option<&Path>) -> Result<Self, PseudonymError> {
        match configured {
            Some(path) => Self::from_file(path),
            None => match std::env::var_os(KEY_FILE_ENV) {
                Some(path) if !path.is_empty() => Self::from_file(Path::new(&path)),
                _ => Err(PseudonymError::KeyFileUnset),
            },
        }
    }

    /// HMAC-SHA-256 of `message` under this key.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.bytes).expect("HMAC accepts any key length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// HMAC of a message in a named domain (`domain` NUL `message`). Normalized identifiers
    /// never contain NUL, so these can never collide with a pseudonym.
    pub fn mac_in_domain(&self, domain: &str, message: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.bytes).expect("HMAC accepts any key length");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// Warns when a secret key file the program reads (`what`: the pseudonym key file, the audit
/// key file) may be read by group or others.
#[cfg(unix)]
pub(crate) fn warn_if_readable_by_others(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(key_file = %path.display(), "{what} is readable by group or others");
    }
}

/// Warns when a secret key file may be read by others (no permission bits to check here).
#[cfg(not(unix))]
pub(crate) fn warn_if_readable_by_others(_path: &Path, _what: &str) {}

/// A validated, normalized national identifier (Italian codice fiscale). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalId {
    normalized: String,
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NationalId(<redacted>)")
    }
}

/// Letters that replace the digits 0–9 in an omocodic codice fiscale.
const OMOCODIA_LETTERS: &[u8; 10] = b"LMNPQRSTUV";
/// Month letters January–December.
const MONTH_LETTERS: &[u8; 12] = b"ABCDEHLMPRST";
/// Check-character weights of characters at odd (1-based) positions, for `0`–`9` and `A`–`Z`
/// (digits weigh as the letter of the same index: `0` as `A`, `1` as `B`, …).
const ODD_WEIGHTS: [u32; 26] =
    [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23];
/// (1-based) positions that hold digits, or their omocodia letters.
const DIGIT_POSITIONS: [usize; 7] = [7, 8, 10, 11, 13, 14, 15];

impl NationalId {
    /// Normalizes (upper case, spaces removed) and validates an Italian codice fiscale:
    /// structure, month letter, day of birth, omocodia substitutions and the check character.
    pub fn codice_fiscale(raw: &str) -> Result<Self, PseudonymError> {
        let normalized: String =
            raw.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        validate_codice_fiscale(&normalized).map_err(PseudonymError::InvalidIdentifier)?;
        Ok(Self { normalized })
    }

    /// The pseudonym of this identifier under `key`.
    pub fn pseudonym(&self, key: &PseudonymKey) -> Pseudonym {
        Pseudonym(hex::encode(key.mac(self.normalized.as_bytes())))
    }
}

fn validate_codice_fiscale(code: &str) -> Result<(), IdentifierProblem> {
    let bytes = code.as_bytes();
    let length = code.chars().count();
    if length != 16 || bytes.len() != 16 {
        return Err(IdentifierProblem::Length(length));
    }
    for (index, &byte) in bytes.iter().enumerate() {
        let position = index + 1;
        let allowed = if DIGIT_POSITIONS.contains(&position) {
            byte.is_ascii_digit() || OMOCODIA_LETTERS.contains(&byte)
        } else {
            byte.is_ascii_uppercase()
        };
        if !allowed {
            return Err(IdentifierProblem::Character(position));
        }
    }
    if !MONTH_LETTERS.contains(&bytes[8]) {
        return Err(IdentifierProblem::Month);
    }
    // Women's codes add 40 to the day, so valid days are 1–31 and 41–71.
    let day = omocodia_digit(bytes[9]) * 10 + omocodia_digit(bytes[10]);
    if !(1..=31).contains(&day) && !(41..=71).contains(&day) {
        return Err(IdentifierProblem::Day);
    }
    if check_character(&bytes[..15]) != bytes[15] {
        return Err(IdentifierProblem::CheckCharacter);
    }
    Ok(())
}

/// The digit an omocodia position stands for.
fn omocodia_digit(byte: u8) -> u32 {
    if byte.is_ascii_digit() {
        u32::from(byte - b'0')
    } else {
        OMOCODIA_LETTERS.iter().position(|&letter| letter == byte).map_or(0, |p| p as u32)
    }
}

/// The check character of the first fifteen characters (upper-case letters and digits):
/// odd positions weigh by [`ODD_WEIGHTS`], even positions by their index (0–9, A=0…Z=25),
/// and the sum modulo 26 is a letter. Omocodia letters weigh as letters, as the algorithm
/// prescribes.
pub fn check_character(first_fifteen: &[u8]) -> u8 {
    let index = |byte: u8| -> usize {
        if byte.is_ascii_digit() { usize::from(byte - b'0') } else { usize::from(byte - b'A') }
    };
    let sum: u32 = first_fifteen
        .iter()
        .enumerate()
        .map(|(i, &byte)| if i % 2 == 0 { ODD_WEIGHTS[index(byte)] } else { index(byte) as u32 })
        .sum();
    b'A' + (sum % 26) as u8
}

/// A patient's pseudonym: 64 lower-case hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Pseudonym(String);

impl Pseudonym {
    /// The pseudonym of a study that is not linked to a national identifier: keyed on the
    /// study's original StudyInstanceUID, so re-ingesting the study gives the same pseudonym but
    /// it links to nothing else.
    pub fn unlinked(key: &PseudonymKey, study_instance_uid: &str) -> Self {
        Self(hex::encode(key.mac_in_domain("pedinorm-unlinked-study", study_instance_uid.as_bytes())))
    }

    /// Wraps a stored pseudonym; `None` unless it is 64 lower-case hexadecimal digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(text.to_owned()))
    }

    /// The full hexadecimal pseudonym.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, enough to tell patients apart in logs.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A codice fiscale with a correct check character, built from a valid stem.
    fn with_check(stem: &str) -> String {
        format!("{stem}{}", check_character(stem.as_bytes()) as char)
    }

    #[test]
    fn hmac_known_answer_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key, below our minimum: drive the MAC directly.
        let key = PseudonymKey { bytes: b"Jefe".to_vec() };
        assert_eq!(
            hex::encode(key.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pseudonym_is_hmac_of_normalized_identifier() {
        let key = PseudonymKey::from_bytes(&[0x0b; 32]).unwrap();
        let id = NationalId::codice_fiscale("rss mra 85t10 a562s").unwrap();
        // Computed independently: python3 -c "import hmac,hashlib;
        // print(hmac.new(b'\x0b'*32,b'RSSMRA85T10A562S',hashlib.sha256).hexdigest())"
        assert_eq!(
            id.pseudonym(&key).as_str(),
            "d550e5ce4bb66673e9c35d55b642d4320f1bce7eaca134b68fb29b792bc0b36d"
        );
        assert_eq!(id.pseudonym(&key).as_str().len(), 64);
        assert_eq!(id.pseudonym(&key).short().len(), 12);
    }

    #[test]
    fn known_valid_codes() {
        // Published examples of the algorithm (fictitious people).
        for code in ["RSSMRA85T10A562S", "MRTMTT25D09F205Z"] {
            assert!(NationalId::codice_fiscale(code).is_ok(), "{code}");
        }
        assert_eq!(check_character(b"RSSMRA85T10A562"), b'S');
    }

    #[test]
    fn lower_case_and_spaces_normalize() {
        let a = NationalId::codice_fiscale("RSSMRA85T10A562S").unwrap();
        let b = NationalId::codice_fiscale("  rssmra 85t10\ta562s ").unwrap();
        assert_eq!(a, b);
        let key = PseudonymKey::from_bytes(&[7u8; 40]).unwrap();
        assert_eq!(a.pseudonym(&key), b.pseudonym(&key));
    }

    #[test]
    fn wrong_check_character_is_rejected_without_echoing_the_value() {
        let error = NationalId::codice_fiscale("RSSMRA85T10A562T").unwrap_err();
        let message = error.to_string();
        assert_eq!(message, "national identifier invalid: check character mismatch");
        assert!(!message.contains("RSSMRA"));
        assert!(!format!("{error:?}").contains("RSSMRA"));
    }

    #[test]
    fn structural_errors_are_named() {
        let cases = [
            ("RSSMRA85T10A562", IdentifierProblem::Length(15)),
            ("RSSMRA8XT10A562S", IdentifierProblem::Character(8)),
            ("R5SMRA85T10A562S", IdentifierProblem::Character(2)),
            ("RSSMRA85Z10A562S", IdentifierProblem::Month),
            ("RSSMRA85T32A562S", IdentifierProblem::Day),
        ];
        for (code, expected) in cases {
            match NationalId::codice_fiscale(code) {
                Err(PseudonymError::InvalidIdentifier(problem)) => assert_eq!(problem, expected, "{code}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn omocodia_substitutions_validate_with_their_own_check_character() {
        // Replace digits from the right (as the registry does): 2 → N, then 6 → S, then 5 → R.
        for stem in ["RSSMRA85T10A56N", "RSSMRA85T10A5SN", "RSSMRA85T10ARSN", "RSSMRAUQTMLARSN"] {
            let code = with_check(stem);
            assert!(NationalId::codice_fiscale(&code).is_ok(), "{code}");
            // The same code with the base code's check character fails unless they coincide.
            let mut wrong = code.clone().into_bytes();
            wrong[15] = if wrong[15] == b'A' { b'B' } else { b'A' };
            let wrong = String::from_utf8(wrong).unwrap();
            assert!(matches!(
                NationalId::codice_fiscale(&wrong),
                Err(PseudonymError::InvalidIdentifier(IdentifierProblem::CheckCharacter))
            ));
        }
        // An omocodic code is a different person's code: a different pseudonym.
        let key = PseudonymKey::from_bytes(&[1u8; 32]).unwrap();
        let base = NationalId::codice_fiscale("RSSMRA85T10A562S").unwrap();
        let omocode = NationalId::codice_fiscale(&with_check("RSSMRA85T10A56N")).unwrap();
        assert_ne!(base.pseudonym(&key), omocode.pseudonym(&key));
        // A letter outside LMNPQRSTUV cannot replace a digit.
        assert!(matches!(
            NationalId::codice_fiscale(&with_check("RSSMRA85T10A56A")),
            Err(PseudonymError::InvalidIdentifier(IdentifierProblem::Character(15)))
        ));
    }

    #[test]
    fn key_file_is_trimmed_and_too_short_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"0123456789abcdef0123456789abcdef\n").unwrap();
        let key = PseudonymKey::from_file(&path).unwrap();
        assert_eq!(
            key.mac(b"x"),
            PseudonymKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap().mac(b"x")
        );
        assert!(!format!("{key:?}").contains("0123"));
        std::fs::write(&path, b"short\n").unwrap();
        let error = PseudonymKey::from_file(&path).unwrap_err();
        assert!(matches!(error, PseudonymError::KeyTooShort { .. }));
        assert!(!error.to_string().contains("short\n"));
        assert!(matches!(
            PseudonymKey::from_file(&dir.path().join("missing")),
            Err(PseudonymError::KeyFileRead { .. })
        ));
    }

    #[test]
    fn unlinked_pseudonyms_are_deterministic_and_distinct() {
        let key = PseudonymKey::from_bytes(&[9u8; 32]).unwrap();
        assert_eq!(Pseudonym::unlinked(&key, "1.2.3"), Pseudonym::unlinked(&key, "1.2.3"));
        assert_ne!(Pseudonym::unlinked(&key, "1.2.3"), Pseudonym::unlinked(&key, "1.2.4"));
        assert!(Pseudonym::from_hex(Pseudonym::unlinked(&key, "1.2.3").as_str()).is_some());
        assert!(Pseudonym::from_hex("XYZ").is_none());
    }
}
