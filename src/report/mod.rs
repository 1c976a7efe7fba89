//! Reports for readers: PNG slice montages of a case with its z-map overlaid, and of templates
//! (`template_montage.rs`); pictures are written through [`crate::formats::png`].
//!
//! A montage shows axial slices of the case in *radiological* convention (the patient's right
//! on the left of each tile, anterior at the top), grey anatomy windowed on the brain, and the
//! z-map overlaid only where it passes the threshold: red → yellow above the norm, blue → cyan
//! below. Every tile carries its orientation letters and its slice position in mm.

pub mod growth_chart;
pub mod regional;
mod template_montage;

pub use crate::formats::png::Canvas;
pub use template_montage::write_template_montage;

use crate::formats::png::PngError;
use pedinorm_registration::{Grid, Identity, Image, Interpolation, resample::resample};
use std::path::Path;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The PNG could not be encoded or written.
    #[error("{0}")]
    Write(String),
    /// The inputs do not make a picture.
    #[error("{0}")]
    Input(String),
}

impl From<PngError> for ReportError {
    fn from(e: PngError) -> Self {
        ReportError::Write(e.to_string())
    }
}

/// Colour of a z value beyond `threshold`: red → yellow above, blue → cyan below; `None`
/// within the threshold.
pub fn overlay_colour(z: f32, threshold: f32) -> Option<[u8; 3]> {
    // NaN compares false, so it is treated as within the threshold.
    if z.abs().partial_cmp(&threshold) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let t = ((z.abs() - threshold) / threshold.max(1e-6)).clamp(0.0, 1.0);
    let ramp = (t * 255.0) as u8;
    Some(if z > 0.0 { [255, ramp, 0] } else { [0, ramp, 255] })
}

/// An axis-aligned RAS+ grid covering the world bounding box of `grid` at `spacing` mm.
fn display_grid(grid: &Grid, spacing: f64) -> Grid {
    let d = grid.dims();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for &i in &[0.0, d[0] as f64 - 1.0] {
        for &j in &[0.0, d[1] as f64 - 1.0] {
            for &k in &[0.0, d[2] as f64 - 1.0] {
                let w = grid.voxel_to_world([i, j, k]);
                for a in 0..3 {
                    lo[a] = lo[a].min(w[a]);
                    hi[a] = hi[a].max(w[a]);
                }
            }
        }
    }
    let dims = [0, 1, 2].map(|a| (((hi[a] - lo[a]) / spacing).floor() as usize + 1).max(1));
    Grid::axis_aligned(dims, [spacing; 3], lo).expect("positive spacing")
}

/// Background of the montage's banner.
pub const BANNER_RED: [u8; 3] = [200, 0, 0];

/// Writes an axial montage of `anatomy` with `z` (same world space, any grids) overlaid where
/// `|z| > threshold`, to a PNG at `path` (atomically); a `banner` (e.g. an unreliable
/// comparison) is written in white on red across the top.
pub fn write_montage(
    path: &Path,
    anatomy: &Image<f32>,
    z: &Image<f32>,
    threshold: f32,
    title: &str,
    banner: Option<&str>,
) -> Result<(), ReportError> {
    montage(anatomy, z, threshold, title, banner)?.write(path)?;
    Ok(())
}

/// Renders the montage (see [`write_montage`]).
pub fn montage(
    anatomy: &Image<f32>,
    z: &Image<f32>,
    threshold: f32,
    title: &str,
    banner: Option<&str>,
) -> Result<Canvas, ReportError> {
    let spacing = anatomy.grid().spacing().iter().cloned().fold(f64::INFINITY, f64::min).max(1.0);
    let grid = display_grid(anatomy.grid(), spacing);
    let a = resample(anatomy, &grid, &Identity, Interpolation::Linear, 0.0);
    let zz = resample(z, &grid, &Identity, Interpolation::Linear, 0.0);
    let d = grid.dims();
    // Window on the brain: 1st–99th percentile of positive voxels.
    let mut positive: Vec<f32> = a.as_slice().iter().copied().filter(|v| *v > 0.0).collect();
    if positive.is_empty() {
        return Err(ReportError::Input("the anatomy image has no positive voxel to display".into()));
    }
    positive.sort_unstable_by(|x, y| x.total_cmp(y));
    let lo = positive[positive.len() / 100];
    let hi = positive[positive.len() * 99 / 100].max(lo + 1e-6);
    let foreground = lo + 0.05 * (hi - lo);
    // Axial slices spanning the brain's superior-inferior extent.
    let occupied: Vec<usize> = (0..d[2])
        .filter(|&k| (0..d[0]).any(|i| (0..d[1]).any(|j| a.data()[[i, j, k]] > foreground)))
        .collect();
    let (k0, k1) = match (occupied.first(), occupied.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => (0, d[2] - 1),
    };
    let tiles = 12usize;
    let columns = 4usize;
    let rows = tiles.div_ceil(columns);
    let span = (k1 - k0) as f64;
    let slices: Vec<usize> = (0..tiles)
        .map(|t| k0 + (span * (0.12 + 0.76 * t as f64 / (tiles - 1) as f64)).round() as usize)
        .collect();
    let scale = (200 / d[0].max(d[1])).max(1);
    let (tile_w, tile_h) = (d[0] * scale, d[1] * scale);
    let banner_height = if banner.is_some() { 22usize } else { 0 };
    let header = 28usize + banner_height;
    let footer = 16usize;
    let mut canvas = Canvas::new(columns * tile_w, header + rows * (tile_h + footer), [0, 0, 0]);
    if let Some(text) = banner {
        for y in 0..banner_height {
            for x in 0..canvas.width {
                canvas.set(x, y, BANNER_RED);
            }
        }
        // One text scale that fits the width (6 pixels per character at scale 1).
        let scale = if text.chars().count() * 12 + 8 <= canvas.width { 2 } else { 1 };
        canvas.text(4, if scale == 2 { 4 } else { 7 }, text, scale, [255, 255, 255]);
    }
    canvas.text(4, 6 + banner_height, title, 2, [255, 255, 255]);
    for (t, &k) in slices.iter().enumerate() {
        let (ox, oy) = ((t % columns) * tile_w, header + (t / columns) * (tile_h + footer));
        for py in 0..tile_h {
            // Anterior (high y) at the top.
            let j = d[1] - 1 - py / scale;
            for px in 0..tile_w {
                // Radiological: patient's right (high x in RAS+) on the left of the tile.
                let i = d[0] - 1 - px / scale;
                let v = a.data()[[i, j, k]];
                let g = (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0) as u8;
                let colour = overlay_colour(zz.data()[[i, j, k]], threshold).unwrap_or([g, g, g]);
                canvas.set(ox + px, oy + py, colour);
            }
        }
        let label = [0, 255, 0];
        canvas.text(ox + 2, oy + tile_h / 2 - 4, "R", 1, label);
        canvas.text(ox + tile_w - 8, oy + tile_h / 2 - 4, "L", 1, label);
        canvas.text(ox + tile_w / 2 - 2, oy + 2, "A", 1, label);
        canvas.text(ox + tile_w / 2 - 2, oy + tile_h - 9, "P", 1, label);
        let zmm = grid.voxel_to_world([0.0, 0.0, k as f64])[2];
        canvas.text(ox + 4, oy + tile_h + 4, &format!("Z={zmm:.0}MM"), 1, [200, 200, 200]);
    }
    Ok(canvas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phantom() -> (Image<f32>, Image<f32>) {
        let grid = Grid::axis_aligned([30, 36, 28], [2.0; 3], [-30.0, -36.0, -28.0]).unwrap();
        let mut anatomy = Image::filled(grid.clone(), 0.0f32);
        let mut z = Image::filled(grid.clone(), 0.0f32);
        for i in 0..30 {
            for j in 0..36 {
                for k in 0..28 {
                    let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    let r = (w[0] * w[0] / 625.0 + w[1] * w[1] / 900.0 + w[2] * w[2] / 576.0).sqrt();
                    if r < 1.0 {
                        anatomy.data_mut()[[i, j, k]] = 100.0 + 50.0 * r as f32;
                    }
                    // A hyperintense blob on the patient's right (x > 0), anterior (y > 0).
                    let d = ((w[0] - 12.0).powi(2) + (w[1] - 10.0).powi(2) + w[2].powi(2)).sqrt();
                    if d < 6.0 {
                        z.data_mut()[[i, j, k]] = 8.0;
                    }
                }
            }
        }
        (anatomy, z)
    }

    #[test]
    fn overlay_is_on_the_radiological_side() {
        let (anatomy, z) = phantom();
        let canvas = montage(&anatomy, &z, 3.0, "TEST", None).unwrap();
        // Count overlay (pure red-yellow) pixels in the left and right halves of each tile
        // column: the patient's right must appear on the image's left.
        let d = [30usize, 36, 28];
        let scale = (200 / d[0].max(d[1])).max(1);
        let tile_w = d[0] * scale;
        let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
        for y in 28..canvas.height {
            for x in 0..canvas.width {
                let p = canvas.get(x, y);
                if p[0] == 255 && p[2] == 0 {
                    let tx = x % tile_w;
                    if tx < tile_w / 2 {
                        left += 1
                    } else {
                        right += 1
                    }
                    let ty = (y - 28) % (d[1] * scale + 16);
                    if ty < d[1] * scale / 2 { top += 1 } else { bottom += 1 }
                }
            }
        }
        assert!(left > 0 && right == 0, "left {left} right {right}");
        assert!(top > bottom, "anterior at the top: top {top} bottom {bottom}");
        let png = canvas.to_png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn banner_is_a_red_band_with_text_above_the_title() {
        let (anatomy, z) = phantom();
        let plain = montage(&anatomy, &z, 3.0, "TEST", None).unwrap();
        let flagged = montage(&anatomy, &z, 3.0, "TEST", Some("UNRELIABLE COMPARISON")).unwrap();
        assert_eq!(flagged.height, plain.height + 22);
        let row: Vec<[u8; 3]> = (0..flagged.width).map(|x| flagged.get(x, 1)).collect();
        assert!(row.iter().all(|p| *p == BANNER_RED));
        let text = (0..22)
            .flat_map(|y| (0..flagged.width).map(move |x| (x, y)))
            .filter(|&(x, y)| flagged.get(x, y) == [255, 255, 255])
            .count();
        assert!(text > 50, "banner text pixels {text}");
    }

    #[test]
    fn colours() {
        assert_eq!(overlay_colour(1.0, 3.0), None);
        assert_eq!(overlay_colour(3.5, 3.0).unwrap()[0], 255);
        assert_eq!(overlay_colour(-9.0, 3.0).unwrap(), [0, 255, 255]);
    }

    #[test]
    fn empty_anatomy_is_an_error() {
        let grid = Grid::axis_aligned([4, 4, 4], [1.0; 3], [0.0; 3]).unwrap();
        let zero = Image::filled(grid, 0.0f32);
        assert!(montage(&zero, &zero, 3.0, "X", None).is_err());
    }
}
