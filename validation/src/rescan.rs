//! The same synthetic subject imaged a second time (test–retest): same anatomy and truth,
//! another bias field, more noise with an independent realization, another receiver gain.

use crate::SynthError;
use crate::site::Site;
use crate::subject::{Generator, SubjectSpec, SyntheticSubject};

/// How the second scan differs from the first.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescan {
    /// The site settings of the second scan (bias range, SNR, intensity scale).
    pub site: Site,
    /// Extra linear bias gradient along the second axis: the factor runs from `1 − g` to `1 + g`.
    pub gradient: f64,
    /// Amplitude of the extra independent noise (uniform, ± half this, intensity units).
    pub extra_noise: f64,
    /// Seed of the extra noise.
    pub seed: u64,
}

impl Rescan {
    /// Bias 25–35 % (the reference site draws 10–30 %) with a ±5 % gradient on top, SNR 22
    /// (reference 25) plus independent noise, 1.4× receiver gain.
    pub fn moderate(seed: u64) -> Rescan {
        Rescan {
            site: Site { snr: 22.0, bias_range: (0.25, 0.35), intensity_scale: 1.4, ..Site::reference() },
            gradient: 0.05,
            extra_noise: 4.0,
            seed,
        }
    }

    /// Bias 30–40 % with a ±10 % gradient, SNR 18 plus independent noise, 1.4× gain.
    pub fn strong(seed: u64) -> Rescan {
        Rescan {
            site: Site { snr: 18.0, bias_range: (0.3, 0.4), intensity_scale: 1.4, ..Site::reference() },
            gradient: 0.1,
            extra_noise: 8.0,
            seed,
        }
    }

    /// The subject of `spec` imaged with these settings (the anatomy and truth of `spec`).
    pub fn image(&self, generator: &Generator, spec: &SubjectSpec) -> Result<SyntheticSubject, SynthError> {
        let mut spec = spec.clone();
        spec.site = self.site.clone();
        let mut subject = generator.subject(&spec)?;
        let dims = subject.image.grid().dims();
        let mut state = 0x2545_f491_4f6c_dd1du64 ^ self.seed;
        for ((_, j, _), v) in subject.image.data_mut().indexed_iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let uniform = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let factor = 1.0 - self.gradient + 2.0 * self.gradient * j as f64 / dims[1] as f64;
            *v = ((*v as f64) * factor + self.extra_noise * uniform).max(0.0) as f32;
        }
        Ok(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BaseBrain, Sex};
    use pedinorm_registration::Grid;

    #[test]
    fn a_rescan_keeps_the_anatomy_and_changes_the_image() {
        let grid = Grid::axis_aligned([36, 42, 32], [4.0; 3], [-70.0, -82.0, -62.0]).unwrap();
        let generator = Generator::new(&BaseBrain::phantom(&grid), 4.0).unwrap();
        let mut spec = SubjectSpec::normal(9.0, Sex::Female, 5);
        spec.resolution_mm = 4.0;
        let first = generator.subject(&spec).unwrap();
        let second = Rescan::moderate(1).image(&generator, &spec).unwrap();
        assert!(first.truth.labels == second.truth.labels);
        let mean = |s: &SyntheticSubject| s.image.as_slice().iter().map(|&v| v as f64).sum::<f64>();
        let ratio = mean(&second) / mean(&first);
        assert!(ratio > 1.2 && ratio < 1.6, "gain {ratio}");
    }
}
