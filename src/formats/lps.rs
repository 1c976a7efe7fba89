//! The one conversion between pedinorm's RAS+ world and the LPS world of DICOM and ITK/ANTs
//! files: x and y change sign, z stays. The map is its own inverse.

use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};

/// Per-axis signs that take RAS coordinates to LPS (and back).
pub const RAS_LPS_SIGNS: [f64; 3] = [-1.0, -1.0, 1.0];

/// A point or direction from RAS to LPS, or from LPS to RAS.
pub fn ras_to_lps(v: [f64; 3]) -> [f64; 3] {
    [RAS_LPS_SIGNS[0] * v[0], RAS_LPS_SIGNS[1] * v[1], RAS_LPS_SIGNS[2] * v[2]]
}

/// The conversion as a 3×3 matrix `D` (a linear map `A` in one world is `D A D` in the other).
pub fn ras_lps_matrix() -> Matrix3<f64> {
    Matrix3::from_diagonal(&Vector3::from(RAS_LPS_SIGNS))
}

/// The conversion as a 4×4 homogeneous matrix (for voxel → world affines).
pub fn ras_lps_affine() -> Matrix4<f64> {
    Matrix4::from_diagonal(&Vector4::new(RAS_LPS_SIGNS[0], RAS_LPS_SIGNS[1], RAS_LPS_SIGNS[2], 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conversion_is_its_own_inverse_in_every_form() {
        let point = [1.5, -2.0, 3.25];
        assert_eq!(ras_to_lps(point), [-1.5, 2.0, 3.25]);
        assert_eq!(ras_to_lps(ras_to_lps(point)), point);
        assert_eq!(ras_lps_matrix() * ras_lps_matrix(), Matrix3::identity());
        assert_eq!(ras_lps_affine() * ras_lps_affine(), Matrix4::identity());
        let moved = ras_lps_matrix() * Vector3::from(point);
        assert_eq!([moved.x, moved.y, moved.z], ras_to_lps(point));
    }
}
