//! Synthetic scanner sites: how the images of one site differ from another's (grey/white and
//! CSF contrast of the sequence, point-spread blur and slice thickness, noise level, receive
//! bias, intensity scale). Every subject of a site shares its values; see
//! `docs/synthetic-cohort.md` for the ranges and their sources.

use crate::SynthError;
use crate::rng::{derive_seed, stream, streams, uniform};
use serde::{Deserialize, Serialize};

/// One synthetic scanner/sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// Site label, e.g. `S1` (recorded as the scanner of every subject).
    pub id: String,
    /// Factor on the base's adult white-minus-grey contrast (1: as the base).
    pub wm_contrast: f64,
    /// Factor on the base's adult grey-minus-CSF contrast (1: as the base).
    pub csf_contrast: f64,
    /// Extra in-plane blur of the point-spread function, FWHM (mm) along the first two axes.
    pub blur_fwhm_mm: f64,
    /// Extra through-plane blur (slice profile), FWHM (mm) along the third axis.
    pub slice_blur_fwhm_mm: f64,
    /// Signal-to-noise ratio: mean brain intensity over the noise standard deviation.
    pub snr: f64,
    /// Range of the bias field's max/min ratio minus one, drawn per subject.
    pub bias_range: (f64, f64),
    /// Global intensity scale of the site's images (receiver gain, reconstruction units).
    pub intensity_scale: f64,
}

impl Default for Site {
    fn default() -> Self {
        Site::reference()
    }
}

impl Site {
    /// The reference site `S0`: the base contrast, no extra blur, SNR 25, 10–30 % bias, unit
    /// scale (a 3T-like image of moderate quality).
    pub fn reference() -> Site {
        Site {
            id: "S0".into(),
            wm_contrast: 1.0,
            csf_contrast: 1.0,
            blur_fwhm_mm: 0.0,
            slice_blur_fwhm_mm: 0.0,
            snr: 25.0,
            bias_range: (0.10, 0.30),
            intensity_scale: 1.0,
        }
    }

    /// A site drawn from the ranges of multi-site studies: white/grey contrast ×0.75–1.25,
    /// CSF contrast ×0.85–1.15, in-plane blur 0–2 mm and through-plane 0–3 mm FWHM, SNR 15–40
    /// (log-uniform), bias 5–20 % up to 15–50 %, intensity scale 0.5–2 (log-uniform).
    pub fn draw(id: &str, seed: u64) -> Site {
        let mut rng = stream(seed, streams::SITE);
        let log_uniform =
            |rng: &mut rand_chacha::ChaCha8Rng, low: f64, high: f64| uniform(rng, low.ln(), high.ln()).exp();
        let wm_contrast = uniform(&mut rng, 0.75, 1.25);
        let csf_contrast = uniform(&mut rng, 0.85, 1.15);
        let blur_fwhm_mm = uniform(&mut rng, 0.0, 2.0);
        let slice_blur_fwhm_mm = uniform(&mut rng, 0.0, 3.0);
        let snr = log_uniform(&mut rng, 15.0, 40.0);
        let bias_low = uniform(&mut rng, 0.05, 0.20);
        let bias_high = bias_low + uniform(&mut rng, 0.10, 0.30);
        let intensity_scale = log_uniform(&mut rng, 0.5, 2.0);
        Site {
            id: id.to_owned(),
            wm_contrast,
            csf_contrast,
            blur_fwhm_mm,
            slice_blur_fwhm_mm,
            snr,
            bias_range: (bias_low, bias_high),
            intensity_scale,
        }
    }

    /// `count` sites `S{first}`, `S{first+1}`, … drawn from `seed` (site `S{n}` is the same
    /// whatever `first` and `count` are).
    pub fn numbered(first: usize, count: usize, seed: u64) -> Vec<Site> {
        (first..first + count).map(|n| Site::draw(&format!("S{n}"), derive_seed(seed, n as u64))).collect()
    }

    /// Checks the values; names the offending field.
    pub fn validate(&self) -> Result<(), SynthError> {
        let invalid = |field: &'static str, rule: &str| {
            Err(SynthError::InvalidSpec { field, rule: format!("site {}: must be {rule}", self.id) })
        };
        let finite_in = |v: f64, lo: f64, hi: f64| v.is_finite() && v >= lo && v <= hi;
        if self.id.is_empty() {
            return invalid("site.id", "non-empty");
        }
        if !finite_in(self.wm_contrast, 0.0, 3.0) {
            return invalid("site.wm_contrast", "within 0–3");
        }
        if !finite_in(self.csf_contrast, 0.0, 3.0) {
            return invalid("site.csf_contrast", "within 0–3");
        }
        if !finite_in(self.blur_fwhm_mm, 0.0, 10.0) || !finite_in(self.slice_blur_fwhm_mm, 0.0, 10.0) {
            return invalid("site.blur_fwhm_mm", "within 0–10 mm");
        }
        if !(self.snr == f64::INFINITY || self.snr.is_finite() && self.snr >= 1.0) {
            return invalid("site.snr", "at least 1 (infinite: no noise)");
        }
        let (lo, hi) = self.bias_range;
        if !(lo.is_finite() && lo >= 0.0 && hi >= lo && hi <= 2.0) {
            return invalid("site.bias_range", "0 ≤ low ≤ high ≤ 2");
        }
        if !(self.intensity_scale > 0.0 && self.intensity_scale < 100.0) {
            return invalid("site.intensity_scale", "in (0, 100)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_sites_are_reproducible_distinct_and_valid() {
        let sites = Site::numbered(1, 4, 9);
        assert_eq!(sites.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["S1", "S2", "S3", "S4"]);
        assert_eq!(sites, Site::numbered(1, 4, 9));
        assert_eq!(Site::numbered(4, 1, 9)[0], sites[3]);
        for site in &sites {
            site.validate().unwrap();
            assert!((0.75..1.25).contains(&site.wm_contrast));
            assert!((15.0..40.0).contains(&site.snr));
        }
        assert_ne!(sites[0].wm_contrast, sites[1].wm_contrast);
        let mut bad = Site::reference();
        bad.snr = 0.5;
        assert!(bad.validate().unwrap_err().to_string().contains("site.snr"));
    }
}
