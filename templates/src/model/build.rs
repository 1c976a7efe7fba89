//! A whole database from mapped normals, and one more normal added to an existing database.

use super::ModelError;
use super::accumulate::{
    BracketInput, BuildOptions, MappedNormal, NormalSubject, accumulate, bracket_priors,
};
use super::calibrate::{calibrate, with_added_normal};
use super::database::{AtlasTable, Channel, Metadata, NormativeDb, SubjectRecord};
use super::mapping::map_to_template;
use super::regional::{normals_table, regional_volumes, row_of};
use super::space::{TemplateSpace, gather};
use super::tissue_priors::{TissuePriors, member_tissues, template_tissues};
use crate::age::containing_bracket;
use crate::stats::NormativeAccumulator;

/// Builds a whole database from mapped normals, created at `now_utc` (RFC 3339).
pub fn assemble(
    brackets: &[BracketInput],
    mapped: &[MappedNormal],
    options: &BuildOptions,
    atlas: Option<AtlasTable>,
    now_utc: &str,
) -> Result<NormativeDb, ModelError> {
    let stats = accumulate(brackets, mapped, options)?;
    assemble_with_stats(brackets, stats, mapped, options, atlas, now_utc)
}

/// The database of statistics accumulated elsewhere (e.g. merged from partial sums in a fixed
/// order): the normals' records and leave-one-out calibration, as [`assemble`] gives them.
pub fn assemble_with_stats(
    brackets: &[BracketInput],
    stats: Vec<[NormativeAccumulator; 2]>,
    mapped: &[MappedNormal],
    options: &BuildOptions,
    atlas: Option<AtlasTable>,
    now_utc: &str,
) -> Result<NormativeDb, ModelError> {
    let passed = mapped.iter().filter(|m| m.record.qc_passed).count();
    let calibration = if passed >= 3 { Some(calibrate(brackets, &stats, mapped, options)?) } else { None };
    let priors = bracket_priors(brackets, mapped);
    let bracket_dbs = brackets
        .iter()
        .zip(stats)
        .zip(priors)
        .map(|((b, stats), priors)| b.with_stats(stats, b.labels.clone(), priors))
        .collect::<Vec<_>>();
    let regional = normals_table(&bracket_dbs, mapped, atlas.as_ref())?;
    let mut db = NormativeDb {
        metadata: Metadata::new(
            options.build_parameters(),
            &format!("built from {} normals", mapped.len()),
            now_utc,
        ),
        brackets: bracket_dbs,
        subjects: mapped.iter().map(|m| m.record.clone()).collect(),
        calibration,
        atlas,
        regional,
        centiles: None,
    };
    db.refit_centiles();
    Ok(db)
}

/// Adds one normal to an existing database: the statistics are updated in place and the
/// calibration recomputed with the new normal's null (its maps scored against the database
/// before the addition, which is its leave-one-out reference). A database without null
/// summaries (schema version 1) keeps its thresholds, marked stale. The history records the
/// addition at `now_utc` (RFC 3339). The normal is mapped with the database's own mapping
/// parameters, exactly as its other normals were.
pub fn add_subject(
    db: &mut NormativeDb,
    subject: &NormalSubject,
    now_utc: &str,
) -> Result<SubjectRecord, ModelError> {
    if db.subjects.iter().any(|s| s.pseudonym == subject.pseudonym) {
        return Err(ModelError::Config(format!("subject {} is already in the database", subject.pseudonym)));
    }
    if !(subject.age_years.is_finite() && (0.0..=25.0).contains(&subject.age_years)) {
        return Err(ModelError::Config(format!(
            "subject {}: implausible age {}",
            subject.pseudonym, subject.age_years
        )));
    }
    let b = containing_bracket(&db.brackets, subject.age_years).ok_or_else(|| {
        ModelError::Config(format!("age {:.2} is outside every bracket", subject.age_years))
    })?;
    let bracket = &db.brackets[b];
    let space = TemplateSpace::new(bracket.template.clone(), Some(bracket.mask.clone()))?;
    let mapping = db.metadata.parameters.mapping.clone();
    let maps = map_to_template(&subject.image, &space, &mapping, &subject.pseudonym)?;
    let record = SubjectRecord {
        pseudonym: subject.pseudonym.clone(),
        age_years: subject.age_years,
        sex: subject.sex,
        scanner: subject.scanner.clone(),
        bracket: bracket.name.clone(),
        qc_similarity: maps.similarity,
        qc_histogram_distance: maps.histogram_distance,
        qc_mask_dice: maps.mask_dice,
        qc_passed: maps.similarity >= 0.5,
    };
    if record.qc_passed {
        let values = [gather(&maps.intensity, &space.indices), gather(&maps.logjac, &space.indices)];
        let tissues = member_tissues(&maps.warped, &space, &template_tissues(&space)?, &subject.pseudonym)?;
        // The database before the addition is exactly the new normal's leave-one-out reference.
        let recalibrated = match &db.calibration {
            Some(c) if !c.stale => {
                let p = &db.metadata.parameters;
                with_added_normal(
                    c,
                    &space,
                    &db.brackets[b].stats,
                    &record,
                    &values,
                    &p.normative,
                    p.voxel_rate,
                    p.cluster_rate,
                )?
            }
            _ => None,
        };
        let bracket = &mut db.brackets[b];
        bracket.priors = Some(match &bracket.priors {
            Some(priors) => priors.with_member(&space, &tissues),
            None => TissuePriors::from_members(&space, &[&tissues]).expect("one member"),
        });
        for channel in Channel::ALL {
            bracket.stats[channel.index()].add_subject(
                subject.age_years,
                subject.sex,
                &values[channel.index()],
            )?;
        }
        // The new normal's volumes, measured with the priors that now include it.
        if let Some(table) = db.regional.as_mut() {
            let volumes =
                regional_volumes(&maps.native(), &db.brackets[b], db.atlas.as_ref(), &subject.pseudonym)?;
            if volumes.measures.names == table.names {
                table.rows.push(row_of(&record, volumes.measures.values_ml));
            }
        }
        match (recalibrated, db.calibration.as_mut()) {
            (Some(c), _) => db.calibration = Some(c),
            // Without null summaries (schema version 1) the thresholds cannot be recomputed.
            (None, Some(c)) => c.stale = true,
            (None, None) => {}
        }
    }
    db.subjects.push(record.clone());
    db.refit_centiles();
    db.metadata.touch(&format!("added subject {}", subject.pseudonym), now_utc);
    Ok(record)
}
