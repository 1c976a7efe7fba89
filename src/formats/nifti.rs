//! NIfTI-1 reading and writing (`.nii`, `.nii.gz`) of 3-D images and vector images.
//!
//! The codec is written here rather than taken from a crate so that every malformed header is
//! an error (never a panic or an unbounded allocation) and so that the affine follows
//! nibabel's rules exactly:
//! - voxel → world affine: sform when `sform_code > 0`, else qform when `qform_code > 0`,
//!   else the "base" affine (`diag(-dx, dy, dz)` centred on the volume, x flipped);
//! - `scl_slope`/`scl_inter` applied when the slope is finite and non-zero;
//! - on-disk voxel order is Fortran (i fastest), in memory `[i, j, k]` C order.
//!
//! Files are written with sform and qform both set (code 1, scanner anatomical), so nibabel,
//! ITK/ANTs, FSL and dcm2niix-based tools agree on the geometry.

use crate::atomic::write_atomically;
use nalgebra::{Matrix3, Matrix4, Rotation3, UnitQuaternion, Vector3};
use ndarray::Array3;
use pedinorm_registration::{Grid, Image};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why a NIfTI file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NiftiIoError {
    /// The file could not be opened or decoded.
    #[error("{path}: cannot read NIfTI: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O or decompression error.
        source: std::io::Error,
    },
    /// The header violates a rule.
    #[error("{path}: header field {field}: {rule}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The file could not be written.
    #[error("{path}: cannot write NIfTI: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl From<std::io::Error> for NiftiIoError {
    fn from(error: std::io::Error) -> Self {
        NiftiIoError::Write { path: PathBuf::new(), message: error.to_string() }
    }
}

/// On-disk voxel type of a written volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoxelType {
    /// 8-bit unsigned (masks, labels).
    U8,
    /// 16-bit signed.
    I16,
    /// 32-bit float (the default for intensities and statistics).
    F32,
    /// 64-bit float.
    F64,
}

impl VoxelType {
    fn code(self) -> (i16, i16) {
        match self {
            VoxelType::U8 => (2, 8),
            VoxelType::I16 => (4, 16),
            VoxelType::F32 => (16, 32),
            VoxelType::F64 => (64, 64),
        }
    }
}

/// Which header fields gave the voxel → world affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffineSource {
    /// `srow_x/y/z` (sform_code > 0).
    Sform,
    /// Quaternion, offsets and pixdim (qform_code > 0).
    Qform,
    /// Neither code set: spacing only, centred, x flipped (nibabel's base affine).
    Base,
}

/// The header facts of a NIfTI file, as read (no voxel data).
#[derive(Debug, Clone, serde::Serialize)]
pub struct NiftiInfo {
    /// Sizes of the used dimensions (`dim[1..=dim[0]]`).
    pub dims: Vec<usize>,
    /// On-disk voxel type name (`uint8`, `int16`, `float32`, ...).
    pub datatype: &'static str,
    /// `pixdim[1..=dim[0]]` (voxel size in mm, then time step, ...).
    pub pixdim: Vec<f64>,
    /// Voxel → world (RAS+ mm) affine, row-major.
    pub affine: [[f64; 4]; 4],
    /// Which fields gave the affine.
    pub affine_source: AffineSource,
    /// `scl_slope` as stored.
    pub scl_slope: f64,
    /// `scl_inter` as stored.
    pub scl_inter: f64,
    /// `sform_code`.
    pub sform_code: i16,
    /// `qform_code`.
    pub qform_code: i16,
    /// `intent_code`.
    pub intent_code: i16,
    /// `descrip`, trimmed.
    pub description: String,
}

const HEADER_SIZE: usize = 348;
/// Upper bound on the voxels of one file: protects against headers that claim absurd sizes.
const MAX_VOXELS: usize = 1 << 31;

#[derive(Debug, Clone, Copy)]
enum DataType {
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
    fn from_code(code: i16) -> Option<Self> {
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

    fn bytes(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    fn name(self) -> &'static str {
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
struct Header {
    big_endian: bool,
    dims: Vec<usize>,
    datatype: DataType,
    pixdim: [f64; 8],
    vox_offset: usize,
    scl_slope: f64,
    scl_inter: f64,
    qform_code: i16,
    sform_code: i16,
    intent_code: i16,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    description: String,
}

struct Fields<'a> {
    bytes: &'a [u8],
    big_endian: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[offset..offset + N]);
        if self.big_endian {
            out.reverse();
        }
        out
    }
    fn i16(&self, offset: usize) -> i16 {
        i16::from_le_bytes(self.array(offset))
    }
    fn f32(&self, offset: usize) -> f64 {
        f32::from_le_bytes(self.array(offset)) as f64
    }
}

fn header_error(path: &Path, field: &'static str, rule: impl Into<String>) -> NiftiIoError {
    NiftiIoError::Header { path: path.to_owned(), field, rule: rule.into() }
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<Header, NiftiIoError> {
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
    fn spatial_dims(&self) -> [usize; 3] {
        let d = |axis: usize| self.dims.get(axis).copied().unwrap_or(1);
        [d(0), d(1), d(2)]
    }

    /// Voxel sizes of the three spatial axes; axes beyond `dim[0]` count as 1 mm (nibabel).
    fn zooms(&self) -> [f64; 3] {
        let z = |axis: usize| if axis < self.dims.len() { self.pixdim[axis + 1] } else { 1.0 };
        [z(0), z(1), z(2)]
    }

    fn components(&self) -> Result<usize, String> {
        self.dims
            .iter()
            .skip(3)
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or("too many voxels".into())
    }

    fn affine(&self, path: &Path) -> Result<(Matrix4<f64>, AffineSource), NiftiIoError> {
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
    fn qform(&self, path: &Path) -> Result<Matrix4<f64>, NiftiIoError> {
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

    fn scaling(&self, path: &Path) -> Result<Option<(f64, f64)>, NiftiIoError> {
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

    fn info(&self, path: &Path) -> Result<NiftiInfo, NiftiIoError> {
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

/// Opens a file, transparently un-gzipping (by magic bytes, not by name).
fn open(path: &Path) -> Result<Box<dyn Read>, NiftiIoError> {
    let read_error = |source| NiftiIoError::Read { path: path.to_owned(), source };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(read_error)?);
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < 2 {
        let n = file.read(&mut magic[filled..]).map_err(read_error)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    let head = std::io::Cursor::new(magic[..filled].to_vec());
    let chained = head.chain(file);
    if filled == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

/// Reads the header, then exactly the bytes the header says the voxels need (never more, so
/// a lying header cannot make the reader allocate unboundedly).
fn read_header_and_data(
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
fn decode_values(header: &Header, data: &[u8], scaling: Option<(f64, f64)>) -> Vec<f64> {
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

fn decode_components(source: impl Read, path: &Path) -> Result<Vec<Image<f32>>, NiftiIoError> {
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

/// Reads the header facts of a NIfTI file (dims, type, affine and where it came from).
pub fn read_info(path: &Path) -> Result<NiftiInfo, NiftiIoError> {
    let (header, _) = read_header_and_data(open(path)?, path, false)?;
    header.info(path)
}

/// Reads a 3-D NIfTI volume as `f32` (scl_slope/scl_inter applied) with its best affine
/// (sform, then qform, then the base affine: nibabel's precedence). A 4-D or 5-D file whose
/// extra dimensions are all 1 counts as 3-D.
pub fn read_image(path: &Path) -> Result<Image<f32>, NiftiIoError> {
    let mut components = read_vector_image(path)?;
    if components.len() != 1 {
        return Err(header_error(
            path,
            "dim",
            format!("expected a 3-D volume, found {} volumes (use a vector-image reader)", components.len()),
        ));
    }
    Ok(components.remove(0))
}

/// Reads a 3-D, 4-D or 5-D NIfTI file as a list of 3-D components sharing one grid: the
/// volumes along dimensions 4 and up, in file order (dimension 4 fastest). A 5-D vector image
/// of shape `(x, y, z, 1, 3)` (ANTs displacement fields) gives three components.
pub fn read_vector_image(path: &Path) -> Result<Vec<Image<f32>>, NiftiIoError> {
    decode_components(open(path)?, path)
}

/// Decodes NIfTI bytes held in memory (gzipped or not); `name` only labels errors.
pub fn read_vector_image_from_bytes(bytes: &[u8], name: &Path) -> Result<Vec<Image<f32>>, NiftiIoError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        decode_components(flate2::read::MultiGzDecoder::new(bytes), name)
    } else {
        decode_components(bytes, name)
    }
}

/// Writes a 3-D image atomically with sform and qform both set to its affine (code 1,
/// scanner), converting voxel values to `voxel_type` (rounded and clamped for integers).
pub fn write_image(path: &Path, image: &Image<f32>, voxel_type: VoxelType) -> Result<(), NiftiIoError> {
    write_components(path, std::slice::from_ref(image), voxel_type, 0)
}

/// Writes components sharing one grid as a 5-D vector image `(x, y, z, 1, n)` with intent
/// "vector" (1007), the layout ANTs and ITK use for displacement fields.
pub fn write_vector_image(
    path: &Path,
    components: &[Image<f32>],
    voxel_type: VoxelType,
) -> Result<(), NiftiIoError> {
    write_components(path, components, voxel_type, 1007)
}

/// The header bytes (348 + 4 extension bytes) for an image on `grid` with `components` volumes.
fn encode_header(
    grid: &Grid,
    components: usize,
    voxel_type: VoxelType,
    intent: i16,
) -> Result<Vec<u8>, String> {
    let dims = grid.dims();
    if dims.iter().any(|&d| d > i16::MAX as usize) || components > i16::MAX as usize {
        return Err(format!("dimensions {dims:?} × {components} exceed NIfTI-1's 32767 per axis"));
    }
    let mut dim = [1i16; 8];
    if components == 1 && intent == 0 {
        dim[0] = 3;
    } else {
        dim[0] = 5;
        dim[5] = components as i16;
    }
    for axis in 0..3 {
        dim[axis + 1] = dims[axis] as i16;
    }
    let affine = grid.affine();
    let linear: Matrix3<f64> = affine.fixed_view::<3, 3>(0, 0).into_owned();
    let zooms: Vector3<f64> = Vector3::from_fn(|axis, _| linear.column(axis).norm());
    // Closest rotation to the direction matrix (polar decomposition), as nibabel's set_qform.
    let direction = Matrix3::from_fn(|r, c| linear[(r, c)] / zooms[c]);
    let svd = direction.svd(true, true);
    let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
        return Err("direction matrix has no SVD".into());
    };
    let mut rotation = u * v_t;
    let qfac = if rotation.determinant() > 0.0 { 1.0 } else { -1.0 };
    if qfac < 0.0 {
        rotation.column_mut(2).neg_mut();
    }
    let mut quaternion = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(rotation));
    if quaternion.w < 0.0 {
        quaternion = UnitQuaternion::new_unchecked(-quaternion.into_inner());
    }
    let (code, bitpix) = voxel_type.code();
    let mut out = Vec::with_capacity(352);
    let i32le = |out: &mut Vec<u8>, v: i32| out.extend_from_slice(&v.to_le_bytes());
    let i16le = |out: &mut Vec<u8>, v: i16| out.extend_from_slice(&v.to_le_bytes());
    let f32le = |out: &mut Vec<u8>, v: f64| out.extend_from_slice(&(v as f32).to_le_bytes());
    i32le(&mut out, 348); // sizeof_hdr
    out.extend_from_slice(&[0u8; 35]); // data_type, db_name, extents, session_error, regular
    out.push(0); // dim_info
    for value in dim {
        i16le(&mut out, value);
    }
    f32le(&mut out, 0.0); // intent_p1
    f32le(&mut out, 0.0); // intent_p2
    f32le(&mut out, 0.0); // intent_p3
    i16le(&mut out, intent);
    i16le(&mut out, code);
    i16le(&mut out, bitpix);
    i16le(&mut out, 0); // slice_start
    let pixdim = [qfac, zooms[0], zooms[1], zooms[2], 1.0, 1.0, 1.0, 1.0];
    for value in pixdim {
        f32le(&mut out, value);
    }
    f32le(&mut out, 352.0); // vox_offset
    f32le(&mut out, 1.0); // scl_slope
    f32le(&mut out, 0.0); // scl_inter
    i16le(&mut out, 0); // slice_end
    out.push(0); // slice_code
    out.push(2 | 8); // xyzt_units: millimetres, seconds
    out.extend_from_slice(&[0u8; 24]); // cal_max, cal_min, slice_duration, toffset, glmax, glmin
    let mut description = [0u8; 80];
    description[..8].copy_from_slice(b"pedinorm");
    out.extend_from_slice(&description);
    out.extend_from_slice(&[0u8; 24]); // aux_file
    i16le(&mut out, 1); // qform_code: scanner anatomical
    i16le(&mut out, 1); // sform_code: scanner anatomical
    f32le(&mut out, quaternion.i);
    f32le(&mut out, quaternion.j);
    f32le(&mut out, quaternion.k);
    for axis in 0..3 {
        f32le(&mut out, affine[(axis, 3)]);
    }
    for row in 0..3 {
        for column in 0..4 {
            f32le(&mut out, affine[(row, column)]);
        }
    }
    out.extend_from_slice(&[0u8; 16]); // intent_name
    out.extend_from_slice(b"n+1\0");
    out.extend_from_slice(&[0u8; 4]); // no extensions
    debug_assert_eq!(out.len(), 352);
    Ok(out)
}

fn write_components(
    path: &Path,
    components: &[Image<f32>],
    voxel_type: VoxelType,
    intent: i16,
) -> Result<(), NiftiIoError> {
    let wrap = |message: String| NiftiIoError::Write { path: path.to_owned(), message };
    let Some(first) = components.first() else {
        return Err(wrap("no volume to write".into()));
    };
    if components.iter().any(|c| c.grid() != first.grid()) {
        return Err(wrap("components must share one grid".into()));
    }
    let mut bytes = encode_header(first.grid(), components.len(), voxel_type, intent).map_err(wrap)?;
    let [nx, ny, nz] = first.grid().dims();
    bytes.reserve(components.len() * nx * ny * nz * voxel_type.code().1 as usize / 8);
    for component in components {
        // The transposed view iterates k outermost and i innermost: NIfTI's on-disk order.
        let voxels = component.data().t();
        match voxel_type {
            VoxelType::U8 => bytes.extend(voxels.iter().map(|v| v.round().clamp(0.0, 255.0) as u8)),
            VoxelType::I16 => {
                for v in voxels.iter() {
                    bytes.extend_from_slice(
                        &(v.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16).to_le_bytes(),
                    );
                }
            }
            VoxelType::F32 => {
                for v in voxels.iter() {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
            VoxelType::F64 => {
                for v in voxels.iter() {
                    bytes.extend_from_slice(&(*v as f64).to_le_bytes());
                }
            }
        }
    }
    let gzip = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    write_atomically(path, |tmp| -> Result<(), NiftiIoError> {
        let file = std::fs::File::create(tmp)?;
        if gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::new(6));
            encoder.write_all(&bytes)?;
            encoder.finish()?.flush()?;
        } else {
            let mut writer = std::io::BufWriter::new(file);
            writer.write_all(&bytes)?;
            writer.flush()?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        NiftiIoError::Write { message, .. } => wrap(message),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_image(dims: [usize; 3]) -> Image<f32> {
        let rotation = nalgebra::Rotation3::from_euler_angles(0.1, 0.0, -0.2).to_homogeneous();
        let mut affine = rotation * Matrix4::new_nonuniform_scaling(&nalgebra::Vector3::new(1.0, 1.5, 2.0));
        affine[(0, 3)] = -20.0;
        affine[(1, 3)] = 5.0;
        let grid = Grid::new(dims, affine).unwrap();
        let data = Array3::from_shape_fn((dims[0], dims[1], dims[2]), |(i, j, k)| {
            (i * 100 + j * 10 + k) as f32 + 0.25
        });
        Image::new(data, grid).unwrap()
    }

    #[test]
    fn round_trip_keeps_affine_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let image = oblique_image([5, 6, 7]);
        let path = dir.path().join("x.nii.gz");
        write_image(&path, &image, VoxelType::F32).unwrap();
        let back = read_image(&path).unwrap();
        assert_eq!(back.as_slice(), image.as_slice());
        assert!(back.grid().same_as(image.grid(), 1e-4));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn integer_types_round_and_clamp() {
        let dir = tempfile::tempdir().unwrap();
        let image = oblique_image([4, 3, 2]);
        let path = dir.path().join("x.nii");
        write_image(&path, &image, VoxelType::I16).unwrap();
        let back = read_image(&path).unwrap();
        assert_eq!(back.as_slice(), image.map(|v| v.round()).as_slice());
        write_image(&path, &image, VoxelType::U8).unwrap();
        let back = read_image(&path).unwrap();
        assert_eq!(back.as_slice(), image.map(|v| v.round().clamp(0.0, 255.0)).as_slice());
        write_image(&path, &image, VoxelType::F64).unwrap();
        assert_eq!(read_image(&path).unwrap().as_slice(), image.as_slice());
        assert_eq!(read_info(&path).unwrap().datatype, "float64");
    }

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
    fn vector_images_round_trip_as_components() {
        let dir = tempfile::tempdir().unwrap();
        let first = oblique_image([3, 4, 5]);
        let second = first.map(|v| -v);
        let path = dir.path().join("field.nii.gz");
        write_vector_image(&path, &[first.clone(), second.clone()], VoxelType::F32).unwrap();
        let back = read_vector_image(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].as_slice(), first.as_slice());
        assert_eq!(back[1].as_slice(), second.as_slice());
        let info = read_info(&path).unwrap();
        assert_eq!(info.dims, vec![3, 4, 5, 1, 2]);
        assert_eq!(info.intent_code, 1007);
        assert!(read_image(&path).is_err());
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

    #[test]
    fn missing_file_names_the_path() {
        let error = read_image(Path::new("/nonexistent/brain.nii.gz")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/brain.nii.gz"));
    }
}
