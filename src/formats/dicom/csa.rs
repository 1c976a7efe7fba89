//! Siemens CSA headers (private elements `(0029,xx10)` "CSA Image Header Info" and
//! `(0029,xx20)` "CSA Series Header Info" of the private block `SIEMENS CSA HEADER`).
//!
//! Two layouts exist. CSA2 starts with `SV10`, four unused bytes, then the tag count and a check
//! word; CSA1 starts directly with the tag count and the check word. Then, per tag: a 64-byte
//! NUL-terminated name, the value multiplicity (i32), a 4-byte VR, the SyngoDT code (i32), the
//! item count (i32) and a check word (i32); per item: four i32 words, the second of which is
//! the item's length, then the item's text padded to a multiple of 4 bytes. Item values are
//! text (numbers are written as decimal strings).
//!
//! The parser is bounded (at most [`MAX_TAGS`] tags and [`MAX_ITEMS`] items per tag, every
//! length checked against the buffer) and never panics: a header it cannot read is `None`,
//! and the caller decides whether the information was needed.

use std::collections::BTreeMap;

/// Most tags accepted in one header (real headers hold about 100).
pub(crate) const MAX_TAGS: u32 = 1000;
/// Most items accepted per tag.
pub(crate) const MAX_ITEMS: u32 = 1000;

/// A parsed CSA header: tag name → its non-empty item values, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CsaHeader {
    tags: BTreeMap<String, Vec<String>>,
}

/// Reads little-endian words from a byte slice, failing (not panicking) past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(count)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Text up to the first NUL, trimmed of spaces.
fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_owned()
}

impl CsaHeader {
    /// Parses a CSA1 or CSA2 header; `None` when the bytes are not a well-formed header.
    pub(crate) fn parse(bytes: &[u8]) -> Option<CsaHeader> {
        let mut reader = Reader { bytes, at: 0 };
        if bytes.starts_with(b"SV10") {
            reader.take(8)?;
        }
        let tag_count = reader.u32()?;
        let _check = reader.u32()?;
        if tag_count == 0 || tag_count > MAX_TAGS {
            return None;
        }
        let mut tags = BTreeMap::new();
        for _ in 0..tag_count {
            let name = nul_terminated(reader.take(64)?);
            let multiplicity = reader.i32()?;
            let _vr = reader.take(4)?;
            let _syngo_dt = reader.i32()?;
            let item_count = reader.i32()?;
            let _check = reader.i32()?;
            let item_count = u32::try_from(item_count).ok().filter(|&n| n <= MAX_ITEMS)?;
            // Only the first `multiplicity` items carry values (when it is positive).
            let wanted = usize::try_from(multiplicity).ok().filter(|&m| m > 0).unwrap_or(item_count as usize);
            let mut values = Vec::new();
            for index in 0..item_count as usize {
                let _ = reader.i32()?;
                let length = usize::try_from(reader.i32()?).ok()?;
                let _ = reader.take(8)?;
                let value = reader.take(length)?;
                // Items are padded to 4 bytes; the last one may end the buffer unpadded.
                reader.at = (reader.at + (4 - length % 4) % 4).min(bytes.len());
                if index < wanted {
                    let text = nul_terminated(value);
                    if !text.is_empty() {
                        values.push(text);
                    }
                }
            }
            tags.insert(name, values);
        }
        Some(CsaHeader { tags })
    }

    /// The non-empty values of a tag (`None` when the tag is absent).
    pub(crate) fn values(&self, name: &str) -> Option<&[String]> {
        self.tags.get(name).map(Vec::as_slice)
    }

    /// The first value of a tag as an integer.
    pub(crate) fn int(&self, name: &str) -> Option<i64> {
        let text = self.values(name)?.first()?;
        text.parse::<i64>().ok().or_else(|| {
            text.parse::<f64>().ok().filter(|v| v.is_finite() && v.fract() == 0.0).map(|v| v as i64)
        })
    }

    /// The values of a tag as `N` finite numbers.
    pub(crate) fn floats<const N: usize>(&self, name: &str) -> Option<[f64; N]> {
        let values = self.values(name)?;
        if values.len() < N {
            return None;
        }
        let mut out = [0.0; N];
        for (slot, text) in out.iter_mut().zip(values) {
            *slot = text.parse::<f64>().ok().filter(|v| v.is_finite())?;
        }
        Some(out)
    }
}

/// Writes a CSA2 header holding the given tags (tests and synthetic data).
#[cfg(test)]
pub(crate) fn encode_csa2(tags: &[(&str, &str, &[&str])]) -> Vec<u8> {
    let mut out = b"SV10\x04\x03\x02\x01".to_vec();
    out.extend_from_slice(&(tags.len() as u32).to_le_bytes());
    out.extend_from_slice(&77u32.to_le_bytes());
    for (name, vr, values) in tags {
        let mut name_bytes = [0u8; 64];
        name_bytes[..name.len()].copy_from_slice(name.as_bytes());
        out.extend_from_slice(&name_bytes);
        out.extend_from_slice(&(values.len() as i32).to_le_bytes());
        let mut vr_bytes = [0u8; 4];
        vr_bytes[..vr.len()].copy_from_slice(vr.as_bytes());
        out.extend_from_slice(&vr_bytes);
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&(values.len() as i32).to_le_bytes());
        out.extend_from_slice(&77i32.to_le_bytes());
        for value in *values {
            let mut text = value.as_bytes().to_vec();
            text.push(0);
            let length = text.len() as i32;
            for word in [length, length, 77, length] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&text);
            out.resize(out.len() + (4 - text.len() % 4) % 4, 0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode_csa2(&[
            ("NumberOfImagesInMosaic", "US", &["48"]),
            ("SliceNormalVector", "FD", &["0.00000000", "0.00523632", "-0.99998629"]),
            ("Empty", "IS", &[]),
        ])
    }

    #[test]
    fn reads_what_it_is_given() {
        let header = CsaHeader::parse(&sample()).expect("well-formed");
        assert_eq!(header.int("NumberOfImagesInMosaic"), Some(48));
        assert_eq!(header.floats::<3>("SliceNormalVector"), Some([0.0, 0.00523632, -0.99998629]));
        assert_eq!(header.values("Empty"), Some(&[][..]));
        assert_eq!(header.values("Absent"), None);
        assert_eq!(header.floats::<4>("SliceNormalVector"), None);
    }

    #[test]
    fn csa1_layout_without_signature() {
        let csa2 = sample();
        let header = CsaHeader::parse(&csa2[8..]).expect("CSA1 layout");
        assert_eq!(header.int("NumberOfImagesInMosaic"), Some(48));
    }

    #[test]
    fn truncated_or_lying_headers_are_none_never_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() - 4 {
            // Any truncation either parses fewer complete fields or fails; it must not panic.
            let _ = CsaHeader::parse(&bytes[..cut]);
        }
        assert!(CsaHeader::parse(&bytes[..40]).is_none());
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(CsaHeader::parse(&huge).is_none());
        // An item length pointing past the end.
        let mut lying = bytes.clone();
        let item_length_at = 16 + 84 + 4;
        lying[item_length_at..item_length_at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(CsaHeader::parse(&lying).is_none());
        // Every single-byte corruption: no panic.
        for at in 0..bytes.len() {
            let mut corrupted = bytes.clone();
            corrupted[at] ^= 0xA5;
            let _ = CsaHeader::parse(&corrupted);
        }
    }
}
