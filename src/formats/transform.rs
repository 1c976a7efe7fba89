//! Transform files in ITK/ANTs formats, converted to and from pedinorm's RAS+ world at this
//! boundary.
//!
//! - **Affine**: ITK text transform files (`#Insight Transform File V1.0`,
//!   `AffineTransform_double_3_3` or `MatrixOffsetTransformBase_double_3_3`), read and written;
//!   ANTs' binary `.mat` (MATLAB v4) files, read. ITK's map is
//!   `x ↦ A (x − c) + c + t` in LPS millimetres with `Parameters: A (row-major) t` and
//!   `FixedParameters: c`. pedinorm writes `c = 0`.
//! - **Displacement fields**: NIfTI-1 5-D vector images as ANTs writes them: `dim = [5, nx, ny,
//!   nz, 1, 3]`, `intent_code = 1007` (vector), float32, displacements in LPS millimetres
//!   (x and y negated relative to RAS), on the grid given by the sform/qform.
//!
//! Both describe fixed → moving point mappings (pull), as in pedinorm.

use crate::atomic::write_atomically;
use crate::formats::lps::{RAS_LPS_SIGNS, ras_lps_matrix};
use nalgebra::{Matrix3, Matrix4, Vector3};
use ndarray::{Array5, Ix5};
use nifti::writer::WriterOptions;
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
use pedinorm_registration::{AffineTransform, DisplacementField, Grid, SpatialTransform};
use std::path::{Path, PathBuf};

/// Why a transform file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TransformIoError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content breaks a rule of the format.
    #[error("{path}: {field}: {rule}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The offending field.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// The file could not be written.
    #[error("{path}: cannot write: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl From<std::io::Error> for TransformIoError {
    fn from(error: std::io::Error) -> Self {
        TransformIoError::Write { path: PathBuf::new(), message: error.to_string() }
    }
}

fn format_error(path: &Path, field: &'static str, rule: impl Into<String>) -> TransformIoError {
    TransformIoError::Format { path: path.to_owned(), field, rule: rule.into() }
}

/// An affine from ITK's LPS parameters (`A` row-major, translation `t`, centre `c`).
pub fn affine_from_itk(parameters: &[f64; 12], center: &[f64; 3]) -> AffineTransform {
    let a = Matrix3::from_row_slice(&parameters[..9]);
    let t = Vector3::new(parameters[9], parameters[10], parameters[11]);
    let c = Vector3::from(*center);
    let offset = t + c - a * c;
    let d = ras_lps_matrix();
    AffineTransform::from_parts(&(d * a * d), &(d * offset))
}

/// ITK's LPS parameters (`A` row-major, then the translation) of an affine, with centre 0.
pub fn affine_to_itk(transform: &AffineTransform) -> [f64; 12] {
    let d = ras_lps_matrix();
    let a = d * transform.linear() * d;
    let offset = d * transform.offset();
    let mut p = [0f64; 12];
    for r in 0..3 {
        for c in 0..3 {
            p[r * 3 + c] = a[(r, c)];
        }
        p[9 + r] = offset[r];
    }
    p
}

const AFFINE_TYPES: [&str; 4] = [
    "AffineTransform_double_3_3",
    "AffineTransform_float_3_3",
    "MatrixOffsetTransformBase_double_3_3",
    "MatrixOffsetTransformBase_float_3_3",
];

/// Reads an affine transform file: ITK text (`.txt`, `.tfm`) or ANTs' MATLAB v4 `.mat`.
pub fn read_affine(path: &Path) -> Result<AffineTransform, TransformIoError> {
    let bytes =
        std::fs::read(path).map_err(|source| TransformIoError::Io { path: path.to_owned(), source })?;
    parse_affine(path, &bytes)
}

/// Parses the content of an affine transform file; `path` names it in errors and its `.mat`
/// extension selects the MATLAB v4 reader (as in [`read_affine`]).
pub fn parse_affine(path: &Path, bytes: &[u8]) -> Result<AffineTransform, TransformIoError> {
    let transform = if bytes.starts_with(b"#Insight Transform File") {
        let text = std::str::from_utf8(bytes).map_err(|_| format_error(path, "text", "not UTF-8"))?;
        parse_itk_text(path, text)?
    } else if path.extension().is_some_and(|e| e == "mat") {
        parse_matlab_v4(path, bytes)?
    } else {
        return Err(format_error(
            path,
            "header",
            "expected `#Insight Transform File V1.0` (ITK text) or a MATLAB v4 .mat",
        ));
    };
    if !transform.is_valid() {
        return Err(format_error(path, "Parameters", "the matrix must be finite and invertible"));
    }
    Ok(transform)
}

fn parse_numbers(path: &Path, field: &'static str, text: &str) -> Result<Vec<f64>, TransformIoError> {
    text.split_whitespace()
        .map(|v| v.parse::<f64>().map_err(|_| format_error(path, field, format!("`{v}` is not a number"))))
        .collect()
}

fn parse_itk_text(path: &Path, text: &str) -> Result<AffineTransform, TransformIoError> {
    let mut kind: Option<String> = None;
    let mut parameters: Option<Vec<f64>> = None;
    let mut fixed: Option<Vec<f64>> = None;
    let mut count = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Transform:") {
            count += 1;
            kind = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("Parameters:") {
            parameters = Some(parse_numbers(path, "Parameters", rest)?);
        } else if let Some(rest) = line.strip_prefix("FixedParameters:") {
            fixed = Some(parse_numbers(path, "FixedParameters", rest)?);
        }
    }
    if count != 1 {
        return Err(format_error(
            path,
            "Transform",
            format!("exactly one transform expected, found {count}"),
        ));
    }
    let kind = kind.expect("counted");
    if !AFFINE_TYPES.contains(&kind.as_str()) {
        return Err(format_error(
            path,
            "Transform",
            format!("`{kind}` is not supported; expected one of {}", AFFINE_TYPES.join(", ")),
        ));
    }
    let parameters = parameters.ok_or_else(|| format_error(path, "Parameters", "missing"))?;
    let parameters: [f64; 12] = parameters.try_into().map_err(|p: Vec<f64>| {
        format_error(path, "Parameters", format!("12 values expected, found {}", p.len()))
    })?;
    let fixed = fixed.unwrap_or_else(|| vec![0.0; 3]);
    let center: [f64; 3] = fixed.try_into().map_err(|p: Vec<f64>| {
        format_error(path, "FixedParameters", format!("3 values expected, found {}", p.len()))
    })?;
    Ok(affine_from_itk(&parameters, &center))
}

/// MATLAB v4 as written by ITK's `MatlabTransformIO` (ANTs' `.mat`): variables
/// `AffineTransform_double_3_3` (or `MatrixOffsetTransformBase_…`, 12 values) and `fixed` (3).
fn parse_matlab_v4(path: &Path, bytes: &[u8]) -> Result<AffineTransform, TransformIoError> {
    let mut offset = 0;
    let mut parameters: Option<Vec<f64>> = None;
    let mut center: Option<Vec<f64>> = None;
    let read_i32 = |at: usize| -> Result<i32, TransformIoError> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| format_error(path, "MATLAB header", "file is truncated"))
    };
    while offset < bytes.len() {
        let kind = read_i32(offset)?;
        let rows = read_i32(offset + 4)?;
        let cols = read_i32(offset + 8)?;
        let imaginary = read_i32(offset + 12)?;
        let name_length = read_i32(offset + 16)?;
        // MOPT: M = 0 (little endian), O = 0, P = 0 (double) or 1 (single), T = 0 (full).
        let precision = (kind / 10) % 10;
        if kind / 1000 != 0 || kind % 10 != 0 || imaginary != 0 || !(precision == 0 || precision == 1) {
            return Err(format_error(
                path,
                "MATLAB header",
                format!("unsupported matrix type {kind} (need little-endian real double or single)"),
            ));
        }
        if rows < 0 || cols < 0 || !(1..=256).contains(&name_length) {
            return Err(format_error(path, "MATLAB header", "invalid matrix size or name length"));
        }
        let name_start = offset + 20;
        let name_end = name_start + name_length as usize;
        let name = bytes
            .get(name_start..name_end)
            .ok_or_else(|| format_error(path, "MATLAB header", "file is truncated"))?;
        let name = String::from_utf8_lossy(name).trim_end_matches('\0').to_owned();
        let width = if precision == 0 { 8 } else { 4 };
        // The sizes come from the file: a hostile header must not overflow (or wrap) the sum.
        let data_length = (rows as usize)
            .checked_mul(cols as usize)
            .and_then(|count| count.checked_mul(width))
            .ok_or_else(|| {
                format_error(
                    path,
                    "MATLAB header",
                    format!("matrix of {rows} × {cols} values of {width} bytes is larger than any file"),
                )
            })?;
        let data_end = name_end
            .checked_add(data_length)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format_error(path, "MATLAB data", "file is truncated"))?;
        let data = &bytes[name_end..data_end];
        let values: Vec<f64> = data
            .chunks_exact(width)
            .map(|c| {
                if width == 8 {
                    f64::from_le_bytes(c.try_into().expect("8 bytes"))
                } else {
                    f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64
                }
            })
            .collect();
        if AFFINE_TYPES.contains(&name.as_str()) {
            parameters = Some(values);
        } else if name == "fixed" {
            center = Some(values);
        }
        offset = data_end;
    }
    let parameters =
        parameters.ok_or_else(|| format_error(path, "AffineTransform_double_3_3", "variable missing"))?;
    let parameters: [f64; 12] = parameters.try_into().map_err(|p: Vec<f64>| {
        format_error(path, "AffineTransform_double_3_3", format!("12 values expected, found {}", p.len()))
    })?;
    let center: [f64; 3] = center.unwrap_or_else(|| vec![0.0; 3]).try_into().map_err(|p: Vec<f64>| {
        format_error(path, "fixed", format!("3 values expected, found {}", p.len()))
    })?;
    Ok(affine_from_itk(&parameters, &center))
}

/// Writes an affine as an ITK text transform file (`AffineTransform_double_3_3`, LPS).
pub fn write_affine(path: &Path, transform: &AffineTransform) -> Result<(), TransformIoError> {
    if !transform.is_valid() {
        return Err(TransformIoError::Write {
            path: path.to_owned(),
            message: "affine is singular or not finite".into(),
        });
    }
    let p = affine_to_itk(transform);
    let numbers: Vec<String> = p.iter().map(|v| format!("{v:?}")).collect();
    let text = format!(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: {}\nFixedParameters: 0 0 0\n",
        numbers.join(" ")
    );
    crate::atomic::write_bytes(path, text.as_bytes())
        .map_err(|e| TransformIoError::Write { path: path.to_owned(), message: e.to_string() })
}

/// NIfTI intent code of vector-valued images.
pub const NIFTI_INTENT_VECTOR: i16 = 1007;

/// Reads an ANTs displacement field (5-D NIfTI vector image, LPS displacements).
pub fn read_field(path: &Path) -> Result<DisplacementField, TransformIoError> {
    let object =
        ReaderOptions::new().read_file(path).map_err(|e| format_error(path, "NIfTI", e.to_string()))?;
    let header = object.header().clone();
    let dims = header.dim;
    if dims[0] != 5 || dims[4] != 1 || dims[5] != 3 {
        return Err(format_error(
            path,
            "dim",
            format!("expected [5, nx, ny, nz, 1, 3] (a 3-D vector field), found {:?}", &dims[..6]),
        ));
    }
    let affine: Matrix4<f64> = header.affine::<f64>();
    let grid = Grid::new([dims[1] as usize, dims[2] as usize, dims[3] as usize], affine)
        .map_err(|e| format_error(path, "sform/qform", e.to_string()))?;
    let data = object
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| format_error(path, "data", e.to_string()))?
        .into_dimensionality::<Ix5>()
        .map_err(|e| format_error(path, "dim", e.to_string()))?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(format_error(path, "data", "displacements must be finite"));
    }
    let d = grid.dims();
    let sign = RAS_LPS_SIGNS.map(|s| s as f32);
    let components: [Vec<f32>; 3] = std::array::from_fn(|c| {
        let mut out = Vec::with_capacity(grid.len());
        for i in 0..d[0] {
            for j in 0..d[1] {
                for k in 0..d[2] {
                    out.push(sign[c] * data[[i, j, k, 0, c]]);
                }
            }
        }
        out
    });
    Ok(DisplacementField::from_flat(&grid, components))
}

/// Writes a displacement field as ANTs does (5-D NIfTI vector image, LPS displacements).
pub fn write_field(path: &Path, field: &DisplacementField) -> Result<(), TransformIoError> {
    let grid = field.grid();
    let d = grid.dims();
    let [x, y, z] = field.slices();
    let sign = RAS_LPS_SIGNS.map(|s| s as f32);
    let data = Array5::from_shape_fn((d[0], d[1], d[2], 1, 3), |(i, j, k, _, c)| {
        let flat = grid.flat_index(i, j, k);
        sign[c] * [x, y, z][c][flat]
    });
    let mut header = nifti::NiftiHeader::default();
    let affine = grid.affine();
    header.set_sform(affine, nifti::XForm::ScannerAnat);
    header.set_qform(affine, nifti::XForm::ScannerAnat);
    header.intent_code = NIFTI_INTENT_VECTOR;
    header.xyzt_units = 2 | 8;
    let spacing = grid.spacing();
    header.pixdim[1] = spacing[0] as f32;
    header.pixdim[2] = spacing[1] as f32;
    header.pixdim[3] = spacing[2] as f32;
    header.pixdim[4] = 1.0;
    header.pixdim[5] = 1.0;
    write_atomically(path, |tmp| {
        let mut options = WriterOptions::new(tmp).reference_header(&header);
        if tmp.to_string_lossy().ends_with(".gz") {
            // Fields are large and compress poorly: favour speed over a few percent of size.
            options = options.compression_level(flate2::Compression::fast());
        }
        options
            .write_nifti(&data)
            .map_err(|e| TransformIoError::Write { path: path.to_owned(), message: e.to_string() })
    })
    .map_err(|e| match e {
        TransformIoError::Write { message, .. } => TransformIoError::Write { path: path.to_owned(), message },
        other => other,
    })
}

/// A transform read from a file, ready to go into a [`pedinorm_registration::TransformChain`].
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a handful per command; the field dominates anyway
pub enum LoadedTransform {
    /// An affine (possibly inverted on load).
    Affine(AffineTransform),
    /// A displacement field.
    Field(DisplacementField),
}

impl LoadedTransform {
    /// The transform as a point mapping.
    pub fn as_spatial(&self) -> &dyn SpatialTransform {
        match self {
            LoadedTransform::Affine(a) => a,
            LoadedTransform::Field(f) => f,
        }
    }
}

/// Reads a transform given as on antsApplyTransforms' command line: `file` or `[file,1]`
/// (use the inverse; affine files only). NIfTI files (`.nii`, `.nii.gz`) are fields; anything
/// else is an affine file.
pub fn read_transform_spec(spec: &str) -> Result<LoadedTransform, TransformIoError> {
    let (file, invert) = match spec.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(inner) => {
            let (file, flag) = inner
                .rsplit_once(',')
                .ok_or_else(|| format_error(Path::new(spec), "transform", "expected [file,0|1]"))?;
            match flag.trim() {
                "0" => (file.trim(), false),
                "1" => (file.trim(), true),
                other => {
                    return Err(format_error(
                        Path::new(file),
                        "transform",
                        format!("inverse flag `{other}` must be 0 or 1"),
                    ));
                }
            }
        }
        None => (spec, false),
    };
    let path = Path::new(file);
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        if invert {
            return Err(format_error(
                path,
                "transform",
                "a displacement field cannot be inverted on the fly; use its inverse warp file",
            ));
        }
        return read_field(path).map(LoadedTransform::Field);
    }
    let affine = read_affine(path)?;
    if invert {
        let inverse = affine
            .inverse()
            .ok_or_else(|| format_error(path, "Parameters", "the affine is not invertible"))?;
        return Ok(LoadedTransform::Affine(inverse));
    }
    Ok(LoadedTransform::Affine(affine))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_registration::transform::map_voxels;

    #[test]
    fn itk_text_round_trip_and_centre_handling() {
        let dir = tempfile::tempdir().unwrap();
        let t = AffineTransform::about_center(
            &(nalgebra::Rotation3::from_euler_angles(0.1, -0.2, 0.05).into_inner() * 0.9),
            [1.0, -2.0, 3.0],
            [5.0, 6.0, 7.0],
        );
        let path = dir.path().join("a.txt");
        write_affine(&path, &t).unwrap();
        let back = read_affine(&path).unwrap();
        assert!(back.max_distance(&t, &[[10.0, 20.0, -30.0], [0.0, 0.0, 0.0]]) < 1e-9);
        // A file with a centre: x ↦ A(x − c) + c + t in LPS. Identity matrix, t = (1, 2, 3)
        // LPS: RAS point moves by (−1, −2, 3) whatever the centre.
        std::fs::write(
            &path,
            "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 1 2 3\nFixedParameters: 4 5 6\n",
        )
        .unwrap();
        let shifted = read_affine(&path).unwrap();
        let p = shifted.transform_point([0.0, 0.0, 0.0]);
        assert_eq!(p, [-1.0, -2.0, 3.0]);
        // A 2x scaling about centre c (LPS) keeps c (as RAS (−cx, −cy, cz)) fixed.
        std::fs::write(
            &path,
            "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: 2 0 0 0 2 0 0 0 2 0 0 0\nFixedParameters: 4 5 6\n",
        )
        .unwrap();
        let p = read_affine(&path).unwrap().transform_point([-4.0, -5.0, 6.0]);
        assert!((p[0] + 4.0).abs() < 1e-12 && (p[1] + 5.0).abs() < 1e-12 && (p[2] - 6.0).abs() < 1e-12);
    }

    #[test]
    fn malformed_affine_names_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(
            &path,
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0\n",
        )
        .unwrap();
        let e = read_affine(&path).unwrap_err().to_string();
        assert!(e.contains("Parameters") && e.contains("bad.txt"), "{e}");
        std::fs::write(
            &path,
            "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1\n",
        )
        .unwrap();
        assert!(read_affine(&path).unwrap_err().to_string().contains("not supported"));
    }

    #[test]
    fn matlab_v4_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0GenericAffine.mat");
        let mut bytes = Vec::new();
        let mut var = |name: &str, values: &[f64]| {
            for v in [0i32, values.len() as i32, 1, 0, name.len() as i32 + 1] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            for v in values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        };
        var("AffineTransform_double_3_3", &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0]);
        var("fixed", &[0.0, 0.0, 0.0]);
        std::fs::write(&path, &bytes).unwrap();
        let t = read_affine(&path).unwrap();
        assert_eq!(t.transform_point([0.0; 3]), [-1.0, -2.0, 3.0]);
    }

    /// A MATLAB header whose rows × columns × value width exceeds the address space used to
    /// overflow (a panic in the test profile, a wrapped length in release).
    #[test]
    fn matlab_v4_sizes_that_overflow_are_refused_naming_the_field() {
        let path = Path::new("huge.mat");
        let mut bytes = Vec::new();
        for v in [0i32, i32::MAX, i32::MAX, 0, 6] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(b"fixed\0");
        let error = parse_affine(path, &bytes).unwrap_err().to_string();
        assert!(error.starts_with("huge.mat: MATLAB header: matrix of 2147483647 × 2147483647"), "{error}");
        // Large but representable sizes are a truncated file, not an allocation.
        bytes[4..8].copy_from_slice(&65536i32.to_le_bytes());
        bytes[8..12].copy_from_slice(&65536i32.to_le_bytes());
        let error = parse_affine(path, &bytes).unwrap_err().to_string();
        assert_eq!(error, "huge.mat: MATLAB data: file is truncated");
    }

    #[test]
    fn field_round_trip_keeps_ras_displacements() {
        let dir = tempfile::tempdir().unwrap();
        let grid = Grid::axis_aligned([6, 5, 4], [2.0, 2.0, 2.5], [-6.0, -5.0, -4.0]).unwrap();
        let parts = map_voxels(&grid, |v| [v[0] as f32 * 0.1, -(v[1] as f32) * 0.2, v[2] as f32 * 0.3 + 1.0]);
        let field = DisplacementField::from_flat(&grid, parts);
        let path = dir.path().join("warp.nii.gz");
        write_field(&path, &field).unwrap();
        let back = read_field(&path).unwrap();
        assert_eq!(back.slices(), field.slices());
        assert!(back.grid().same_as(grid.grid_ref(), 1e-4));
        // On disk the header is ANTs' vector layout with LPS values.
        let object = ReaderOptions::new().read_file(&path).unwrap();
        assert_eq!(&object.header().dim[..6], &[5, 6, 5, 4, 1, 3]);
        assert_eq!(object.header().intent_code, NIFTI_INTENT_VECTOR);
        let raw = object.into_volume().into_ndarray::<f32>().unwrap();
        assert_eq!(raw[[2, 0, 0, 0, 0]], -0.2);
        assert!(read_transform_spec(&format!("[{},1]", path.display())).is_err());
    }

    trait GridRef {
        fn grid_ref(&self) -> &Grid;
    }
    impl GridRef for Grid {
        fn grid_ref(&self) -> &Grid {
            self
        }
    }
}
