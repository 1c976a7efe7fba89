//! Normals into statistics: the inputs of a build (normals, brackets, options), every normal
//! mapped to its bracket's template, and the mapped normals accumulated into mergeable
//! age-node statistics per bracket and channel.

use super::ModelError;
use super::database::{BracketDb, BuildParameters, SubjectRecord};
use super::mapping::{MappingParams, SubjectMaps, map_to_template};
use super::regional::NativeSubject;
use super::space::{MATCH_PERCENTILES, TemplateSpace, gather, recorded_similarity, without_member};
use super::tissue_priors::{TissuePriors, member_tissues, template_tissues};
use crate::age::{AgeRange, containing_bracket};
use crate::normative::NormativeParams;
use crate::stats::{AgeNode, NormativeAccumulator, Sex};
use pedinorm_registration::Image;
use rayon::prelude::*;
use std::collections::BTreeSet;

/// One normal subject offered to the database.
#[derive(Debug, Clone)]
pub struct NormalSubject {
    /// Pseudonym (no identity).
    pub pseudonym: String,
    /// Age at scan, years.
    pub age_years: f64,
    /// Sex.
    pub sex: Sex,
    /// Scanner or site label.
    pub scanner: String,
    /// The image (T1-weighted, any grid).
    pub image: Image<f32>,
}

/// A bracket to build: its age range and template.
#[derive(Debug, Clone)]
pub struct BracketInput {
    /// Bracket name.
    pub name: String,
    /// Lower bound (years, inclusive).
    pub min_years: f64,
    /// Upper bound (years, exclusive).
    pub max_years: f64,
    /// Template and mask.
    pub space: TemplateSpace,
    /// Atlas labels on the template grid, if any.
    pub labels: Option<Image<f32>>,
}

impl BracketInput {
    /// The database's bracket: this bracket's template and mask with `stats`, `labels` and
    /// tissue `priors`.
    pub fn with_stats(
        &self,
        stats: [NormativeAccumulator; 2],
        labels: Option<Image<f32>>,
        priors: Option<TissuePriors>,
    ) -> BracketDb {
        BracketDb {
            name: self.name.clone(),
            min_years: self.min_years,
            max_years: self.max_years,
            template: self.space.template.clone(),
            mask: self.space.mask.clone(),
            labels,
            priors,
            stats,
        }
    }
}

/// Parameters of a database build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Mapping of subjects into template space.
    pub mapping: MappingParams,
    /// Normative model used when scoring.
    pub normative: NormativeParams,
    /// Age nodes per bracket (evenly placed inside it).
    pub nodes_per_bracket: usize,
    /// Minimum kernel mass (subjects' worth of weight) at every node; kernels widen to reach it.
    pub min_node_subjects: f64,
    /// Nominal voxelwise false-positive rate of the calibration.
    pub voxel_rate: f64,
    /// Nominal per-image false-cluster rate of the calibration.
    pub cluster_rate: f64,
    /// Subjects whose warped image correlates with the template below this fail QC.
    pub min_similarity: f64,
    /// Ids of the normals the templates were built from. Their maps are closer to the template
    /// than a new case's can be, so the calibration's null comes from the other normals when
    /// at least [`MIN_CALIBRATION_NULLS`] of them passed QC, else from every normal with the
    /// members mapped again as new cases ([`map_as_new_case`]).
    pub template_members: BTreeSet<String>,
    /// Estimate and apply scanner-site effects when the calibration normals come from several
    /// sites (see [`super::site`]); off, every site is pooled as one.
    pub site_effects: bool,
}

/// The fewest normals outside the templates that calibrate on their own; with fewer, every
/// QC-passed normal is used, the template members by their maps as new cases.
pub const MIN_CALIBRATION_NULLS: usize = 10;

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            mapping: MappingParams::standard(),
            normative: NormativeParams::default(),
            nodes_per_bracket: 2,
            min_node_subjects: 6.0,
            voxel_rate: 0.001,
            cluster_rate: 0.05,
            min_similarity: 0.5,
            template_members: BTreeSet::new(),
            site_effects: true,
        }
    }
}

impl BuildOptions {
    /// The parameters recorded in the database.
    pub fn build_parameters(&self) -> BuildParameters {
        BuildParameters {
            mapping: self.mapping.clone(),
            normative: self.normative,
            voxel_rate: self.voxel_rate,
            cluster_rate: self.cluster_rate,
            intensity_normalization: format!(
                "bias-field correction (N4-style), then piecewise-linear matching to the template at percentiles {MATCH_PERCENTILES:?} inside its mask{}",
                match self.mapping.differential_bias_sigma_mm {
                    Some(sigma) =>
                        format!(", then differential bias correction against the template (σ {sigma} mm)"),
                    None => String::new(),
                }
            ),
            registration: self.mapping.describe(),
        }
    }
}

/// Age nodes of a bracket: `count` evenly spaced inside it, kernels adapted to the ages.
pub fn bracket_nodes(
    min_years: f64,
    max_years: f64,
    count: usize,
    ages: &[f64],
    min_subjects: f64,
) -> Vec<AgeNode> {
    let count = count.max(1);
    let width = max_years - min_years;
    let node_ages: Vec<f64> =
        (0..count).map(|i| min_years + width * (i as f64 + 0.5) / count as f64).collect();
    let base = (width / count as f64 / 2.0).max(0.1);
    AgeNode::adaptive(&node_ages, ages, base, (width * 2.0).max(base), min_subjects)
}

/// A normal subject mapped to its bracket, kept for accumulation and leave-one-out.
#[derive(Debug, Clone)]
pub struct MappedNormal {
    /// The database record.
    pub record: SubjectRecord,
    /// Bracket index.
    pub bracket: usize,
    /// Masked values per channel ([`Channel::index`](super::Channel::index) order).
    pub values: [Vec<f32>; 2],
    /// Masked tissue probabilities in template space
    /// ([`TISSUES`](super::tissue_priors::TISSUES) order), see
    /// [`member_tissues`].
    pub tissues: [Vec<f32>; 3],
    /// The normal on its own grid with the inverse mapping, for its regional volumes (`None`:
    /// not kept, and the database gets no regional table).
    pub native: Option<NativeSubject>,
    /// For a template member that the calibration has to use, its masked values per channel
    /// as a new case gets them (see [`map_as_new_case`]); `None`: `values` serve.
    pub as_new_case: Option<[Vec<f32>; 2]>,
}

impl MappedNormal {
    /// The values the calibration scores: the normal's maps as a new case gets them.
    pub fn calibration_values(&self) -> &[Vec<f32>; 2] {
        self.as_new_case.as_ref().unwrap_or(&self.values)
    }
}

impl AgeRange for BracketInput {
    fn min_years(&self) -> f64 {
        self.min_years
    }
    fn max_years(&self) -> f64 {
        self.max_years
    }
}

/// How many normals of bracket `bracket` the template was built from, when `id` is one of them
/// (see [`recorded_similarity`]); `normals` are the build's (id, bracket) pairs. Members absent
/// from the build are not counted, which can only make the correction larger.
pub fn template_members_of<'a>(
    options: &BuildOptions,
    id: &str,
    bracket: usize,
    normals: impl Iterator<Item = (&'a str, usize)>,
) -> Option<usize> {
    options.template_members.contains(id).then(|| {
        normals.filter(|&(other, b)| b == bracket && options.template_members.contains(other)).count()
    })
}

/// Whether the calibration will have to use template members: the build's `ids` hold fewer
/// than [`MIN_CALIBRATION_NULLS`] normals outside the templates. Their maps for the calibration
/// then come from [`map_as_new_case`].
pub fn calibrates_on_members<'a>(options: &BuildOptions, ids: impl Iterator<Item = &'a str>) -> bool {
    !options.template_members.is_empty()
        && ids.filter(|id| !options.template_members.contains(*id)).count() < MIN_CALIBRATION_NULLS
}

/// A template member mapped as a new case would be: the image mapped again, to the template
/// without it ([`without_member`]; `warped` is its first mapping's warped image, `members` the
/// template's member count). A member registered to an average of itself is aligned more
/// closely than a new case can be, so leave-one-out maps and quality figures from its own
/// mapping make limits that a new case exceeds too often (13 real adult normals: log-Jacobian
/// threshold |z| 4.06 from the members' own maps, 4.30 from these). `None` for a template of
/// fewer than two members.
pub fn map_as_new_case(
    image: &Image<f32>,
    space: &TemplateSpace,
    warped: &Image<f32>,
    members: usize,
    mapping: &MappingParams,
    id: &str,
) -> Result<Option<SubjectMaps>, ModelError> {
    without_member(space, warped, members)
        .map(|without| map_to_template(image, &without, mapping, id))
        .transpose()
}

/// [`map_as_new_case`] for a normal that needs it: a template member (`members`, see
/// [`template_members_of`]) of a build whose calibration uses members (`on_members`, see
/// [`calibrates_on_members`]); `maps` is its first mapping. `None` for any other normal.
pub fn map_again_if_calibrated(
    image: &Image<f32>,
    space: &TemplateSpace,
    maps: &SubjectMaps,
    members: Option<usize>,
    on_members: bool,
    mapping: &MappingParams,
    id: &str,
) -> Result<Option<SubjectMaps>, ModelError> {
    match members {
        Some(members) if on_members => map_as_new_case(image, space, &maps.warped, members, mapping, id),
        _ => Ok(None),
    }
}

/// A normal's quality figures as the database records them: from its mapping as a new case
/// when it was mapped again ([`map_as_new_case`]), else from its own mapping, with a template
/// member's similarity measured against the template without it ([`recorded_similarity`]).
pub fn recorded_quality(
    space: &TemplateSpace,
    maps: &SubjectMaps,
    as_new_case: Option<&SubjectMaps>,
    members: Option<usize>,
) -> (f64, f64, f64) {
    match as_new_case {
        Some(again) => (again.similarity, again.histogram_distance, again.mask_dice),
        None => (recorded_similarity(space, &maps.warped, members), maps.histogram_distance, maps.mask_dice),
    }
}

/// Maps every normal to its bracket (in parallel over subjects; each result is independent,
/// so the order and values do not depend on the thread count). `progress` is called once per
/// finished subject.
pub fn map_normals(
    normals: &[NormalSubject],
    brackets: &[BracketInput],
    options: &BuildOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<MappedNormal>, ModelError> {
    let mut seen = std::collections::HashSet::new();
    for n in normals {
        if !seen.insert(&n.pseudonym) {
            return Err(ModelError::Config(format!("subject {} is listed twice", n.pseudonym)));
        }
        if !(n.age_years.is_finite() && (0.0..=25.0).contains(&n.age_years)) {
            return Err(ModelError::Config(format!(
                "subject {}: implausible age {}",
                n.pseudonym, n.age_years
            )));
        }
        if containing_bracket(brackets, n.age_years).is_none() {
            return Err(ModelError::Config(format!(
                "subject {}: age {:.2} is outside every bracket",
                n.pseudonym, n.age_years
            )));
        }
    }
    let tissues_of_templates: Vec<[Image<f32>; 3]> =
        brackets.iter().map(|b| template_tissues(&b.space)).collect::<Result<_, _>>()?;
    let ids_and_brackets: Vec<(&str, usize)> = normals
        .iter()
        .map(|n| (n.pseudonym.as_str(), containing_bracket(brackets, n.age_years).expect("checked")))
        .collect();
    let on_members = calibrates_on_members(options, ids_and_brackets.iter().map(|&(id, _)| id));
    normals
        .par_iter()
        .with_max_len(1)
        .map(|n| {
            let b = containing_bracket(brackets, n.age_years).expect("checked");
            let space = &brackets[b].space;
            let maps = map_to_template(&n.image, space, &options.mapping, &n.pseudonym)?;
            let tissues = member_tissues(&maps.warped, space, &tissues_of_templates[b], &n.pseudonym)?;
            let members = template_members_of(options, &n.pseudonym, b, ids_and_brackets.iter().copied());
            let again = map_again_if_calibrated(
                &n.image,
                space,
                &maps,
                members,
                on_members,
                &options.mapping,
                &n.pseudonym,
            )?;
            let (similarity, histogram_distance, mask_dice) =
                recorded_quality(space, &maps, again.as_ref(), members);
            progress(&n.pseudonym);
            Ok(MappedNormal {
                record: SubjectRecord {
                    pseudonym: n.pseudonym.clone(),
                    age_years: n.age_years,
                    sex: n.sex,
                    scanner: n.scanner.clone(),
                    bracket: brackets[b].name.clone(),
                    qc_similarity: similarity,
                    qc_histogram_distance: histogram_distance,
                    qc_mask_dice: mask_dice,
                    qc_passed: similarity >= options.min_similarity,
                },
                bracket: b,
                values: [gather(&maps.intensity, &space.indices), gather(&maps.logjac, &space.indices)],
                tissues,
                native: Some(maps.native()),
                as_new_case: again
                    .map(|a| [gather(&a.intensity, &space.indices), gather(&a.logjac, &space.indices)]),
            })
        })
        .collect()
}

/// The tissue priors of every bracket: the mean tissue probabilities of its QC-passed normals,
/// in the order of `mapped`.
pub fn bracket_priors(brackets: &[BracketInput], mapped: &[MappedNormal]) -> Vec<Option<TissuePriors>> {
    brackets
        .iter()
        .enumerate()
        .map(|(b, bracket)| {
            let members: Vec<&[Vec<f32>; 3]> =
                mapped.iter().filter(|m| m.bracket == b && m.record.qc_passed).map(|m| &m.tissues).collect();
            TissuePriors::from_members(&bracket.space, &members)
        })
        .collect()
}

/// Accumulates mapped normals (QC-passed only) into per-bracket statistics.
pub fn accumulate(
    brackets: &[BracketInput],
    mapped: &[MappedNormal],
    options: &BuildOptions,
) -> Result<Vec<[NormativeAccumulator; 2]>, ModelError> {
    brackets
        .iter()
        .enumerate()
        .map(|(b, bracket)| {
            let members: Vec<&MappedNormal> =
                mapped.iter().filter(|m| m.bracket == b && m.record.qc_passed).collect();
            let ages: Vec<f64> = members.iter().map(|m| m.record.age_years).collect();
            let nodes = bracket_nodes(
                bracket.min_years,
                bracket.max_years,
                options.nodes_per_bracket,
                &ages,
                options.min_node_subjects,
            );
            let n = bracket.space.indices.len();
            let mut stats =
                [NormativeAccumulator::new(nodes.clone(), n)?, NormativeAccumulator::new(nodes, n)?];
            for m in &members {
                for (accumulator, values) in stats.iter_mut().zip(&m.values) {
                    accumulator.add_subject(m.record.age_years, m.record.sex, values)?;
                }
            }
            Ok(stats)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_counts_the_members_of_its_own_bracket() {
        let options = BuildOptions {
            template_members: ["a", "b", "c"].map(String::from).into(),
            ..BuildOptions::default()
        };
        let normals = [("a", 0), ("b", 0), ("c", 1), ("d", 0)];
        assert_eq!(template_members_of(&options, "a", 0, normals.into_iter()), Some(2));
        assert_eq!(template_members_of(&options, "c", 1, normals.into_iter()), Some(1));
        assert_eq!(template_members_of(&options, "d", 0, normals.into_iter()), None);
    }

    #[test]
    fn nodes_cover_the_bracket() {
        let nodes = bracket_nodes(4.0, 8.0, 2, &[4.5, 5.0, 6.0, 7.0, 7.5], 2.0);
        assert_eq!(nodes.len(), 2);
        assert!((nodes[0].age_years - 5.0).abs() < 1e-12 && (nodes[1].age_years - 7.0).abs() < 1e-12);
        assert!(nodes.iter().all(|n| n.kernel_mass(&[4.5, 5.0, 6.0, 7.0, 7.5]) >= 2.0));
    }
}
