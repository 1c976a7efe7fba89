//! A 3-D image: voxel data plus its [`Grid`].

use crate::grid::Grid;
use ndarray::Array3;

/// Why an image cannot be built from data and a grid.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ImageError {
    /// The data shape differs from the grid dimensions.
    #[error("data shape {data:?} does not match grid dimensions {grid:?}")]
    ShapeMismatch {
        /// Shape of the array.
        data: [usize; 3],
        /// Dimensions of the grid.
        grid: [usize; 3],
    },
}

/// Voxel data indexed `[i, j, k]` (C order, k fastest) on a [`Grid`].
#[derive(Debug, Clone, PartialEq)]
pub struct Image<T> {
    data: Array3<T>,
    grid: Grid,
}

/// The working image type of every compute step: 32-bit float intensities.
pub type ImageF32 = Image<f32>;

impl<T> Image<T> {
    /// An image from data and grid; the data is made C-contiguous.
    pub fn new(data: Array3<T>, grid: Grid) -> Result<Self, ImageError>
    where
        T: Clone,
    {
        let shape = [data.dim().0, data.dim().1, data.dim().2];
        if shape != grid.dims() {
            return Err(ImageError::ShapeMismatch { data: shape, grid: grid.dims() });
        }
        let data = if data.is_standard_layout() { data } else { data.as_standard_layout().into_owned() };
        Ok(Self { data, grid })
    }

    /// An image filled with one value.
    pub fn filled(grid: Grid, value: T) -> Self
    where
        T: Clone,
    {
        let d = grid.dims();
        Self { data: Array3::from_elem((d[0], d[1], d[2]), value), grid }
    }

    /// The voxel values.
    pub fn data(&self) -> &Array3<T> {
        &self.data
    }

    /// Mutable voxel values (shape is fixed by the grid).
    pub fn data_mut(&mut self) -> &mut Array3<T> {
        &mut self.data
    }

    /// Voxel values as a flat C-order slice.
    pub fn as_slice(&self) -> &[T] {
        self.data.as_slice().expect("image data is kept in standard layout")
    }

    /// Mutable flat C-order slice.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.data.as_slice_mut().expect("image data is kept in standard layout")
    }

    /// The geometry.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Splits into data and grid.
    pub fn into_parts(self) -> (Array3<T>, Grid) {
        (self.data, self.grid)
    }

    /// A new image on the same grid with every voxel mapped by `f`.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Image<U> {
        Image { data: self.data.map(f), grid: self.grid.clone() }
    }

    /// A new image on the same grid holding `data` (same shape required).
    pub fn with_data<U: Clone>(&self, data: Array3<U>) -> Result<Image<U>, ImageError> {
        Image::new(data, self.grid.clone())
    }
}

impl Image<f32> {
    /// Minimum and maximum of the finite voxel values, `None` when none is finite.
    pub fn finite_range(&self) -> Option<(f32, f32)> {
        let mut range: Option<(f32, f32)> = None;
        for &v in self.as_slice() {
            if v.is_finite() {
                range = Some(match range {
                    None => (v, v),
                    Some((lo, hi)) => (lo.min(v), hi.max(v)),
                });
            }
        }
        range
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_must_match_grid() {
        let grid = Grid::axis_aligned([2, 3, 4], [1.0; 3], [0.0; 3]).unwrap();
        assert!(Image::new(Array3::<f32>::zeros((2, 3, 4)), grid.clone()).is_ok());
        assert!(matches!(
            Image::new(Array3::<f32>::zeros((3, 2, 4)), grid),
            Err(ImageError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn fortran_layout_is_made_standard() {
        let grid = Grid::axis_aligned([2, 3, 4], [1.0; 3], [0.0; 3]).unwrap();
        let data = Array3::from_shape_fn((2, 3, 4).f(), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        let image = Image::new(data, grid).unwrap();
        assert_eq!(image.as_slice()[1], 1.0);
        assert_eq!(image.data()[[1, 2, 3]], 123.0);
    }
    use ndarray::ShapeBuilder;
}
