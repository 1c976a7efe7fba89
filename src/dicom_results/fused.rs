//! The colour-fused series, for viewers that cannot overlay a segmentation or a z-map: per
//! source slice, one RGB Secondary Capture object showing the case image in grey with the z-map
//! beyond its calibrated threshold in colour (red → yellow above the normals, blue → cyan
//! below, as the PNG montages), and a labelled colour bar on the right.
//!
//! The picture keeps the source slice's pixel order (row r, column c is voxel (c, r, k)), so it
//! looks as the source slice does in the same viewer; it is enlarged by a whole factor so that
//! small slices still have legible labels. A Secondary Capture carries no patient geometry:
//! each object names its source slice in SourceImageSequence instead.

use super::ResultsError;
use super::source::SourceSeries;
use crate::formats::dicom_common::{
    Code, DateTime, encode_part10, put_code, put_equipment, put_sequence, put_series, put_sop_common,
    put_text, put_texts, put_u16,
};
use crate::formats::lps::ras_to_lps;
use crate::formats::png::Canvas;
use crate::report::overlay_colour;
use dicom_core::smallvec::SmallVec;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use pedinorm_registration::Image;

/// SeriesNumber of the intensity fused series (the log-Jacobian one is the next number).
pub const SERIES_NUMBER: u32 = 9911;
/// Width of the colour bar with its labels (pixels).
const BAR_WIDTH: usize = 72;
/// Smallest picture height (pixels) the slices are enlarged to, so that labels stay legible.
const MIN_HEIGHT: usize = 256;
/// DCM "Source image for image processing operation".
const SOURCE_PURPOSE: Code = Code::new("121322", "DCM", "Source image for image processing operation");

/// Grey levels of the case: the 1st and 99.5th percentiles of its positive finite voxels.
fn grey_window(image: &Image<f32>) -> (f32, f32) {
    let mut values: Vec<f32> =
        image.as_slice().iter().copied().filter(|v| v.is_finite() && *v > 0.0).collect();
    if values.is_empty() {
        return (0.0, 1.0);
    }
    let mut at = |fraction: f64| {
        let index = ((values.len() - 1) as f64 * fraction).round() as usize;
        *values.select_nth_unstable_by(index, f32::total_cmp).1
    };
    let (low, high) = (at(0.01), at(0.995));
    if high > low { (low, high) } else { (low, low + 1.0) }
}

/// The patient direction letter of an LPS direction's main axis.
fn direction_letter(direction: [f64; 3]) -> &'static str {
    let axis = (0..3).max_by(|&a, &b| direction[a].abs().total_cmp(&direction[b].abs())).unwrap_or(0);
    match (axis, direction[axis] > 0.0) {
        (0, true) => "L",
        (0, false) => "R",
        (1, true) => "P",
        (1, false) => "A",
        (2, true) => "H",
        _ => "F",
    }
}

/// Draws the colour bar with its labels into the `BAR_WIDTH` columns right of `x0`: `+2t` at
/// the top (yellow) down to `+t` (red), a grey gap for |z| ≤ t, then `−t` (blue) down to `−2t`
/// (cyan), as [`overlay_colour`] colours them.
fn colour_bar(canvas: &mut Canvas, x0: usize, threshold: f32, channel: &str) {
    let white = [255, 255, 255];
    canvas.text(x0 + 4, 4, "Z", 2, white);
    canvas.text(x0 + 18, 8, &channel.chars().take(9).collect::<String>(), 1, white);
    let (top, bottom) = (24usize, canvas.height.saturating_sub(12));
    let height = bottom.saturating_sub(top).max(3);
    let bar = (x0 + 4, x0 + 18);
    for y in 0..height {
        // z from +2t at the top to −2t at the bottom.
        let z = threshold * 2.0 * (1.0 - 2.0 * y as f32 / (height - 1) as f32);
        let colour = overlay_colour(z, threshold).unwrap_or([96, 96, 96]);
        for x in bar.0..bar.1 {
            canvas.set(x, top + y, colour);
        }
    }
    let label = |canvas: &mut Canvas, fraction: f32, text: String| {
        let y = top + ((height - 1) as f32 * fraction) as usize;
        canvas.text(bar.1 + 4, y.saturating_sub(3), &text, 1, white);
    };
    label(canvas, 0.0, format!("+{:.1}", 2.0 * threshold));
    label(canvas, 0.25, format!("+{threshold:.1}"));
    label(canvas, 0.75, format!("-{threshold:.1}"));
    label(canvas, 1.0, format!("-{:.1}", 2.0 * threshold));
}

/// The RGB picture of slice `k`: `image` in grey (`window`), `z` beyond `threshold` in colour,
/// enlarged by `scale`, with the colour bar.
fn fused_slice(
    image: &Image<f32>,
    z: &Image<f32>,
    k: usize,
    window: (f32, f32),
    threshold: f32,
    scale: usize,
    channel: &str,
) -> Canvas {
    let dims = image.grid().dims();
    let (width, height) = (dims[0] * scale, dims[1] * scale);
    let mut canvas = Canvas::new(width + BAR_WIDTH, height.max(MIN_HEIGHT), [0, 0, 0]);
    for r in 0..height {
        for c in 0..width {
            let (i, j) = (c / scale, r / scale);
            let grey = ((image.data()[[i, j, k]] - window.0) / (window.1 - window.0)).clamp(0.0, 1.0);
            let g = (grey * 255.0) as u8;
            canvas.set(c, r, overlay_colour(z.data()[[i, j, k]], threshold).unwrap_or([g, g, g]));
        }
    }
    colour_bar(&mut canvas, width, threshold, channel);
    canvas
}

/// The fused picture of slice `k` as the fused series shows it (the PDF report's key slices).
pub fn picture(source: &SourceSeries, z: &Image<f32>, k: usize, threshold: f32, channel: &str) -> Canvas {
    let dims = source.image.grid().dims();
    let scale = MIN_HEIGHT.div_ceil(dims[1].max(dims[0]).max(1)).max(1);
    fused_slice(&source.image, z, k, grey_window(&source.image), threshold, scale, channel)
}

/// The UIDs of one fused series.
#[derive(Debug, Clone)]
pub struct FusedUids {
    /// SeriesInstanceUID.
    pub series: String,
    /// SOPInstanceUID of each slice's object.
    pub instances: Vec<String>,
}

/// The fused series of one channel: one RGB Secondary Capture object per source slice.
#[allow(clippy::too_many_arguments)] // one series: its picture inputs, numbering and identity
pub fn fused_series(
    source: &SourceSeries,
    z: &Image<f32>,
    channel: &str,
    threshold: f32,
    number: u32,
    uids: &FusedUids,
    when: &DateTime,
) -> Result<Vec<Vec<u8>>, ResultsError> {
    let image = &source.image;
    let dims = image.grid().dims();
    let scale = MIN_HEIGHT.div_ceil(dims[1].max(dims[0]).max(1)).max(1);
    let window = grey_window(image);
    let direction = image.grid().direction();
    let row = ras_to_lps([direction[(0, 0)], direction[(1, 0)], direction[(2, 0)]]);
    let column = ras_to_lps([direction[(0, 1)], direction[(1, 1)], direction[(2, 1)]]);
    let mut objects = Vec::with_capacity(dims[2]);
    for k in 0..dims[2] {
        let canvas = fused_slice(image, z, k, window, threshold, scale, channel);
        let (Ok(columns), Ok(rows)) = (u16::try_from(canvas.width), u16::try_from(canvas.height)) else {
            return Err(ResultsError::TooLarge { dims });
        };
        let mut object = InMemDicomObject::new_empty();
        put_sop_common(&mut object, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, &uids.instances[k], when);
        source.study.put_into(&mut object);
        put_series(&mut object, "OT", &uids.series, number, &format!("pedinorm {channel} z fused (colour)"));
        put_equipment(&mut object);
        put_text(&mut object, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put_text(&mut object, tags::BODY_PART_EXAMINED, VR::CS, "HEAD");
        put_texts(&mut object, tags::IMAGE_TYPE, VR::CS, ["DERIVED".into(), "SECONDARY".into()]);
        put_text(&mut object, tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string());
        put_texts(
            &mut object,
            tags::PATIENT_ORIENTATION,
            VR::CS,
            [direction_letter(row).to_string(), direction_letter(column).to_string()],
        );
        put_text(
            &mut object,
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            format!(
                "case image in grey; {channel} z beyond +/-{threshold:.2} (calibrated) in colour: red to yellow \
                 above the normals, blue to cyan below; enlarged {scale}x; colour bar at the right"
            ),
        );
        let mut referenced = InMemDicomObject::new_empty();
        let slice = &source.slices[k];
        put_text(&mut referenced, tags::REFERENCED_SOP_CLASS_UID, VR::UI, slice.sop_class_uid.as_str());
        put_text(&mut referenced, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, slice.sop_instance_uid.as_str());
        if let Some(frame) = slice.frame_number {
            put_text(&mut referenced, tags::REFERENCED_FRAME_NUMBER, VR::IS, frame.to_string());
        }
        put_code(&mut referenced, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, SOURCE_PURPOSE);
        put_sequence(&mut object, tags::SOURCE_IMAGE_SEQUENCE, vec![referenced]);
        put_text(&mut object, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
        put_text(&mut object, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_u16(&mut object, tags::SAMPLES_PER_PIXEL, 3);
        put_text(&mut object, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put_u16(&mut object, tags::PLANAR_CONFIGURATION, 0);
        put_u16(&mut object, tags::ROWS, rows);
        put_u16(&mut object, tags::COLUMNS, columns);
        put_u16(&mut object, tags::BITS_ALLOCATED, 8);
        put_u16(&mut object, tags::BITS_STORED, 8);
        put_u16(&mut object, tags::HIGH_BIT, 7);
        put_u16(&mut object, tags::PIXEL_REPRESENTATION, 0);
        let mut pixels = canvas.pixels;
        if pixels.len() % 2 == 1 {
            pixels.push(0);
        }
        object.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(SmallVec::from_vec(pixels)),
        ));
        objects.push(encode_part10(object, uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "fused slice")?);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::dicom_write::UidSource;
    use ndarray::Array3;
    use pedinorm_registration::Grid;

    #[test]
    fn a_slice_is_grey_with_coloured_deviations_and_a_colour_bar() {
        let grid = Grid::axis_aligned([8, 6, 2], [2.0; 3], [0.0; 3]).unwrap();
        let image =
            Image::new(Array3::from_shape_fn((8, 6, 2), |(i, _, _)| i as f32 * 10.0), grid.clone()).unwrap();
        let mut z = Array3::zeros((8, 6, 2));
        z[[2, 3, 1]] = 9.0;
        z[[5, 1, 1]] = -4.0;
        let z = Image::new(z, grid).unwrap();
        let when = DateTime { date: "20260101".into(), time: "120000".into() };
        let source = SourceSeries::new_study(&image, "P1", UidSource::Seeded(5), &when).unwrap();
        let uids = FusedUids { series: "1.2.3".into(), instances: vec!["1.2.3.1".into(), "1.2.3.2".into()] };
        let objects = fused_series(&source, &z, "intensity", 3.0, SERIES_NUMBER, &uids, &when).unwrap();
        assert_eq!(objects.len(), 2);
        let object = dicom_object::OpenFileOptions::new()
            .read_preamble(dicom_object::file::ReadPreamble::Always)
            .from_reader(std::io::Cursor::new(&objects[1]))
            .unwrap();
        let number = |tag| object.element(tag).unwrap().to_int::<u32>().unwrap() as usize;
        let (rows, columns) = (number(tags::ROWS), number(tags::COLUMNS));
        // Enlarged 32 times (the longer side, 8 voxels, to 256 pixels); the picture is at least
        // 256 rows high, with the bar on the right.
        let s = 32;
        assert_eq!((rows, columns), (256, 8 * s + BAR_WIDTH));
        assert_eq!(number(tags::SAMPLES_PER_PIXEL), 3);
        let pixels = object.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        let at = |r: usize, c: usize| {
            let o = (r * columns + c) * 3;
            [pixels[o], pixels[o + 1], pixels[o + 2]]
        };
        // Voxel (2, 3): z 9 ≥ 2 × threshold → yellow; voxel (5, 1): z −4 → blue-ish; (0, 0) grey.
        assert_eq!(at(3 * s + 20, 2 * s + 20), [255, 255, 0]);
        let blue = at(s + 20, 5 * s + 20);
        assert_eq!((blue[0], blue[2]), (0, 255));
        let grey = at(10, 7 * s + 20);
        assert!(grey[0] == grey[1] && grey[1] == grey[2] && grey[0] > 0, "{grey:?}");
        // The bar: yellow at the top, cyan at the bottom.
        assert_eq!(at(24, 8 * s + 10), [255, 255, 0]);
        assert_eq!(at(rows - 13, 8 * s + 10), [0, 255, 255]);
        let orientation = object.element(tags::PATIENT_ORIENTATION).unwrap().to_str().unwrap();
        assert_eq!(orientation.trim_end(), "R\\A");
    }
}
