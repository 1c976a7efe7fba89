//! Quality control of template builds: similarity of each subject to the template, outliers
//! by robust z of that similarity, template sharpness and mean warp norm (convergence).

use pedinorm_registration::{DisplacementField, Image};
use serde::{Deserialize, Serialize};

/// Voxels above this fraction of the template's maximum are its foreground.
const FOREGROUND_FRACTION: f32 = 0.1;

/// Pearson correlation of `subject` with `template` over the template's foreground (voxels
/// above 10 % of its maximum). 0 when either is constant there.
pub fn foreground_correlation(template: &Image<f32>, subject: &Image<f32>) -> f64 {
    let threshold = template.as_slice().iter().cloned().fold(0.0f32, f32::max) * FOREGROUND_FRACTION;
    let (mut n, mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&a, &b) in template.as_slice().iter().zip(subject.as_slice()) {
        if a > threshold {
            let (a, b) = (a as f64, b as f64);
            n += 1.0;
            sa += a;
            sb += b;
            saa += a * a;
            sbb += b * b;
            sab += a * b;
        }
    }
    if n < 2.0 {
        return 0.0;
    }
    let cov = sab - sa * sb / n;
    let va = saa - sa * sa / n;
    let vb = sbb - sb * sb / n;
    if va <= 0.0 || vb <= 0.0 { 0.0 } else { cov / (va * vb).sqrt() }
}

/// Template sharpness: mean gradient magnitude (central differences, per mm) over the
/// foreground, divided by the mean foreground intensity, so it is unitless per mm and
/// comparable between templates of different intensity scales.
pub fn sharpness(image: &Image<f32>) -> f64 {
    let d = image.grid().dims();
    let spacing = image.grid().spacing();
    let data = image.as_slice();
    let threshold = data.iter().cloned().fold(0.0f32, f32::max) * FOREGROUND_FRACTION;
    let index = |i: usize, j: usize, k: usize| (i * d[1] + j) * d[2] + k;
    let (mut gradient_sum, mut intensity_sum, mut count) = (0.0f64, 0.0f64, 0usize);
    for i in 1..d[0].saturating_sub(1) {
        for j in 1..d[1].saturating_sub(1) {
            for k in 1..d[2].saturating_sub(1) {
                let v = data[index(i, j, k)];
                if v <= threshold {
                    continue;
                }
                let gx = (data[index(i + 1, j, k)] - data[index(i - 1, j, k)]) as f64 / (2.0 * spacing[0]);
                let gy = (data[index(i, j + 1, k)] - data[index(i, j - 1, k)]) as f64 / (2.0 * spacing[1]);
                let gz = (data[index(i, j, k + 1)] - data[index(i, j, k - 1)]) as f64 / (2.0 * spacing[2]);
                gradient_sum += (gx * gx + gy * gy + gz * gz).sqrt();
                intensity_sum += v as f64;
                count += 1;
            }
        }
    }
    if count == 0 || intensity_sum <= 0.0 { 0.0 } else { gradient_sum / intensity_sum }
}

/// Mean displacement norm (mm) over the field's grid.
pub fn mean_displacement_norm(field: &DisplacementField) -> f64 {
    let [x, y, z] = field.components();
    let n = x.as_slice().len();
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = (0..n)
        .map(|i| {
            let (a, b, c) = (x.as_slice()[i] as f64, y.as_slice()[i] as f64, z.as_slice()[i] as f64);
            (a * a + b * b + c * c).sqrt()
        })
        .sum();
    sum / n as f64
}

/// Robust z-scores `(x − median) / (1.4826 · MAD)`; all 0 when the MAD is 0.
pub fn robust_z(values: &[f64]) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    let median = median(values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    let mad = 1.4826 * self::median(&deviations);
    values.iter().map(|v| if mad > 0.0 { (v - median) / mad } else { 0.0 }).collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) }
}

/// QC of one subject in one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectQc {
    /// Subject identifier.
    pub id: String,
    /// Weight of the subject in the template.
    pub weight: f64,
    /// Correlation with the template it was registered to.
    pub similarity: f64,
    /// Robust z of the similarity among the iteration's subjects.
    pub similarity_robust_z: f64,
    /// Whether the subject is flagged as an outlier (robust z below −threshold).
    pub outlier: bool,
    /// Mean displacement norm (mm) of its warp, absent in the affine iteration.
    pub warp_norm_mm: Option<f64>,
}

/// QC of one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationQc {
    /// Iteration index (0 = affine).
    pub iteration: usize,
    /// Sharpness of the template produced by this iteration.
    pub template_sharpness: f64,
    /// Weighted mean similarity of subjects to the template they were registered to.
    pub mean_similarity: f64,
    /// Weighted mean of the subjects' warp norms (mm), absent in the affine iteration.
    pub mean_warp_norm_mm: Option<f64>,
    /// Root-mean-square intensity change of the template from the previous one, relative to
    /// the previous template's RMS (convergence).
    pub template_change: Option<f64>,
    /// Per subject, in subject order.
    pub subjects: Vec<SubjectQc>,
}

/// One subject's map-step figures, input to [`iteration_qc`].
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectFigures {
    /// Identifier.
    pub id: String,
    /// Weight.
    pub weight: f64,
    /// Similarity to the template.
    pub similarity: f64,
    /// Warp norm (mm).
    pub warp_norm_mm: Option<f64>,
}

/// Assembles an iteration's QC, flagging outliers whose similarity robust z is below
/// `−outlier_z` (only subjects with positive weight count in the statistics).
pub fn iteration_qc(
    iteration: usize,
    template: &Image<f32>,
    previous: Option<&Image<f32>>,
    figures: &[SubjectFigures],
    outlier_z: f64,
) -> IterationQc {
    let weighted: Vec<&SubjectFigures> = figures.iter().filter(|f| f.weight > 0.0).collect();
    let similarities: Vec<f64> = weighted.iter().map(|f| f.similarity).collect();
    let z = robust_z(&similarities);
    let total: f64 = weighted.iter().map(|f| f.weight).sum();
    let mean_similarity =
        if total > 0.0 { weighted.iter().map(|f| f.weight * f.similarity).sum::<f64>() / total } else { 0.0 };
    let mean_warp_norm_mm =
        (total > 0.0 && weighted.iter().all(|f| f.warp_norm_mm.is_some()) && !weighted.is_empty())
            .then(|| weighted.iter().map(|f| f.weight * f.warp_norm_mm.unwrap_or(0.0)).sum::<f64>() / total);
    let mut z_iter = z.into_iter();
    let subjects = figures
        .iter()
        .map(|f| {
            let z = if f.weight > 0.0 { z_iter.next().unwrap_or(0.0) } else { 0.0 };
            SubjectQc {
                id: f.id.clone(),
                weight: f.weight,
                similarity: f.similarity,
                similarity_robust_z: z,
                outlier: z < -outlier_z,
                warp_norm_mm: f.warp_norm_mm,
            }
        })
        .collect();
    let template_change = previous.filter(|p| p.grid().same_as(template.grid(), 1e-6)).map(|p| {
        let (mut diff, mut norm) = (0.0f64, 0.0f64);
        for (&a, &b) in template.as_slice().iter().zip(p.as_slice()) {
            diff += ((a - b) as f64).powi(2);
            norm += (b as f64).powi(2);
        }
        if norm > 0.0 { (diff / norm).sqrt() } else { 0.0 }
    });
    IterationQc {
        iteration,
        template_sharpness: sharpness(template),
        mean_similarity,
        mean_warp_norm_mm,
        template_change,
        subjects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;
    use pedinorm_registration::Grid;

    /// A textured cube (checkerboard interior) on a dark background.
    fn cube() -> Image<f32> {
        let grid = Grid::axis_aligned([16, 16, 16], [1.0; 3], [0.0; 3]).unwrap();
        let data = Array3::from_shape_fn((16, 16, 16), |(i, j, k)| {
            let inside = (4..12).contains(&i) && (4..12).contains(&j) && (4..12).contains(&k);
            if inside { 60.0 + 40.0 * ((i / 2 + j / 2 + k / 2) % 2) as f32 } else { 0.0 }
        });
        Image::new(data, grid).unwrap()
    }

    #[test]
    fn correlation_is_one_for_scaled_copies_and_zero_for_constants() {
        let a = cube();
        let b = a.map(|v| 2.0 * v + 5.0);
        assert!((foreground_correlation(&a, &b) - 1.0).abs() < 1e-9);
        let flat = a.map(|_| 1.0f32);
        assert_eq!(foreground_correlation(&a, &flat), 0.0);
    }

    #[test]
    fn blurring_lowers_sharpness() {
        let a = cube();
        let blurred = pedinorm_registration::smooth::smooth_mm(&a, 1.5);
        assert!(sharpness(&a) > sharpness(&blurred) * 1.2);
        assert!(sharpness(&a) > 0.0);
    }

    #[test]
    fn robust_z_flags_the_odd_one_out() {
        let values = [0.95, 0.96, 0.94, 0.955, 0.945, 0.5];
        let z = robust_z(&values);
        assert!(z[5] < -10.0, "{z:?}");
        assert!(z[..5].iter().all(|v| v.abs() < 2.0));
        assert_eq!(robust_z(&[1.0, 1.0, 1.0]), vec![0.0; 3]);
    }

    #[test]
    fn iteration_qc_flags_outliers_and_ignores_zero_weights() {
        let template = cube();
        let figures: Vec<SubjectFigures> = [0.95, 0.96, 0.94, 0.955, 0.945, 0.5, 0.1]
            .iter()
            .enumerate()
            .map(|(i, &s)| SubjectFigures {
                id: format!("s{i}"),
                weight: if i == 6 { 0.0 } else { 1.0 },
                similarity: s,
                warp_norm_mm: Some(1.0),
            })
            .collect();
        let qc = iteration_qc(2, &template, Some(&template), &figures, 3.5);
        assert!(qc.subjects[5].outlier);
        assert!(!qc.subjects[6].outlier && qc.subjects[..5].iter().all(|s| !s.outlier));
        assert_eq!(qc.template_change, Some(0.0));
        assert_eq!(qc.mean_warp_norm_mm, Some(1.0));
        assert!((qc.mean_similarity - (0.95 + 0.96 + 0.94 + 0.955 + 0.945 + 0.5) / 6.0).abs() < 1e-12);
    }

    #[test]
    fn displacement_norm_of_constant_field() {
        let grid = Grid::axis_aligned([4, 4, 4], [1.0; 3], [0.0; 3]).unwrap();
        let mut field = DisplacementField::zeros(&grid);
        field.components_mut()[0].as_mut_slice().iter_mut().for_each(|v| *v = 3.0);
        field.components_mut()[1].as_mut_slice().iter_mut().for_each(|v| *v = 4.0);
        assert!((mean_displacement_norm(&field) - 5.0).abs() < 1e-12);
    }
}
