//! Within-subject alignment on real images of one session (a measurement run on demand, with
//! images that are not shipped): the second image is moved by a known rigid motion — its
//! header's affine changed, its voxels untouched — and `within_subject::align_contrast`'s plan
//! must find the motion on top of the alignment it finds without it.
//!
//! ```sh
//! PEDINORM_REAL_REFERENCE=t1.nii.gz PEDINORM_REAL_OTHER=pd.nii.gz \
//!     cargo test --release --test within_subject_real -- --ignored --nocapture
//! ```

use pedinorm::formats::nifti::read_image;
use pedinorm_registration::{AffineTransform, Grid, Image, RegistrationPlan, register};
use std::path::PathBuf;

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| panic!("set {name}"))
}

#[test]
#[ignore = "a measurement on real images named by PEDINORM_REAL_REFERENCE and PEDINORM_REAL_OTHER"]
fn a_known_motion_between_real_contrasts_is_found() {
    let reference = read_image(&env_path("PEDINORM_REAL_REFERENCE")).unwrap();
    let other = read_image(&env_path("PEDINORM_REAL_OTHER")).unwrap();
    let plan = RegistrationPlan::within_subject();
    let start = std::time::Instant::now();
    let baseline = register(&reference, &other, &plan).unwrap().affine;
    let seconds = start.elapsed().as_secs_f64();
    // Points of the head: the reference's centre and ±40 mm along each axis around it.
    let dims = reference.grid().dims();
    let centre =
        reference.grid().voxel_to_world([dims[0] as f64 / 2.0, dims[1] as f64 / 2.0, dims[2] as f64 / 2.0]);
    let mut points = vec![centre];
    for axis in 0..3 {
        for sign in [-40.0, 40.0] {
            let mut p = centre;
            p[axis] += sign;
            points.push(p);
        }
    }
    println!(
        "without added motion: {:.2} mm from the scanner geometry at most over the head",
        AffineTransform::identity().max_distance(&baseline, &points)
    );
    for (rotation, translation) in
        [([0.0, 0.0, 0.05], [4.0, -3.0, 2.0]), ([0.04, -0.03, 0.0], [-6.0, 2.0, 5.0])]
    {
        let motion = AffineTransform::rigid(rotation, translation, centre);
        let moved_grid = Grid::new(other.grid().dims(), motion.matrix() * other.grid().affine()).unwrap();
        let moved = Image::new(other.data().clone(), moved_grid).unwrap();
        let found = register(&reference, &moved, &plan).unwrap().affine;
        let expected = motion.compose(&baseline);
        let error = found.max_distance(&expected, &points);
        let moved_by = AffineTransform::identity().max_distance(&motion, &points);
        println!(
            "motion {moved_by:.2} mm at most over the head; found to within {error:.2} mm (alignment without motion took {seconds:.1} s)"
        );
        assert!(error < 1.0, "{error} mm");
    }
}
