//! The NIfTI-1 header: its fields, the checks every field passes, and the affine, scaling
//! and summary read from it.

use nalgebra::{Matrix3, Matrix4, Vector3};
use std::path::Path;

use super::{AffineSource, NiftiInfo, NiftiIoError};

pub(super) const HEADER_SIZE: usize = 348;
/// Upper bound on the voxels of one file: protects against headers that claim absurd sizes.
pub(super) const MAX_VOXELS: usize = 1 << 31;

#[derive(Debug, Clone, Copy)]
pub(super) enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DataType {
    pub(super) fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            2 => DataType::U8,
            4 => DataType::I16,
            8 => DataType::I32,
            16 => DataType::F32,
            64 => DataType::F64,
            256 => DataType::I8,
            512 => DataType::U16,
            768 => DataType::U32,
            1024 => DataType::I64,
            1280 => DataType::U64,
            _ => return None,
        })
    }

    pub(super) fn bytes(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
}

/// A parsed header with what the reader needs.
pub(super) struct Header {
    pub(super) big_endian: bool,
    pub(super) dims: Vec<usize>,
    pub(super) datatype: DataType,
    pub(super) pixdim: [f64; 8],
    pub(super) vox_offset: usize,
    pub(super) scl_slope: f64,
    pub(super) scl_inter: f64,
    pub(super) qform_code: i16,
    pub(super) sform_code: i16,
    pub(super) intent_code: i16,
    pub(super) quatern: [f64; 3],
    pub(super) qoffset: [f64; 3],
    pub(super) srow: [[f64; 4]; 3],
    pub(super) description: String,
}

pub(super) struct Fields<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) big_endian: bool,
}

impl Fields<'_> {
    pub(super) fn array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[offset..offset + N]);
        if self.big_endian {
            out.reverse();
        }
        out
    }
    pub(super) fn i16(&self, offset: usize) -> i16 {
        i16::from_le_bytes(self.array(offset))
    }
    pub(super) fn f32(&self, offset: usize) -> f64 {
        f32::from_le_bytes(self.array(offset)) as f64
    }
}

pub(super) fn header_error(path: &Path, field: &'static str, rule: impl Into<String>) -> NiftiIoError {
    NiftiIoError::Header { path: path.to_owned(), field, rule: rule.into() }
}

pub(super) fn parse_header(bytes: &[u8], path: &Path) -> Result<Header, NiftiIoError> {
    if bytes.len() < HEADER_SIZE {
        return Err(header_error(
            path,
            "sizeof_hdr",
            format!("file has {} bytes, a header needs 348", bytes.len()),
        ));
    }
    let size_le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let size_be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let big_endian = match (size_le, size_be) {
        (348, _) => false,
        (_, 348) => true,
        (540, _) | (_, 540) => {
            return Err(header_error(path, "sizeof_hdr", "NIfTI-2 is not supported, only NIfTI-1"));
        }
        _ => return Err(header_error(path, "sizeof_hdr", format!("must be 348, found {size_le}"))),
    };
    let f = Fields { bytes, big_endian };
    let magic = &bytes[344..348];
    if magic == b"ni1\0" {
        return Err(header_error(path, "magic", "header/image pairs (.hdr/.img) are not supported"));
    }
    if magic != b"n+1\0" {
        return Err(header_error(path, "magic", "must be \"n+1\" (single-file NIfTI-1)"));
    }
    let rank = f.i16(40);
    if !(1..=7).contains(&rank) {
        return Err(header_error(path, "dim[0]", format!("must be 1..=7, found {rank}")));
    }
    let mut dims = Vec::with_capacity(rank as usize);
    for axis in 1..=rank as usize {
        let size = f.i16(40 + 2 * axis);
        if size < 1 {
            return Err(header_error(path, "dim", format!("dim[{axis}] must be positive, found {size}")));
        }
        dims.push(size as usize);
    }
    let code = f.i16(70);
    let datatype = DataType::from_code(code).ok_or_else(|| {
        header_error(
            path,
            "datatype",
            format!("unsupported code {code} (supported: integers and float32/64)"),
        )
    })?;
    let mut pixdim = [0.0; 8];
    for (index, value) in pixdim.iter_mut().enumerate() {
        *value = f.f32(76 + 4 * index);
    }
    let vox_offset = f.f32(108);
    if !vox_offset.is_finite() || vox_offset < HEADER_SIZE as f64 || vox_offset > (1u64 << 32) as f64 {
        return Err(header_error(path, "vox_offset", format!("must be at least 348, found {vox_offset}")));
    }
    let mut srow = [[0.0; 4]; 3];
    for (row, values) in srow.iter_mut().enumerate() {
        for (column, value) in values.iter_mut().enumerate() {
            *value = f.f32(280 + 16 * row + 4 * column);
        }
    }
    let description: String = bytes[148..228]
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect::<String>()
        .trim()
        .to_owned();
    Ok(Header {
        big_endian,
        dims,
        datatype,
        pixdim,
        vox_offset: vox_offset as usize,
        scl_slope: f.f32(112),
        scl_inter: f.f32(116),
        qform_code: f.i16(252),
        sform_code: f.i16(254),
        intent_code: f.i16(68),
        quatern: [f.f32(256), f.f32(260), f.f32(264)],
        qoffset: [f.f32(268), f.f32(272), f.f32(276)],
        srow,
        description,
    })
}

impl Header {
    pub(super) fn spatial_dims(&self) -> [usize; 3] {
        let d = |axis: usize| self.dims.get(axis).copied().unwrap_or(1);
        [d(0), d(1), d(2)]
    }

    /// Voxel sizes of the three spatial axes; axes beyond `dim[0]` count as 1 mm (nibabel).
    pub(super) fn zooms(&self) -> [f64; 3] {
        let z = |axis: usize| if axis < self.dims.len() { self.pixdim[axis + 1] } else { 1.0 };
        [z(0), z(1), z(2)]
    }

    pub(super) fn components(&self) -> Result<usize, String> {
        self.dims
            .iter()
            .skip(3)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or("too many voxels".into())
    }

    pub(super) fn affine(&self, path: &Path) -> Result<(Matrix4<f64>, AffineSource), NiftiIoError> {
        if self.sform_code > 0 {
            let mut affine = Matrix4::identity();
            for row in 0..3 {
                for column in 0..4 {
                    affine[(row, column)] = self.srow[row][column];
                }
            }
            return Ok((affine, AffineSource::Sform));
        }
        if self.qform_code > 0 {
            return Ok((self.qform(path)?, AffineSource::Qform));
        }
        let dims = self.spatial_dims();
        let zooms = self.zooms();
        let mut affine = Matrix4::identity();
        for axis in 0..3 {
            let scale = if axis == 0 { -zooms[axis] } else { zooms[axis] };
            affine[(axis, axis)] = scale;
            affine[(axis, 3)] = -scale * (dims[axis] as f64 - 1.0) / 2.0;
        }
        Ok((affine, AffineSource::Base))
    }

    /// The qform affine as nibabel computes it (quaternion with w ≥ 0 filled in, `qfac` 0 read as 1).
    pub(super) fn qform(&self, path: &Path) -> Result<Matrix4<f64>, NiftiIoError> {
        let [b, c, d] = self.quatern;
        let w2 = 1.0 - (b * b + c * c + d * d);
        // nibabel accepts rounding just below zero (three float32 epsilons) as w = 0.
        let w = if w2 >= 0.0 {
            w2.sqrt()
        } else if w2 > -3.0 * f32::EPSILON as f64 {
            0.0
        } else {
            return Err(header_error(path, "quatern_b/c/d", "must have a norm of at most 1"));
        };
        let norm = w * w + b * b + c * c + d * d;
        if !norm.is_finite() || norm < 1e-12 {
            return Err(header_error(path, "quatern_b/c/d", "must be finite"));
        }
        let s = 2.0 / norm;
        let rotation = Matrix3::new(
            1.0 - s * (c * c + d * d),
            s * (b * c - w * d),
            s * (b * d + w * c),
            s * (b * c + w * d),
            1.0 - s * (b * b + d * d),
            s * (c * d - w * b),
            s * (b * d - w * c),
            s * (c * d + w * b),
            1.0 - s * (b * b + c * c),
        );
        let mut zooms = self.zooms();
        if zooms.iter().any(|&z| z < 0.0) {
            return Err(header_error(path, "pixdim[1..3]", "must be positive for a qform"));
        }
        let qfac = match self.pixdim[0] {
            q if q == 0.0 || q == 1.0 => 1.0,
            -1.0 => -1.0,
            q => return Err(header_error(path, "pixdim[0]", format!("qfac must be 1 or -1, found {q}"))),
        };
        zooms[2] *= qfac;
        let linear = rotation * Matrix3::from_diagonal(&Vector3::from(zooms));
        let mut affine = Matrix4::identity();
        affine.fixed_view_mut::<3, 3>(0, 0).copy_from(&linear);
        for axis in 0..3 {
            affine[(axis, 3)] = self.qoffset[axis];
        }
        Ok(affine)
    }

    pub(super) fn scaling(&self, path: &Path) -> Result<Option<(f64, f64)>, NiftiIoError> {
        let slope = self.scl_slope;
        if slope == 0.0 || !slope.is_finite() {
            return Ok(None);
        }
        if !self.scl_inter.is_finite() {
            return Err(header_error(path, "scl_inter", "must be finite when scl_slope is set"));
        }
        if slope == 1.0 && self.scl_inter == 0.0 {
            return Ok(None);
        }
        Ok(Some((slope, self.scl_inter)))
    }

    pub(super) fn info(&self, path: &Path) -> Result<NiftiInfo, NiftiIoError> {
        let (affine, affine_source) = self.affine(path)?;
        let mut rows = [[0.0; 4]; 4];
        for (row, values) in rows.iter_mut().enumerate() {
            for (column, value) in values.iter_mut().enumerate() {
                *value = affine[(row, column)];
            }
        }
        Ok(NiftiInfo {
            dims: self.dims.clone(),
            datatype: self.datatype.name(),
            pixdim: self.pixdim[1..=self.dims.len()].to_vec(),
            affine: rows,
            affine_source,
            scl_slope: self.scl_slope,
            scl_inter: self.scl_inter,
            sform_code: self.sform_code,
            qform_code: self.qform_code,
            intent_code: self.intent_code,
            description: self.description.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::encode_header;
    use super::super::tests::oblique_image;
    use super::super::{VoxelType, read_vector_image_from_bytes};
    use super::*;
    use ndarray::Array3;
    use pedinorm_registration::{Grid, Image};

    #[test]
    fn qform_alone_gives_the_same_affine_as_sform() {
        let image = oblique_image([3, 4, 5]);
        let mut bytes = encode_header(image.grid(), 1, VoxelType::F32, 0).unwrap();
        bytes[254..256].copy_from_slice(&0i16.to_le_bytes()); // sform_code = 0
        bytes.extend(std::iter::repeat_n(0u8, 60 * 4));
        let read = read_vector_image_from_bytes(&bytes, Path::new("q.nii")).unwrap();
        let difference = (read[0].grid().affine() - image.grid().affine()).abs().max();
        assert!(difference < 1e-4, "qform differs by {difference}");
    }

    #[test]
    fn scaling_applies_and_base_affine_is_nibabels() {
        let grid = Grid::axis_aligned([2, 3, 4], [2.0, 3.0, 4.0], [0.0; 3]).unwrap();
        let image = Image::new(Array3::from_elem((2, 3, 4), 7.0f32), grid.clone()).unwrap();
        let mut bytes = encode_header(&grid, 1, VoxelType::I16, 0).unwrap();
        bytes[252..256].copy_from_slice(&[0; 4]); // no qform, no sform
        bytes[112..116].copy_from_slice(&2.0f32.to_le_bytes());
        bytes[116..120].copy_from_slice(&(-1.0f32).to_le_bytes());
        for _ in 0..24 {
            bytes.extend_from_slice(&7i16.to_le_bytes());
        }
        let read = read_vector_image_from_bytes(&bytes, Path::new("s.nii")).unwrap();
        assert!(read[0].as_slice().iter().all(|&v| v == 13.0));
        let affine = read[0].grid().affine();
        assert_eq!(affine[(0, 0)], -2.0);
        assert_eq!(affine[(0, 3)], 1.0); // -(-2) * (2 - 1) / 2
        assert_eq!(affine[(2, 3)], -6.0);
        drop(image);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let image = oblique_image([3, 4, 5]);
        let good = encode_header(image.grid(), 1, VoxelType::F32, 0).unwrap();
        let mut truncated = good.clone();
        truncated.extend_from_slice(&[0u8; 10]);
        let error = read_vector_image_from_bytes(&truncated, Path::new("t.nii")).unwrap_err();
        assert!(error.to_string().contains("t.nii") && error.to_string().contains("dim"), "{error}");
        let mut huge = good.clone();
        for axis in 1..=3 {
            huge[40 + 2 * axis..42 + 2 * axis].copy_from_slice(&i16::MAX.to_le_bytes());
        }
        huge[40..42].copy_from_slice(&7i16.to_le_bytes());
        for axis in 4..=7 {
            huge[40 + 2 * axis..42 + 2 * axis].copy_from_slice(&i16::MAX.to_le_bytes());
        }
        assert!(read_vector_image_from_bytes(&huge, Path::new("h.nii")).is_err());
        let mut bad_type = good.clone();
        bad_type[70..72].copy_from_slice(&32i16.to_le_bytes());
        assert!(
            read_vector_image_from_bytes(&bad_type, Path::new("c.nii"))
                .unwrap_err()
                .to_string()
                .contains("datatype")
        );
        assert!(read_vector_image_from_bytes(&good[..100], Path::new("s.nii")).is_err());
    }
}
