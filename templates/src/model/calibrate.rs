//! Leave-one-out calibration: each calibration normal is scored against its bracket's
//! statistics without itself, corrected for its site when the normals come from several, and
//! the null summaries are pooled into thresholds.

use super::ModelError;
use super::accumulate::{BracketInput, BuildOptions, MIN_CALIBRATION_NULLS, MappedNormal};
use super::database::{CalibrationRecord, Channel, SubjectNull, SubjectRecord};
use super::site;
use super::space::{TemplateSpace, gather, scatter};
use crate::calibration::{LocalVolumeNull, NullSummary};
use crate::normative::NormativeParams;
use crate::safeguards;
use crate::site_effects::{NormalMoments, SiteMoments, SiteNull};
use crate::stats::NormativeAccumulator;
use rayon::prelude::*;

/// One normal's maps scored against `stats` (statistics that do not contain it): z per mask
/// voxel, per channel.
pub fn held_out_z(
    space: &TemplateSpace,
    stats: &[NormativeAccumulator; 2],
    record: &SubjectRecord,
    values: &[Vec<f32>; 2],
    params: &NormativeParams,
) -> Result<[Vec<f32>; 2], ModelError> {
    let floors = safeguards::channel_floors(params, &gather(&space.template, &space.indices));
    let score = |channel: Channel| -> Result<Vec<f32>, ModelError> {
        let c = channel.index();
        let (model, _) =
            safeguards::floored_model(&stats[c], record.age_years, Some(record.sex), params, floors[c])
                .map_err(|e| ModelError::Config(format!("calibration of {}: {e}", record.pseudonym)))?;
        model.z_scores(&values[c]).map_err(|e| ModelError::Config(e.to_string()))
    };
    Ok([score(Channel::Intensity)?, score(Channel::LogJacobian)?])
}

/// The null summaries of one normal from its held-out z per channel, and the extremes of its
/// log-Jacobian z averaged over neighbourhoods (local volume change).
pub fn null_from_z(space: &TemplateSpace, record: &SubjectRecord, z: &[Vec<f32>; 2]) -> SubjectNull {
    let mask = space.mask.data().mapv(|v| v > 0.5);
    let volume = |z: &[f32]| scatter(space.template.grid(), &space.indices, z, 0.0);
    let summary = |z: &[f32]| NullSummary::from_map(volume(z).data(), Some(&mask));
    let logjac = Channel::LogJacobian.index();
    SubjectNull {
        pseudonym: record.pseudonym.clone(),
        channels: [summary(&z[0]), summary(&z[1])],
        local_volume: Some(LocalVolumeNull::from_map(&volume(&z[logjac]), &space.mask)),
    }
}

/// The calibration once `record` joins the database: the new normal is scored against
/// `stats` (the statistics without it — its exact leave-one-out reference), its site moments
/// join the calibration's and the site effects are re-estimated from them (databases that
/// keep no moments keep their effects), its z is corrected for its site and its null summary
/// pooled with the others. `None` when `calibration` keeps no null summaries.
#[allow(clippy::too_many_arguments)]
pub fn with_added_normal(
    calibration: &CalibrationRecord,
    space: &TemplateSpace,
    stats: &[NormativeAccumulator; 2],
    record: &SubjectRecord,
    values: &[Vec<f32>; 2],
    params: &NormativeParams,
    voxel_rate: f64,
    cluster_rate: f64,
) -> Result<Option<CalibrationRecord>, ModelError> {
    if calibration.nulls.is_empty() {
        return Ok(None);
    }
    let site_error = |e: crate::site_effects::SiteEffectError| ModelError::Config(e.to_string());
    let mut z = held_out_z(space, stats, record, values, params)?;
    let classes = site::tissue_classes(space).map_err(site_error)?;
    let (moments, effects) = if calibration.site_moments.is_empty() {
        (Vec::new(), calibration.site_effects.clone())
    } else {
        let moments: Vec<SiteMoments> = calibration
            .site_moments
            .iter()
            .zip(&z)
            .map(|(m, z)| {
                let null = SiteNull { site: &record.scanner, classes: &classes, z };
                let added = NormalMoments::of(&record.pseudonym, &null, m.classes);
                SiteMoments::new(
                    m.classes,
                    m.min_site_normals,
                    m.normals.iter().cloned().chain([added]).collect(),
                )
            })
            .collect::<Result<_, _>>()
            .map_err(site_error)?;
        let effects = site::effects(&moments);
        (moments, effects)
    };
    if let Some(effects) = &effects {
        for channel in Channel::ALL {
            site::adjust(effects, channel, &classes, Some(&record.scanner), &mut z[channel.index()]);
        }
    }
    let mut nulls = calibration.nulls.clone();
    nulls.push(null_from_z(space, record, &z));
    let Ok(mut updated) = CalibrationRecord::from_nulls(nulls, voxel_rate, cluster_rate) else {
        return Ok(None);
    };
    updated.site_moments = moments;
    updated.site_effects = effects;
    Ok(Some(updated))
}

/// The normals whose leave-one-out maps make the calibration's null: the QC-passed normals
/// that were not in any template when enough of them exist, else every QC-passed normal (the
/// template members then by their maps as new cases, [`MappedNormal::calibration_values`]).
pub fn calibration_normals<'a>(mapped: &'a [MappedNormal], options: &BuildOptions) -> Vec<&'a MappedNormal> {
    let passed: Vec<&MappedNormal> = mapped.iter().filter(|m| m.record.qc_passed).collect();
    let outside: Vec<&MappedNormal> =
        passed.iter().copied().filter(|m| !options.template_members.contains(&m.record.pseudonym)).collect();
    if outside.len() >= MIN_CALIBRATION_NULLS {
        return outside;
    }
    let members_as_members = passed
        .iter()
        .filter(|m| options.template_members.contains(&m.record.pseudonym) && m.as_new_case.is_none())
        .count();
    if members_as_members > 0 {
        tracing::warn!(
            outside = outside.len(),
            needed = MIN_CALIBRATION_NULLS,
            members_as_members,
            "too few normals outside the templates: calibrating on every normal, some template members by their own mapping (thresholds are optimistic for new cases)"
        );
    } else if !options.template_members.is_empty() {
        tracing::info!(
            outside = outside.len(),
            needed = MIN_CALIBRATION_NULLS,
            "too few normals outside the templates: calibrating on every normal, template members mapped again as new cases"
        );
    }
    passed
}

/// Leave-one-out calibration over the mapped normals: each calibration normal (see
/// [`calibration_normals`]) is scored against its bracket's statistics without itself. When
/// the normals come from several sites, the site effects are estimated from these z-maps and
/// each normal's own removed (see [`site`]). The null summaries are pooled over brackets
/// per channel (see [`CalibrationRecord::from_nulls`]).
pub fn calibrate(
    brackets: &[BracketInput],
    stats: &[[NormativeAccumulator; 2]],
    mapped: &[MappedNormal],
    options: &BuildOptions,
) -> Result<CalibrationRecord, ModelError> {
    let members = calibration_normals(mapped, options);
    let mut z: Vec<[Vec<f32>; 2]> = members
        .par_iter()
        .with_max_len(1)
        .map(|m| {
            let mut held_out = stats[m.bracket].clone();
            for (c, accumulator) in held_out.iter_mut().enumerate() {
                accumulator.remove_subject(m.record.age_years, m.record.sex, &m.values[c])?;
            }
            let values = m.calibration_values();
            held_out_z(&brackets[m.bracket].space, &held_out, &m.record, values, &options.normative)
        })
        .collect::<Result<_, ModelError>>()?;
    let site_error = |e: crate::site_effects::SiteEffectError| ModelError::Config(e.to_string());
    let classes: Vec<Vec<u8>> = brackets
        .iter()
        .map(|b| site::tissue_classes(&b.space))
        .collect::<Result<_, _>>()
        .map_err(site_error)?;
    let site_moments = if options.site_effects {
        site::moments(&members, &z, &classes).map_err(site_error)?
    } else {
        Vec::new()
    };
    let site_effects = site::effects(&site_moments);
    if let Some(effects) = &site_effects {
        for (m, z) in members.iter().zip(z.iter_mut()) {
            for channel in Channel::ALL {
                let classes = &classes[m.bracket];
                site::adjust(effects, channel, classes, Some(&m.record.scanner), &mut z[channel.index()]);
            }
        }
    }
    let nulls: Vec<SubjectNull> =
        members.iter().zip(&z).map(|(m, z)| null_from_z(&brackets[m.bracket].space, &m.record, z)).collect();
    let mut record = CalibrationRecord::from_nulls(nulls, options.voxel_rate, options.cluster_rate)
        .map_err(|e| ModelError::Config(format!("calibration: {e}")))?;
    record.site_effects = site_effects;
    record.site_moments = site_moments;
    for shortfall in record.shortfalls() {
        tracing::warn!("{shortfall}");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::super::accumulate::calibrates_on_members;
    use super::*;
    use crate::stats::Sex;

    fn mapped_normal(id: &str, qc_passed: bool) -> MappedNormal {
        MappedNormal {
            record: SubjectRecord {
                pseudonym: id.into(),
                age_years: 5.0,
                sex: Sex::Female,
                scanner: String::new(),
                bracket: "b".into(),
                qc_similarity: 0.9,
                qc_histogram_distance: 0.02,
                qc_mask_dice: 0.95,
                qc_passed,
            },
            bracket: 0,
            values: [Vec::new(), Vec::new()],
            tissues: [Vec::new(), Vec::new(), Vec::new()],
            as_new_case: None,
            native: None,
        }
    }

    #[test]
    fn calibration_leaves_out_template_members_when_enough_others_exist() {
        let mapped: Vec<MappedNormal> =
            (0..24).map(|i| mapped_normal(&format!("n{i:02}"), i != 23)).collect();
        let ids = |chosen: Vec<&MappedNormal>| -> Vec<String> {
            chosen.iter().map(|m| m.record.pseudonym.clone()).collect()
        };
        // No members known: every QC-passed normal.
        let mut options = BuildOptions::default();
        assert_eq!(calibration_normals(&mapped, &options).len(), 23);
        // Half of them in the templates: the other QC-passed half (11 ≥ the minimum).
        options.template_members = (0..12).map(|i| format!("n{:02}", 2 * i)).collect();
        let chosen = ids(calibration_normals(&mapped, &options));
        assert_eq!(chosen.len(), 11);
        assert!(chosen.iter().all(|id| !options.template_members.contains(id) && id != "n23"));
        // Too few outside the templates: back to every QC-passed normal.
        options.template_members = (0..16).map(|i| format!("n{i:02}")).collect();
        assert_eq!(calibration_normals(&mapped, &options).len(), 23);
    }

    #[test]
    fn members_are_calibrated_on_their_maps_as_new_cases() {
        let grid = pedinorm_registration::Grid::axis_aligned([8, 8, 8], [2.0; 3], [0.0; 3]).unwrap();
        let mut template = pedinorm_registration::Image::filled(grid.clone(), 0.0f32);
        for (i, v) in template.as_mut_slice().iter_mut().enumerate() {
            *v = 50.0 + (i % 11) as f32 * 10.0;
        }
        let mask = template.map(|_| 1.0f32);
        let space = TemplateSpace::new(template, Some(mask)).unwrap();
        let brackets =
            [BracketInput { name: "b".into(), min_years: 0.0, max_years: 10.0, space, labels: None }];
        let n = brackets[0].space.indices.len();
        let mut state = 7u64;
        let mut noise = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32
        };
        let mapped: Vec<MappedNormal> = (0..12)
            .map(|s| {
                let mut m = mapped_normal(&format!("n{s:02}"), true);
                m.values =
                    [(0..n).map(|_| 100.0 + noise()).collect(), (0..n).map(|_| 0.01 * noise()).collect()];
                // A new case is registered less closely: its maps stray further.
                m.as_new_case = Some([
                    m.values[0].iter().map(|v| v + 2.0 * noise()).collect(),
                    m.values[1].iter().map(|v| v + 0.02 * noise()).collect(),
                ]);
                m
            })
            .collect();
        let options = BuildOptions {
            template_members: mapped.iter().map(|m| m.record.pseudonym.clone()).collect(),
            site_effects: false,
            ..BuildOptions::default()
        };
        let stats = super::super::accumulate(&brackets, &mapped, &options).unwrap();
        let as_new = calibrate(&brackets, &stats, &mapped, &options).unwrap();
        let own: Vec<MappedNormal> =
            mapped.into_iter().map(|m| MappedNormal { as_new_case: None, ..m }).collect();
        let as_members = calibrate(&brackets, &stats, &own, &options).unwrap();
        for channel in Channel::ALL {
            let (new, member) =
                (as_new.channel(channel).voxel.z_threshold, as_members.channel(channel).voxel.z_threshold);
            assert!(new > 1.5 * member, "{channel:?}: as new cases {new}, as members {member}");
        }
    }

    #[test]
    fn members_calibrate_only_when_too_few_others_exist() {
        let mut options = BuildOptions::default();
        let ids: Vec<String> = (0..14).map(|i| format!("n{i:02}")).collect();
        let all = || ids.iter().map(String::as_str);
        assert!(!calibrates_on_members(&options, all()), "no templates known");
        options.template_members = ids[..4].iter().cloned().collect();
        assert!(!calibrates_on_members(&options, all()), "10 outside the templates");
        options.template_members = ids[..5].iter().cloned().collect();
        assert!(calibrates_on_members(&options, all()), "9 outside the templates");
    }
}
