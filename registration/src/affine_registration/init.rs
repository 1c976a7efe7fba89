//! The starting transforms of an affine registration: intensity centres of mass and sizes, or
//! the four proper rotations aligning the principal axes.

use super::{AffineInit, AffineKind, AffineParams, RegistrationError};
use crate::image::Image;
use crate::transform::AffineTransform;
use nalgebra::{Matrix3, SymmetricEigen, Vector3};

/// Intensity moments of an image: total weight, centre of mass (world) and covariance.
pub(crate) struct Moments {
    pub center: Vector3<f64>,
    pub covariance: Matrix3<f64>,
}

/// Centre of mass and covariance of intensities above 5 % of the maximum (background and
/// noise excluded), optionally within a mask.
pub(crate) fn moments(
    image: &Image<f32>,
    mask: Option<&Image<f32>>,
    which: &'static str,
) -> Result<Moments, RegistrationError> {
    let max = image.as_slice().iter().fold(0f32, |a, &b| a.max(b));
    let threshold = 0.05 * max;
    let grid = image.grid();
    let d = grid.dims();
    let data = image.as_slice();
    let mut weight = 0.0;
    let mut first = Vector3::zeros();
    let mut second = Matrix3::zeros();
    for i in 0..d[0] {
        for j in 0..d[1] {
            for k in 0..d[2] {
                let flat = grid.flat_index(i, j, k);
                let v = data[flat];
                if v <= threshold || mask.is_some_and(|m| m.as_slice()[flat] < 0.5) {
                    continue;
                }
                let w = (v - threshold) as f64;
                let p = Vector3::from(grid.voxel_to_world([i as f64, j as f64, k as f64]));
                weight += w;
                first += w * p;
                second += w * p * p.transpose();
            }
        }
    }
    if weight <= 0.0 {
        return Err(RegistrationError::UnusableImage {
            which,
            rule: "no voxel above 5 % of the maximum intensity".into(),
        });
    }
    let center = first / weight;
    let covariance = second / weight - center * center.transpose();
    Ok(Moments { center, covariance })
}

/// The initial transform from moments.
pub(super) fn initial_transform(
    fixed: &Image<f32>,
    moving: &Image<f32>,
    params: &AffineParams,
) -> Result<Vec<AffineTransform>, RegistrationError> {
    if let Some(t) = &params.initial_transform {
        return Ok(vec![t.clone()]);
    }
    if params.init == AffineInit::Identity {
        return Ok(vec![AffineTransform::identity()]);
    }
    let mf = moments(fixed, params.fixed_mask.as_ref(), "fixed")?;
    let mm = moments(moving, params.moving_mask.as_ref(), "moving")?;
    let scale = if params.kind == AffineKind::Rigid {
        1.0
    } else {
        (mm.covariance.trace() / mf.covariance.trace()).sqrt().clamp(0.5, 2.0)
    };
    let centre_f: [f64; 3] = mf.center.into();
    let shift: [f64; 3] = (mm.center - mf.center).into();
    if params.init == AffineInit::CenterOfMass {
        let linear = Matrix3::identity() * scale;
        return Ok(vec![AffineTransform::about_center(&linear, shift, centre_f)]);
    }
    // Principal axes: eigenvectors sorted by eigenvalue; the rotation maps fixed axes onto
    // moving axes. Each axis sign is ambiguous: offer the four proper rotations.
    let sorted = |c: Matrix3<f64>| {
        let e = SymmetricEigen::new(c);
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| e.eigenvalues[b].total_cmp(&e.eigenvalues[a]));
        Matrix3::from_columns(&[
            e.eigenvectors.column(order[0]),
            e.eigenvectors.column(order[1]),
            e.eigenvectors.column(order[2]),
        ])
    };
    let vf = sorted(mf.covariance);
    let vm = sorted(mm.covariance);
    let mut candidates = Vec::new();
    for signs in [[1.0, 1.0, 1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0]] {
        let s = Matrix3::from_diagonal(&Vector3::from(signs));
        let mut rotation = vm * s * vf.transpose();
        if rotation.determinant() < 0.0 {
            // Fix a reflection left by an improper eigenvector basis.
            let flip = Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, -1.0));
            rotation = vm * s * flip * vf.transpose();
        }
        candidates.push(AffineTransform::about_center(&(rotation * scale), shift, centre_f));
    }
    Ok(candidates)
}
