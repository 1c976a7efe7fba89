//! Writing NIfTI files: the header of a grid (sform and qform both set) and the voxels.

use crate::atomic::write_atomically;
use nalgebra::{Matrix3, Rotation3, UnitQuaternion, Vector3};
use pedinorm_registration::{Grid, Image};
use std::io::Write;
use std::path::Path;

use super::{NiftiIoError, VoxelType};

/// The header bytes (348 + 4 extension bytes) for an image on `grid` with `components` volumes.
pub(super) fn encode_header(
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

/// The bytes of a NIfTI-1 file (header and voxels, uncompressed) holding `components`.
pub(super) fn encode_components(
    components: &[Image<f32>],
    voxel_type: VoxelType,
    intent: i16,
) -> Result<Vec<u8>, String> {
    let Some(first) = components.first() else {
        return Err("no volume to write".into());
    };
    if components.iter().any(|c| c.grid() != first.grid()) {
        return Err("components must share one grid".into());
    }
    let mut bytes = encode_header(first.grid(), components.len(), voxel_type, intent)?;
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
    Ok(bytes)
}

/// Gzip-compresses NIfTI bytes (as `.nii.gz` files are written).
pub(super) fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(bytes)?;
    encoder.finish()
}

pub(super) fn write_components(
    path: &Path,
    components: &[Image<f32>],
    voxel_type: VoxelType,
    intent: i16,
) -> Result<(), NiftiIoError> {
    let wrap = |message: String| NiftiIoError::Write { path: path.to_owned(), message };
    let bytes = encode_components(components, voxel_type, intent).map_err(wrap)?;
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
