//! Timing of the registration engine's hot paths on the MNI T1 at 2 mm: resampling, smoothing,
//! every metric with its gradient, one deformable iteration, and whole affine and deformable
//! registrations of a synthetic pair (the template under a known affine and a smooth warp).
//!
//! Run: `cargo bench --bench hot_paths` (needs `.data/mni/t1.nii.gz`).

use criterion::{Criterion, criterion_group, criterion_main};
use pedinorm::formats::nifti::read_image;
use pedinorm_registration::metrics::{
    LocalCcVariant, LocalCcWork, MattesMutualInformation, local_cc_forces, mean_squares,
    normalized_correlation,
};
use pedinorm_registration::resample::resample;
use pedinorm_registration::smooth::{pyramid_level, smooth_voxels};
use pedinorm_registration::transform::map_voxels;
use pedinorm_registration::{
    AffineTransform, DeformableStage, DisplacementField, Image, Interpolation, RegistrationPlan, Schedule,
    TransformChain, register,
};
use std::hint::black_box;
use std::path::Path;

/// The MNI T1 at 2 mm and a moving image: the template under a child-like affine and a bump.
fn pair() -> (Image<f32>, Image<f32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/mni/t1.nii.gz");
    let t1 = read_image(&path).unwrap_or_else(|e| panic!("{e}: run scripts/setup.sh"));
    let fixed = pyramid_level(&t1, 2, 0.0);
    let grid = fixed.grid().clone();
    let centre = grid.center_world();
    let bump = DisplacementField::from_flat(
        &grid,
        map_voxels(&grid, |v| {
            let p = grid.voxel_to_world(v);
            let d2 = (p[0] - centre[0]).powi(2) + (p[1] - centre[1]).powi(2) + (p[2] - centre[2]).powi(2);
            let g = (-d2 / (2.0 * 25.0f64.powi(2))).exp();
            [(4.0 * g) as f32, (-3.0 * g) as f32, (2.0 * g) as f32]
        }),
    );
    let rotation = nalgebra::Rotation3::from_euler_angles(0.05, -0.03, 0.08).into_inner();
    let affine = AffineTransform::about_center(&(rotation / 0.85), [2.0, -1.0, 1.0], centre);
    let truth = TransformChain::new(vec![&affine, &bump]);
    let moving = resample(&fixed, &grid, &truth, Interpolation::Linear, 0.0);
    (fixed, moving)
}

fn benches(c: &mut Criterion) {
    let (fixed, moving) = pair();
    let grid = fixed.grid().clone();
    let dims = grid.dims();
    let rotation = AffineTransform::rigid([0.05, 0.02, -0.04], [1.0, 2.0, 0.5], grid.center_world());
    c.bench_function("resample linear 2mm", |b| {
        b.iter(|| black_box(resample(&moving, &grid, &rotation, Interpolation::Linear, 0.0)))
    });
    c.bench_function("smooth sigma 1.732 vox 2mm", |b| {
        b.iter(|| black_box(smooth_voxels(&moving, [1.732; 3])))
    });
    let f = fixed.as_slice();
    let m = moving.as_slice();
    let mut derivative = vec![0f64; f.len()];
    c.bench_function("mean squares + gradient 2mm", |b| {
        b.iter(|| black_box(mean_squares(f, m, &mut derivative)))
    });
    c.bench_function("ncc + gradient 2mm", |b| {
        b.iter(|| black_box(normalized_correlation(f, m, &mut derivative)))
    });
    let range = |x: &Image<f32>| x.finite_range().unwrap();
    let mi = MattesMutualInformation::new(32, range(&fixed), range(&moving));
    c.bench_function("mattes mi + gradient 2mm", |b| {
        b.iter(|| black_box(mi.evaluate(f, m, &mut derivative)))
    });
    let mut work = LocalCcWork::new(f, dims, 2);
    let mut coefficient = vec![0f64; f.len()];
    c.bench_function("local cc r2 + gradient 2mm", |b| {
        b.iter(|| {
            black_box(local_cc_forces(&mut work, f, m, None, LocalCcVariant::Squared, &mut coefficient))
        })
    });
    let one_iteration = RegistrationPlan {
        affine: None,
        deformable: Some(DeformableStage {
            schedule: Schedule::in_voxels(&[1], &[0.0], &[1]),
            inverse_iterations: 0,
            ..DeformableStage::default()
        }),
        ..RegistrationPlan::default()
    };
    let affine_only = RegistrationPlan { deformable: None, ..RegistrationPlan::default() };
    let mut group = c.benchmark_group("whole runs");
    group.sample_size(10);
    group.bench_function("one deformable iteration 2mm", |b| {
        b.iter(|| black_box(register(&fixed, &moving, &one_iteration).unwrap()))
    });
    group.bench_function("affine registration 2mm", |b| {
        b.iter(|| black_box(register(&fixed, &moving, &affine_only).unwrap()))
    });
    let affine = register(&fixed, &moving, &affine_only).unwrap().affine;
    let deformable_only =
        RegistrationPlan { initial: Some(affine), affine: None, ..RegistrationPlan::default() };
    group.bench_function("deformable registration 2mm", |b| {
        b.iter(|| black_box(register(&fixed, &moving, &deformable_only).unwrap()))
    });
    group.finish();
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
