//! Affine transforms in world RAS+ mm.

use super::SpatialTransform;
use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3, Vector4};

/// An affine map of homogeneous world points: `moving = matrix * fixed`.
#[derive(Debug, Clone, PartialEq)]
pub struct AffineTransform {
    matrix: Matrix4<f64>,
}

impl AffineTransform {
    /// The identity transform.
    pub fn identity() -> Self {
        Self { matrix: Matrix4::identity() }
    }

    /// From a homogeneous 4×4 matrix (last row must be 0 0 0 1).
    pub fn from_matrix(matrix: Matrix4<f64>) -> Self {
        Self { matrix }
    }

    /// The homogeneous 4×4 matrix.
    pub fn matrix(&self) -> &Matrix4<f64> {
        &self.matrix
    }

    /// The exact inverse, `None` when singular.
    pub fn inverse(&self) -> Option<Self> {
        self.matrix.try_inverse().map(|matrix| Self { matrix })
    }

    /// `self ∘ inner`: first `inner`, then `self`.
    pub fn compose(&self, inner: &AffineTransform) -> Self {
        Self { matrix: self.matrix * inner.matrix }
    }
}

impl SpatialTransform for AffineTransform {
    #[inline]
    fn transform_point(&self, p: [f64; 3]) -> [f64; 3] {
        let q = self.matrix * Vector4::new(p[0], p[1], p[2], 1.0);
        [q.x, q.y, q.z]
    }
}

impl AffineTransform {
    /// From a 3×3 linear part and a translation: `moving = linear * fixed + translation`.
    pub fn from_parts(linear: &Matrix3<f64>, translation: &Vector3<f64>) -> Self {
        let mut matrix = Matrix4::identity();
        matrix.fixed_view_mut::<3, 3>(0, 0).copy_from(linear);
        matrix.fixed_view_mut::<3, 1>(0, 3).copy_from(translation);
        Self { matrix }
    }

    /// A pure translation.
    pub fn translation(offset: [f64; 3]) -> Self {
        Self::from_parts(&Matrix3::identity(), &Vector3::from(offset))
    }

    /// The 3×3 linear part.
    pub fn linear(&self) -> Matrix3<f64> {
        self.matrix.fixed_view::<3, 3>(0, 0).into_owned()
    }

    /// The translation column.
    pub fn offset(&self) -> Vector3<f64> {
        self.matrix.fixed_view::<3, 1>(0, 3).into_owned()
    }

    /// Whether every entry is finite and the linear part is invertible.
    pub fn is_valid(&self) -> bool {
        self.matrix.iter().all(|v| v.is_finite()) && self.linear().determinant().abs() > 1e-12
    }

    /// A rigid transform rotating by the rotation vector `rotation` (axis × angle, radians)
    /// about `center`, then translating by `translation` (mm).
    pub fn rigid(rotation: [f64; 3], translation: [f64; 3], center: [f64; 3]) -> Self {
        let r = Rotation3::from_scaled_axis(Vector3::from(rotation)).into_inner();
        Self::about_center(&r, translation, center)
    }

    /// `p ↦ linear (p − center) + center + translation`, the ITK centred parametrization.
    pub fn about_center(linear: &Matrix3<f64>, translation: [f64; 3], center: [f64; 3]) -> Self {
        let c = Vector3::from(center);
        let t = Vector3::from(translation);
        Self::from_parts(linear, &(c + t - linear * c))
    }

    /// Largest distance (mm) between where `self` and `other` put the given points.
    pub fn max_distance(&self, other: &AffineTransform, points: &[[f64; 3]]) -> f64 {
        points
            .iter()
            .map(|&p| {
                let a = self.transform_point(p);
                let b = other.transform_point(p);
                ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
            })
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centred_rigid_keeps_centre_and_inverts() {
        let t = AffineTransform::rigid([0.1, -0.2, 0.3], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]);
        let c = t.transform_point([10.0, 20.0, 30.0]);
        assert!((c[0] - 11.0).abs() < 1e-12 && (c[1] - 22.0).abs() < 1e-12 && (c[2] - 33.0).abs() < 1e-12);
        let back = t.inverse().unwrap().compose(&t);
        assert!(back.max_distance(&AffineTransform::identity(), &[[5.0, -7.0, 9.0]]) < 1e-9);
        assert!((t.linear().determinant() - 1.0).abs() < 1e-12);
    }
}
