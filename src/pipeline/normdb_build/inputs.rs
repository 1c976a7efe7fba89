//! The inputs of a normative-database build as users give them: the brackets from finished
//! template builds or `NAME:MIN:MAX:PATH` specifications, and the normals from a cohort.

use super::{ManifestBracket, NormalFile, NormdbBuildError};
use crate::pipeline::cohort::CohortSubject;
use crate::pipeline::steps::Manifest;
use crate::pipeline::template_build::BuildManifest;
use pedinorm_templates::age::containing_bracket;
use pedinorm_templates::stats::Sex;
use pedinorm_templates::template::TemplateTarget;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The brackets of template build directories and of `NAME:MIN:MAX:PATH` specifications, and
/// the ids of the subjects the template builds used (sorted, without repeats; none for a
/// specification, whose image may come from anywhere).
pub fn bracket_templates(
    builds: &[PathBuf],
    specs: &[String],
) -> Result<(Vec<ManifestBracket>, Vec<String>), NormdbBuildError> {
    let mut brackets = Vec::new();
    let mut members = BTreeSet::new();
    for dir in builds {
        brackets.push(finished_build(dir, &mut members)?);
    }
    for spec in specs {
        brackets.push(ManifestBracket::parse(spec)?);
    }
    if brackets.is_empty() {
        return Err(NormdbBuildError::Invalid("give at least one --template-build or --template".into()));
    }
    Ok((brackets, members.into_iter().collect()))
}

/// The bracket of a finished template build; its members (subjects of positive weight) are
/// added to `members`.
fn finished_build(dir: &Path, members: &mut BTreeSet<String>) -> Result<ManifestBracket, NormdbBuildError> {
    let invalid = |rule: &str| NormdbBuildError::Invalid(format!("{}: {rule}", dir.display()));
    let manifest = BuildManifest::read(dir).map_err(|e| invalid(&format!("not a template build: {e}")))?;
    let TemplateTarget::Bracket(bracket) = &manifest.config.target else {
        return Err(invalid("the template was not built for an age bracket"));
    };
    let template = dir.join("template.nii.gz");
    if !template.is_file() {
        return Err(invalid("the build is not finished (no template.nii.gz)"));
    }
    members.extend(manifest.subjects.iter().filter(|s| s.weight > 0.0).map(|s| s.id.clone()));
    Ok(ManifestBracket {
        name: bracket.name.clone(),
        min_years: bracket.min_years,
        max_years: bracket.max_years,
        template,
    })
}

impl ManifestBracket {
    /// Parses `NAME:MIN:MAX:PATH` (ages in years, `0 ≤ MIN < MAX`).
    pub fn parse(spec: &str) -> Result<Self, NormdbBuildError> {
        let invalid = |rule: &str| NormdbBuildError::Invalid(format!("--template {spec:?}: {rule}"));
        let parts: Vec<&str> = spec.splitn(4, ':').collect();
        if parts.len() != 4 {
            return Err(invalid("expected NAME:MIN:MAX:PATH"));
        }
        let min: f64 = parts[1].parse().map_err(|_| invalid("MIN is not a number"))?;
        let max: f64 = parts[2].parse().map_err(|_| invalid("MAX is not a number"))?;
        if !(min >= 0.0 && max > min) {
            return Err(invalid("need 0 ≤ MIN < MAX"));
        }
        Ok(Self {
            name: parts[0].to_owned(),
            min_years: min,
            max_years: max,
            template: PathBuf::from(parts[3]),
        })
    }
}

/// The normals of a cohort, each with a sex (F or M) and an age inside one of `brackets`; every
/// subject breaking a rule is listed in one error naming `cohort_path`.
pub fn normals_of_cohort(
    cohort: &[CohortSubject],
    brackets: &[ManifestBracket],
    cohort_path: &Path,
) -> Result<Vec<NormalFile>, NormdbBuildError> {
    let mut problems = Vec::new();
    let mut normals = Vec::new();
    for s in cohort {
        let Some(sex) = s.sex.as_deref().and_then(Sex::parse) else {
            problems.push(format!("subject {}: sex must be F or M, found {:?}", s.id, s.sex));
            continue;
        };
        if containing_bracket(brackets, s.age_years).is_none() {
            problems.push(format!("subject {}: age {:.2} is outside every bracket", s.id, s.age_years));
            continue;
        }
        normals.push(NormalFile {
            id: s.id.clone(),
            path: s.path.clone(),
            age_years: s.age_years,
            sex,
            scanner: s.site.clone().unwrap_or_default(),
        });
    }
    if !problems.is_empty() {
        return Err(NormdbBuildError::Invalid(format!(
            "{}: {} problem(s):\n  {}",
            cohort_path.display(),
            problems.len(),
            problems.join("\n  ")
        )));
    }
    Ok(normals)
}
