//! The adult base brain every synthetic subject is derived from: a skull-stripped T1 image
//! with grey- and white-matter probability maps, or a procedural phantom for tests.

use crate::SynthError;
use crate::contrast::TissueIntensities;
use crate::warp::map_voxels;
use pedinorm_registration::{Grid, Image};

/// An adult base brain: skull-stripped T1-weighted image and grey/white-matter probability maps
/// on one grid. CSF is what is inside the brain mask and neither grey nor white matter.
#[derive(Debug, Clone)]
pub struct BaseBrain {
    /// Skull-stripped T1-weighted image (zero outside the brain).
    pub t1: Image<f32>,
    /// Grey-matter probability in [0, 1].
    pub gm: Image<f32>,
    /// White-matter probability in [0, 1].
    pub wm: Image<f32>,
}

/// Fraction of the T1 maximum below which a voxel is outside the brain.
const MASK_THRESHOLD: f32 = 0.02;

impl BaseBrain {
    /// A base brain from its three images, checked: one grid, finite values, a non-empty brain.
    /// Probability maps stored as integers (e.g. 0–255) are rescaled to [0, 1] by their
    /// maximum; values are clamped to [0, 1].
    pub fn new(t1: Image<f32>, gm: Image<f32>, wm: Image<f32>) -> Result<Self, SynthError> {
        for (field, image) in [("gm", &gm), ("wm", &wm)] {
            if !image.grid().same_as(t1.grid(), 1e-3) {
                return Err(SynthError::InvalidBase {
                    field,
                    rule: format!(
                        "must share the T1 grid (dims {:?} vs {:?}, or a different affine)",
                        image.grid().dims(),
                        t1.grid().dims()
                    ),
                });
            }
        }
        for (field, image) in [("t1", &t1), ("gm", &gm), ("wm", &wm)] {
            if image.as_slice().iter().any(|v| !v.is_finite()) {
                return Err(SynthError::InvalidBase { field, rule: "every voxel must be finite".into() });
            }
        }
        if t1.finite_range().is_none_or(|(_, hi)| hi <= 0.0) {
            return Err(SynthError::InvalidBase {
                field: "t1",
                rule: "must have positive brain voxels".into(),
            });
        }
        let normalize = |image: Image<f32>| {
            let max = image.as_slice().iter().cloned().fold(0.0f32, f32::max);
            let scale = if max > 1.0 + 1e-3 { 1.0 / max } else { 1.0 };
            image.map(|v| (v * scale).clamp(0.0, 1.0))
        };
        let base = Self { gm: normalize(gm), wm: normalize(wm), t1 };
        let brain_voxels = base.brain_mask().as_slice().iter().filter(|&&v| v > 0.5).count();
        if brain_voxels < 64 {
            return Err(SynthError::InvalidBase {
                field: "t1",
                rule: format!("the brain mask has only {brain_voxels} voxels"),
            });
        }
        Ok(base)
    }

    /// The grid of the base images.
    pub fn grid(&self) -> &Grid {
        self.t1.grid()
    }

    /// Brain mask (1 inside, 0 outside): T1 above 2 % of its maximum, or mostly GM/WM.
    pub fn brain_mask(&self) -> Image<f32> {
        let max = self.t1.as_slice().iter().cloned().fold(0.0f32, f32::max);
        let threshold = MASK_THRESHOLD * max;
        let mut mask = self.t1.map(|&v| if v > threshold { 1.0 } else { 0.0 });
        for ((m, g), w) in mask.as_mut_slice().iter_mut().zip(self.gm.as_slice()).zip(self.wm.as_slice()) {
            if g + w > 0.5 {
                *m = 1.0;
            }
        }
        mask
    }

    /// CSF probability: inside the brain mask and neither grey nor white matter.
    pub fn csf(&self) -> Image<f32> {
        let mask = self.brain_mask();
        let mut csf = mask.clone();
        for ((c, g), w) in csf.as_mut_slice().iter_mut().zip(self.gm.as_slice()).zip(self.wm.as_slice()) {
            *c = (*c - g - w).clamp(0.0, 1.0);
        }
        csf
    }

    /// Mean adult intensities of CSF, GM and WM: the least-squares fit of the T1 image by the
    /// tissue probabilities over the brain mask (partial-volume aware).
    pub fn adult_intensities(&self) -> TissueIntensities {
        let csf = self.csf();
        let mask = self.brain_mask();
        let mut normal = nalgebra::Matrix3::<f64>::zeros();
        let mut rhs = nalgebra::Vector3::<f64>::zeros();
        let dims = mask.grid().dims();
        let interior = |flat: usize| -> bool {
            // Only voxels whose six neighbours are in the mask: the binary mask's edge voxels
            // are partly outside the brain, which would bias the CSF fit.
            let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
            let m = mask.data();
            i > 0
                && j > 0
                && k > 0
                && i + 1 < dims[0]
                && j + 1 < dims[1]
                && k + 1 < dims[2]
                && [[i - 1, j, k], [i + 1, j, k], [i, j - 1, k], [i, j + 1, k], [i, j, k - 1], [i, j, k + 1]]
                    .iter()
                    .all(|&n| m[n] > 0.5)
        };
        for (flat, (((&m, &c), (&g, &w)), &t)) in mask
            .as_slice()
            .iter()
            .zip(csf.as_slice())
            .zip(self.gm.as_slice().iter().zip(self.wm.as_slice()))
            .zip(self.t1.as_slice())
            .enumerate()
        {
            if m < 0.5 || !interior(flat) {
                continue;
            }
            let p = nalgebra::Vector3::new(f64::from(c), f64::from(g), f64::from(w));
            normal += p * p.transpose();
            rhs += p * f64::from(t);
        }
        let fit = normal.try_inverse().map(|inv| inv * rhs);
        match fit {
            Some(mu) if mu.iter().all(|v| v.is_finite()) => {
                TissueIntensities { csf: mu[0], grey_matter: mu[1], white_matter: mu[2] }
            }
            // A degenerate base (one tissue only): fall back to textbook T1 ratios.
            _ => {
                let max = self.t1.as_slice().iter().cloned().fold(0.0f32, f32::max) as f64;
                TissueIntensities { csf: 0.3 * max, grey_matter: 0.7 * max, white_matter: 0.9 * max }
            }
        }
    }

    /// A procedural brain-like phantom filling the middle of `grid`: an ellipsoidal brain with
    /// a folded cortical grey-matter ribbon, sulcal and surface CSF, a white-matter core, two
    /// lateral ventricles and two deep grey-matter nuclei, with partial-volume edges. Intensities
    /// follow adult T1 ratios (CSF 60, GM 150, WM 200). For tests that should not need files.
    pub fn phantom(grid: &Grid) -> BaseBrain {
        let dims = grid.dims();
        let spacing = grid.spacing();
        let half_extent: Vec<f64> = (0..3).map(|a| 0.5 * dims[a] as f64 * spacing[a]).collect();
        let centre = grid.center_world();
        // Brain semi-axes: a bit narrower left-right and shorter top-bottom than front-back.
        let radii = [0.70 * half_extent[0], 0.78 * half_extent[1], 0.66 * half_extent[2]];
        let mean_radius = (radii[0] * radii[1] * radii[2]).cbrt();
        let voxel = (spacing[0] * spacing[1] * spacing[2]).cbrt();
        // Soft membership of "inside": 1 deep inside, 0 outside, linear over one voxel.
        let soft = |signed_distance_mm: f64| (0.5 + signed_distance_mm / voxel).clamp(0.0, 1.0);
        let ellipsoid = |p: [f64; 3], c: [f64; 3], r: [f64; 3]| -> f64 {
            let rho = ((p[0] - c[0]) / r[0]).powi(2)
                + ((p[1] - c[1]) / r[1]).powi(2)
                + ((p[2] - c[2]) / r[2]).powi(2);
            let rho = rho.sqrt();
            let scale = (r[0] * r[1] * r[2]).cbrt();
            soft((1.0 - rho) * scale)
        };
        let ventricle = |p: [f64; 3]| -> f64 {
            let mut v: f64 = 0.0;
            for side in [-1.0, 1.0] {
                let c = [
                    centre[0] + side * 0.13 * radii[0],
                    centre[1] + 0.02 * radii[1],
                    centre[2] + 0.12 * radii[2],
                ];
                v = v.max(ellipsoid(p, c, [0.07 * radii[0], 0.32 * radii[1], 0.13 * radii[2]]));
            }
            v
        };
        let nuclei = |p: [f64; 3]| -> f64 {
            let mut v: f64 = 0.0;
            for side in [-1.0, 1.0] {
                let c = [
                    centre[0] + side * 0.17 * radii[0],
                    centre[1] - 0.12 * radii[1],
                    centre[2] - 0.08 * radii[2],
                ];
                v = v.max(ellipsoid(p, c, [0.11 * radii[0], 0.14 * radii[1], 0.12 * radii[2]]));
            }
            v
        };
        let tissues = |[i, j, k]: [usize; 3]| -> (f64, f64, f64) {
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            let d =
                [(p[0] - centre[0]) / radii[0], (p[1] - centre[1]) / radii[1], (p[2] - centre[2]) / radii[2]];
            let rho = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            let (theta, phi) = if rho > 1e-9 { ((d[2] / rho).acos(), d[1].atan2(d[0])) } else { (0.0, 0.0) };
            // Gyral folding pattern on the sphere of directions.
            let fold = (7.0 * theta).sin() * (6.0 * phi).cos();
            let brain = soft((1.0 - rho) * mean_radius);
            let pial = soft((0.93 - rho) * mean_radius);
            let white = soft((0.74 + 0.06 * fold - rho) * mean_radius);
            // Sulci: CSF clefts reaching into the cortex where the folding pattern is low.
            let sulcus = soft((-0.55 - fold) * 0.1 * mean_radius) * soft((rho - 0.84) * mean_radius);
            let vent = ventricle(p);
            let deep = nuclei(p);
            let wm = white * (1.0 - vent) * (1.0 - deep);
            let gm = ((pial - white).max(0.0) * (1.0 - sulcus) + white * deep * (1.0 - vent)).min(brain - wm);
            let csf = (brain - gm - wm).max(0.0);
            (csf, gm, wm)
        };
        let values: Vec<(f32, f32, f32)> = map_voxels(grid, |v| {
            let (c, g, w) = tissues(v);
            ((60.0 * c + 150.0 * g + 200.0 * w) as f32, g as f32, w as f32)
        });
        let image = |f: fn(&(f32, f32, f32)) -> f32| {
            let data =
                ndarray::Array3::from_shape_vec((dims[0], dims[1], dims[2]), values.iter().map(f).collect())
                    .expect("one value per voxel");
            Image::new(data, grid.clone()).expect("shape matches grid")
        };
        BaseBrain { t1: image(|v| v.0), gm: image(|v| v.1), wm: image(|v| v.2) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phantom() -> BaseBrain {
        let grid = Grid::axis_aligned([40, 48, 36], [4.0; 3], [-78.0, -94.0, -70.0]).unwrap();
        BaseBrain::phantom(&grid)
    }

    #[test]
    fn phantom_has_all_tissues_and_fits_its_intensities() {
        let base = phantom();
        let count = |image: &Image<f32>| image.as_slice().iter().filter(|&&v| v > 0.5).count();
        let (gm, wm, csf) = (count(&base.gm), count(&base.wm), count(&base.csf()));
        assert!(gm > 500 && wm > 500 && csf > 100, "gm {gm} wm {wm} csf {csf}");
        let mu = base.adult_intensities();
        assert!((mu.csf - 60.0).abs() < 2.0 && (mu.grey_matter - 150.0).abs() < 1.0, "{mu:?}");
        assert!((mu.white_matter - 200.0).abs() < 1.0, "{mu:?}");
        assert!(BaseBrain::new(base.t1.clone(), base.gm.clone(), base.wm.clone()).is_ok());
    }

    #[test]
    fn mismatched_grids_and_byte_maps() {
        let base = phantom();
        let other = Grid::axis_aligned([40, 48, 36], [2.0; 3], [0.0; 3]).unwrap();
        let wrong = Image::filled(other, 0.0f32);
        let error = BaseBrain::new(base.t1.clone(), wrong, base.wm.clone()).unwrap_err();
        assert!(error.to_string().contains("gm"), "{error}");
        let bytes = base.gm.map(|v| (v * 255.0).round());
        let rescaled = BaseBrain::new(base.t1.clone(), bytes, base.wm.clone()).unwrap();
        let max = rescaled.gm.as_slice().iter().cloned().fold(0.0f32, f32::max);
        assert!((max - 1.0).abs() < 1e-6);
    }
}
