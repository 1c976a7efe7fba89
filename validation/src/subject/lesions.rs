//! Abnormalities placed in a subject: where they go, their warps and intensity profiles, and
//! the truth region they mark.

use super::*;
use crate::SynthError;
use crate::abnormality::{Abnormality, LesionTissue};
use crate::rng::{standard_normal, stream, streams, uniform};
use crate::warp::{field_from_fn, scale_field};
use pedinorm_registration::interpolate::sample_linear;
use pedinorm_registration::smooth::smooth_mm;
use pedinorm_registration::{DisplacementField, Image};
use rand::Rng;

/// How far from a requested abnormality site (mm, base space) its centre may be drawn.
pub const SITE_TOLERANCE_MM: f64 = 8.0;

impl Generator {
    /// Chooses where the abnormality goes and builds its warp or intensity profile.
    pub(super) fn place(
        &self,
        abnormality: &Abnormality,
        site: Option<[f64; 3]>,
        seed: u64,
        mean_scale: f64,
    ) -> Result<Placed, SynthError> {
        let mut rng = stream(seed, streams::ABNORMALITY);
        let grid = &self.grid;
        // Abnormality warps are smooth on a scale of several mm: a grid of at least 2 mm keeps
        // 1 mm subjects fast.
        let velocity_grid = &self.warp_grid;
        let c = &self.coarse;
        let world_of = |flat: usize| -> [f64; 3] {
            let d = grid.dims();
            let (i, j, k) = (flat / (d[1] * d[2]), (flat / d[2]) % d[1], flat % d[2]);
            grid.voxel_to_world([i as f64, j as f64, k as f64])
        };
        // The candidates near the requested site (the nearest one when none is near).
        let near_site = |candidates: Vec<usize>| -> Vec<usize> {
            let Some(site) = site else { return candidates };
            let distance = |flat: usize| {
                let w = world_of(flat);
                ((w[0] - site[0]).powi(2) + (w[1] - site[1]).powi(2) + (w[2] - site[2]).powi(2)).sqrt()
            };
            let near: Vec<usize> =
                candidates.iter().copied().filter(|&i| distance(i) <= SITE_TOLERANCE_MM).collect();
            if near.is_empty() {
                candidates
                    .into_iter()
                    .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
                    .into_iter()
                    .collect()
            } else {
                near
            }
        };
        let pick =
            |candidates: &[usize], fallback: &Image<f32>, rng: &mut rand_chacha::ChaCha8Rng| -> [f64; 3] {
                let flat = if candidates.is_empty() {
                    // The best available voxel when no candidate meets the criteria.
                    fallback
                        .as_slice()
                        .iter()
                        .enumerate()
                        .fold(
                            (0usize, f32::NEG_INFINITY),
                            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
                        )
                        .0
                } else {
                    candidates[rng.random_range(0..candidates.len())]
                };
                world_of(flat)
            };
        let select = |image: &Image<f32>, threshold: f32| -> Vec<usize> {
            image.as_slice().iter().enumerate().filter(|(_, v)| **v >= threshold).map(|(i, _)| i).collect()
        };
        match *abnormality {
            Abnormality::Lesion { tissue, radius_mm, .. } => {
                let radius = radius_mm / mean_scale;
                let (smoothed, threshold) = match tissue {
                    LesionTissue::WhiteMatter => (smooth_mm(&c.wm, 0.5 * radius), 0.9),
                    LesionTissue::GreyMatter => (smooth_mm(&c.gm, 0.25 * radius), 0.6),
                };
                let mut candidates = select(&smoothed, threshold);
                if tissue == LesionTissue::GreyMatter {
                    candidates.retain(|&i| c.gm.as_slice()[i] >= 0.6);
                }
                let candidates = near_site(candidates);
                let centre = pick(&candidates, &smoothed, &mut rng);
                let directions: Vec<([f64; 3], f64)> = (0..3)
                    .map(|_| {
                        let n =
                            [standard_normal(&mut rng), standard_normal(&mut rng), standard_normal(&mut rng)];
                        let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt().max(1e-9);
                        ([n[0] / len, n[1] / len, n[2] / len], uniform(&mut rng, -0.12, 0.12))
                    })
                    .collect();
                let ramp = self.resolution_mm / mean_scale;
                Ok(Placed {
                    centre,
                    radius,
                    velocity: None,
                    profile: Some(LesionProfile { centre, radius, ramp, lobes: directions }),
                    ventricles: false,
                })
            }
            Abnormality::Atrophy { radius_mm, volume_loss } => {
                let radius = radius_mm / mean_scale;
                let inside = smooth_mm(&c.mask, 0.5 * radius);
                let mut candidates = select(&c.gm, 0.6);
                candidates.retain(|&i| inside.as_slice()[i] >= 0.75);
                let candidates = near_site(candidates);
                let centre = pick(&candidates, &c.gm, &mut rng);
                // v(y) = −a (y − c) exp(−|y − c|² / 2σ²): the flow contracts toward c with
                // Jacobian exp(−3a) at c; log-Jacobian is negative within √3 σ = radius.
                let sigma = radius / 3f64.sqrt();
                let a = -(1.0 - volume_loss).ln() / 3.0;
                let velocity = field_from_fn(velocity_grid, |[i, j, k]| {
                    let y = velocity_grid.voxel_to_world([i as f64, j as f64, k as f64]);
                    let d = [y[0] - centre[0], y[1] - centre[1], y[2] - centre[2]];
                    let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                    let g = -a * (-r2 / (2.0 * sigma * sigma)).exp();
                    [g * d[0], g * d[1], g * d[2]]
                });
                Ok(Placed { centre, radius, velocity: Some(velocity), profile: None, ventricles: false })
            }
            Abnormality::EnlargedVentricles { dilation_mm } => {
                let count = self.ventricles.as_slice().iter().filter(|&&v| v > 0.5).count();
                if count == 0 {
                    return Err(SynthError::NoLocation("the base brain has no deep CSF (ventricles)".into()));
                }
                if self.ventricle_log_growth_per_mm <= 0.0 {
                    return Err(SynthError::NoLocation("the ventricle mask has no boundary".into()));
                }
                let velocity = scale_field(&self.ventricle_velocity, dilation_mm);
                let centre = centroid(&self.ventricles).expect("non-empty ventricle mask");
                Ok(Placed { centre, radius: 0.0, velocity: Some(velocity), profile: None, ventricles: true })
            }
        }
    }
}

/// Where an abnormality was placed (base space) and what it does.
pub(super) struct Placed {
    pub(super) centre: [f64; 3],
    pub(super) radius: f64,
    pub(super) velocity: Option<DisplacementField>,
    pub(super) profile: Option<LesionProfile>,
    pub(super) ventricles: bool,
}

impl Placed {
    /// Whether a base point lies in the truth region.
    pub(super) fn inside(&self, generator: &Generator, w: [f64; 3]) -> bool {
        if let Some(profile) = &self.profile {
            return profile.value(w) >= 0.5;
        }
        if self.ventricles {
            let voxel = generator.grid.world_to_voxel(w);
            return sample_linear(&generator.ventricles, voxel, 0.0) >= 0.5;
        }
        let d2: f64 = (0..3).map(|a| (w[a] - self.centre[a]).powi(2)).sum();
        d2 < self.radius * self.radius
    }
}

/// A lesion's soft indicator in base space: 1 inside an irregular sphere, 0 outside, linear
/// over `ramp` mm across the boundary (partial volume of one output voxel).
pub(super) struct LesionProfile {
    pub(super) centre: [f64; 3],
    pub(super) radius: f64,
    pub(super) ramp: f64,
    /// Directions and amplitudes of second-order (Legendre P2) bumps of the outline.
    pub(super) lobes: Vec<([f64; 3], f64)>,
}

impl LesionProfile {
    pub(super) fn value(&self, w: [f64; 3]) -> f32 {
        let d = [w[0] - self.centre[0], w[1] - self.centre[1], w[2] - self.centre[2]];
        let distance = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if distance > 2.0 * self.radius + self.ramp {
            return 0.0;
        }
        let mut outline = 1.0;
        if distance > 1e-9 {
            for (n, amplitude) in &self.lobes {
                let cosine = (d[0] * n[0] + d[1] * n[1] + d[2] * n[2]) / distance;
                outline += amplitude * 0.5 * (3.0 * cosine * cosine - 1.0);
            }
        }
        (0.5 + (self.radius * outline - distance) / self.ramp).clamp(0.0, 1.0) as f32
    }
}

/// World centroid of the voxels above 0.5, `None` when there are none.
pub(super) fn centroid(mask: &Image<f32>) -> Option<[f64; 3]> {
    let grid = mask.grid();
    let dims = grid.dims();
    let (mut sum, mut count) = ([0.0f64; 3], 0usize);
    for (flat, &v) in mask.as_slice().iter().enumerate() {
        if v > 0.5 {
            let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
            let p = grid.voxel_to_world([i as f64, j as f64, k as f64]);
            for a in 0..3 {
                sum[a] += p[a];
            }
            count += 1;
        }
    }
    (count > 0).then(|| [sum[0] / count as f64, sum[1] / count as f64, sum[2] / count as f64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::tests::{generator, spec};
    use crate::warp::jacobian_determinant;

    #[test]
    fn a_requested_site_places_the_abnormality_near_it() {
        let generator = generator();
        let distance = |a: [f64; 3], b: [f64; 3]| (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt();
        for abnormality in [
            Abnormality::Lesion { tissue: LesionTissue::WhiteMatter, radius_mm: 6.0, contrast: -0.4 },
            Abnormality::Atrophy { radius_mm: 10.0, volume_loss: 0.4 },
        ] {
            // A site its tissue allows: where the generator put it unasked, moved 3 mm.
            let anywhere = generator.place(&abnormality, None, 5, 1.0).unwrap().centre;
            let site = [anywhere[0] + 3.0, anywhere[1], anywhere[2]];
            let centres: Vec<[f64; 3]> = (0..4)
                .map(|seed| generator.place(&abnormality, Some(site), seed, 1.0).unwrap().centre)
                .collect();
            assert!(centres.iter().all(|c| distance(*c, site) <= SITE_TOLERANCE_MM), "{centres:?}");
            assert!(centres.windows(2).any(|w| w[0] != w[1]), "seeds vary the centre: {centres:?}");
        }
    }

    #[test]
    fn lesion_mask_is_where_intensities_changed() {
        for contrast in [0.4, -0.4] {
            let mut normal = spec(8.0, 11);
            normal.site.snr = f64::INFINITY;
            let case = normal.clone().with_abnormality(Abnormality::Lesion {
                tissue: LesionTissue::WhiteMatter,
                radius_mm: 9.0,
                contrast,
            });
            let a = generator().subject(&normal).unwrap();
            let b = generator().subject(&case).unwrap();
            assert_eq!(
                b.truth.kind,
                if contrast > 0.0 { SubjectKind::HyperintenseLesion } else { SubjectKind::HypointenseLesion }
            );
            let mask = b.truth.lesion_mask.as_ref().unwrap();
            let dims = mask.grid().dims();
            let inside = mask.as_slice().iter().filter(|&&m| m > 0.5).count();
            assert!(inside > 20, "lesion of {inside} voxels");
            for (flat, ((&x, &y), &m)) in
                a.image.as_slice().iter().zip(b.image.as_slice()).zip(mask.as_slice()).enumerate()
            {
                let relative = (y - x) / x.max(1e-3);
                if m > 0.5 {
                    // Inside: changed by at least half the contrast, in its direction.
                    assert!(
                        relative * contrast as f32 > 0.5 * (contrast * contrast) as f32,
                        "voxel {flat}: {x} -> {y}"
                    );
                } else if (y - x).abs() > 1e-4 * x.abs().max(1.0) {
                    // Outside: only partial-volume voxels touching the mask change.
                    let (i, j, k) = (flat / (dims[1] * dims[2]), (flat / dims[2]) % dims[1], flat % dims[2]);
                    let near = (i.saturating_sub(1)..=(i + 1).min(dims[0] - 1)).any(|ii| {
                        (j.saturating_sub(1)..=(j + 1).min(dims[1] - 1)).any(|jj| {
                            (k.saturating_sub(1)..=(k + 1).min(dims[2] - 1))
                                .any(|kk| mask.data()[[ii, jj, kk]] > 0.5)
                        })
                    });
                    assert!(near, "voxel {flat} changed far from the lesion");
                }
            }
            // The lesion sits in white matter.
            let wm = mask
                .as_slice()
                .iter()
                .zip(b.truth.labels.as_slice())
                .filter(|(m, l)| **m > 0.5 && **l == 3.0)
                .count();
            assert!(wm * 2 > inside, "{wm} of {inside} lesion voxels in WM");
        }
    }

    #[test]
    fn atrophy_shrinks_and_ventricles_grow() {
        let normal = spec(9.0, 31);
        let atrophy =
            normal.clone().with_abnormality(Abnormality::Atrophy { radius_mm: 12.0, volume_loss: 0.4 });
        let subject = generator().subject(&atrophy).unwrap();
        let truth = &subject.truth;
        let region = truth.lesion_mask_base.as_ref().unwrap();
        let det = jacobian_determinant(&truth.inverse_deformation);
        let reference = generator().subject(&normal).unwrap();
        let reference_det = jacobian_determinant(&reference.truth.inverse_deformation);
        let mean_log = |det: &Image<f32>| {
            let (s, n) = det
                .as_slice()
                .iter()
                .zip(region.as_slice())
                .filter(|(_, m)| **m > 0.5)
                .fold((0.0, 0usize), |(s, n), (d, _)| (s + f64::from(*d).ln(), n + 1));
            assert!(n > 10);
            s / n as f64
        };
        let shrink = mean_log(&det) - mean_log(&reference_det);
        assert!(shrink < -0.1, "log-Jacobian change in the atrophy region {shrink}");

        let ventricles =
            normal.clone().with_abnormality(Abnormality::EnlargedVentricles { dilation_mm: 5.0 });
        let enlarged = generator().subject(&ventricles).unwrap();
        let csf_in_centre = |s: &SyntheticSubject| {
            let region = enlarged.truth.lesion_mask.as_ref().unwrap();
            s.truth
                .labels
                .as_slice()
                .iter()
                .zip(region.as_slice())
                .filter(|(l, m)| **l == 1.0 && **m > 0.5)
                .count()
        };
        let (big, small) = (csf_in_centre(&enlarged), csf_in_centre(&reference));
        assert!(big as f64 > 1.3 * small as f64, "ventricle CSF {big} vs {small} voxels");
    }
}
