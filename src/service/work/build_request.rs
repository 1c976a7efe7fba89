//! The body of a normative build request, as read and as the OpenAPI document describes it.

use crate::service::error::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a normative build starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildMode {
    /// Add the studies to the installed database (same templates; statistics updated).
    #[default]
    Extend,
    /// Build a new database: one template per requested bracket from its studies, then the
    /// statistics and the leave-one-out calibration.
    Scratch,
}

/// An age bracket of a build from scratch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BracketRequest {
    /// Name (1–40 letters, digits, `-`, `_`, `.`; not starting with `.`; unique in the request).
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,39}$")]
    pub name: String,
    /// Lower age bound (years, inclusive; below `max_years`).
    #[schema(minimum = 0.0, maximum = 25.0)]
    pub min_years: f64,
    /// Upper age bound (years, exclusive; above `min_years`).
    #[schema(exclusive_minimum = 0.0, maximum = 25.0)]
    pub max_years: f64,
}

/// The body of a normative build as the OpenAPI document describes it: one shape per mode.
/// The server reads the flat [`BuildRequest`] (clearer errors than an untagged enum, and the
/// form job parameters are stored in) and [`BuildRequest::validate`] enforces this shape; a
/// test checks the two agree.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BuildRequestShape {
    /// Add the consented studies to the installed database.
    Extend(ExtendBuild),
    /// Build a new database.
    Scratch(ScratchBuild),
}

/// `mode: extend` (the default): no brackets, no build parameters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBuild {
    /// Install the result as the service's normative database.
    #[serde(default)]
    pub install: bool,
    /// `extend` (also when absent).
    #[serde(default)]
    #[schema(inline, required = false)]
    pub mode: ExtendMode,
}

/// The extend mode.
#[derive(Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExtendMode {
    /// Extend.
    #[default]
    Extend,
}

/// The scratch mode.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScratchMode {
    /// Scratch.
    Scratch,
}

/// `mode: scratch`: the brackets to build and optional build parameters.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScratchBuild {
    /// Install the result as the service's normative database.
    #[serde(default)]
    pub install: bool,
    /// `scratch`.
    #[schema(inline)]
    pub mode: ScratchMode,
    /// The age brackets (1–20; each needs three studies).
    #[schema(min_items = 1, max_items = 20)]
    pub brackets: Vec<BracketRequest>,
    /// Deformable template iterations after the affine one (default 2).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub template_iterations: Option<usize>,
    /// Age nodes per bracket (default 2).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub nodes_per_bracket: Option<usize>,
    /// Smoothing FWHM of the maps in mm (default 4).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 20.0)]
    pub smoothing_fwhm_mm: Option<f64>,
    /// Nominal voxelwise false-positive rate of the calibration (default 0.001).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 0.5)]
    pub voxel_rate: Option<f64>,
    /// Nominal per-image false-cluster rate of the calibration (default 0.05).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub cluster_rate: Option<f64>,
}

/// Parameters of a normative build.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildRequest {
    /// Install the resulting database as the service's normative database when the build
    /// succeeds (atomically; the job folder keeps its own copy).
    #[serde(default)]
    pub install: bool,
    /// `extend` (default) or `scratch`.
    #[serde(default)]
    pub mode: BuildMode,
    /// Scratch builds: the age brackets (at least one; each needs three studies).
    #[serde(default)]
    pub brackets: Vec<BracketRequest>,
    /// Scratch builds: deformable template iterations after the affine one (1–10, default 2).
    #[serde(default)]
    pub template_iterations: Option<usize>,
    /// Scratch builds: age nodes per bracket (1–10, default 2).
    #[serde(default)]
    pub nodes_per_bracket: Option<usize>,
    /// Scratch builds: smoothing FWHM of the maps in mm (0–20, default 4).
    #[serde(default)]
    pub smoothing_fwhm_mm: Option<f64>,
    /// Scratch builds: nominal voxelwise false-positive rate of the calibration (0–0.5,
    /// default 0.001).
    #[serde(default)]
    pub voxel_rate: Option<f64>,
    /// Scratch builds: nominal per-image false-cluster rate of the calibration (0–1, default
    /// 0.05).
    #[serde(default)]
    pub cluster_rate: Option<f64>,
}

impl BuildRequest {
    /// Checks the request: brackets and parameters only with `scratch`, and in range (400, what
    /// the OpenAPI document's [`BuildRequestShape`] excludes); distinct bracket names and each
    /// bracket's bounds in order (422, rules the document states in prose).
    pub fn validate(&self) -> Result<(), ApiError> {
        let bad = |rule: String| Err(ApiError::BadRequest(rule));
        let scratch_only = self.template_iterations.is_some()
            || self.nodes_per_bracket.is_some()
            || self.smoothing_fwhm_mm.is_some()
            || self.voxel_rate.is_some()
            || self.cluster_rate.is_some()
            || !self.brackets.is_empty();
        if self.mode == BuildMode::Extend {
            if scratch_only {
                return bad("brackets and build parameters apply to `mode: scratch` only".into());
            }
            return Ok(());
        }
        if self.brackets.is_empty() || self.brackets.len() > 20 {
            return bad("`brackets`: a scratch build needs 1 to 20 age brackets".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (index, bracket) in self.brackets.iter().enumerate() {
            let valid_name = (1..=40).contains(&bracket.name.len())
                && !bracket.name.starts_with('.')
                && bracket.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid_name {
                return bad(format!(
                    "`brackets[{index}].name` must be 1–40 letters, digits, `-`, `_` or `.`"
                ));
            }
            if !names.insert(bracket.name.as_str()) {
                return Err(ApiError::rule(format!("`brackets[{index}].name` is used twice")));
            }
            let in_range = |years: f64| (0.0..=25.0).contains(&years);
            if !(in_range(bracket.min_years) && in_range(bracket.max_years)) {
                return bad(format!("`brackets[{index}]`: ages must be between 0 and 25 years"));
            }
            if bracket.max_years <= bracket.min_years {
                return Err(ApiError::rule(format!(
                    "`brackets[{index}]`: min_years must be below max_years"
                )));
            }
        }
        let in_range = |value: Option<f64>, low: f64, high: f64, open_low: bool| {
            value.is_none_or(|v| v.is_finite() && v <= high && if open_low { v > low } else { v >= low })
        };
        if !self.template_iterations.is_none_or(|n| (1..=10).contains(&n)) {
            return bad("`template_iterations` must be between 1 and 10".into());
        }
        if !self.nodes_per_bracket.is_none_or(|n| (1..=10).contains(&n)) {
            return bad("`nodes_per_bracket` must be between 1 and 10".into());
        }
        if !in_range(self.smoothing_fwhm_mm, 0.0, 20.0, false) {
            return bad("`smoothing_fwhm_mm` must be between 0 and 20".into());
        }
        if !in_range(self.voxel_rate, 0.0, 0.5, true) {
            return bad("`voxel_rate` must be in (0, 0.5]".into());
        }
        if !in_range(self.cluster_rate, 0.0, 1.0, true) {
            return bad("`cluster_rate` must be in (0, 1]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The documented shape and the server's reading agree on which bodies are well formed.
    #[test]
    fn the_documented_build_shape_accepts_what_the_server_accepts() {
        let bracket = json!({ "name": "a", "min_years": 1, "max_years": 2 });
        let bodies = [
            (json!({}), true),
            (json!({ "install": true }), true),
            (json!({ "mode": "extend" }), true),
            (json!({ "mode": "scratch", "brackets": [bracket] }), true),
            (
                json!({ "mode": "scratch", "brackets": [bracket], "voxel_rate": 0.01, "nodes_per_bracket": 3 }),
                true,
            ),
            (json!({ "mode": "extend", "brackets": [bracket] }), false),
            (json!({ "mode": "extend", "voxel_rate": 0.01 }), false),
            (json!({ "mode": "scratch" }), false),
            (json!({ "mode": "rebuild" }), false),
            (json!({ "install": true, "colour": "blue" }), false),
        ];
        for (body, well_formed) in bodies {
            let server = serde_json::from_value::<BuildRequest>(body.clone())
                .map_err(|e| ApiError::BadRequest(e.to_string()))
                .and_then(|request| request.validate());
            let shape = serde_json::from_value::<BuildRequestShape>(body.clone());
            assert_eq!(server.is_ok(), well_formed, "{body}: {server:?}");
            // A scratch body without brackets parses as the shape but its `minItems` refuses it.
            let shape_ok =
                shape.is_ok_and(|s| !matches!(s, BuildRequestShape::Scratch(ref b) if b.brackets.is_empty()));
            assert_eq!(shape_ok, well_formed, "{body}");
        }
    }
}
