//! PNG pictures: the one encoder and atomic writer every picture goes through (case montages,
//! template montages), and an RGB canvas with a small built-in font to draw them on.

use std::path::{Path, PathBuf};

/// Why a picture could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The pixels could not be encoded.
    #[error("{path}: cannot encode PNG: {source}")]
    Encode {
        /// The picture's file.
        path: PathBuf,
        /// The encoder's error.
        source: png::EncodingError,
    },
    /// The file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The picture's file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How pixels are stored: one grey byte or three RGB bytes each, 8 bits per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// One grey level per pixel.
    Grey,
    /// Red, green, blue per pixel.
    Rgb,
}

/// Encodes `width` × `height` pixels (row-major) as PNG bytes.
pub fn encode(
    width: usize,
    height: usize,
    colour: Colour,
    pixels: &[u8],
) -> Result<Vec<u8>, png::EncodingError> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
        encoder.set_color(match colour {
            Colour::Grey => png::ColorType::Grayscale,
            Colour::Rgb => png::ColorType::Rgb,
        });
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels)?;
    }
    Ok(bytes)
}

/// Encodes the pixels and writes them to `path` atomically (temporary sibling, then rename).
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    colour: Colour,
    pixels: &[u8],
) -> Result<(), PngError> {
    let bytes = encode(width, height, colour, pixels)
        .map_err(|source| PngError::Encode { path: path.to_owned(), source })?;
    crate::atomic::write_bytes(path, &bytes)
        .map_err(|source| PngError::Write { path: path.to_owned(), source })
}

/// An RGB raster.
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB bytes, row-major.
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with one colour.
    pub fn new(width: usize, height: usize, colour: [u8; 3]) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&colour);
        }
        Self { width, height, pixels }
    }

    /// Sets one pixel (ignored outside).
    pub fn set(&mut self, x: usize, y: usize, colour: [u8; 3]) {
        if x < self.width && y < self.height {
            let o = (y * self.width + x) * 3;
            self.pixels[o..o + 3].copy_from_slice(&colour);
        }
    }

    /// Reads one pixel.
    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let o = (y * self.width + x) * 3;
        [self.pixels[o], self.pixels[o + 1], self.pixels[o + 2]]
    }

    /// Draws text with the built-in 5×7 font (upper case), `scale` pixels per font pixel.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, colour: [u8; 3]) {
        let mut cx = x;
        for ch in text.chars() {
            let glyph = glyph(ch.to_ascii_uppercase());
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..5 {
                    if bits & (1 << (4 - col)) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(cx + col * scale + dx, y + row * scale + dy, colour);
                            }
                        }
                    }
                }
            }
            cx += 6 * scale;
        }
    }

    /// Encodes as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        encode(self.width, self.height, Colour::Rgb, &self.pixels)
    }

    /// Writes the canvas as a PNG file (atomically).
    pub fn write(&self, path: &Path) -> Result<(), PngError> {
        write_png(path, self.width, self.height, Colour::Rgb, &self.pixels)
    }
}

/// 5×7 glyphs, one byte per row (low 5 bits, left to right).
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '|' => [0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        _ => [0; 7],
    }
}
