//! Histograms of voxel intensities: percentiles, Otsu thresholds and tissue-peak detection.
//!
//! Everything here works on plain slices of values so the callers decide which voxels count
//! (inside a mask, positive only, ...). Sums are accumulated sequentially in a fixed order, so
//! results never depend on the thread count.

/// A fixed-range histogram with equal-width bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub min: f64,
    /// Upper edge of the last bin.
    pub max: f64,
    /// Counts (or weights) per bin.
    pub counts: Vec<f64>,
}

impl Histogram {
    /// Histogram of `values` over `[min, max]` with `bins` bins; values outside are clamped into
    /// the end bins, non-finite values are ignored.
    pub fn new(values: &[f32], min: f64, max: f64, bins: usize) -> Self {
        let bins = bins.max(1);
        let mut counts = vec![0.0; bins];
        let width = (max - min) / bins as f64;
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let b = if width > 0.0 { ((v as f64 - min) / width).floor() } else { 0.0 };
            let b = (b.max(0.0) as usize).min(bins - 1);
            counts[b] += 1.0;
        }
        Self { min, max, counts }
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f64 {
        (self.max - self.min) / self.counts.len() as f64
    }

    /// Centre value of bin `b`.
    pub fn bin_center(&self, b: usize) -> f64 {
        self.min + (b as f64 + 0.5) * self.bin_width()
    }

    /// Total count.
    pub fn total(&self) -> f64 {
        self.counts.iter().sum()
    }

    /// The histogram smoothed with a Gaussian of `sigma_bins` bins (edges replicated).
    pub fn smoothed(&self, sigma_bins: f64) -> Histogram {
        let kernel = crate::smooth::gaussian_kernel(sigma_bins);
        let radius = (kernel.len() / 2) as isize;
        let n = self.counts.len() as isize;
        let counts = (0..n)
            .map(|x| {
                kernel
                    .iter()
                    .enumerate()
                    .map(|(t, &w)| {
                        let s = x + t as isize - radius;
                        // Zero padding, not replication: mass must not pile up at the ends.
                        if (0..n).contains(&s) { w as f64 * self.counts[s as usize] } else { 0.0 }
                    })
                    .sum()
            })
            .collect();
        Histogram { min: self.min, max: self.max, counts }
    }
}

/// The `q`-quantiles (each in `[0, 1]`) of the finite `values`, by linear interpolation between
/// order statistics. Returns `None` when no value is finite.
pub fn quantiles(values: &[f32], q: &[f64]) -> Option<Vec<f64>> {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_unstable_by(|a, b| a.total_cmp(b));
    Some(q.iter().map(|&p| quantile_sorted(&sorted, p)).collect())
}

/// Quantile `p` of an ascending, non-empty slice (linear interpolation).
pub fn quantile_sorted(sorted: &[f32], p: f64) -> f64 {
    let n = sorted.len();
    let position = p.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = position.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = position - lo as f64;
    sorted[lo] as f64 * (1.0 - t) + sorted[hi] as f64 * t
}

/// Otsu thresholds splitting the histogram into `classes` classes (2 or 3) by maximal
/// between-class variance, searched exhaustively over bin edges. Returns the thresholds in
/// ascending order as intensity values (upper edges of the last bin of each lower class).
pub fn otsu_thresholds(histogram: &Histogram, classes: usize) -> Vec<f64> {
    let n = histogram.counts.len();
    // Prefix sums of weight and first moment give any class's statistics in O(1).
    let mut w = vec![0.0; n + 1];
    let mut m = vec![0.0; n + 1];
    for b in 0..n {
        w[b + 1] = w[b] + histogram.counts[b];
        m[b + 1] = m[b] + histogram.counts[b] * histogram.bin_center(b);
    }
    let class_term = |a: usize, b: usize| -> f64 {
        // Bins a..b (exclusive end): weight * mean^2 = m^2 / w.
        let weight = w[b] - w[a];
        if weight <= 0.0 { 0.0 } else { (m[b] - m[a]).powi(2) / weight }
    };
    let edge = |b: usize| histogram.min + b as f64 * histogram.bin_width();
    match classes {
        3 => {
            let mut best = (f64::NEG_INFINITY, 1, 2);
            for t1 in 1..n.saturating_sub(1) {
                for t2 in t1 + 1..n {
                    let score = class_term(0, t1) + class_term(t1, t2) + class_term(t2, n);
                    if score > best.0 {
                        best = (score, t1, t2);
                    }
                }
            }
            vec![edge(best.1), edge(best.2)]
        }
        _ => {
            let mut best = (f64::NEG_INFINITY, 1);
            for t in 1..n {
                let score = class_term(0, t) + class_term(t, n);
                if score > best.0 {
                    best = (score, t);
                }
            }
            vec![edge(best.1)]
        }
    }
}

/// A local maximum of a smoothed histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Intensity at the peak (refined by a parabola through the three top bins).
    pub value: f64,
    /// Smoothed count at the peak.
    pub height: f64,
    /// Fraction of the histogram's mass in the peak's basin (between the neighbouring minima).
    pub mass: f64,
}

/// Local maxima of `histogram` (already smoothed), most massive first. A maximum counts only if
/// its basin holds at least `min_mass` of the total and it rises above the lower of its two
/// bounding minima by at least `min_prominence` of its height, so noise wiggles are ignored.
pub fn find_peaks(histogram: &Histogram, min_mass: f64, min_prominence: f64) -> Vec<Peak> {
    let c = &histogram.counts;
    let n = c.len();
    let total = histogram.total();
    if n < 3 || total <= 0.0 {
        return Vec::new();
    }
    // Maxima on plateaus count once (at the plateau's first bin).
    let mut maxima = Vec::new();
    for b in 0..n {
        let left = if b == 0 { f64::NEG_INFINITY } else { c[b - 1] };
        let mut r = b + 1;
        while r < n && c[r] == c[b] {
            r += 1;
        }
        let right = if r == n { f64::NEG_INFINITY } else { c[r] };
        if c[b] > left && c[b] > right && c[b] > 0.0 {
            maxima.push(b);
        }
    }
    // Merge maxima that are not prominent enough into their higher neighbour's basin by
    // repeatedly dropping the least prominent one.
    loop {
        if maxima.len() <= 1 {
            break;
        }
        let mut weakest: Option<(f64, usize)> = None;
        for (index, &b) in maxima.iter().enumerate() {
            let left_min = if index == 0 { min_range(c, 0, b) } else { min_range(c, maxima[index - 1], b) };
            let right_min = if index + 1 == maxima.len() {
                min_range(c, b, n - 1)
            } else {
                min_range(c, b, maxima[index + 1])
            };
            let prominence = (c[b] - left_min.max(right_min)) / c[b];
            if weakest.is_none_or(|(p, _)| prominence < p) {
                weakest = Some((prominence, index));
            }
        }
        let (prominence, index) = weakest.expect("at least two maxima");
        if prominence >= min_prominence {
            break;
        }
        maxima.remove(index);
    }
    let mut peaks = Vec::new();
    for (index, &b) in maxima.iter().enumerate() {
        let start = if index == 0 { 0 } else { argmin_range(c, maxima[index - 1], b) };
        let end = if index + 1 == maxima.len() { n - 1 } else { argmin_range(c, b, maxima[index + 1]) };
        let mass = c[start..=end].iter().sum::<f64>() / total;
        if mass < min_mass {
            continue;
        }
        let offset = if b > 0 && b + 1 < n {
            let (y0, y1, y2) = (c[b - 1], c[b], c[b + 1]);
            let denominator = y0 - 2.0 * y1 + y2;
            if denominator.abs() > 1e-12 { (0.5 * (y0 - y2) / denominator).clamp(-0.5, 0.5) } else { 0.0 }
        } else {
            0.0
        };
        let value = histogram.min + (b as f64 + 0.5 + offset) * histogram.bin_width();
        peaks.push(Peak { value, height: c[b], mass });
    }
    peaks.sort_by(|a, b| b.mass.total_cmp(&a.mass));
    peaks
}

/// One component of a Gaussian mixture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Component {
    /// Mixing weight (fraction of the mass).
    pub weight: f64,
    /// Mean intensity.
    pub mean: f64,
    /// Standard deviation.
    pub sd: f64,
}

/// A Gaussian mixture of `k` components (2 or 3) fitted to a histogram by expectation
/// maximization, started from the Otsu classes. Tissue classes often form shoulders rather than
/// separate peaks (partial volume, low contrast), which a mixture still resolves. Components
/// are returned in ascending order of mean.
pub fn fit_gaussian_mixture(histogram: &Histogram, k: usize, iterations: usize) -> Vec<Component> {
    let k = k.clamp(2, 3);
    let n = histogram.counts.len();
    let total = histogram.total();
    let width = histogram.bin_width();
    let centers: Vec<f64> = (0..n).map(|b| histogram.bin_center(b)).collect();
    // Initial classes: Otsu's partition.
    let thresholds = otsu_thresholds(histogram, k);
    let mut components = Vec::new();
    let mut edges = vec![f64::NEG_INFINITY];
    edges.extend(&thresholds);
    edges.push(f64::INFINITY);
    for class in 0..k {
        let (mut w, mut m, mut m2) = (0.0, 0.0, 0.0);
        for (b, &c) in histogram.counts.iter().enumerate() {
            let x = centers[b];
            if x >= edges[class] && x < edges[class + 1] {
                w += c;
                m += c * x;
                m2 += c * x * x;
            }
        }
        let mean = if w > 0.0 {
            m / w
        } else {
            histogram.min + (class as f64 + 0.5) * (histogram.max - histogram.min) / k as f64
        };
        let variance = if w > 0.0 { (m2 / w - mean * mean).max(0.0) } else { 0.0 };
        components.push(Component { weight: (w / total).max(1e-3), mean, sd: variance.sqrt().max(width) });
    }
    let mut responsibility = vec![0.0; n * k];
    for _ in 0..iterations {
        for b in 0..n {
            let x = centers[b];
            let mut sum = 0.0;
            for (j, c) in components.iter().enumerate() {
                let z = (x - c.mean) / c.sd;
                let p = c.weight / c.sd * (-0.5 * z * z).exp();
                responsibility[b * k + j] = p;
                sum += p;
            }
            if sum > 0.0 {
                for j in 0..k {
                    responsibility[b * k + j] /= sum;
                }
            }
        }
        for (j, c) in components.iter_mut().enumerate() {
            let (mut w, mut m) = (0.0, 0.0);
            for b in 0..n {
                let r = responsibility[b * k + j] * histogram.counts[b];
                w += r;
                m += r * centers[b];
            }
            if w <= 1e-9 * total {
                continue;
            }
            let mean = m / w;
            let mut v = 0.0;
            for b in 0..n {
                v += responsibility[b * k + j] * histogram.counts[b] * (centers[b] - mean).powi(2);
            }
            // A floor of one bin keeps a component from collapsing onto a single bin.
            *c = Component { weight: w / total, mean, sd: (v / w).sqrt().max(width) };
        }
    }
    components.sort_by(|a, b| a.mean.total_cmp(&b.mean));
    components
}

fn min_range(c: &[f64], a: usize, b: usize) -> f64 {
    c[a.min(b)..=a.max(b)].iter().copied().fold(f64::INFINITY, f64::min)
}

fn argmin_range(c: &[f64], a: usize, b: usize) -> usize {
    let mut best = a;
    for i in a..=b {
        if c[i] < c[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn two_gaussians(a: f32, b: f32, n: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut v = Vec::new();
        for i in 0..n {
            let centre = if i % 3 == 0 { a } else { b };
            let noise: f32 = (0..6).map(|_| rng.random::<f32>() - 0.5).sum::<f32>() * 0.04;
            v.push(centre + noise);
        }
        v
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [4.0f32, 1.0, 3.0, 2.0, f32::NAN];
        let q = quantiles(&v, &[0.0, 0.5, 1.0, 0.25]).unwrap();
        assert_eq!(q, vec![1.0, 2.5, 4.0, 1.75]);
        assert!(quantiles(&[f32::NAN], &[0.5]).is_none());
    }

    #[test]
    fn otsu_separates_two_modes() {
        let v = two_gaussians(0.2, 0.8, 3000);
        let h = Histogram::new(&v, 0.0, 1.0, 100);
        let t = otsu_thresholds(&h, 2)[0];
        assert!(t > 0.3 && t < 0.7, "threshold {t}");
        let mut three = v.clone();
        three.extend(two_gaussians(1.5, 1.5, 1500));
        let h = Histogram::new(&three, 0.0, 2.0, 100);
        let t = otsu_thresholds(&h, 3);
        assert!(t[0] > 0.3 && t[0] < 0.7 && t[1] > 0.85 && t[1] < 1.4, "thresholds {t:?}");
    }

    #[test]
    fn mixture_resolves_a_shoulder() {
        // A large bright class with a smaller darker class on its shoulder.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut v = Vec::new();
        for i in 0..20000 {
            let (centre, sd) = if i % 5 < 3 {
                (0.8, 0.06)
            } else if i % 5 < 4 {
                (0.62, 0.07)
            } else {
                (0.3, 0.1)
            };
            let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            v.push((centre + sd * z) as f32);
        }
        let h = Histogram::new(&v, 0.0, 1.2, 128);
        let c = fit_gaussian_mixture(&h, 3, 200);
        assert!((c[2].mean - 0.8).abs() < 0.03 && (c[1].mean - 0.62).abs() < 0.05, "{c:?}");
        assert!((c[2].weight - 0.6).abs() < 0.1, "{c:?}");
    }

    #[test]
    fn peaks_found_in_order_of_mass() {
        let v = two_gaussians(0.3, 0.7, 6000);
        let h = Histogram::new(&v, 0.0, 1.0, 100).smoothed(1.5);
        let peaks = find_peaks(&h, 0.05, 0.2);
        assert_eq!(peaks.len(), 2, "{peaks:?}");
        assert!((peaks[0].value - 0.7).abs() < 0.02 && (peaks[1].value - 0.3).abs() < 0.02, "{peaks:?}");
        assert!(peaks[0].mass > peaks[1].mass);
    }
}
