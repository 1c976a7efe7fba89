//! Several templates from one cohort (`pedinorm template build`): which templates a cohort
//! gives (one per age bracket, one at a given age, or one of every subject), and the summary of
//! a finished set (`templates.json` and a montage of every template).

use crate::pipeline::cohort::CohortSubject;
use crate::pipeline::steps::file_error;
use crate::pipeline::template_build::{TemplateBuildError, TemplateBuildResult};
use crate::report::write_template_montage;
use pedinorm_registration::Image;
use pedinorm_templates::age::{AgeBracket, AgeBrackets, AgeKernel, check_age};
use pedinorm_templates::template::TemplateTarget;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Which templates to build.
#[derive(Debug, Clone)]
pub enum TemplateChoice {
    /// One per age bracket: `default` (the paediatric brackets), `all` (one template of every
    /// subject) or a JSON/TOML file listing `{name, min_years, max_years}`.
    Brackets(String),
    /// One at this age (years) with age-kernel weights.
    Age {
        /// Age of the template (years).
        age_years: f64,
        /// The age kernel.
        kernel: AgeKernel,
    },
}

/// One template of a set: its folder name, what it is built for and how many subjects it has.
#[derive(Debug, Clone)]
pub struct NamedTarget {
    /// Folder name (`bracket-NAME`, `age-YEARS` or `all`).
    pub name: String,
    /// What the template is built for.
    pub target: TemplateTarget,
    /// Subjects of the cohort in it.
    pub subjects: usize,
}

/// The templates a cohort gives under `choice`.
pub fn template_targets(
    cohort: &[CohortSubject],
    choice: &TemplateChoice,
) -> Result<Vec<NamedTarget>, TemplateBuildError> {
    Ok(match choice {
        TemplateChoice::Age { age_years, kernel } => {
            check_age(*age_years)?;
            vec![NamedTarget {
                name: format!("age-{age_years}"),
                target: TemplateTarget::Age { age_years: *age_years, kernel: kernel.clone() },
                subjects: cohort.len(),
            }]
        }
        TemplateChoice::Brackets(spec) => match read_age_brackets(spec)? {
            Some(brackets) => brackets
                .brackets()
                .iter()
                .map(|bracket| NamedTarget {
                    name: format!("bracket-{}", bracket.name),
                    target: TemplateTarget::Bracket(bracket.clone()),
                    subjects: cohort.iter().filter(|s| bracket.contains(s.age_years)).count(),
                })
                .collect(),
            None => {
                vec![NamedTarget {
                    name: "all".into(),
                    target: TemplateTarget::AllSubjects,
                    subjects: cohort.len(),
                }]
            }
        },
    })
}

/// Reads brackets: `default`, `all` (none: one template of every subject), or a JSON/TOML file.
pub fn read_age_brackets(spec: &str) -> Result<Option<AgeBrackets>, TemplateBuildError> {
    match spec {
        "default" => Ok(Some(AgeBrackets::default_paediatric())),
        "all" => Ok(None),
        file => {
            let path = Path::new(file);
            let text = std::fs::read_to_string(path)
                .map_err(|e| file_error(path, format!("cannot read brackets: {e}")))?;
            let invalid = |e: &dyn std::fmt::Display| file_error(path, format!("invalid brackets: {e}"));
            let brackets: AgeBrackets = if path.extension().is_some_and(|e| e == "toml") {
                #[derive(serde::Deserialize)]
                struct File {
                    bracket: Vec<AgeBracket>,
                }
                let file: File = toml::from_str(&text).map_err(|e| invalid(&e))?;
                AgeBrackets::new(file.bracket).map_err(|e| invalid(&e))?
            } else {
                serde_json::from_str(&text).map_err(|e| invalid(&e))?
            };
            Ok(Some(brackets))
        }
    }
}

/// A built template as `templates.json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltTemplate {
    /// Folder name.
    pub name: String,
    /// The template image.
    pub template: PathBuf,
    /// Its build directory.
    pub build_dir: PathBuf,
    /// Subjects in the build.
    pub subjects: usize,
    /// Effective sample of the age weights.
    pub effective_sample: f64,
    /// Subjects flagged as outliers.
    pub outliers: Vec<String>,
    /// Sharpness of the final template.
    pub final_sharpness: f64,
    /// Mean similarity of the subjects to the final template.
    pub final_mean_similarity: f64,
}

impl BuiltTemplate {
    /// The entry of the build `name` in `build_dir`.
    pub fn new(name: &str, build_dir: &Path, result: &TemplateBuildResult) -> Self {
        let last = result.qc.iterations.last();
        Self {
            name: name.to_owned(),
            template: result.template_path.clone(),
            build_dir: build_dir.to_owned(),
            subjects: result.manifest.subjects.len(),
            effective_sample: result.manifest.effective_sample,
            outliers: result.qc.outliers.clone(),
            final_sharpness: last.map(|q| q.template_sharpness).unwrap_or(0.0),
            final_mean_similarity: last.map(|q| q.mean_similarity).unwrap_or(0.0),
        }
    }
}

/// A template skipped for want of subjects.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedTemplate {
    /// Folder name.
    pub name: String,
    /// Subjects it would have had.
    pub subjects: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// Writes `OUT/montage.png` (one row per template) and `OUT/templates.json` (the built and the
/// skipped templates and the executor).
pub fn write_set_summary(
    out_dir: &Path,
    templates: &[&Image<f32>],
    built: &[BuiltTemplate],
    skipped: &[SkippedTemplate],
    executor: &str,
) -> Result<(), TemplateBuildError> {
    write_template_montage(&out_dir.join("montage.png"), templates)?;
    let summary = serde_json::json!({ "templates": built, "skipped": skipped, "executor": executor });
    let path = out_dir.join("templates.json");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| file_error(&path, e))?;
    crate::atomic::write_bytes(&path, json.as_bytes()).map_err(|e| file_error(&path, e))?;
    Ok(())
}
