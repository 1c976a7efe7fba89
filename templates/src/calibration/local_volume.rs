//! Local volume change: the log-Jacobian z-map averaged over Gaussian neighbourhoods of the
//! size of focal atrophy, and the limit beyond which a neighbourhood is called.
//!
//! Focal atrophy spreads a modest volume loss over many voxels: each voxel's log-Jacobian z
//! stays within the normals' range (a voxel map needs |z| > 4 in a child database), so the
//! voxel clusters miss it although its voxels rank high. Averaging z over a neighbourhood of
//! the atrophy's size adds that evidence up. The average of a normal's z-map is still
//! spatially correlated noise of unknown spread, so the spread and the limit come from the
//! leave-one-out normals, as every other threshold: each normal's neighbourhood means are
//! divided by the pooled root-mean-square of the normals' means at that width, and the limit
//! is the order statistic of the normals' largest |standardized mean| over the brain and the
//! widths that a new normal exceeds with probability at most [`LOCAL_VOLUME_RATE`] (the
//! conformal rank, as the cluster thresholds).

use ndarray::Array3;
use pedinorm_registration::Image;
use pedinorm_registration::smooth::smooth_mm;
use serde::{Deserialize, Serialize};

use super::order_statistic_threshold;

/// Gaussian neighbourhood widths (σ, mm) at which local volume change is read: a σ of 4 mm
/// matches a shrunken region of radius about 7 mm, 8 mm one of about 14 mm.
pub const SCALES_MM: [f64; 2] = [4.0, 8.0];

/// Share of normals allowed a local-volume call anywhere in the brain (family-wise).
pub const LOCAL_VOLUME_RATE: f64 = 0.05;

/// Share of a neighbourhood's weight that must lie inside the mask for its mean to be read
/// (at the brain's edge a mean over a sliver of voxels is mostly noise).
const MIN_COVERAGE: f32 = 0.5;

/// The mean of `z` over the Gaussian neighbourhood (σ `sigma_mm`) of every voxel, counting
/// only voxels inside `mask` (normalized convolution); 0 outside the mask and where less than
/// half the neighbourhood lies inside it.
pub fn neighbourhood_means(z: &Image<f32>, mask: &Image<f32>, sigma_mm: f64) -> Image<f32> {
    let inside = mask.map(|&m| if m > 0.5 { 1.0f32 } else { 0.0 });
    let weighted = Image::new(
        ndarray::Zip::from(z.data()).and(inside.data()).map_collect(|&v, &m| v * m),
        z.grid().clone(),
    )
    .expect("same grid as z");
    let numerator = smooth_mm(&weighted, sigma_mm);
    let coverage = smooth_mm(&inside, sigma_mm);
    let means: Array3<f32> = ndarray::Zip::from(numerator.data())
        .and(coverage.data())
        .and(inside.data())
        .map_collect(|&n, &c, &m| if m > 0.5 && c >= MIN_COVERAGE { n / c } else { 0.0 });
    Image::new(means, z.grid().clone()).expect("same grid as z")
}

/// What one leave-one-out normal's log-Jacobian z-map contributes, per width of
/// [`SCALES_MM`]: the lowest and highest neighbourhood mean and the mean square of the
/// neighbourhood means inside the mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalVolumeNull {
    /// Lowest neighbourhood mean per width.
    pub min: Vec<f32>,
    /// Highest neighbourhood mean per width.
    pub max: Vec<f32>,
    /// Mean square of the neighbourhood means per width.
    pub mean_square: Vec<f32>,
}

impl LocalVolumeNull {
    /// The summary of a normal's (site-corrected, held-out) log-Jacobian z-map.
    pub fn from_map(z: &Image<f32>, mask: &Image<f32>) -> Self {
        let mut null = LocalVolumeNull { min: Vec::new(), max: Vec::new(), mean_square: Vec::new() };
        for sigma in SCALES_MM {
            let means = neighbourhood_means(z, mask, sigma);
            let (mut lo, mut hi, mut square, mut n) = (0f32, 0f32, 0f64, 0usize);
            for (&v, &m) in means.as_slice().iter().zip(mask.as_slice()) {
                if m > 0.5 {
                    lo = lo.min(v);
                    hi = hi.max(v);
                    square += f64::from(v) * f64::from(v);
                    n += 1;
                }
            }
            null.min.push(lo);
            null.max.push(hi);
            null.mean_square.push((square / n.max(1) as f64) as f32);
        }
        null
    }

    /// The largest |standardized neighbourhood mean| of this normal over widths and voxels.
    fn largest(&self, spread: &[f64]) -> f64 {
        (0..spread.len())
            .map(|k| f64::from(self.min[k].abs().max(self.max[k].abs())) / spread[k])
            .fold(0.0, f64::max)
    }
}

/// The calibrated local-volume limit of a database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalVolumeCalibration {
    /// Neighbourhood widths (σ, mm).
    pub sigmas_mm: Vec<f64>,
    /// The normals' pooled root-mean-square neighbourhood mean per width: what a mean is
    /// divided by to be read as a standardized score.
    pub spread: Vec<f64>,
    /// |standardized mean| beyond which a neighbourhood is called.
    pub limit: f64,
    /// Family-wise rate the limit was calibrated for.
    pub family_rate: f64,
    /// Whether the number of normals allows that rate (else the limit is the largest null).
    pub nominal_reachable: bool,
    /// Each calibration normal's largest |standardized mean| (pseudonym order).
    pub largest_per_subject: Vec<f64>,
}

impl LocalVolumeCalibration {
    /// The limit from the normals' summaries (None with fewer than three, or summaries made
    /// at other widths).
    pub fn calibrate(nulls: &[&LocalVolumeNull]) -> Option<LocalVolumeCalibration> {
        if nulls.len() < 3 || nulls.iter().any(|n| n.min.len() != SCALES_MM.len()) {
            return None;
        }
        let spread: Vec<f64> = (0..SCALES_MM.len())
            .map(|k| {
                let mean_square =
                    nulls.iter().map(|n| f64::from(n.mean_square[k])).sum::<f64>() / nulls.len() as f64;
                mean_square.sqrt().max(1e-6)
            })
            .collect();
        let largest: Vec<f64> = nulls.iter().map(|n| n.largest(&spread)).collect();
        let (limit, nominal_reachable) = order_statistic_threshold(&largest, LOCAL_VOLUME_RATE);
        Some(LocalVolumeCalibration {
            sigmas_mm: SCALES_MM.to_vec(),
            spread,
            limit,
            family_rate: LOCAL_VOLUME_RATE,
            nominal_reachable,
            largest_per_subject: largest,
        })
    }

    /// Why the limit cannot promise its family-wise rate (too few normals), for reports;
    /// `None` when it can.
    pub fn shortfall(&self) -> Option<String> {
        super::shortfall("local volume change limit", self.largest_per_subject.len(), self.family_rate)
    }

    /// A case's standardized local-volume map: at each voxel, the standardized neighbourhood
    /// mean of largest magnitude over the widths, with its sign (negative: less volume than
    /// the normals, atrophy; positive: more, e.g. enlarged CSF spaces).
    pub fn score_map(&self, z: &Image<f32>, mask: &Image<f32>) -> Image<f32> {
        let mut best = Image::filled(z.grid().clone(), 0f32);
        for (&sigma, &spread) in self.sigmas_mm.iter().zip(&self.spread) {
            let means = neighbourhood_means(z, mask, sigma);
            for (b, &m) in best.as_mut_slice().iter_mut().zip(means.as_slice()) {
                let s = (f64::from(m) / spread) as f32;
                if s.abs() > b.abs() {
                    *b = s;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::tests::normal_sample;
    use crate::stats::tests::Uniform;
    use pedinorm_registration::Grid;

    fn grid() -> Grid {
        Grid::axis_aligned([32, 32, 32], [2.0; 3], [0.0; 3]).unwrap()
    }

    /// A spatially correlated null z-map: white noise smoothed to unit SD.
    fn null_map(rng: &mut Uniform) -> Image<f32> {
        let g = grid();
        let noise = normal_sample(rng, g.len(), 1.0);
        let image = Image::new(Array3::from_shape_vec((32, 32, 32), noise).unwrap(), g).unwrap();
        let smooth = smooth_mm(&image, 2.0);
        let sd = (smooth.as_slice().iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
            / smooth.as_slice().len() as f64)
            .sqrt();
        smooth.map(|v| (f64::from(*v) / sd) as f32)
    }

    fn mask() -> Image<f32> {
        let g = grid();
        let centre = 15.5;
        let data = Array3::from_shape_fn((32, 32, 32), |(i, j, k)| {
            let d = ((i as f64 - centre).powi(2) + (j as f64 - centre).powi(2) + (k as f64 - centre).powi(2))
                .sqrt();
            if d < 14.0 { 1.0 } else { 0.0 }
        });
        Image::new(data, g).unwrap()
    }

    #[test]
    fn neighbourhood_means_ignore_voxels_outside_the_mask() {
        let m = mask();
        // z is 1 inside the mask and 100 outside: the means inside must stay 1.
        let z = m.map(|&v| if v > 0.5 { 1.0 } else { 100.0 });
        let means = neighbourhood_means(&z, &m, 4.0);
        for (&v, &inside) in means.as_slice().iter().zip(m.as_slice()) {
            if inside > 0.5 && v != 0.0 {
                assert!((v - 1.0).abs() < 1e-4, "{v}");
            } else if inside <= 0.5 {
                assert_eq!(v, 0.0);
            }
        }
    }

    #[test]
    fn the_limit_holds_on_new_normals_and_a_focal_shift_beyond_it_is_called() {
        let mut rng = Uniform(7);
        let m = mask();
        let nulls: Vec<LocalVolumeNull> =
            (0..39).map(|_| LocalVolumeNull::from_map(&null_map(&mut rng), &m)).collect();
        let calibration = LocalVolumeCalibration::calibrate(&nulls.iter().collect::<Vec<_>>()).unwrap();
        assert!(calibration.nominal_reachable && calibration.limit > 1.0, "{calibration:?}");
        // New normals: about 5 % called anywhere (at most 10 of 60 allows for the small null).
        let called = (0..60)
            .filter(|_| {
                let map = calibration.score_map(&null_map(&mut rng), &m);
                map.as_slice().iter().any(|v| f64::from(v.abs()) > calibration.limit)
            })
            .count();
        assert!(called <= 10, "{called} of 60 new normals called");
        // A ball of radius 8 mm shifted by −3 z in one normal: called there, and negative.
        let mut z = null_map(&mut rng);
        let g = z.grid().clone();
        for (index, v) in z.data_mut().indexed_iter_mut() {
            let p = g.voxel_to_world([index.0 as f64, index.1 as f64, index.2 as f64]);
            let d = ((p[0] - 31.0).powi(2) + (p[1] - 31.0).powi(2) + (p[2] - 31.0).powi(2)).sqrt();
            if d < 8.0 {
                *v -= 3.0;
            }
        }
        let map = calibration.score_map(&z, &m);
        let centre = map.data()[[15, 15, 15]];
        assert!(f64::from(centre) < -calibration.limit, "centre {centre}, limit {}", calibration.limit);
    }
}
