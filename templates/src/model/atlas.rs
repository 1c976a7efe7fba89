//! An atlas carried into template space, and its label names.

use super::ModelError;
use super::mapping::MappingParams;
use super::space::TemplateSpace;
use ndarray::Array3;
use pedinorm_registration::{Image, Interpolation, Sigma, register};

/// Carries an atlas into template space: `reference` (the atlas's own T1, e.g. MNI) is
/// registered to the template (affine + diffeomorphic) and `labels` (on the reference's world
/// space) are pulled through that mapping by nearest neighbour, then restricted to the
/// template mask.
pub fn carry_atlas(
    space: &TemplateSpace,
    reference: &Image<f32>,
    labels: &Image<f32>,
    mapping: &MappingParams,
) -> Result<Image<f32>, ModelError> {
    let fail = |stage: &'static str, message: String| ModelError::Subject {
        subject: "atlas reference".into(),
        stage,
        message,
    };
    // The atlas follows the anatomy at greedy's default field smoothness, not the subjects'
    // lesion-preserving one.
    let mut plan = mapping.registration_plan(space)?;
    if let Some(deformable) = plan.deformable.as_mut() {
        deformable.field_sigma = Sigma::Voxels(0.707);
    }
    let result =
        register(&space.template, reference, &plan).map_err(|e| fail("registration", e.to_string()))?;
    let carried = result.warp(labels, space.template.grid(), Interpolation::Nearest);
    let mask = space.mask.as_slice();
    let data: Vec<f32> =
        carried.as_slice().iter().zip(mask).map(|(&l, &m)| if m > 0.5 { l } else { 0.0 }).collect();
    let d = space.template.grid().dims();
    Ok(Image::new(
        Array3::from_shape_vec((d[0], d[1], d[2]), data).expect("grid size"),
        space.template.grid().clone(),
    )
    .expect("shape"))
}

/// Parses a label table with one `VALUE<whitespace>NAME` per line (FSL/mricron `.txt`).
pub fn parse_label_names(text: &str) -> Vec<(i32, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(2, char::is_whitespace);
            let value = parts.next()?.parse::<i32>().ok()?;
            let name = parts.next()?.trim().replace('_', " ");
            (value > 0 && !name.is_empty()).then_some((value, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_table_parses() {
        let names = parse_label_names("0\tUnclassified\n3\tGenu_of_corpus_callosum\nbad line\n");
        assert_eq!(names, vec![(3, "Genu of corpus callosum".to_string())]);
    }
}
