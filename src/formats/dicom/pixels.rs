//! Pixel decoding through dicom-pixeldata (native, RLE, JPEG, JPEG-LS, JPEG 2000, deflate),
//! then stored values → real values with BitsStored and the frame's rescale.

use super::DicomError;
use super::codestream::{FrameSize, check_fragment_headers};
use super::lengths::PixelDataBytes;
use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{PixelDecoder, PixelRepresentation};
use std::path::Path;

/// Decodes the requested frames of one object as row-major `rows × columns` real values
/// (stored value × slope + intercept). `frames` pairs a frame index with its rescale.
pub(crate) fn decode_frames(
    bytes: &[u8],
    file: &Path,
    transfer_syntax: &str,
    frames: &[(u32, (f64, f64))],
) -> Result<Vec<Vec<f32>>, DicomError> {
    super::guard(file, || decode_frames_unguarded(bytes, file, transfer_syntax, frames))?
}

/// Deflated explicit VR little endian.
const DEFLATED_EXPLICIT_LITTLE: &str = "1.2.840.10008.1.2.1.99";

fn decode_frames_unguarded(
    bytes: &[u8],
    file: &Path,
    transfer_syntax: &str,
    frames: &[(u32, (f64, f64))],
) -> Result<Vec<Vec<f32>>, DicomError> {
    let pixel_error = |message: String| DicomError::Pixels {
        file: file.to_owned(),
        transfer_syntax: transfer_syntax.to_owned(),
        message,
    };
    let object = read_for_decoding(bytes, file, transfer_syntax)?;
    check_codestream_headers(&object).map_err(pixel_error)?;
    let decoded = object.decode_pixel_data().map_err(|e| pixel_error(e.to_string()))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(DicomError::InvalidField {
            file: file.to_owned(),
            field: "SamplesPerPixel",
            rule: format!(
                "only single-sample (greyscale) images are supported, found {}",
                decoded.samples_per_pixel()
            ),
        });
    }
    let bits_allocated = decoded.bits_allocated();
    let bits_stored = decoded.bits_stored().clamp(1, bits_allocated.max(1));
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let pixels = decoded.rows() as usize * decoded.columns() as usize;
    frames
        .iter()
        .map(|&(frame, (slope, intercept))| {
            let data = decoded.frame_data(frame).map_err(|e| pixel_error(e.to_string()))?;
            let stored = stored_values(data, bits_allocated, bits_stored, signed)
                .ok_or_else(|| pixel_error(format!("BitsAllocated {bits_allocated} is not supported")))?;
            if stored.len() < pixels {
                return Err(pixel_error(format!(
                    "frame {frame} holds {} pixels, expected {pixels}",
                    stored.len()
                )));
            }
            Ok(stored[..pixels].iter().map(|&v| (v * slope + intercept) as f32).collect())
        })
        .collect()
}

/// The object parsed up to PixelData, with PixelData put in from the bounded walk (see
/// `lengths`): nothing after PixelData reaches the parser. A deflated data set cannot be walked
/// without inflating it and is parsed whole.
fn read_for_decoding(
    bytes: &[u8],
    file: &Path,
    transfer_syntax: &str,
) -> Result<DefaultDicomObject, DicomError> {
    let parse_error = |message: String| DicomError::Parse { file: file.to_owned(), message };
    let layout = super::lengths::walk_object(bytes).map_err(parse_error)?;
    if transfer_syntax == DEFLATED_EXPLICIT_LITTLE {
        return OpenFileOptions::new().from_reader(bytes).map_err(|e| parse_error(e.to_string()));
    }
    let mut object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map_err(|e| parse_error(e.to_string()))?;
    let value = match layout.pixel_data {
        None => {
            return Err(DicomError::InvalidField {
                file: file.to_owned(),
                field: "PixelData",
                rule: "is missing from the top level of the data set".into(),
            });
        }
        Some(PixelDataBytes::Native { value, vr, big_endian }) => {
            let primitive = if big_endian && vr == VR::OW {
                // Stored as 16-bit words in the data set's byte order; kept as values.
                let words: Vec<u16> =
                    value.chunks_exact(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect();
                PrimitiveValue::U16(words.into())
            } else {
                PrimitiveValue::U8(value.to_vec().into())
            };
            DataElement::new(tags::PIXEL_DATA, vr, primitive)
        }
        Some(PixelDataBytes::Encapsulated { offset_table, fragments }) => {
            let offsets: Vec<u32> =
                offset_table.chunks_exact(4).map(|o| u32::from_le_bytes([o[0], o[1], o[2], o[3]])).collect();
            let fragments: Vec<Vec<u8>> = fragments.into_iter().map(<[u8]>::to_vec).collect();
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                Value::PixelSequence(PixelFragmentSequence::new(offsets, fragments)),
            )
        }
    };
    object.put(value);
    Ok(object)
}

/// Encapsulated pixel data: each codestream header must declare the object's own size (see
/// `codestream`); native pixel data has no header of its own.
fn check_codestream_headers(object: &DefaultDicomObject) -> Result<(), String> {
    let Some(fragments) = object.element(tags::PIXEL_DATA).ok().and_then(|e| e.value().fragments()) else {
        return Ok(());
    };
    let attribute =
        |tag, default| object.element(tag).ok().and_then(|e| e.to_int::<u32>().ok()).unwrap_or(default);
    let expected = FrameSize {
        columns: attribute(tags::COLUMNS, 0),
        rows: attribute(tags::ROWS, 0),
        components: attribute(tags::SAMPLES_PER_PIXEL, 1),
    };
    check_fragment_headers(fragments, expected)
}

/// Stored pixel values (native little-endian samples) with BitsStored applied: unsigned values
/// masked, signed values sign-extended from their top stored bit.
fn stored_values(data: &[u8], bits_allocated: u16, bits_stored: u16, signed: bool) -> Option<Vec<f64>> {
    let convert = |raw: u64| -> f64 {
        let bits = bits_stored as u32;
        let masked = if bits >= 64 { raw } else { raw & ((1u64 << bits) - 1) };
        if signed && bits < 64 && masked >> (bits - 1) & 1 == 1 {
            masked as f64 - (1u64 << bits) as f64
        } else {
            masked as f64
        }
    };
    Some(match bits_allocated {
        8 => data.iter().map(|&b| convert(b as u64)).collect(),
        16 => data.chunks_exact(2).map(|c| convert(u16::from_le_bytes([c[0], c[1]]) as u64)).collect(),
        32 => data
            .chunks_exact(4)
            .map(|c| convert(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64))
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_stored_masks_and_sign_extends() {
        // 12 bits stored in 16: 0x0FFF is -1 when signed, 4095 when not; high bits ignored.
        let data = [0xFF, 0xFF, 0x00, 0x08, 0x01, 0x00];
        assert_eq!(stored_values(&data, 16, 12, true).unwrap(), vec![-1.0, -2048.0, 1.0]);
        assert_eq!(stored_values(&data, 16, 12, false).unwrap(), vec![4095.0, 2048.0, 1.0]);
        assert_eq!(stored_values(&[200], 8, 8, true).unwrap(), vec![-56.0]);
        assert_eq!(stored_values(&[1, 0, 0, 0x80], 32, 32, true).unwrap(), vec![-2147483647.0]);
        assert!(stored_values(&[0], 1, 1, false).is_none());
    }
}
