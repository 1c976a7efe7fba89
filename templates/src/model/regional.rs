//! Regional volumes of one subject in its own space: the bracket's atlas labels (nearest
//! neighbour) and tissue priors (linear) are pulled from the template onto the subject's grid
//! through the inverse mapping, the subject's own image is segmented with those priors, and
//! volumes are measured partial-volume aware: Σ tissue probability × region × voxel volume.

use super::ModelError;
use super::accumulate::MappedNormal;
use super::database::{AtlasTable, BracketDb, NormativeDb, SubjectRecord};
use super::mapping::map_to_template;
use super::space::TemplateSpace;
use super::tissue_priors::TISSUES;
use pedinorm_registration::resample::resample;
use pedinorm_registration::segmentation::{SegmentationOptions, segment};
use pedinorm_registration::{AffineTransform, DisplacementField, Image, Interpolation, TransformChain};
use rayon::prelude::*;
use std::collections::HashMap;

/// Names of the whole-brain measures, first in every [`RegionalMeasures`]: grey matter, white
/// matter, CSF, total brain volume (GM + WM) and intracranial volume (GM + WM + CSF).
pub const TOTAL_MEASURES: [&str; 5] = ["gm", "wm", "csf", "total_brain", "icv"];

/// One subject's volumes in ml, one value per measure. The names are stable: first
/// [`TOTAL_MEASURES`], then per atlas region (table order) `<region>_csf`, `<region>_gm`,
/// `<region>_wm`, where `<region>` is the label name in lower case with every run of other
/// characters than letters and digits replaced by `_` (see [`region_key`]). A centile model
/// takes one such row per subject with the subject's age, sex and site.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegionalMeasures {
    /// Measure names.
    pub names: Vec<String>,
    /// Volumes in ml, one per name.
    pub values_ml: Vec<f64>,
}

impl RegionalMeasures {
    /// Every measure as (name, volume), in table order.
    pub fn pairs(&self) -> Vec<(String, f64)> {
        self.names.iter().cloned().zip(self.values_ml.iter().copied()).collect()
    }

    /// The volume of one measure.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.names.iter().position(|n| n == name).map(|i| self.values_ml[i])
    }
}

/// The measure names for an atlas (or the whole-brain measures alone without one).
pub fn measure_names(atlas: Option<&AtlasTable>) -> Vec<String> {
    let mut names: Vec<String> = TOTAL_MEASURES.iter().map(|s| s.to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    for (value, label) in atlas.map_or(&[][..], |a| &a.labels[..]) {
        let mut key = region_key(label);
        if !seen.insert(key.clone()) {
            // Two labels with one name: the value keeps them apart.
            key = format!("{key}_{value}");
        }
        names.extend(TISSUES.iter().map(|t| format!("{key}_{t}")));
    }
    names
}

/// A label name as a measure prefix: lower case, runs of other characters than ASCII letters
/// and digits replaced by one `_`, none at either end (`"Genu of corpus callosum"` →
/// `genu_of_corpus_callosum`).
pub fn region_key(label: &str) -> String {
    let mut key = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c.to_ascii_lowercase());
        } else if !key.is_empty() && !key.ends_with('_') {
            key.push('_');
        }
    }
    key.trim_end_matches('_').to_string()
}

/// A subject on its own grid with the inverse of its mapping to a template.
#[derive(Debug, Clone)]
pub struct NativeSubject {
    /// The subject's bias-corrected image on its own grid.
    pub image: Image<f32>,
    /// Template world → subject world, affine part (as in `SubjectMaps`).
    pub affine: AffineTransform,
    /// Inverse deformable part on the template grid (as in `SubjectMaps`).
    pub inverse: DisplacementField,
}

impl NativeSubject {
    /// Pulls a template-space image onto the subject's grid (0 beyond the template).
    pub fn pull(&self, template_space_image: &Image<f32>, interpolation: Interpolation) -> Image<f32> {
        to_native(&self.affine, &self.inverse, template_space_image, self.image.grid(), interpolation)
    }
}

/// Pulls a template-space image onto `native` through `affine` (template → subject world) and
/// the `inverse` deformable part: subject → template is `q ↦ r + inverse(r)`, `r = affine⁻¹(q)`.
pub fn to_native(
    affine: &AffineTransform,
    inverse: &DisplacementField,
    template_space_image: &Image<f32>,
    native: &pedinorm_registration::Grid,
    interpolation: Interpolation,
) -> Image<f32> {
    let inverse_affine = affine.inverse().expect("registration affines are invertible");
    let chain = TransformChain::new(vec![&inverse_affine, inverse]);
    resample(template_space_image, native, &chain, interpolation, 0.0)
}

/// One normal's row of the database's regional table.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionalRow {
    /// The normal's pseudonym (a row of the subjects table).
    pub pseudonym: String,
    /// Age at scan (years).
    pub age_years: f64,
    /// Sex.
    pub sex: crate::stats::Sex,
    /// Scanner or site label.
    pub site: String,
    /// Volumes in ml, one per measure of the table.
    pub values_ml: Vec<f64>,
}

/// The regional volumes of the database's QC-passed normals, the rows a centile model is fitted
/// on (pseudonyms only).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionalTable {
    /// Measure names (see [`RegionalMeasures`]).
    pub names: Vec<String>,
    /// One row per normal, in build order.
    pub rows: Vec<RegionalRow>,
}

/// The regional table of the QC-passed normals of `mapped` (in their order), each measured
/// against its bracket of `brackets` (in parallel; each row is independent, so the result does
/// not depend on the thread count). `None` when a QC-passed normal was mapped without its
/// native image.
pub fn normals_table(
    brackets: &[BracketDb],
    mapped: &[MappedNormal],
    atlas: Option<&AtlasTable>,
) -> Result<Option<RegionalTable>, ModelError> {
    let passed: Vec<&MappedNormal> = mapped.iter().filter(|m| m.record.qc_passed).collect();
    if passed.iter().any(|m| m.native.is_none()) {
        return Ok(None);
    }
    let rows = passed
        .par_iter()
        .with_max_len(1)
        .map(|m| {
            let native = m.native.as_ref().expect("checked");
            let volumes = regional_volumes(native, &brackets[m.bracket], atlas, &m.record.pseudonym)?;
            Ok(row_of(&m.record, volumes.measures.values_ml))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Some(RegionalTable { names: measure_names(atlas), rows }))
}

/// A normal's row of the regional table.
pub fn row_of(record: &SubjectRecord, values_ml: Vec<f64>) -> RegionalRow {
    RegionalRow {
        pseudonym: record.pseudonym.clone(),
        age_years: record.age_years,
        sex: record.sex,
        site: record.scanner.clone(),
        values_ml,
    }
}

/// What [`regional_volumes`] gives: the measures and the maps behind them, on the subject's grid.
#[derive(Debug, Clone)]
pub struct RegionalVolumes {
    /// The volumes.
    pub measures: RegionalMeasures,
    /// Tissue probabilities ([`TISSUES`] order), 0 outside the brain mask.
    pub tissues: [Image<f32>; 3],
    /// The template's brain mask on the subject's grid.
    pub mask: Image<f32>,
    /// Atlas labels on the subject's grid, when the bracket has an atlas.
    pub labels: Option<Image<f32>>,
}

/// The regional volumes of `subject`, mapped to `bracket`'s template, with `atlas` naming the
/// bracket's labels (`None`: whole-brain measures only). Fails when the bracket has no tissue
/// priors (a database written before they were kept: rebuild it).
pub fn regional_volumes(
    subject: &NativeSubject,
    bracket: &BracketDb,
    atlas: Option<&AtlasTable>,
    name: &str,
) -> Result<RegionalVolumes, ModelError> {
    let fail = |message: String| ModelError::Subject {
        subject: name.to_owned(),
        stage: "regional volumes",
        message,
    };
    let priors = bracket.priors.as_ref().ok_or_else(|| {
        fail(format!("bracket {} has no tissue priors (rebuild the database to add them)", bracket.name))
    })?;
    let mask = subject.pull(&bracket.mask, Interpolation::Nearest);
    let carried: Vec<Image<f32>> =
        priors.maps.iter().map(|p| subject.pull(p, Interpolation::Linear)).collect();
    let segmentation = segment(&[&subject.image], &mask, Some(&carried), &SegmentationOptions::default())
        .map_err(|e| fail(format!("segmentation: {e}")))?;
    let tissues: [Image<f32>; 3] = segmentation.posteriors.try_into().expect("one map per prior");
    let labels = match (&bracket.labels, atlas) {
        (Some(labels), Some(_)) => Some(subject.pull(labels, Interpolation::Nearest)),
        _ => None,
    };
    let measures = measure(&tissues, labels.as_ref().zip(atlas));
    Ok(RegionalVolumes { measures, tissues, mask, labels })
}

/// A subject measured against a database: [`regional_volumes`] after mapping.
#[derive(Debug, Clone)]
pub struct SubjectVolumes {
    /// The volumes and maps.
    pub volumes: RegionalVolumes,
    /// The bracket the subject was mapped to.
    pub bracket: String,
    /// Correlation of the warped subject with the template (registration QC).
    pub similarity: f64,
    /// Why the result may be less reliable (age outside every bracket, poor registration).
    pub warnings: Vec<String>,
}

/// The regional volumes of a subject's `image` (any grid) aged `age_years`: mapped to the
/// template of the database's bracket for that age exactly as its normals were (the stored
/// mapping parameters), then measured by [`regional_volumes`].
pub fn subject_volumes(
    db: &NormativeDb,
    image: &Image<f32>,
    age_years: f64,
    name: &str,
) -> Result<SubjectVolumes, ModelError> {
    if db.brackets.is_empty() {
        return Err(ModelError::Config("the database has no brackets".into()));
    }
    let bracket = &db.brackets[db.bracket_for_age(age_years)];
    let mut warnings = Vec::new();
    if !bracket.contains(age_years) {
        warnings.push(format!(
            "age {age_years:.2} y is outside every bracket; the nearest ({}) was used",
            bracket.name
        ));
    }
    let space = TemplateSpace::new(bracket.template.clone(), Some(bracket.mask.clone()))?;
    let maps = map_to_template(image, &space, &db.metadata.parameters.mapping, name)?;
    if maps.similarity < 0.5 {
        warnings.push(format!(
            "registration to the template is poor (correlation {:.2}); the volumes may be wrong",
            maps.similarity
        ));
    }
    let volumes = regional_volumes(&maps.native(), bracket, db.atlas.as_ref(), name)?;
    Ok(SubjectVolumes { volumes, bracket: bracket.name.clone(), similarity: maps.similarity, warnings })
}

/// Volumes of tissue maps ([`TISSUES`] order) in total and per region of `labels` (on the
/// maps' grid, named by the atlas).
pub fn measure(tissues: &[Image<f32>; 3], labels: Option<(&Image<f32>, &AtlasTable)>) -> RegionalMeasures {
    let voxel_ml = tissues[0].grid().spacing().iter().product::<f64>() / 1000.0;
    let totals: Vec<f64> =
        tissues.iter().map(|t| t.as_slice().iter().map(|&p| p as f64).sum::<f64>() * voxel_ml).collect();
    let [csf, gm, wm] = [totals[0], totals[1], totals[2]];
    let mut values = vec![gm, wm, csf, gm + wm, gm + wm + csf];
    if let Some((labels, atlas)) = labels {
        let region_of: HashMap<i32, usize> =
            atlas.labels.iter().enumerate().map(|(r, (v, _))| (*v, r)).collect();
        let mut sums = vec![[0f64; 3]; atlas.labels.len()];
        for (voxel, &label) in labels.as_slice().iter().enumerate() {
            if let Some(&r) = region_of.get(&(label.round() as i32)) {
                for (sum, tissue) in sums[r].iter_mut().zip(tissues) {
                    *sum += tissue.as_slice()[voxel] as f64;
                }
            }
        }
        values.extend(sums.iter().flat_map(|s| s.map(|v| v * voxel_ml)));
    }
    RegionalMeasures { names: measure_names(labels.map(|(_, a)| a)), values_ml: values }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::testing::tiny;
    use crate::model::tissue_priors::{TissuePriors, member_tissues, template_tissues};
    use pedinorm_registration::Grid;

    #[test]
    fn names_are_stable_keys() {
        assert_eq!(region_key("Genu of corpus callosum"), "genu_of_corpus_callosum");
        assert_eq!(region_key("Cingulum (hippocampus) R"), "cingulum_hippocampus_r");
        let atlas = AtlasTable {
            name: "a".into(),
            source: "s".into(),
            labels: vec![(1, "Left-X".into()), (2, "left x".into())],
        };
        let names = measure_names(Some(&atlas));
        assert_eq!(&names[..5], &TOTAL_MEASURES.map(String::from));
        assert_eq!(
            &names[5..],
            &["left_x_csf", "left_x_gm", "left_x_wm", "left_x_2_csf", "left_x_2_gm", "left_x_2_wm"]
        );
    }

    /// A ball of white matter (radius 10 mm) in grey matter (16 mm) in CSF (20 mm) on a 2 mm grid.
    fn layered_ball() -> (TemplateSpace, [f64; 3]) {
        let grid = Grid::axis_aligned([24, 24, 24], [2.0; 3], [-23.0; 3]).unwrap();
        let mut image = Image::filled(grid.clone(), 0.0f32);
        let mut mask = Image::filled(grid, 0.0f32);
        let mut counts = [0f64; 3];
        for ((i, j, k), v) in image.data_mut().indexed_iter_mut() {
            let r = 2.0
                * ((i as f64 - 11.5).powi(2) + (j as f64 - 11.5).powi(2) + (k as f64 - 11.5).powi(2)).sqrt();
            let tissue = if r < 10.0 {
                Some((2, 90.0))
            } else if r < 16.0 {
                Some((1, 60.0))
            } else if r < 20.0 {
                Some((0, 30.0))
            } else {
                None
            };
            if let Some((t, value)) = tissue {
                *v = value + ((i * 7 + j * 3 + k * 5) % 11) as f32 * 0.5;
                counts[t] += 8.0 / 1000.0;
                mask.data_mut()[[i, j, k]] = 1.0;
            }
        }
        (TemplateSpace::new(image, Some(mask)).unwrap(), counts)
    }

    #[test]
    fn volumes_of_a_subject_on_the_template_match_its_tissues_and_regions_add_up() {
        let (space, truth) = layered_ball();
        let template_maps = template_tissues(&space).unwrap();
        let member = member_tissues(&space.template, &space, &template_maps, "m").unwrap();
        let mut bracket = tiny(1, 3).brackets.remove(0);
        bracket.template = space.template.clone();
        bracket.mask = space.mask.clone();
        bracket.priors = TissuePriors::from_members(&space, &[&member]);
        // Two regions: the left and right halves.
        let mut labels = space.mask.clone();
        for ((i, _, _), v) in labels.data_mut().indexed_iter_mut() {
            *v *= if i < 12 { 1.0 } else { 2.0 };
        }
        bracket.labels = Some(labels);
        let atlas = AtlasTable {
            name: "halves".into(),
            source: "test".into(),
            labels: vec![(1, "Left".into()), (2, "Right".into())],
        };
        let subject = NativeSubject {
            image: space.template.clone(),
            affine: AffineTransform::identity(),
            inverse: DisplacementField::zeros(space.template.grid()),
        };
        let result = regional_volumes(&subject, &bracket, Some(&atlas), "s").unwrap();
        let m = &result.measures;
        for (name, truth) in [("csf", truth[0]), ("gm", truth[1]), ("wm", truth[2])] {
            let found = m.get(name).unwrap();
            assert!((found - truth).abs() < 0.05 * truth, "{name}: {found} ml against {truth} ml");
        }
        assert!((m.get("total_brain").unwrap() - m.get("gm").unwrap() - m.get("wm").unwrap()).abs() < 1e-9);
        assert!((m.get("icv").unwrap() - m.get("total_brain").unwrap() - m.get("csf").unwrap()).abs() < 1e-9);
        for tissue in TISSUES {
            let halves =
                m.get(&format!("left_{tissue}")).unwrap() + m.get(&format!("right_{tissue}")).unwrap();
            assert!((halves - m.get(tissue).unwrap()).abs() < 1e-6, "{tissue}: halves {halves}");
        }
        assert!((m.get("left_gm").unwrap() - m.get("right_gm").unwrap()).abs() < 0.05 * m.get("gm").unwrap());
        // Without priors the bracket cannot be measured; without an atlas only the totals.
        assert_eq!(regional_volumes(&subject, &bracket, None, "s").unwrap().measures.names.len(), 5);
        bracket.priors = None;
        assert!(regional_volumes(&subject, &bracket, Some(&atlas), "s").is_err());
    }
}
