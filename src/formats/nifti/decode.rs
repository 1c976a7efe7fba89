//! The voxels of a NIfTI file: exactly the bytes its header announces, decoded and scaled.

use ndarray::Array3;
use pedinorm_registration::{Grid, Image};
use std::io::Read;
use std::path::Path;

use super::NiftiIoError;
use super::header::{DataType, HEADER_SIZE, Header, MAX_VOXELS, header_error, parse_header};

/// Reads the header, then exactly the bytes the header says the voxels need (never more, so
/// a lying header cannot make the reader allocate unboundedly).
pub(super) fn read_header_and_data(
    mut source: impl Read,
    path: &Path,
    with_data: bool,
) -> Result<(Header, Vec<u8>), NiftiIoError> {
    let read_error = |source| NiftiIoError::Read { path: path.to_owned(), source };
    let mut header_bytes = Vec::with_capacity(HEADER_SIZE);
    (&mut source).take(HEADER_SIZE as u64).read_to_end(&mut header_bytes).map_err(read_error)?;
    let header = parse_header(&header_bytes, path)?;
    if !with_data {
        return Ok((header, Vec::new()));
    }
    let voxels = header
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_VOXELS)
        .ok_or_else(|| {
            header_error(path, "dim", format!("{:?} voxels exceed the supported size", header.dims))
        })?;
    let data_bytes = voxels * header.datatype.bytes();
    let skip = (header.vox_offset - HEADER_SIZE) as u64;
    let skipped = std::io::copy(&mut (&mut source).take(skip), &mut std::io::sink()).map_err(read_error)?;
    if skipped < skip {
        return Err(header_error(path, "vox_offset", "points past the end of the file"));
    }
    let mut data = Vec::new();
    (&mut source).take(data_bytes as u64).read_to_end(&mut data).map_err(read_error)?;
    if data.len() < data_bytes {
        return Err(header_error(
            path,
            "dim",
            format!("header needs {data_bytes} bytes of voxel data, file holds {}", data.len()),
        ));
    }
    Ok((header, data))
}

/// Converts raw voxel bytes to `f64` with scaling; `None` scaling keeps stored values.
pub(super) fn decode_values(header: &Header, data: &[u8], scaling: Option<(f64, f64)>) -> Vec<f64> {
    let width = header.datatype.bytes();
    let big = header.big_endian;
    let values = data.chunks_exact(width).map(|chunk| {
        let mut raw = [0u8; 8];
        raw[..width].copy_from_slice(chunk);
        if big {
            raw[..width].reverse();
        }
        match header.datatype {
            DataType::U8 => raw[0] as f64,
            DataType::I8 => raw[0] as i8 as f64,
            DataType::I16 => i16::from_le_bytes([raw[0], raw[1]]) as f64,
            DataType::U16 => u16::from_le_bytes([raw[0], raw[1]]) as f64,
            DataType::I32 => i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DataType::U32 => u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DataType::F32 => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64,
            DataType::I64 => i64::from_le_bytes(raw) as f64,
            DataType::U64 => u64::from_le_bytes(raw) as f64,
            DataType::F64 => f64::from_le_bytes(raw),
        }
    });
    match scaling {
        Some((slope, inter)) => values.map(|v| v * slope + inter).collect(),
        None => values.collect(),
    }
}

pub(super) fn decode_components(source: impl Read, path: &Path) -> Result<Vec<Image<f32>>, NiftiIoError> {
    let (header, data) = read_header_and_data(source, path, true)?;
    let (affine, _) = header.affine(path)?;
    let dims = header.spatial_dims();
    let grid =
        Grid::new(dims, affine).map_err(|e| header_error(path, "sform/qform/pixdim", e.to_string()))?;
    let components = header.components().map_err(|rule| header_error(path, "dim", rule))?;
    let values = decode_values(&header, &data, header.scaling(path)?);
    if values.iter().any(|v| !(v.is_finite() && v.abs() <= f32::MAX as f64)) {
        return Err(header_error(path, "data", "voxel values must be finite (and fit in 32-bit float)"));
    }
    let per_component = dims[0] * dims[1] * dims[2];
    let (nx, ny) = (dims[0], dims[1]);
    (0..components)
        .map(|component| {
            let block = &values[component * per_component..(component + 1) * per_component];
            let array = Array3::from_shape_fn((dims[0], dims[1], dims[2]), |(i, j, k)| {
                block[i + nx * (j + ny * k)] as f32
            });
            Image::new(array, grid.clone()).map_err(|e| header_error(path, "dim", e.to_string()))
        })
        .collect()
}
