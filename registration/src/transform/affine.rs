//! Affine transforms in world RAS+ mm.

use super::SpatialTransform;
use nalgebra::{Matrix4, Vector4};

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
