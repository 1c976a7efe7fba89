//! A bounded pre-check of a Part-10 object's declared value lengths, run before dicom-object
//! parses it.
//!
//! dicom-parser allocates and zero-fills a value's buffer from its declared length before it
//! reads the value, so one corrupted length field (up to 4 GiB) in a 10 KB file makes it touch
//! gigabytes of memory before failing (a fuzz finding: 4 GiB resident for one input). The walk
//! below reads only element headers and refuses an object in which any defined length is longer
//! than the bytes that follow it, which no well-formed object has. Memory use of the parser is
//! then bounded by the size of the input.

use dicom_core::Tag;
use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_dictionary_std::StandardDataDictionary;

/// Offset of the data set (after the 128-byte preamble and `DICM`).
const META_START: usize = 132;
const UNDEFINED: u32 = u32::MAX;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const SEQUENCE_DELIMITER: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// How the data set after the file meta group is encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    ExplicitBig,
}

/// `Err(reason)` when an element, item or fragment of the object declares a value longer than
/// the bytes left in the input; `Ok` otherwise (also when the walk cannot go on, e.g. a deflated
/// data set or a header cut short: dicom-object then reports what is wrong).
pub(crate) fn check_declared_lengths(bytes: &[u8]) -> Result<(), String> {
    let mut walker = Walker { bytes, position: META_START, encoding: Encoding::ExplicitLittle };
    // The file meta group is explicit VR little endian and, as dicom-object reads it, spans the
    // bytes its group length (0002,0000) says, whatever the tags inside; its transfer syntax
    // says how the data set that follows is encoded.
    let Some((Tag(0x0002, 0x0000), _, 4, value_start)) = walker.peek_header() else {
        return Ok(()); // no group length: dicom-object refuses the object itself
    };
    let Some(group_length) = walker.u32_at(value_start) else { return Ok(()) };
    walker.position = value_start + 4;
    let meta_start = walker.position;
    let mut syntax = None;
    while walker.position - meta_start < group_length as usize {
        let Some((tag, _, length, value_start)) = walker.peek_header() else { return Ok(()) };
        walker.check(tag, length, value_start)?;
        if length == UNDEFINED {
            return Ok(()); // not valid in the meta group: dicom-object reports it
        }
        if tag == Tag(0x0002, 0x0010) {
            let value = &bytes[value_start..value_start + length as usize];
            syntax = Some(String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_owned());
        }
        walker.position = value_start + length as usize;
    }
    walker.encoding = match syntax.as_deref() {
        Some("1.2.840.10008.1.2") => Encoding::ImplicitLittle,
        Some("1.2.840.10008.1.2.2") => Encoding::ExplicitBig,
        // Deflated data sets cannot be walked without inflating them.
        Some("1.2.840.10008.1.2.1.99") => return Ok(()),
        _ => Encoding::ExplicitLittle,
    };
    walker.walk()
}

struct Walker<'a> {
    bytes: &'a [u8],
    position: usize,
    encoding: Encoding,
}

impl Walker<'_> {
    fn u16_at(&self, at: usize) -> Option<u16> {
        let b = self.bytes.get(at..at + 2)?;
        Some(match self.encoding {
            Encoding::ExplicitBig => u16::from_be_bytes([b[0], b[1]]),
            _ => u16::from_le_bytes([b[0], b[1]]),
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.bytes.get(at..at + 4)?;
        Some(match self.encoding {
            Encoding::ExplicitBig => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        })
    }

    /// The header at the current position: tag, VR (explicit, or from the dictionary when
    /// implicit; `None` for items and delimiters), declared length and where the value starts.
    fn peek_header(&self) -> Option<(Tag, Option<VR>, u32, usize)> {
        let at = self.position;
        let tag = Tag(self.u16_at(at)?, self.u16_at(at + 2)?);
        if tag.group() == 0xFFFE {
            return Some((tag, None, self.u32_at(at + 4)?, at + 8));
        }
        if self.encoding == Encoding::ImplicitLittle {
            let vr = StandardDataDictionary.by_tag(tag).and_then(|entry| match entry.vr() {
                VirtualVr::Exact(vr) => Some(vr),
                _ => None,
            });
            return Some((tag, vr, self.u32_at(at + 4)?, at + 8));
        }
        let code = self.bytes.get(at + 4..at + 6)?;
        // An unknown VR code is read as UN (4-byte length), as dicom-parser does.
        let vr = Some(VR::from_binary([code[0], code[1]]).unwrap_or(VR::UN));
        let long = matches!(
            vr,
            Some(
                VR::OB
                    | VR::OD
                    | VR::OF
                    | VR::OL
                    | VR::OV
                    | VR::OW
                    | VR::SQ
                    | VR::SV
                    | VR::UC
                    | VR::UN
                    | VR::UR
                    | VR::UT
                    | VR::UV
            )
        );
        if long {
            Some((tag, vr, self.u32_at(at + 8)?, at + 12))
        } else {
            Some((tag, vr, self.u16_at(at + 6)? as u32, at + 8))
        }
    }

    /// A defined `length` must fit in the bytes after `value_start`.
    fn check(&self, tag: Tag, length: u32, value_start: usize) -> Result<(), String> {
        let left = self.bytes.len().saturating_sub(value_start);
        if length != UNDEFINED && length as usize > left {
            return Err(format!(
                "element ({:04X},{:04X}) at byte {} declares a value of {length} bytes, only {left} follow",
                tag.group(),
                tag.element(),
                self.position
            ));
        }
        Ok(())
    }

    /// Walks the data set element by element: into sequences and items (their contents are
    /// elements), over other values, over the fragments of encapsulated pixel data. A UN element
    /// of undefined length is a sequence in implicit VR little endian (PS3.5 §6.2.2), which the
    /// parser reads as such: its contents are walked in that encoding until its delimiter.
    fn walk(&mut self) -> Result<(), String> {
        // The encoding to restore at each open undefined-length sequence's delimiter.
        let mut open_sequences: Vec<Encoding> = Vec::new();
        while let Some((tag, vr, length, value_start)) = self.peek_header() {
            self.check(tag, length, value_start)?;
            if tag.group() == 0xFFFE {
                if tag == SEQUENCE_DELIMITER
                    && let Some(encoding) = open_sequences.pop()
                {
                    self.encoding = encoding;
                }
                // Items hold elements (walk in); delimiters hold nothing.
                self.position = value_start;
                continue;
            }
            if length == UNDEFINED {
                if tag == PIXEL_DATA {
                    self.position = value_start;
                    self.skip_fragments()?;
                    continue;
                }
                open_sequences.push(self.encoding);
                if vr == Some(VR::UN) {
                    self.encoding = Encoding::ImplicitLittle;
                }
                self.position = value_start;
                continue;
            }
            self.position = if vr == Some(VR::SQ) { value_start } else { value_start + length as usize };
        }
        Ok(())
    }

    /// Encapsulated pixel data: items of raw bytes up to the sequence delimiter.
    fn skip_fragments(&mut self) -> Result<(), String> {
        while let Some((tag, _, length, value_start)) = self.peek_header() {
            self.check(tag, length, value_start)?;
            if tag == SEQUENCE_DELIMITER {
                self.position = value_start;
                return Ok(());
            }
            if tag != ITEM || length == UNDEFINED {
                return Err(format!(
                    "encapsulated PixelData holds ({:04X},{:04X}) with length {length} at byte {}, \
                     where a fragment item of defined length must be",
                    tag.group(),
                    tag.element(),
                    self.position
                ));
            }
            self.position = value_start + length as usize;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Part-10 object: preamble, meta group with the transfer syntax, then `data_set`.
    fn object(syntax: &str, data_set: &[u8]) -> Vec<u8> {
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut bytes = vec![0u8; 128];
        bytes.extend_from_slice(b"DICM");
        bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        bytes.extend_from_slice(&(8 + uid.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        bytes.extend_from_slice(&(uid.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&uid);
        bytes.extend_from_slice(data_set);
        bytes
    }

    fn explicit_short(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), element.to_le_bytes()].concat();
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn explicit_long(group: u16, element: u16, vr: &[u8; 2], length: u32, value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), element.to_le_bytes()].concat();
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn item(tag_element: u16, length: u32, value: &[u8]) -> Vec<u8> {
        let mut out = [0xFFFEu16.to_le_bytes(), tag_element.to_le_bytes()].concat();
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    /// Rows, then a sequence of undefined length with one item of undefined length.
    fn rows_and_one_sequence() -> Vec<u8> {
        let mut data = explicit_short(0x0028, 0x0010, b"US", &[2, 0]);
        data.extend(explicit_long(0x0008, 0x1140, b"SQ", UNDEFINED, &[]));
        data.extend(item(0xE000, UNDEFINED, &explicit_short(0x0008, 0x1150, b"UI", b"1.2\0")));
        data.extend(item(0xE00D, 0, &[]));
        data.extend(item(0xE0DD, 0, &[]));
        data
    }

    #[test]
    fn well_formed_objects_pass() {
        // Rows, a sequence of undefined length with one item, native pixel data.
        let mut data = rows_and_one_sequence();
        data.extend(explicit_long(0x7FE0, 0x0010, b"OW", 8, &[1, 0, 2, 0, 3, 0, 4, 0]));
        assert_eq!(check_declared_lengths(&object(EXPLICIT, &data)), Ok(()));

        // Encapsulated pixel data: an empty offset table, one fragment, the delimiter, and
        // fragments whose bytes look like huge element headers (skipped, not walked).
        let mut data = explicit_long(0x7FE0, 0x0010, b"OB", UNDEFINED, &[]);
        data.extend(item(0xE000, 0, &[]));
        data.extend(item(0xE000, 8, &[0x08, 0x00, 0x10, 0x00, b'O', b'B', 0xFF, 0xFF]));
        data.extend(item(0xE0DD, 0, &[]));
        assert_eq!(check_declared_lengths(&object("1.2.840.10008.1.2.5", &data)), Ok(()));

        // Implicit VR: the dictionary says (0008,1140) is a sequence; its item is walked.
        let mut data = [0x0008u16.to_le_bytes(), 0x1140u16.to_le_bytes()].concat();
        let inner = [0x0008u16.to_le_bytes(), 0x1150u16.to_le_bytes()].concat();
        let inner = [inner, 4u32.to_le_bytes().to_vec(), b"1.2\0".to_vec()].concat();
        let sequence_item = item(0xE000, inner.len() as u32, &inner);
        data.extend((sequence_item.len() as u32).to_le_bytes());
        data.extend(sequence_item);
        assert_eq!(check_declared_lengths(&object("1.2.840.10008.1.2", &data)), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_refused() {
        // Top level.
        let data = explicit_long(0x7FE0, 0x0010, b"OB", 0xFC00_0000, &[0; 16]);
        let error = check_declared_lengths(&object(EXPLICIT, &data)).unwrap_err();
        assert!(error.contains("(7FE0,0010)") && error.contains("4227858432"), "{error}");

        // Inside an item of a sequence.
        let mut data = explicit_long(0x0008, 0x1140, b"SQ", UNDEFINED, &[]);
        data.extend(item(0xE000, UNDEFINED, &explicit_long(0x0009, 0x1010, b"UN", 1 << 30, &[0; 4])));
        let error = check_declared_lengths(&object(EXPLICIT, &data)).unwrap_err();
        assert!(error.contains("(0009,1010)"), "{error}");

        // A pixel data fragment, in big endian.
        let mut data = [0x7FE0u16.to_be_bytes(), 0x0010u16.to_be_bytes()].concat();
        data.extend_from_slice(b"OB\0\0");
        data.extend(UNDEFINED.to_be_bytes());
        data.extend([0xFFFEu16.to_be_bytes(), 0xE000u16.to_be_bytes()].concat());
        data.extend(100_000u32.to_be_bytes());
        data.extend([0u8; 10]);
        let error = check_declared_lengths(&object("1.2.840.10008.1.2.2", &data)).unwrap_err();
        assert!(error.contains("(FFFE,E000)") && error.contains("100000"), "{error}");

        // In the meta group.
        let mut bytes = object(EXPLICIT, &[]);
        bytes.extend(explicit_short(0x0002, 0x0013, b"SH", b"ab"));
        let last = bytes.len() - 4;
        bytes[last] = 200;
        assert!(check_declared_lengths(&bytes).is_err());
    }

    /// Implicit VR element: tag, 4-byte length, value.
    fn implicit(group: u16, element: u16, length: u32, value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), element.to_le_bytes()].concat();
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn an_undefined_length_un_is_walked_as_an_implicit_vr_sequence() {
        // A private UN sequence (implicit VR inside) then explicit VR elements again: passes.
        let mut data = explicit_long(0x0029, 0x1010, b"UN", UNDEFINED, &[]);
        data.extend(item(0xE000, UNDEFINED, &implicit(0x0029, 0x1011, 4, b"abcd")));
        data.extend(item(0xE00D, 0, &[]));
        data.extend(item(0xE0DD, 0, &[]));
        data.extend(explicit_short(0x0028, 0x0010, b"US", &[2, 0]));
        assert_eq!(check_declared_lengths(&object(EXPLICIT, &data)), Ok(()));

        // Inside it, an implicit VR element declaring more bytes than follow: refused.
        let mut data = explicit_long(0x0029, 0x1010, b"UN", UNDEFINED, &[]);
        data.extend(item(0xE000, UNDEFINED, &implicit(0x0029, 0x1011, 0xA27A_A140, b"abcd")));
        let error = check_declared_lengths(&object(EXPLICIT, &data)).unwrap_err();
        assert!(error.contains("(0029,1011)"), "{error}");
    }

    #[test]
    fn every_truncation_of_a_valid_object_is_walked_without_panic() {
        let mut data = rows_and_one_sequence();
        data.extend(explicit_long(0x7FE0, 0x0010, b"OB", UNDEFINED, &[]));
        data.extend(item(0xE000, 4, &[1, 2, 3, 4]));
        data.extend(item(0xE0DD, 0, &[]));
        let bytes = object(EXPLICIT, &data);
        for end in 0..=bytes.len() {
            let _ = check_declared_lengths(&bytes[..end]);
        }
    }
}
