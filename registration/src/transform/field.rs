//! Dense displacement fields.

use super::SpatialTransform;
use crate::grid::Grid;
use crate::image::Image;
use crate::interpolate::sample_linear;

/// A dense displacement field on a (fixed-space) grid: the transform maps a world point `p`
/// to `p + u(p)`, with `u` in world RAS+ millimetres, interpolated trilinearly between voxel
/// centres and zero outside the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacementField {
    components: [Image<f32>; 3],
}

impl DisplacementField {
    /// The zero field on a grid.
    pub fn zeros(grid: &Grid) -> Self {
        let zero = Image::filled(grid.clone(), 0.0f32);
        Self { components: [zero.clone(), zero.clone(), zero] }
    }

    /// A field from its x, y and z world components (all on the same grid).
    ///
    /// # Panics
    /// When the components' grids differ.
    pub fn from_components(components: [Image<f32>; 3]) -> Self {
        assert!(
            components[1].grid() == components[0].grid() && components[2].grid() == components[0].grid(),
            "displacement components must share one grid"
        );
        Self { components }
    }

    /// The grid the field is sampled on.
    pub fn grid(&self) -> &Grid {
        self.components[0].grid()
    }

    /// The x, y, z components (world mm).
    pub fn components(&self) -> &[Image<f32>; 3] {
        &self.components
    }

    /// Mutable components.
    pub fn components_mut(&mut self) -> &mut [Image<f32>; 3] {
        &mut self.components
    }

    /// Splits into components.
    pub fn into_components(self) -> [Image<f32>; 3] {
        self.components
    }

    /// The displacement (mm) at a world point.
    #[inline]
    pub fn displacement_at(&self, world: [f64; 3]) -> [f64; 3] {
        let voxel = self.grid().world_to_voxel(world);
        [
            sample_linear(&self.components[0], voxel, 0.0) as f64,
            sample_linear(&self.components[1], voxel, 0.0) as f64,
            sample_linear(&self.components[2], voxel, 0.0) as f64,
        ]
    }

    /// The displacement at voxel `flat` (C order) of the field's own grid.
    #[inline]
    pub fn displacement_at_voxel(&self, flat: usize) -> [f64; 3] {
        [
            self.components[0].as_slice()[flat] as f64,
            self.components[1].as_slice()[flat] as f64,
            self.components[2].as_slice()[flat] as f64,
        ]
    }
}

impl SpatialTransform for DisplacementField {
    #[inline]
    fn transform_point(&self, p: [f64; 3]) -> [f64; 3] {
        let u = self.displacement_at(p);
        [p[0] + u[0], p[1] + u[1], p[2] + u[2]]
    }
}
