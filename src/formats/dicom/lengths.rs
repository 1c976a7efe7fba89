//! A bounded walk of a Part-10 object's element headers, run before dicom-object parses it:
//! it checks every declared value length and finds the top-level PixelData.
//!
//! dicom-parser allocates and zero-fills a value's buffer from its declared length before it
//! reads the value, so one corrupted length field (up to 4 GiB) in a 10 KB file makes it touch
//! gigabytes of memory before failing (fuzz findings). The walk reads only element headers and
//! refuses an object in which any defined length is longer than the bytes that follow it, which
//! no well-formed object has. It also locates the top-level PixelData value, so that decoding
//! parses the object only up to PixelData and takes the pixel bytes from this walk: what
//! follows PixelData is never handed to the parser.

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

/// The top-level PixelData value of an object, as slices of its bytes.
#[derive(Debug, PartialEq)]
pub(crate) enum PixelDataBytes<'a> {
    /// Native pixel data: the value's bytes, its VR, and whether the data set is big endian.
    Native { value: &'a [u8], vr: VR, big_endian: bool },
    /// Encapsulated pixel data: the basic offset table's bytes and the fragments after it.
    Encapsulated { offset_table: &'a [u8], fragments: Vec<&'a [u8]> },
}

/// What the walk learned of an object.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Layout<'a> {
    /// `None` when the walk found no top-level PixelData or could not walk the data set (a
    /// deflated data set, or a header cut short).
    pub pixel_data: Option<PixelDataBytes<'a>>,
}

/// `Err(reason)` when an element, item or fragment of the object declares a value longer than
/// the bytes left in the input; `Ok` otherwise (also when the walk cannot go on, e.g. a deflated
/// data set or a header cut short: dicom-object then reports what is wrong).
pub(crate) fn check_declared_lengths(bytes: &[u8]) -> Result<(), String> {
    walk_object(bytes).map(|_| ())
}

/// Walks the object: the declared-length check of [`check_declared_lengths`], and the layout.
pub(crate) fn walk_object(bytes: &[u8]) -> Result<Layout<'_>, String> {
    let mut walker =
        Walker { bytes, position: META_START, encoding: Encoding::ExplicitLittle, pixel_data: None };
    // The file meta group is explicit VR little endian and, as dicom-object reads it, spans the
    // bytes its group length (0002,0000) says, whatever the tags inside; its transfer syntax
    // says how the data set that follows is encoded.
    let Some((Tag(0x0002, 0x0000), _, 4, value_start)) = walker.peek_header() else {
        return Ok(Layout::default()); // no group length: dicom-object refuses the object itself
    };
    let Some(group_length) = walker.u32_at(value_start) else { return Ok(Layout::default()) };
    walker.position = value_start + 4;
    let meta_start = walker.position;
    let mut syntax = None;
    while walker.position - meta_start < group_length as usize {
        let Some((tag, _, length, value_start)) = walker.peek_header() else { return Ok(Layout::default()) };
        walker.check(tag, length, value_start)?;
        if length == UNDEFINED {
            return Ok(Layout::default()); // not valid in the meta group: dicom-object reports it
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
        Some("1.2.840.10008.1.2.1.99") => return Ok(Layout::default()),
        _ => Encoding::ExplicitLittle,
    };
    walker.walk()?;
    Ok(Layout { pixel_data: walker.pixel_data })
}

struct Walker<'a> {
    bytes: &'a [u8],
    position: usize,
    encoding: Encoding,
    pixel_data: Option<PixelDataBytes<'a>>,
}

/// A sequence or item the walk is inside: where it ends (`None`: at its delimiter) and the
/// encoding to restore when it closes.
struct Container {
    end: Option<usize>,
    restore: Encoding,
}

impl<'a> Walker<'a> {
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
        let mut open: Vec<Container> = Vec::new();
        while let Some((tag, vr, length, value_start)) = self.peek_header() {
            // Close the containers of defined length that end here.
            while let Some(Container { end: Some(end), restore }) = open.last() {
                if self.position < *end {
                    break;
                }
                self.encoding = *restore;
                open.pop();
            }
            self.check(tag, length, value_start)?;
            if tag.group() == 0xFFFE {
                match tag {
                    // Items hold elements: walk in.
                    ITEM => open.push(Container {
                        end: (length != UNDEFINED).then(|| value_start + length as usize),
                        restore: self.encoding,
                    }),
                    // Item and sequence delimiters close the innermost open container.
                    _ => {
                        if let Some(container) = open.pop() {
                            self.encoding = container.restore;
                        }
                    }
                }
                self.position = value_start;
                continue;
            }
            if tag == PIXEL_DATA && open.is_empty() {
                self.read_top_level_pixel_data(vr, length, value_start)?;
                continue;
            }
            if length == UNDEFINED {
                if tag == PIXEL_DATA {
                    self.position = value_start;
                    self.fragments()?;
                    continue;
                }
                open.push(Container { end: None, restore: self.encoding });
                if vr == Some(VR::UN) {
                    self.encoding = Encoding::ImplicitLittle;
                }
                self.position = value_start;
                continue;
            }
            if vr == Some(VR::SQ) {
                open.push(Container { end: Some(value_start + length as usize), restore: self.encoding });
                self.position = value_start;
            } else {
                self.position = value_start + length as usize;
            }
        }
        Ok(())
    }

    /// Records the top-level PixelData (the first one) and moves past it.
    fn read_top_level_pixel_data(
        &mut self,
        vr: Option<VR>,
        length: u32,
        value_start: usize,
    ) -> Result<(), String> {
        let found = if length == UNDEFINED {
            self.position = value_start;
            let mut items = self.fragments()?.into_iter();
            let offset_table = items.next().unwrap_or_default();
            PixelDataBytes::Encapsulated { offset_table, fragments: items.collect() }
        } else {
            let end = value_start + length as usize;
            self.position = end;
            PixelDataBytes::Native {
                value: &self.bytes[value_start..end],
                vr: vr.unwrap_or(VR::OW),
                big_endian: self.encoding == Encoding::ExplicitBig,
            }
        };
        self.pixel_data.get_or_insert(found);
        Ok(())
    }

    /// Encapsulated pixel data: items of raw bytes up to the sequence delimiter, returned in
    /// order (the first is the basic offset table).
    fn fragments(&mut self) -> Result<Vec<&'a [u8]>, String> {
        let mut items = Vec::new();
        while let Some((tag, _, length, value_start)) = self.peek_header() {
            self.check(tag, length, value_start)?;
            if tag == SEQUENCE_DELIMITER {
                self.position = value_start;
                return Ok(items);
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
            let end = value_start + length as usize;
            items.push(&self.bytes[value_start..end]);
            self.position = end;
        }
        Ok(items)
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
    fn the_top_level_pixel_data_is_found_and_nested_ones_are_not() {
        // An icon image sequence (defined length) holding its own PixelData, then the image's
        // encapsulated PixelData: offset table and two fragments.
        let icon = explicit_long(0x7FE0, 0x0010, b"OB", 2, &[9, 9]);
        let icon_item = item(0xE000, icon.len() as u32, &icon);
        let mut data = explicit_long(0x0088, 0x0200, b"SQ", icon_item.len() as u32, &icon_item);
        data.extend(explicit_long(0x7FE0, 0x0010, b"OB", UNDEFINED, &[]));
        data.extend(item(0xE000, 4, &[0, 0, 0, 0]));
        data.extend(item(0xE000, 2, &[1, 2]));
        data.extend(item(0xE000, 2, &[3, 4]));
        data.extend(item(0xE0DD, 0, &[]));
        let bytes = object("1.2.840.10008.1.2.5", &data);
        let layout = walk_object(&bytes).unwrap();
        assert_eq!(
            layout.pixel_data,
            Some(PixelDataBytes::Encapsulated {
                offset_table: &[0, 0, 0, 0],
                fragments: vec![&[1, 2], &[3, 4]]
            })
        );

        // Native, after an undefined-length sequence.
        let mut data = rows_and_one_sequence();
        data.extend(explicit_long(0x7FE0, 0x0010, b"OW", 4, &[1, 0, 2, 0]));
        let bytes = object(EXPLICIT, &data);
        let layout = walk_object(&bytes).unwrap();
        assert_eq!(
            layout.pixel_data,
            Some(PixelDataBytes::Native { value: &[1, 0, 2, 0], vr: VR::OW, big_endian: false })
        );
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
