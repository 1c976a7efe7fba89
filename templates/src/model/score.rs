//! Scoring a case against the normative database: the case is brought into the template
//! space of its age exactly as the normals were ([`map_to_template`]), scored against the age-
//! and sex-matched normative model (site-adjusted when the database models sites), thresholded
//! with the calibrated thresholds, clustered (26-connectivity), summarized by atlas region,
//! judged for reliability against the calibration normals, and mapped back to its own grid.
//! Everything is in memory: reading the case and writing the maps is the caller's.

use super::site;
use super::{Channel, ModelError, NormativeDb, SubjectMaps, TemplateSpace, gather, map_to_template, scatter};
use crate::calibration::{AbsZHistogram, find_clusters, gaussian_two_sided};
use crate::safeguards::{GlobalIndices, Reliability, age_outside_normals, floored_model};
use crate::site_effects::SiteAdjustment;
use crate::stats::Sex;
use pedinorm_registration::{Image, Interpolation, SpatialTransform, TransformChain};
use serde::{Deserialize, Serialize};

/// Why a case cannot be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Mapping the case into template space failed.
    #[error(transparent)]
    Mapping(#[from] ModelError),
    /// The normative model cannot be evaluated for this case.
    #[error("normative model: {0}")]
    Model(String),
}

/// Options of a deviation map.
#[derive(Debug, Clone)]
pub struct DeviationOptions {
    /// Age of the case at scan (years).
    pub age_years: f64,
    /// Sex of the case, when known.
    pub sex: Option<Sex>,
    /// Regions listed in the report, most deviant first.
    pub max_regions: usize,
    /// Scanner or site of the case, matched against the database's sites (None: not given,
    /// scored as a site the database has not seen).
    pub site: Option<String>,
}

/// One cluster of supra-threshold voxels (read back from `report.json` by the similar-case
/// signature).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterReport {
    /// `intensity` or `logjac`.
    pub channel: String,
    /// Label in `clusters.nii.gz` (0 when not significant: not in the map).
    pub label: u32,
    /// `above` (hyper-intense / expanded) or `below` (hypo-intense / shrunken).
    pub direction: String,
    /// Voxels in template space.
    pub size_voxels: usize,
    /// Volume in template space (mm³).
    pub volume_mm3: f64,
    /// Peak z (signed).
    pub peak_z: f32,
    /// Mean z over the cluster.
    pub mean_z: f32,
    /// Cluster mass `Σ (|z| − threshold)` over its voxels (template space).
    pub mass: f64,
    /// Peak position in template world coordinates (mm, RAS+).
    pub peak_template_mm: [f64; 3],
    /// Peak position in the case's world coordinates (mm, RAS+).
    pub peak_native_mm: [f64; 3],
    /// Atlas region at the peak, when an atlas is present.
    pub region: Option<String>,
    /// Mass larger than the calibrated cluster-mass threshold (databases calibrated before
    /// cluster masses were recorded: size larger than the cluster-size threshold).
    pub significant: bool,
    /// Set on significant clusters when the comparison is unreliable (see
    /// [`DeviationResult::reliability`]): the cluster may reflect the mismatch, not the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

/// The SD floor of one channel and where it bound.
#[derive(Debug, Clone, Serialize)]
pub struct SdFloorReport {
    /// `intensity` or `logjac`.
    pub channel: String,
    /// The floor (channel units; 0 = none).
    pub sd_floor: f64,
    /// Fraction of mask voxels whose SD was raised to the floor.
    pub fraction_of_voxels_floored: f64,
}

/// Deviation of one atlas region (read back from `report.json` by the similar-case signature).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionReport {
    /// Label value.
    pub label: i32,
    /// Label name.
    pub name: String,
    /// Voxels of the region inside the template mask.
    pub voxels: usize,
    /// Mean intensity z.
    pub intensity_mean_z: f64,
    /// Fraction of voxels with |intensity z| beyond threshold.
    pub intensity_fraction_beyond: f64,
    /// Mean log-Jacobian z.
    pub logjac_mean_z: f64,
    /// Fraction of voxels with |log-Jacobian z| beyond threshold.
    pub logjac_fraction_beyond: f64,
}

/// Thresholds applied to one channel and how they were obtained.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdReport {
    /// `intensity` or `logjac`.
    pub channel: String,
    /// |z| threshold.
    pub z_threshold: f64,
    /// Cluster mass `Σ (|z| − z_threshold)` a cluster must exceed to be significant (`None`:
    /// a database calibrated on sizes only, see `cluster_size_threshold_voxels`).
    pub cluster_mass_threshold: Option<f64>,
    /// Largest cluster size (voxels) of held-out normals at the calibrated rate; decides
    /// significance only when there is no mass threshold.
    pub cluster_size_threshold_voxels: usize,
    /// Nominal voxelwise false-positive rate.
    pub nominal_voxel_rate: f64,
    /// Rate achieved on held-out normals (leave-one-out), when calibrated.
    pub achieved_voxel_rate: Option<f64>,
    /// Nominal per-image false-cluster rate.
    pub nominal_cluster_rate: f64,
    /// Rate of held-out normals showing a significant cluster, when calibrated.
    pub achieved_cluster_rate: Option<f64>,
    /// Whether the thresholds come from a calibration (else Gaussian, uncalibrated).
    pub calibrated: bool,
    /// The calibration predates added or merged subjects.
    pub calibration_stale: bool,
}

/// The result of a deviation computation, in memory.
#[derive(Debug, Clone)]
pub struct DeviationResult {
    /// Bracket whose template was used.
    pub bracket: String,
    /// Case age.
    pub age_years: f64,
    /// Sex given.
    pub sex: Option<Sex>,
    /// Sex the normative model used (None: both pooled).
    pub model_sex: Option<Sex>,
    /// Effective number of normals behind the model.
    pub effective_n: f64,
    /// z-maps on the template grid ([`Channel::index`] order).
    pub z_template: [Image<f32>; 2],
    /// z-maps on the case grid.
    pub z_native: [Image<f32>; 2],
    /// Significant clusters labelled on the template grid.
    pub clusters_template: Image<f32>,
    /// The same on the case grid.
    pub clusters_native: Image<f32>,
    /// All supra-threshold clusters, significant first, by size.
    pub clusters: Vec<ClusterReport>,
    /// Regions, most deviant first.
    pub regions: Vec<RegionReport>,
    /// Thresholds per channel.
    pub thresholds: Vec<ThresholdReport>,
    /// Correlation of the warped case with the template (registration QC).
    pub registration_similarity: f64,
    /// Notes for the reader (uncalibrated thresholds, age outside the nodes, poor registration,
    /// an unreliable comparison first).
    pub warnings: Vec<String>,
    /// Whether the case lies within what the database's normals represent.
    pub reliability: Reliability,
    /// SD floors per channel.
    pub sd_floors: Vec<SdFloorReport>,
    /// The site correction applied (None: the database has no site effects).
    pub site_adjustment: Option<SiteAdjustment>,
    /// The case mapped to template space.
    pub maps: SubjectMaps,
    /// The case's regional volumes and centiles (None: the bracket has no tissue priors, or
    /// the volumes could not be measured — a warning says why).
    pub regional: Option<super::case_regional::CaseRegional>,
    /// The case's local volume change against its calibrated limit (None: the database was
    /// calibrated before local volume change was read).
    pub local_volume: Option<super::case_local_volume::CaseLocalVolume>,
}

/// Computes the deviation maps of `case` (an image on its own grid).
pub fn compute_deviation(
    db: &NormativeDb,
    case: &Image<f32>,
    options: &DeviationOptions,
) -> Result<DeviationResult, ScoreError> {
    if db.brackets.is_empty() {
        return Err(ScoreError::Model("the database has no brackets".into()));
    }
    if !(options.age_years.is_finite() && (0.0..=25.0).contains(&options.age_years)) {
        return Err(ScoreError::Model(format!(
            "case age {} years is not plausible (0–25)",
            options.age_years
        )));
    }
    let mut warnings: Vec<String> = db.calibration.iter().flat_map(|c| c.shortfalls()).collect();
    let b = db.bracket_for_age(options.age_years);
    let bracket = &db.brackets[b];
    if !bracket.contains(options.age_years) {
        warnings.push(format!(
            "age {:.2} y is outside every bracket; the nearest ({}) was used",
            options.age_years, bracket.name
        ));
    }
    let space = TemplateSpace::new(bracket.template.clone(), Some(bracket.mask.clone()))?;
    // Mapped exactly as the database's normals were (the parameters stored with it).
    let maps = map_to_template(case, &space, &db.metadata.parameters.mapping, "case")?;
    if maps.brain_extracted {
        warnings.push(
            "the case shows the whole head: its brain was extracted without a template before mapping \
             (skull, scalp and face removed); a deviation at the brain's surface may come from that mask"
                .into(),
        );
    }
    if maps.similarity < 0.5 {
        warnings.push(format!(
            "registration to the template is poor (correlation {:.2}); deviations may be artefacts",
            maps.similarity
        ));
    }
    let params = db.metadata.parameters.normative;
    let grid = space.template.grid().clone();
    let voxel_volume = {
        let s = grid.spacing();
        s[0] * s[1] * s[2]
    };
    let mut z_template = Vec::new();
    let mut thresholds = Vec::new();
    let mut clusters = Vec::new();
    let mut model_sex = None;
    let mut effective_n = 0.0;
    let mut cluster_map = vec![0f32; grid.len()];
    let floors = bracket.sd_floors(&params);
    let mut sd_floors = Vec::new();
    let mut histograms = Vec::new();
    let mut next_label = 1u32;
    let site_effects = db.calibration.as_ref().and_then(|c| c.site_effects.as_deref());
    let mut site_classes = None;
    let mut site_adjustment = None;
    let to_subject = TransformChain::new(vec![&maps.forward as &dyn SpatialTransform, &maps.affine]);
    for channel in Channel::ALL {
        let stats = bracket.channel(channel);
        let nodes = stats.nodes();
        let (lo, hi) = nodes.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), n| {
            (lo.min(n.age_years - n.sigma_years), hi.max(n.age_years + n.sigma_years))
        });
        if channel == Channel::Intensity && (options.age_years < lo || options.age_years > hi) {
            warnings.push(format!(
                "age {:.2} y is beyond the age nodes' kernels ({lo:.2}–{hi:.2} y): extrapolated",
                options.age_years
            ));
        }
        let (model, floored) =
            floored_model(stats, options.age_years, options.sex, &params, floors[channel.index()])
                .map_err(|e| ScoreError::Model(format!("{}: {e}", channel.name())))?;
        sd_floors.push(SdFloorReport {
            channel: channel.name().into(),
            sd_floor: floors[channel.index()],
            fraction_of_voxels_floored: floored,
        });
        model_sex = model.sex;
        effective_n = model.effective_n;
        let values = gather(maps.channel(channel), &space.indices);
        let mut z = model.z_scores(&values).map_err(|e| ScoreError::Model(e.to_string()))?;
        if let Some(effects) = site_effects {
            let classes = site_classes.get_or_insert_with(|| site::tissue_classes(&space));
            let classes = classes.as_ref().map_err(|e| ScoreError::Model(e.to_string()))?;
            site_adjustment = Some(site::adjust(effects, channel, classes, options.site.as_deref(), &mut z));
        }
        histograms.push(AbsZHistogram::from_z(&z));
        let z_volume = scatter(&grid, &space.indices, &z, 0.0);
        let threshold = threshold_for(db, channel);
        let mask_bool = space.mask.data().mapv(|v| v > 0.5);
        let (found, labels) = find_clusters(z_volume.data(), Some(&mask_bool), threshold.z_threshold as f32);
        let labels_flat = labels.as_slice().expect("standard layout").to_vec();
        let mut relabel = vec![0u32; found.len() + 1];
        for c in &found {
            let significant = match threshold.cluster_mass_threshold {
                Some(mass) => c.mass > mass,
                None => c.size_voxels > threshold.cluster_size_threshold_voxels,
            };
            let label = if significant {
                relabel[c.label as usize] = next_label;
                next_label += 1;
                next_label - 1
            } else {
                0
            };
            let peak_template = grid.voxel_to_world(c.peak_voxel.map(|v| v as f64));
            let region = bracket.labels.as_ref().and_then(|l| {
                let value = l.data()[c.peak_voxel].round() as i32;
                db.atlas.as_ref().and_then(|a| a.label_name(value)).map(str::to_owned)
            });
            clusters.push(ClusterReport {
                channel: channel.name().into(),
                label,
                direction: if c.sign > 0 { "above".into() } else { "below".into() },
                size_voxels: c.size_voxels,
                volume_mm3: c.size_voxels as f64 * voxel_volume,
                peak_z: c.peak_z,
                mean_z: c.mean_z,
                mass: c.mass,
                peak_template_mm: peak_template,
                peak_native_mm: to_subject.transform_point(peak_template),
                region,
                significant,
                caveat: None,
            });
        }
        for (out, &l) in cluster_map.iter_mut().zip(&labels_flat) {
            if l > 0 && relabel[l as usize] > 0 {
                *out = relabel[l as usize] as f32;
            }
        }
        z_template.push(z_volume);
        thresholds.push(threshold);
    }
    let reliability = assess_reliability(db, b, options.age_years, &histograms, &thresholds, &maps);
    if !reliability.reliable {
        let caveat = format!(
            "the comparison is unreliable ({}); this cluster may reflect the mismatch rather than the case",
            reliability.reasons.join("; ")
        );
        for c in clusters.iter_mut().filter(|c| c.significant) {
            c.caveat = Some(caveat.clone());
        }
        warnings.insert(
            0,
            format!(
                "COMPARISON UNRELIABLE: the case lies outside what the database's normals represent: {}",
                reliability.reasons.join("; ")
            ),
        );
    }
    warnings.extend(reliability.notes.iter().cloned());
    if let Some(adjustment @ SiteAdjustment::Unseen { .. }) = &site_adjustment {
        warnings.push(adjustment.describe());
    }
    clusters.sort_by(|a, b| b.significant.cmp(&a.significant).then(b.size_voxels.cmp(&a.size_voxels)));
    let z_template: [Image<f32>; 2] = [z_template[0].clone(), z_template[1].clone()];
    let local_volume = db.calibration.as_ref().and_then(|c| c.local_volume.as_ref()).map(|calibration| {
        let mut local = super::case_local_volume::case_local_volume(
            db,
            bracket,
            calibration,
            &z_template[Channel::LogJacobian.index()],
            &to_subject,
        );
        if !reliability.reliable {
            let caveat = format!(
                "the comparison is unreliable ({}); this change may reflect the mismatch rather than the case",
                reliability.reasons.join("; ")
            );
            local.findings.iter_mut().for_each(|f| f.caveat = Some(caveat.clone()));
        }
        local
    });
    let clusters_template = scatter(&grid, &(0..grid.len()).collect::<Vec<_>>(), &cluster_map, 0.0);
    let native = case.grid();
    let z_native = [
        maps.to_native(&z_template[0], native, Interpolation::Linear),
        maps.to_native(&z_template[1], native, Interpolation::Linear),
    ];
    let clusters_native = maps.to_native(&clusters_template, native, Interpolation::Nearest);
    let regions = region_summary(db, b, &z_template, &thresholds, options.max_regions);
    let regional = match bracket.priors {
        None => None,
        Some(_) => match super::case_regional::case_regional(
            db,
            bracket,
            &maps,
            options.age_years,
            options.sex,
            options.site.as_deref(),
        ) {
            Ok(regional) => Some(regional),
            Err(message) => {
                warnings.push(format!("regional volumes could not be measured: {message}"));
                None
            }
        },
    };
    Ok(DeviationResult {
        regional,
        local_volume,
        bracket: bracket.name.clone(),
        age_years: options.age_years,
        sex: options.sex,
        model_sex,
        effective_n,
        z_template,
        z_native,
        clusters_template,
        clusters_native,
        clusters,
        regions,
        thresholds,
        registration_similarity: maps.similarity,
        warnings,
        reliability,
        sd_floors,
        site_adjustment,
        maps,
    })
}

/// How far, as a fraction of the bracket's width (at most [`AGE_MARGIN_MAX_YEARS`]), a case's
/// age may lie outside the ages of the bracket's normals before the comparison is unreliable.
pub const AGE_MARGIN_FRACTION: f64 = 0.1;
/// Upper bound of the age margin (years).
pub const AGE_MARGIN_MAX_YEARS: f64 = 1.0;

/// The case's global indices against the calibration normals', and its age against the
/// bracket's normals' ages.
fn assess_reliability(
    db: &NormativeDb,
    bracket: usize,
    age_years: f64,
    histograms: &[AbsZHistogram],
    thresholds: &[ThresholdReport],
    maps: &SubjectMaps,
) -> Reliability {
    let b = &db.brackets[bracket];
    let indices = GlobalIndices::from_histograms(
        [&histograms[0], &histograms[1]],
        [thresholds[0].z_threshold, thresholds[1].z_threshold],
        maps.similarity,
        maps.histogram_distance,
        maps.mask_dice,
    );
    let age_problem = if b.contains(age_years) {
        let ages: Vec<f64> =
            db.subjects.iter().filter(|s| s.qc_passed && s.bracket == b.name).map(|s| s.age_years).collect();
        let margin = (AGE_MARGIN_FRACTION * (b.max_years - b.min_years)).min(AGE_MARGIN_MAX_YEARS);
        age_outside_normals(age_years, &ages, margin)
    } else {
        Some(format!(
            "age {age_years:.2} y is outside every bracket of the database: the model is extrapolated"
        ))
    };
    match db.ood_reference() {
        Some(reference) => Reliability::new(reference.assess(&indices), age_problem, Vec::new()),
        None => Reliability::new(
            Vec::new(),
            age_problem,
            vec!["the database keeps no null summaries, so the case's global indices could not be compared with \
                  its normals"
                .into()],
        ),
    }
}

/// The thresholds of a channel: calibrated when the database has a calibration, else the
/// Gaussian threshold at the nominal rate with no cluster threshold.
fn threshold_for(db: &NormativeDb, channel: Channel) -> ThresholdReport {
    let p = &db.metadata.parameters;
    match &db.calibration {
        Some(c) => {
            let cc = c.channel(channel);
            ThresholdReport {
                channel: channel.name().into(),
                z_threshold: cc.voxel.z_threshold,
                cluster_mass_threshold: cc
                    .cluster
                    .mass_threshold
                    .is_finite()
                    .then_some(cc.cluster.mass_threshold),
                cluster_size_threshold_voxels: cc.cluster.size_threshold_voxels,
                nominal_voxel_rate: cc.voxel.nominal_rate,
                achieved_voxel_rate: Some(cc.voxel.achieved_rate),
                nominal_cluster_rate: cc.cluster.nominal_rate,
                achieved_cluster_rate: Some(cc.cluster.achieved_rate),
                calibrated: true,
                calibration_stale: c.stale,
            }
        }
        None => ThresholdReport {
            channel: channel.name().into(),
            z_threshold: gaussian_two_sided(p.voxel_rate),
            cluster_mass_threshold: None,
            cluster_size_threshold_voxels: 0,
            nominal_voxel_rate: p.voxel_rate,
            achieved_voxel_rate: None,
            nominal_cluster_rate: p.cluster_rate,
            achieved_cluster_rate: None,
            calibrated: false,
            calibration_stale: false,
        },
    }
}

fn region_summary(
    db: &NormativeDb,
    bracket: usize,
    z: &[Image<f32>; 2],
    thresholds: &[ThresholdReport],
    max_regions: usize,
) -> Vec<RegionReport> {
    let b = &db.brackets[bracket];
    let Some(labels) = &b.labels else { return Vec::new() };
    let mask = b.mask.as_slice();
    let labels = labels.as_slice();
    let (zi, zj) = (z[0].as_slice(), z[1].as_slice());
    let (ti, tj) = (thresholds[0].z_threshold as f32, thresholds[1].z_threshold as f32);
    // label → (voxels, Σz_i, beyond_i, Σz_j, beyond_j)
    let mut table: std::collections::BTreeMap<i32, (usize, f64, usize, f64, usize)> = Default::default();
    for i in 0..labels.len() {
        let label = labels[i].round() as i32;
        if label <= 0 || mask[i] <= 0.5 {
            continue;
        }
        let e = table.entry(label).or_default();
        e.0 += 1;
        e.1 += zi[i] as f64;
        e.2 += usize::from(zi[i].abs() > ti);
        e.3 += zj[i] as f64;
        e.4 += usize::from(zj[i].abs() > tj);
    }
    let mut regions: Vec<RegionReport> = table
        .into_iter()
        .map(|(label, (n, si, bi, sj, bj))| RegionReport {
            label,
            name: db
                .atlas
                .as_ref()
                .and_then(|a| a.label_name(label))
                .map(str::to_owned)
                .unwrap_or_else(|| format!("label {label}")),
            voxels: n,
            intensity_mean_z: si / n as f64,
            intensity_fraction_beyond: bi as f64 / n as f64,
            logjac_mean_z: sj / n as f64,
            logjac_fraction_beyond: bj as f64 / n as f64,
        })
        .collect();
    let score = |r: &RegionReport| {
        r.intensity_fraction_beyond.max(r.logjac_fraction_beyond) * 10.0
            + r.intensity_mean_z.abs().max(r.logjac_mean_z.abs())
    };
    regions.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.label.cmp(&b.label)));
    regions.truncate(max_regions);
    regions
}
