//! Scanner-site effects on z-maps, estimated and removed in the manner of ComBat (Johnson et
//! al. 2007; Fortin et al. 2017 for imaging): each site shifts and scales the values of its
//! normals relative to the pooled model (location γ, scale δ), and a case from that site is
//! read against its site's normals rather than against the pool.
//!
//! **Features.** Scanner and sequence differences (grey/white contrast, blur, noise, bias)
//! act through tissue, not through position, so the effects are estimated per *tissue class*
//! of the template — bins of equal share of the template's intensities inside the brain mask —
//! and pooled over the voxels of a class and over age brackets. A class holds thousands of
//! voxels, so a site with a handful of normals gives a usable estimate where a per-voxel
//! estimate (ComBat's features) would be noise; the offset is still applied voxelwise,
//! through each voxel's class. Ranking intensities also keeps the classes right where infant
//! T1 contrast inverts.
//!
//! **Estimate.** Input: each calibration normal's leave-one-out z-map (scored against the
//! pooled model without itself) and its site. Per site and class, γ is the mean over the
//! site's normals of their class mean, and δ² the mean squared deviation of their z around γ;
//! both are shrunk towards the pool (γ → 0, δ → 1) with a prior worth [`PRIOR_NORMALS`]
//! normals, the empirical-Bayes step of ComBat in its simplest form. Sites with fewer than
//! the minimum number of normals get no effect of their own.
//!
//! **Growing and merging.** The estimate needs only each normal's per-class mean and mean
//! square of z ([`NormalMoments`]), a few numbers per normal, so a database keeps them
//! ([`SiteMoments`]) and re-estimates the effects from the union when normals are added or
//! databases merged — two single-site databases merged become a two-site model.
//!
//! **Unseen sites.** A case from a site with no normals cannot be corrected. It is scored
//! against the pooled model with its variance widened by what the sites that were seen say
//! a new site adds: ω² = mean δ² + (1 + 1/S)·var(γ) over the S estimated sites (the predictive
//! variance of one more site), never below 1. The report names which of the two applied.

use serde::{Deserialize, Serialize};

/// Tissue classes (equal-share bins of the template's intensities).
pub const DEFAULT_CLASSES: usize = 8;

/// Normals a site needs before it gets its own location and scale.
pub const DEFAULT_MIN_SITE_NORMALS: usize = 3;

/// Weight of the pooled model in the shrinkage of a site's estimate, in normals.
pub const PRIOR_NORMALS: f64 = 2.0;

/// Why site effects could not be estimated or applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SiteEffectError {
    /// The input breaks a rule; the message names the field.
    #[error("site effects: {0}")]
    Invalid(String),
}

/// The tissue class of each template intensity: `classes` bins of equal share of the
/// template's intensities inside its mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TissueClasses {
    /// Upper edges of the first `classes − 1` bins, ascending.
    pub edges: Vec<f32>,
}

impl TissueClasses {
    /// Equal-share bins of `template_values` (the template inside its mask).
    pub fn from_template(template_values: &[f32], classes: usize) -> Result<Self, SiteEffectError> {
        if classes == 0 || classes > 255 {
            return Err(SiteEffectError::Invalid(format!("classes {classes}: must be within 1–255")));
        }
        let mut sorted: Vec<f32> = template_values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.len() < classes {
            return Err(SiteEffectError::Invalid(format!(
                "template: {} finite values inside the mask, fewer than {classes} classes",
                sorted.len()
            )));
        }
        sorted.sort_by(f32::total_cmp);
        let edges = (1..classes).map(|k| sorted[k * sorted.len() / classes]).collect();
        Ok(Self { edges })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    /// Always false: there is at least one class.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Class of one template intensity.
    pub fn class_of(&self, value: f32) -> usize {
        self.edges.partition_point(|&edge| edge <= value)
    }

    /// Class of every value.
    pub fn assign(&self, template_values: &[f32]) -> Vec<u8> {
        template_values.iter().map(|&v| self.class_of(v) as u8).collect()
    }
}

/// One calibration normal's leave-one-out z-values of one channel.
#[derive(Debug, Clone, Copy)]
pub struct SiteNull<'a> {
    /// Site label of the normal.
    pub site: &'a str,
    /// Tissue class of each value (see [`TissueClasses::assign`]).
    pub classes: &'a [u8],
    /// z of each voxel inside the mask.
    pub z: &'a [f32],
}

/// Location and scale of one site, per tissue class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEffect {
    /// Site label.
    pub site: String,
    /// Calibration normals of the site behind the estimate.
    pub normals: usize,
    /// γ per class (z units), after shrinkage.
    pub location: Vec<f64>,
    /// δ per class (≥ a small positive bound), after shrinkage.
    pub scale: Vec<f64>,
}

/// The site effects of one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEffects {
    /// Sites with their own effect.
    pub sites: Vec<SiteEffect>,
    /// ω per class, applied to cases of a site without normals.
    pub unseen_scale: Vec<f64>,
    /// Sites seen among the normals but with too few of them for an effect.
    pub sparse_sites: Vec<String>,
    /// Normals a site needed.
    pub min_site_normals: usize,
}

/// Which correction a case received.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SiteAdjustment {
    /// The case's site has normals: its location and scale were removed.
    Seen {
        /// Site label.
        site: String,
        /// Normals behind the estimate.
        normals: usize,
    },
    /// The case's site has no effect of its own: pooled model, variance widened.
    Unseen {
        /// Site label given (None: not given).
        site: Option<String>,
        /// Mean widening factor ω over the classes.
        mean_widening: f64,
    },
}

impl SiteAdjustment {
    /// A few words for tables: `seen S1`, `unseen S4`, `unseen (site not given)`.
    pub fn label(&self) -> String {
        match self {
            Self::Seen { site, .. } => format!("seen {site}"),
            Self::Unseen { site: Some(site), .. } => format!("unseen {site}"),
            Self::Unseen { site: None, .. } => "unseen (site not given)".into(),
        }
    }

    /// One sentence for the report.
    pub fn describe(&self) -> String {
        match self {
            Self::Seen { site, normals } => {
                format!(
                    "site {site}: scored against its own {normals} normals' offsets (location and scale per tissue class)"
                )
            }
            Self::Unseen { site, mean_widening } => format!(
                "{}: no normals of this site in the database; scored against the pooled model with the variance widened by {:.2}x (between-site spread)",
                site.as_deref().map(|s| format!("site {s}")).unwrap_or_else(|| "site not given".into()),
                mean_widening
            ),
        }
    }
}

/// One calibration normal's per-class mean and mean square of its leave-one-out z: all the
/// estimate needs of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalMoments {
    /// Pseudonym of the normal (keeps the union of two databases free of doubles).
    pub pseudonym: String,
    /// Site label.
    pub site: String,
    /// Mean z per class.
    pub mean: Vec<f64>,
    /// Mean z² per class.
    pub square: Vec<f64>,
}

impl NormalMoments {
    /// The moments of one normal's z (`pseudonym` names it).
    pub fn of(pseudonym: &str, null: &SiteNull<'_>, classes: usize) -> Self {
        let (mean, square) = class_moments(null, classes);
        Self { pseudonym: pseudonym.to_owned(), site: null.site.to_owned(), mean, square }
    }
}

/// The moments of every calibration normal of one channel, from which [`SiteEffects`] are
/// estimated (kept in the database so that added and merged normals re-estimate them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteMoments {
    /// Tissue classes.
    pub classes: usize,
    /// Normals a site needs for an effect of its own.
    pub min_site_normals: usize,
    /// One entry per normal, in pseudonym order.
    pub normals: Vec<NormalMoments>,
}

impl SiteMoments {
    /// Moments of `normals` (sorted by pseudonym, so the estimate does not depend on the
    /// order normals arrived in); every entry must hold `classes` values.
    pub fn new(
        classes: usize,
        min_site_normals: usize,
        mut normals: Vec<NormalMoments>,
    ) -> Result<Self, SiteEffectError> {
        if classes == 0 {
            return Err(SiteEffectError::Invalid("classes: must be at least 1".into()));
        }
        if let Some(bad) = normals.iter().find(|n| n.mean.len() != classes || n.square.len() != classes) {
            return Err(SiteEffectError::Invalid(format!(
                "normal {} of site {}: {} means and {} squares for {classes} classes",
                bad.pseudonym,
                bad.site,
                bad.mean.len(),
                bad.square.len()
            )));
        }
        normals.sort_by(|a, b| a.pseudonym.cmp(&b.pseudonym));
        if let Some(w) = normals.windows(2).find(|w| w[0].pseudonym == w[1].pseudonym) {
            return Err(SiteEffectError::Invalid(format!("normal {} appears twice", w[0].pseudonym)));
        }
        Ok(Self { classes, min_site_normals, normals })
    }

    /// The union with `other` (same classes and minimum), e.g. of two merged databases.
    pub fn union(&self, other: &SiteMoments) -> Result<SiteMoments, SiteEffectError> {
        if self.classes != other.classes || self.min_site_normals != other.min_site_normals {
            return Err(SiteEffectError::Invalid(format!(
                "site moments: {} classes / minimum {} against {} / {}",
                self.classes, self.min_site_normals, other.classes, other.min_site_normals
            )));
        }
        Self::new(
            self.classes,
            self.min_site_normals,
            self.normals.iter().chain(&other.normals).cloned().collect(),
        )
    }

    /// Number of distinct sites.
    pub fn site_count(&self) -> usize {
        let mut sites: Vec<&str> = self.normals.iter().map(|n| n.site.as_str()).collect();
        sites.sort_unstable();
        sites.dedup();
        sites.len()
    }

    /// The site effects these moments give (see the module documentation).
    pub fn effects(&self) -> SiteEffects {
        let mut labels: Vec<&str> = self.normals.iter().map(|n| n.site.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        let classes = self.classes;
        let mut sites = Vec::new();
        let mut sparse_sites = Vec::new();
        for label in labels {
            let members: Vec<&NormalMoments> = self.normals.iter().filter(|n| n.site == label).collect();
            let n = members.len();
            if n < self.min_site_normals.max(1) {
                sparse_sites.push(label.to_owned());
                continue;
            }
            let shrink = n as f64 / (n as f64 + PRIOR_NORMALS);
            let mut location = Vec::with_capacity(classes);
            let mut scale = Vec::with_capacity(classes);
            for c in 0..classes {
                let gamma = members.iter().map(|m| m.mean[c]).sum::<f64>() / n as f64;
                // Mean square around γ: E[z²] − 2γE[z] + γ², per normal, averaged.
                let spread = members
                    .iter()
                    .map(|m| m.square[c] - 2.0 * gamma * m.mean[c] + gamma * gamma)
                    .sum::<f64>()
                    / n as f64;
                let gamma_shrunk = shrink * gamma;
                let delta_sq = shrink * spread.max(0.0) + (1.0 - shrink);
                location.push(gamma_shrunk);
                scale.push(delta_sq.sqrt().max(0.05));
            }
            sites.push(SiteEffect { site: label.to_owned(), normals: n, location, scale });
        }
        let unseen_scale = unseen_widening(&sites, classes);
        SiteEffects { sites, unseen_scale, sparse_sites, min_site_normals: self.min_site_normals }
    }
}

/// Per-class mean and mean square of one normal's z.
fn class_moments(null: &SiteNull<'_>, classes: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0.0; classes];
    let mut sum_sq = vec![0.0; classes];
    let mut count = vec![0usize; classes];
    for (&c, &z) in null.classes.iter().zip(null.z) {
        if z.is_finite() {
            let c = usize::from(c).min(classes - 1);
            sum[c] += f64::from(z);
            sum_sq[c] += f64::from(z) * f64::from(z);
            count[c] += 1;
        }
    }
    let mean = (0..classes).map(|c| if count[c] > 0 { sum[c] / count[c] as f64 } else { 0.0 }).collect();
    let square = (0..classes).map(|c| if count[c] > 0 { sum_sq[c] / count[c] as f64 } else { 1.0 }).collect();
    (mean, square)
}

/// Moments of every null (named by `pseudonyms` when given, else by position), checking
/// that classes and values match.
pub fn moments_of(
    nulls: &[SiteNull<'_>],
    pseudonyms: Option<&[&str]>,
    classes: usize,
) -> Result<Vec<NormalMoments>, SiteEffectError> {
    if classes == 0 {
        return Err(SiteEffectError::Invalid("classes: must be at least 1".into()));
    }
    if let Some(bad) = nulls.iter().find(|n| n.classes.len() != n.z.len()) {
        return Err(SiteEffectError::Invalid(format!(
            "a normal of site {}: {} classes for {} z-values",
            bad.site,
            bad.classes.len(),
            bad.z.len()
        )));
    }
    if pseudonyms.is_some_and(|p| p.len() != nulls.len()) {
        return Err(SiteEffectError::Invalid("one pseudonym per normal is needed".into()));
    }
    Ok(nulls
        .iter()
        .enumerate()
        .map(|(i, null)| {
            let name = pseudonyms.map_or_else(|| format!("{i:06}"), |p| p[i].to_owned());
            NormalMoments::of(&name, null, classes)
        })
        .collect())
}

impl SiteEffects {
    /// Estimates the effects of every site with at least `min_site_normals` normals among
    /// `nulls` (see the module documentation). The nulls are named by their position, so
    /// use [`SiteMoments`] with pseudonyms where the estimate must be grown or merged later.
    pub fn estimate(
        nulls: &[SiteNull<'_>],
        classes: usize,
        min_site_normals: usize,
    ) -> Result<Self, SiteEffectError> {
        let moments = SiteMoments::new(classes, min_site_normals, moments_of(nulls, None, classes)?)?;
        Ok(moments.effects())
    }

    /// Number of tissue classes.
    pub fn classes(&self) -> usize {
        self.unseen_scale.len()
    }

    /// The correction a case of `site` receives.
    pub fn adjustment(&self, site: Option<&str>) -> SiteAdjustment {
        match site.and_then(|s| self.sites.iter().find(|e| e.site == s)) {
            Some(effect) => SiteAdjustment::Seen { site: effect.site.clone(), normals: effect.normals },
            None => SiteAdjustment::Unseen {
                site: site.map(str::to_owned),
                mean_widening: self.unseen_scale.iter().sum::<f64>() / self.unseen_scale.len().max(1) as f64,
            },
        }
    }

    /// Corrects `z` (one value per mask voxel, classes in `classes`) for `adjustment`.
    pub fn apply(&self, adjustment: &SiteAdjustment, classes: &[u8], z: &mut [f32]) {
        let last = self.classes().saturating_sub(1);
        match adjustment {
            SiteAdjustment::Seen { site, .. } => {
                let Some(effect) = self.sites.iter().find(|e| &e.site == site) else { return };
                for (value, &c) in z.iter_mut().zip(classes) {
                    let c = usize::from(c).min(last);
                    *value = ((f64::from(*value) - effect.location[c]) / effect.scale[c]) as f32;
                }
            }
            SiteAdjustment::Unseen { .. } => {
                for (value, &c) in z.iter_mut().zip(classes) {
                    *value = (f64::from(*value) / self.unseen_scale[usize::from(c).min(last)]) as f32;
                }
            }
        }
    }
}

/// ω per class: the predictive spread of one more site, from the sites estimated.
fn unseen_widening(sites: &[SiteEffect], classes: usize) -> Vec<f64> {
    let s = sites.len() as f64;
    (0..classes)
        .map(|c| {
            if sites.is_empty() {
                return 1.0;
            }
            let mean_delta_sq = sites.iter().map(|e| e.scale[c] * e.scale[c]).sum::<f64>() / s;
            let mean_gamma = sites.iter().map(|e| e.location[c]).sum::<f64>() / s;
            let var_gamma = if sites.len() > 1 {
                sites.iter().map(|e| (e.location[c] - mean_gamma).powi(2)).sum::<f64>() / (s - 1.0)
            } else {
                0.0
            };
            (mean_delta_sq + (1.0 + 1.0 / s) * var_gamma).sqrt().max(1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A standard normal deviate (Box–Muller).
    fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
        let u: f64 = rng.random::<f64>().max(1e-12);
        let v: f64 = rng.random();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// z-values of a normal of a site that shifts class 1 by `shift` and scales class 0 by
    /// `scale`.
    fn normal_of_site(rng: &mut ChaCha8Rng, shift: f64, scale: f64) -> (Vec<u8>, Vec<f32>) {
        let classes: Vec<u8> = (0..4000).map(|i| (i % 2) as u8).collect();
        let subject_offset = 0.2 * gaussian(rng);
        let z = classes
            .iter()
            .map(|&c| {
                let e = gaussian(rng);
                (if c == 0 { scale * e } else { e + shift + subject_offset }) as f32
            })
            .collect();
        (classes, z)
    }

    #[test]
    fn classes_split_the_template_into_equal_shares() {
        let values: Vec<f32> = (0..1000).map(|v| v as f32).collect();
        let classes = TissueClasses::from_template(&values, 4).unwrap();
        assert_eq!(classes.len(), 4);
        let counts = classes.assign(&values).iter().fold([0; 4], |mut acc, &c| {
            acc[c as usize] += 1;
            acc
        });
        assert_eq!(counts, [250; 4]);
        assert!(TissueClasses::from_template(&values[..2], 4).is_err());
    }

    #[test]
    fn a_site_offset_is_removed_and_an_unseen_site_is_widened() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut data = Vec::new();
        for (site, shift, scale) in [("A", 1.0, 2.0), ("B", -1.0, 1.0), ("C", 0.0, 1.0)] {
            for _ in 0..8 {
                let (c, z) = normal_of_site(&mut rng, shift, scale);
                data.push((site, c, z));
            }
        }
        let nulls: Vec<SiteNull> = data.iter().map(|(s, c, z)| SiteNull { site: s, classes: c, z }).collect();
        let effects = SiteEffects::estimate(&nulls, 2, 3).unwrap();
        assert_eq!(effects.sites.len(), 3);
        let a = &effects.sites[0];
        // Shrinkage with 8 normals and a prior of 2: γ ≈ 0.8 · 1, δ² ≈ 0.8 · 4 + 0.2.
        assert!((a.location[1] - 0.8).abs() < 0.15, "{:?}", a.location);
        assert!((a.scale[0] - (0.8f64 * 4.0 + 0.2).sqrt()).abs() < 0.1, "{:?}", a.scale);

        // A new normal of site A, corrected, is standard again.
        let (c, mut z) = normal_of_site(&mut rng, 1.0, 2.0);
        let seen = effects.adjustment(Some("A"));
        assert!(matches!(seen, SiteAdjustment::Seen { normals: 8, .. }));
        effects.apply(&seen, &c, &mut z);
        let beyond = z.iter().filter(|v| v.abs() > 3.0).count() as f64 / z.len() as f64;
        assert!(beyond < 0.01, "corrected share beyond 3: {beyond}");

        // An unknown site gets the widening; class 1 (offsets ±1) is widened more than 1.
        let unseen = effects.adjustment(Some("Z"));
        assert!(matches!(unseen, SiteAdjustment::Unseen { .. }));
        assert!(effects.unseen_scale[1] > 1.2, "{:?}", effects.unseen_scale);
        assert!(unseen.describe().contains("site Z"));
    }

    #[test]
    fn sparse_sites_get_no_effect_and_bad_input_is_named() {
        let c = vec![0u8; 10];
        let z = vec![0.5f32; 10];
        let nulls = [SiteNull { site: "A", classes: &c, z: &z }, SiteNull { site: "A", classes: &c, z: &z }];
        let effects = SiteEffects::estimate(&nulls, 1, 3).unwrap();
        assert!(effects.sites.is_empty());
        assert_eq!(effects.sparse_sites, vec!["A".to_owned()]);
        assert_eq!(effects.unseen_scale, vec![1.0]);
        let short = [SiteNull { site: "B", classes: &c[..3], z: &z }];
        let error = SiteEffects::estimate(&short, 1, 1).unwrap_err().to_string();
        assert!(error.contains("site B") && error.contains("3 classes for 10"), "{error}");
    }
}
