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
//!
//! [`header`] parses and checks the 348-byte header, [`decode`] reads the voxels a header
//! announces, [`encode`] writes a header and voxels; this module holds the public calls.

use pedinorm_registration::Image;
use std::io::Read;
use std::path::{Path, PathBuf};

mod decode;
mod encode;
mod header;

use decode::{decode_components, read_header_and_data};
use encode::write_components;
use header::header_error;

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

/// A 3-D image as the bytes of a `.nii.gz` file (what [`write_image`] would write), for
/// answers that never touch the disk.
pub fn image_to_gzip_bytes(image: &Image<f32>, voxel_type: VoxelType) -> Result<Vec<u8>, NiftiIoError> {
    let name = Path::new("image.nii.gz");
    let wrap = |message: String| NiftiIoError::Write { path: name.to_owned(), message };
    let bytes = encode::encode_components(std::slice::from_ref(image), voxel_type, 0).map_err(wrap)?;
    encode::gzip(&bytes).map_err(|e| wrap(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Matrix4;
    use ndarray::Array3;
    use pedinorm_registration::Grid;

    pub(super) fn oblique_image(dims: [usize; 3]) -> Image<f32> {
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

    /// `image` written as `name` with `voxel` into a fresh folder and read back; the folder
    /// then holds that one file (no temporary file is left).
    fn written_and_read(image: &Image<f32>, name: &str, voxel: VoxelType) -> Image<f32> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        write_image(&path, image, voxel).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        read_image(&path).unwrap()
    }

    #[test]
    fn in_memory_bytes_are_the_file_written() {
        let image = oblique_image([5, 4, 3]);
        let bytes = image_to_gzip_bytes(&image, VoxelType::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.nii.gz");
        write_image(&path, &image, VoxelType::F32).unwrap();
        let from_file = read_image(&path).unwrap();
        let from_bytes = read_vector_image_from_bytes(&bytes, Path::new("a.nii.gz")).unwrap().remove(0);
        assert_eq!(from_bytes.grid(), from_file.grid());
        assert_eq!(from_bytes.data(), from_file.data());
    }

    #[test]
    fn round_trip_keeps_affine_and_values() {
        let image = oblique_image([5, 6, 7]);
        let back = written_and_read(&image, "x.nii.gz", VoxelType::F32);
        assert_eq!(back.as_slice(), image.as_slice());
        assert!(back.grid().same_as(image.grid(), 1e-4));
    }

    #[test]
    fn integer_types_round_and_clamp() {
        let image = oblique_image([4, 3, 2]);
        let back = written_and_read(&image, "x.nii", VoxelType::I16);
        assert_eq!(back.as_slice(), image.map(|v| v.round()).as_slice());
        let back = written_and_read(&image, "x.nii", VoxelType::U8);
        assert_eq!(back.as_slice(), image.map(|v| v.round().clamp(0.0, 255.0)).as_slice());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.nii");
        write_image(&path, &image, VoxelType::F64).unwrap();
        assert_eq!(read_image(&path).unwrap().as_slice(), image.as_slice());
        assert_eq!(read_info(&path).unwrap().datatype, "float64");
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
    fn missing_file_names_the_path() {
        let error = read_image(Path::new("/nonexistent/brain.nii.gz")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/brain.nii.gz"));
    }
}
