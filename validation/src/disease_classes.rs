//! Synthetic "disease classes": each a characteristic pattern of abnormality at a typical site,
//! varied within the class (size, strength, exact position) and drawn at any age — the cohort
//! on which similar-case retrieval is validated.
//!
//! Sites are offsets (mm) from the base brain's centre, chosen for an adult-sized brain; the
//! generator puts the abnormality at the voxel of its tissue nearest to the site within a few
//! millimetres ([`crate::subject::SITE_TOLERANCE_MM`]), so the same offsets work on the
//! phantom and on another base.

use crate::abnormality::{Abnormality, LesionTissue};
use crate::rng::{stream, streams, uniform};
use crate::site::Site;
use crate::subject::{Generator, SubjectSpec, SyntheticSubject};

/// One disease class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiseaseClass {
    /// Short name (the label of its cases).
    pub name: &'static str,
    /// What it shows, in words.
    pub pattern: &'static str,
    /// The typical site: offset from the brain centre (mm, RAS+), or `None` where the
    /// abnormality has its own place (the ventricles).
    pub site_offset_mm: Option<[f64; 3]>,
    kind: ClassKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ClassKind {
    PeriventricularWhiteMatter,
    PosteriorFossaAtrophy,
    EnlargedVentricles,
    FrontalCorticalLesion,
    ParietalCorticalAtrophy,
}

/// The classes of the validation cohort.
pub const DISEASE_CLASSES: [DiseaseClass; 5] = [
    DiseaseClass {
        name: "periventricular_wm",
        pattern: "white-matter signal change beside the left posterior ventricle (T1-hypointense, as T2-hyperintense \
                  periventricular white matter appears on T1)",
        site_offset_mm: Some([-18.0, -15.0, 8.0]),
        kind: ClassKind::PeriventricularWhiteMatter,
    },
    DiseaseClass {
        name: "posterior_fossa_atrophy",
        pattern: "volume loss low at the back of the brain, where the cerebellum lies",
        site_offset_mm: Some([10.0, -52.0, -25.0]),
        kind: ClassKind::PosteriorFossaAtrophy,
    },
    DiseaseClass {
        name: "enlarged_ventricles",
        pattern: "lateral ventricles enlarged, surrounding tissue compressed",
        site_offset_mm: None,
        kind: ClassKind::EnlargedVentricles,
    },
    DiseaseClass {
        name: "frontal_cortical_lesion",
        pattern: "a T1-hyperintense cortical lesion in the left frontal lobe",
        site_offset_mm: Some([-30.0, 45.0, 20.0]),
        kind: ClassKind::FrontalCorticalLesion,
    },
    DiseaseClass {
        name: "parietal_cortical_atrophy",
        pattern: "focal cortical volume loss in the right parietal lobe",
        site_offset_mm: Some([35.0, -35.0, 35.0]),
        kind: ClassKind::ParietalCorticalAtrophy,
    },
];

impl DiseaseClass {
    /// The abnormality of one member: the class's pattern with its size and strength drawn
    /// from `seed`.
    pub fn abnormality(&self, seed: u64) -> Abnormality {
        let mut rng = stream(seed, streams::DISEASE_CLASS);
        let mut draw = |lo: f64, hi: f64| uniform(&mut rng, lo, hi);
        match self.kind {
            ClassKind::PeriventricularWhiteMatter => Abnormality::Lesion {
                tissue: LesionTissue::WhiteMatter,
                radius_mm: draw(8.0, 11.0),
                contrast: draw(-0.5, -0.35),
            },
            ClassKind::PosteriorFossaAtrophy => {
                Abnormality::Atrophy { radius_mm: draw(12.0, 16.0), volume_loss: draw(0.35, 0.5) }
            }
            ClassKind::EnlargedVentricles => Abnormality::EnlargedVentricles { dilation_mm: draw(2.5, 5.0) },
            ClassKind::FrontalCorticalLesion => Abnormality::Lesion {
                tissue: LesionTissue::GreyMatter,
                radius_mm: draw(6.0, 9.0),
                contrast: draw(0.5, 0.8),
            },
            ClassKind::ParietalCorticalAtrophy => {
                Abnormality::Atrophy { radius_mm: draw(10.0, 14.0), volume_loss: draw(0.35, 0.5) }
            }
        }
    }

    /// `spec` (a normal's specification) made a member of this class, centred near the class's
    /// site for a brain centred at `brain_centre`.
    pub fn member(&self, mut spec: SubjectSpec, brain_centre: [f64; 3]) -> SubjectSpec {
        spec.abnormality = Some(self.abnormality(spec.seed));
        spec.abnormality_site =
            self.site_offset_mm.map(|offset| [0, 1, 2].map(|axis| brain_centre[axis] + offset[axis]));
        spec
    }
}

/// `per_class` members of every class imaged at `site`, each at an age drawn uniformly from
/// `ages` (years), seeds `seed · 10000 + n`. Each member comes with its class.
pub fn class_members(
    generator: &Generator,
    spec: &SubjectSpec,
    per_class: usize,
    ages: (f64, f64),
    seed: u64,
    site: &Site,
) -> Result<Vec<(DiseaseClass, SyntheticSubject)>, crate::SynthError> {
    let mut members = Vec::with_capacity(per_class * DISEASE_CLASSES.len());
    for m in 0..per_class {
        for (c, class) in DISEASE_CLASSES.iter().enumerate() {
            let member_seed = seed * 10_000 + (m * DISEASE_CLASSES.len() + c) as u64;
            let mut normal = spec.clone();
            normal.age_years = uniform(&mut stream(member_seed, streams::COHORT), ages.0, ages.1);
            normal.seed = member_seed;
            normal.site = site.clone();
            normal.sex =
                if member_seed % 2 == 0 { crate::growth::Sex::Female } else { crate::growth::Sex::Male };
            let member = class.member(normal, generator.brain_centre());
            members.push((*class, generator.subject(&member)?));
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::growth::Sex;

    #[test]
    fn members_vary_within_their_class_and_are_valid() {
        for class in DISEASE_CLASSES {
            let a = class.member(SubjectSpec::normal(4.0, Sex::Female, 1), [0.0, -15.0, 5.0]);
            let b = class.member(SubjectSpec::normal(9.0, Sex::Male, 2), [0.0, -15.0, 5.0]);
            let (Some(first), Some(second)) = (a.abnormality, b.abnormality) else { panic!("a case") };
            assert_ne!(first, second, "{}: seeds vary the parameters", class.name);
            assert_eq!(first.kind(), second.kind());
            assert!(first.validate().is_ok() && second.validate().is_ok(), "{}", class.name);
            assert_eq!(a.abnormality_site, b.abnormality_site);
            assert_eq!(a.abnormality_site.is_none(), class.site_offset_mm.is_none());
        }
        let names: std::collections::BTreeSet<&str> = DISEASE_CLASSES.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), DISEASE_CLASSES.len());
    }
}
