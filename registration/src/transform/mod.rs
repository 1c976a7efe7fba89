//! Spatial transforms. Every transform maps a point of the fixed (reference) space to the
//! moving space, in world RAS+ millimetres, so resampling is a pull as in ITK and ANTs.

mod affine;
mod field;

pub use affine::AffineTransform;
pub use field::{DisplacementField, map_voxels};

/// A mapping from fixed-space world points to moving-space world points.
pub trait SpatialTransform: Sync {
    /// Maps one fixed-space world point (mm) to the moving space.
    fn transform_point(&self, fixed_world: [f64; 3]) -> [f64; 3];
}

/// The identity mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity;

impl SpatialTransform for Identity {
    #[inline]
    fn transform_point(&self, fixed_world: [f64; 3]) -> [f64; 3] {
        fixed_world
    }
}

/// A chain of transforms in antsApplyTransforms' command-line order. ANTs says the *last*
/// listed is "applied first" in the sense of warping the moving image; as a point mapping from
/// fixed to moving space this means the *first* listed acts first: `[warp, affine]` maps `p`
/// to `affine(warp(p))`, the output of a registration with a deformable stage after an affine.
pub struct TransformChain<'a> {
    transforms: Vec<&'a dyn SpatialTransform>,
}

impl<'a> TransformChain<'a> {
    /// A chain in antsApplyTransforms order.
    pub fn new(transforms: Vec<&'a dyn SpatialTransform>) -> Self {
        Self { transforms }
    }
}

impl SpatialTransform for TransformChain<'_> {
    fn transform_point(&self, p: [f64; 3]) -> [f64; 3] {
        self.transforms.iter().fold(p, |q, t| t.transform_point(q))
    }
}
