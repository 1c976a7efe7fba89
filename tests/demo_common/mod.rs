//! The miniature `pedinorm demo` of the end-to-end tests: phantom cohort at 4 mm, ages 8–12,
//! one bracket, one case with a strong white-matter lesion.

use pedinorm::pipeline::demo::{BaseSource, DemoBrackets, DemoConfig};
use pedinorm_templates::model::{BuildOptions, MappingParams};
use pedinorm_validation::{Abnormality, LesionTissue};
use std::path::PathBuf;

/// The quick mapping of the miniature demos: short schedules, no bias correction, 6 mm
/// smoothing (4 mm phantom voxels).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn quick_mapping() -> MappingParams {
    let mut mapping = MappingParams::standard();
    mapping.affine_iterations = vec![60, 30, 10];
    mapping.deformable_iterations = vec![20, 10, 5];
    mapping.bias_correction = false;
    mapping.smoothing_fwhm_mm = 6.0;
    mapping
}

/// The miniature demo's configuration with `normals` normals mapped with `mapping`. Template
/// builds run as processes of the test's `pedinorm` binary.
pub fn miniature_demo(out_dir: PathBuf, normals: usize, mapping: MappingParams) -> DemoConfig {
    // SAFETY: set before any thread of the test process reads the environment.
    unsafe { std::env::set_var("PEDINORM_PROGRAM", env!("CARGO_BIN_EXE_pedinorm")) };
    DemoConfig {
        out_dir,
        base: BaseSource::Phantom { spacing_mm: 4.0 },
        extra_bases: Vec::new(),
        atlas: None,
        normals,
        cases: 1,
        abnormalities: vec![Abnormality::Lesion {
            tissue: LesionTissue::WhiteMatter,
            radius_mm: 10.0,
            contrast: 0.8,
        }],
        resolution_mm: 4.0,
        age_range: (8.0, 12.0),
        brackets: DemoBrackets::Equal(1),
        sites: 0,
        held_out_normals: 0,
        held_out_cases: 0,
        template_iterations: 1,
        template_schedule: (vec![40, 20], vec![10, 5]),
        seed: 7,
        jobs: 2,
        build: quick_build(mapping),
    }
}

/// The build options of the miniature databases (here and in the service tests): one age
/// node, and calibration rates loose enough for a dozen normals.
pub fn quick_build(mapping: MappingParams) -> BuildOptions {
    BuildOptions {
        mapping,
        nodes_per_bracket: 1,
        min_node_subjects: 4.0,
        voxel_rate: 0.01,
        cluster_rate: 0.1,
        ..BuildOptions::default()
    }
}
