//! The image size a compressed frame's own header declares, checked against the object's Rows,
//! Columns and SamplesPerPixel before the frame is decoded.
//!
//! The JPEG, JPEG-LS and JPEG 2000 decoders size their output from the codestream header, not
//! from the DICOM attributes: a small object whose header claims 65535 × 65535 pixels of 255
//! components would have the decoder allocate gigabytes before the pixel count is compared. No
//! valid object has a frame header that disagrees with its image attributes, so such an object
//! is refused first, with both sizes in the message.

/// Width, height and number of components declared by a codestream header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FrameSize {
    pub columns: u32,
    pub rows: u32,
    pub components: u32,
}

/// `Err(reason)` when a fragment that starts a JPEG, JPEG-LS or JPEG 2000 codestream declares
/// another size than `expected`. Fragments that start no codestream (continuations of a frame
/// split over several fragments, RLE segments) are not checked here.
pub(crate) fn check_fragment_headers(fragments: &[Vec<u8>], expected: FrameSize) -> Result<(), String> {
    for (index, fragment) in fragments.iter().enumerate() {
        let Some((kind, declared)) = declared_size(fragment) else { continue };
        // A JPEG frame header may leave the number of lines to a later DNL marker (0).
        let rows_agree = declared.rows == expected.rows || (declared.rows == 0 && kind == "JPEG");
        if !rows_agree || declared.columns != expected.columns || declared.components != expected.components {
            return Err(format!(
                "the {kind} header of fragment {index} declares {} × {} pixels of {} component(s), \
                 but Columns × Rows is {} × {} with SamplesPerPixel {}",
                declared.columns,
                declared.rows,
                declared.components,
                expected.columns,
                expected.rows,
                expected.components
            ));
        }
    }
    Ok(())
}

/// The codestream kind and size declared at the start of `fragment`, if it starts one.
fn declared_size(fragment: &[u8]) -> Option<(&'static str, FrameSize)> {
    match fragment {
        [0xFF, 0xD8, ..] => jpeg_frame_size(fragment),
        [0xFF, 0x4F, 0xFF, 0x51, ..] => j2k_size(&fragment[4..]).map(|size| ("JPEG 2000", size)),
        // A JP2 file: its codestream box holds SOC + SIZ.
        [0, 0, 0, 0x0C, 0x6A, 0x50, 0x20, 0x20, ..] => fragment
            .windows(4)
            .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            .and_then(|at| j2k_size(&fragment[at + 4..]))
            .map(|size| ("JPEG 2000", size)),
        _ => None,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?) as u32)
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the marker segments of a JPEG / JPEG-LS stream (after SOI) to its frame header.
fn jpeg_frame_size(stream: &[u8]) -> Option<(&'static str, FrameSize)> {
    let mut at = 2;
    loop {
        if *stream.get(at)? != 0xFF {
            return None;
        }
        let marker = *stream.get(at + 1)?;
        match marker {
            // Fill bytes before a marker.
            0xFF => at += 1,
            // Markers without a segment (TEM, RSTn, SOI).
            0x01 | 0xD0..=0xD8 => at += 2,
            // Start of scan or end of image before any frame header: nothing declared.
            0xDA | 0xD9 => return None,
            // SOFn (not DHT 0xC4, JPG 0xC8, DAC 0xCC) and JPEG-LS SOF55.
            0xC0..=0xCF | 0xF7 if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                // Lf, P, Y (rows), X (columns), Nf.
                let size = FrameSize {
                    rows: be16(stream, at + 5)?,
                    columns: be16(stream, at + 7)?,
                    components: *stream.get(at + 9)? as u32,
                };
                let kind = if marker == 0xF7 { "JPEG-LS" } else { "JPEG" };
                return Some((kind, size));
            }
            _ => at += 2 + be16(stream, at + 2)? as usize,
        }
    }
}

/// The SIZ segment (after its marker): Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz,
/// XTOsiz, YTOsiz, Csiz. The image is (Xsiz − XOsiz) × (Ysiz − YOsiz).
fn j2k_size(siz: &[u8]) -> Option<FrameSize> {
    let (x, y) = (be32(siz, 4)?, be32(siz, 8)?);
    let (x_offset, y_offset) = (be32(siz, 12)?, be32(siz, 16)?);
    Some(FrameSize {
        columns: x.checked_sub(x_offset)?,
        rows: y.checked_sub(y_offset)?,
        components: be16(siz, 36)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MR: FrameSize = FrameSize { columns: 64, rows: 48, components: 1 };

    /// SOI, an APP0 segment, then a frame header of `marker` for `rows` × `columns` × `nf`.
    fn jpeg(marker: u8, rows: u16, columns: u16, nf: u8) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAB, 0xCD, 0xFF, marker, 0x00, 0x0B, 16];
        out.extend(rows.to_be_bytes());
        out.extend(columns.to_be_bytes());
        out.extend([nf, 1, 0x11, 0]);
        out
    }

    fn j2k(width: u32, height: u32, components: u16) -> Vec<u8> {
        let mut out = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for value in [width, height, 0, 0, width, height, 0, 0] {
            out.extend(value.to_be_bytes());
        }
        out.extend(components.to_be_bytes());
        out
    }

    #[test]
    fn matching_headers_pass_and_other_fragments_are_skipped() {
        let fragments =
            vec![jpeg(0xC3, 48, 64, 1), jpeg(0xF7, 48, 64, 1), j2k(64, 48, 1), vec![1, 2, 3], Vec::new()];
        assert_eq!(check_fragment_headers(&fragments, MR), Ok(()));
    }

    #[test]
    fn a_header_that_disagrees_with_the_attributes_is_refused() {
        let error = check_fragment_headers(&[jpeg(0xF7, 64, 41338, 162)], MR).unwrap_err();
        assert!(error.contains("JPEG-LS header of fragment 0 declares 41338 × 64 pixels of 162"), "{error}");
        let error = check_fragment_headers(&[jpeg(0xC3, 48, 64, 1), j2k(4096, 48, 1)], MR).unwrap_err();
        assert!(error.contains("JPEG 2000 header of fragment 1"), "{error}");
        assert!(check_fragment_headers(&[jpeg(0xC0, 48, 64, 3)], MR).is_err());
    }

    #[test]
    fn every_truncation_of_a_header_is_read_without_panic() {
        for stream in [jpeg(0xF7, 48, 64, 1), j2k(64, 48, 1)] {
            for end in 0..=stream.len() {
                let _ = check_fragment_headers(&[stream[..end].to_vec()], MR);
            }
        }
    }
}
