//! Shapes and a registrar shared by the template tests.

use super::{MapStage, Registrar, SubjectMapping, TemplateError, centre_of_mass, registration_grid};
use nalgebra::Matrix4;
use ndarray::Array3;
use pedinorm_registration::{AffineTransform, DisplacementField, Grid, Image};

pub(super) fn grid() -> Grid {
    Grid::axis_aligned([24, 22, 20], [2.0; 3], [-24.0, -22.0, -20.0]).unwrap()
}

/// An ellipsoid "brain" of semi-axes `radii` centred at `centre`, smooth edge.
pub(super) fn ellipsoid(grid: &Grid, centre: [f64; 3], radii: [f64; 3]) -> Image<f32> {
    let d = grid.dims();
    let data = Array3::from_shape_fn((d[0], d[1], d[2]), |(i, j, k)| {
        let w = grid.voxel_to_world([i as f64, j as f64, k as f64]);
        let r = ((0..3).map(|a| ((w[a] - centre[a]) / radii[a]).powi(2)).sum::<f64>()).sqrt();
        (100.0 / (1.0 + ((r - 1.0) * 8.0).exp())) as f32
    });
    Image::new(data, grid.clone()).unwrap()
}

pub(super) struct Translation;
impl Registrar for Translation {
    fn register(
        &self,
        template: &Image<f32>,
        subject: &Image<f32>,
        stage: MapStage,
    ) -> Result<SubjectMapping, TemplateError> {
        let (a, b) = (centre_of_mass(template), centre_of_mass(subject));
        let mut m = Matrix4::identity();
        for i in 0..3 {
            m[(i, 3)] = b[i] - a[i];
        }
        let warp = (stage == MapStage::AffineAndDeformable)
            .then(|| DisplacementField::zeros(&registration_grid(template.grid(), 4.0)));
        Ok(SubjectMapping { affine: AffineTransform::from_matrix(m), warp })
    }
}
