//! Template montages: one row per template, each row five axial slices, a coronal and a
//! sagittal mid slice, in grey.

use crate::formats::png::{Colour, PngError, write_png};
use pedinorm_registration::Image;
use pedinorm_registration::interpolate::sample_linear;
use std::path::Path;

/// Writes a PNG montage: one row per image, each row five axial slices (15–85 % of the
/// superior–inferior extent), a coronal and a sagittal mid slice, sampled on a world-aligned
/// lattice at the image's finest spacing, grey levels from the 1st to the 99th percentile.
pub fn write_template_montage(path: &Path, images: &[&Image<f32>]) -> Result<(), PngError> {
    let rows: Vec<(usize, usize, Vec<u8>)> = images.iter().map(|image| montage_row(image)).collect();
    let width = rows.iter().map(|r| r.0).max().unwrap_or(1).max(1);
    let height: usize = rows.iter().map(|r| r.1).sum::<usize>().max(1);
    let mut pixels = vec![0u8; width * height];
    let mut top = 0;
    for (w, h, data) in &rows {
        for y in 0..*h {
            pixels[(top + y) * width..(top + y) * width + w].copy_from_slice(&data[y * w..(y + 1) * w]);
        }
        top += h;
    }
    write_png(path, width, height, Colour::Grey, &pixels)
}

/// One montage row: (width, height, grey pixels).
fn montage_row(image: &Image<f32>) -> (usize, usize, Vec<u8>) {
    let grid = image.grid();
    let d = grid.dims();
    // World bounding box of the voxel centres.
    let mut low = [f64::INFINITY; 3];
    let mut high = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let voxel = [0, 1, 2].map(|a| if corner & (1 << a) != 0 { (d[a] - 1) as f64 } else { 0.0 });
        let world = grid.voxel_to_world(voxel);
        for a in 0..3 {
            low[a] = low[a].min(world[a]);
            high[a] = high[a].max(world[a]);
        }
    }
    let step = grid.spacing().iter().cloned().fold(f64::INFINITY, f64::min).max(0.5);
    let count = |a: usize| (((high[a] - low[a]) / step).floor() as usize + 1).min(512);
    let (nx, ny, nz) = (count(0), count(1), count(2));
    let mut sorted: Vec<f32> = image.as_slice().iter().cloned().filter(|v| *v > 0.0).collect();
    sorted.sort_by(f32::total_cmp);
    let (lo, hi) = if sorted.is_empty() {
        (0.0, 1.0)
    } else {
        (
            sorted[sorted.len() / 100],
            sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)].max(f32::MIN_POSITIVE),
        )
    };
    let grey = |world: [f64; 3]| {
        let v = sample_linear(image, grid.world_to_voxel(world), 0.0);
        (((v - lo) / (hi - lo).max(f32::EPSILON)).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    // Panels: (width, height, pixel(x, y) → world) with anterior / superior at the top.
    #[allow(clippy::type_complexity)] // (width, height, pixel → world) per panel
    let mut panels: Vec<(usize, usize, Box<dyn Fn(usize, usize) -> [f64; 3] + '_>)> = Vec::new();
    for fraction in [0.15, 0.32, 0.5, 0.68, 0.85] {
        let z = low[2] + fraction * (high[2] - low[2]);
        panels.push((nx, ny, Box::new(move |x, y| [low[0] + x as f64 * step, high[1] - y as f64 * step, z])));
    }
    let ymid = 0.5 * (low[1] + high[1]);
    panels.push((nx, nz, Box::new(move |x, y| [low[0] + x as f64 * step, ymid, high[2] - y as f64 * step])));
    let xmid = 0.5 * (low[0] + high[0]);
    panels.push((ny, nz, Box::new(move |x, y| [xmid, low[1] + x as f64 * step, high[2] - y as f64 * step])));
    let width: usize = panels.iter().map(|p| p.0).sum();
    let height = panels.iter().map(|p| p.1).max().unwrap_or(1);
    let mut pixels = vec![0u8; width * height];
    let mut left = 0;
    for (w, h, world) in &panels {
        for y in 0..*h {
            for x in 0..*w {
                pixels[y * width + left + x] = grey(world(x, y));
            }
        }
        left += w;
    }
    (width, height, pixels)
}
