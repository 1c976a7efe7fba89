//! The normative database built in memory, in one process: the template space of every
//! bracket (with the atlas carried to it), every normal mapped to its bracket's template,
//! statistics and leave-one-out calibration. The staged build
//! ([`crate::pipeline::normdb_build`]) runs the same functions as separate steps and gives the
//! same database; the command line, the demo and the service all build through one of the two.

use crate::formats::nifti::read_image;
use crate::pipeline::normdb_build::NormdbBuildError;
use crate::pipeline::steps::file_error;
use pedinorm_registration::Image;
use pedinorm_templates::model::{
    AtlasTable, BracketInput, BuildOptions, NormalSubject, NormativeDb, TemplateSpace, assemble, carry_atlas,
    map_normals, parse_label_names,
};
use std::path::Path;

/// The fewest normals a bracket's template is built from (by the demo and the service).
pub const MIN_TEMPLATE_SUBJECTS: usize = 3;

/// A bracket of an in-memory build: its name, age range (years, lower inclusive, upper
/// exclusive) and template.
#[derive(Debug, Clone)]
pub struct BracketTemplate {
    /// Bracket name.
    pub name: String,
    /// Lower bound (years, inclusive).
    pub min_years: f64,
    /// Upper bound (years, exclusive).
    pub max_years: f64,
    /// The template image.
    pub template: Image<f32>,
}

/// An atlas to carry into each template.
pub struct AtlasInput {
    /// Label image.
    pub labels: Image<f32>,
    /// Reference T1 of the atlas space.
    pub reference: Image<f32>,
    /// Names.
    pub table: AtlasTable,
}

/// Loads an atlas (labels, names, reference T1).
pub fn load_atlas(labels: &Path, names: &Path, reference: &Path) -> Result<AtlasInput, NormdbBuildError> {
    Ok(AtlasInput {
        table: atlas_table(labels, names)?,
        labels: read_image(labels)?,
        reference: read_image(reference)?,
    })
}

/// Label names of an atlas.
pub fn atlas_table(labels: &Path, names: &Path) -> Result<AtlasTable, NormdbBuildError> {
    let text = std::fs::read_to_string(names)
        .map_err(|e| file_error(names, format!("cannot read label names: {e}")))?;
    let table = parse_label_names(&text);
    if table.is_empty() {
        return Err(file_error(names, "no `VALUE NAME` lines").into());
    }
    let name = labels.file_name().map(|n| n.to_string_lossy().replace(".nii.gz", "")).unwrap_or_default();
    Ok(AtlasTable {
        name,
        source: "see atlases/README.md (installed by scripts/setup.sh from Debian's mricron-data)".into(),
        labels: table,
    })
}

/// Builds a database from normals and bracket templates in memory. `on_mapped` is called once
/// per normal mapped to its template.
pub fn build_database(
    normals: &[NormalSubject],
    brackets: Vec<BracketTemplate>,
    atlas: Option<&AtlasInput>,
    options: &BuildOptions,
    on_mapped: &(dyn Fn(&str) + Sync),
) -> Result<NormativeDb, NormdbBuildError> {
    let mut inputs = Vec::new();
    for bracket in brackets {
        let space = TemplateSpace::new(bracket.template, None)
            .map_err(|e| NormdbBuildError::Invalid(format!("bracket {}: {e}", bracket.name)))?;
        let labels = match atlas {
            Some(atlas) => {
                Some(carry_atlas(&space, &atlas.reference, &atlas.labels, &options.mapping).map_err(|e| {
                    NormdbBuildError::Invalid(format!("carrying the atlas to bracket {}: {e}", bracket.name))
                })?)
            }
            None => None,
        };
        inputs.push(BracketInput {
            name: bracket.name,
            min_years: bracket.min_years,
            max_years: bracket.max_years,
            space,
            labels,
        });
    }
    let mapped = map_normals(normals, &inputs, options, on_mapped)?;
    Ok(assemble(&inputs, &mapped, options, atlas.map(|a| a.table.clone()), &crate::normdb::now_utc())?)
}
