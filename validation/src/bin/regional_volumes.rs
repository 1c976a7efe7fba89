//! Regional volumes against the synthetic truth, test–retest, and the speed of the volumes step.
//!
//! A normative database is built in memory from phantom normals (the generator's procedural
//! base, one bracket, template = the base on the output grid) with an eight-region atlas of the
//! base (left/right × anterior/posterior × superior/inferior of the brain centre). Held-out
//! subjects are measured as `pedinorm volumes` measures them (`model::subject_volumes`) and
//! compared with their truth: tissue volumes from the generator's tissue labels, regional
//! volumes from those labels inside the base atlas carried onto the subject through the truth
//! deformation. Each subject is imaged again (stronger bias field, lower SNR plus independent noise, 1.4× gain:
//! `Rescan::moderate` and `Rescan::strong`) and measured again. Finally the volumes step alone
//! (carrying labels and priors, segmenting, measuring; the mapping excluded) is timed on a 1 mm
//! grid.
//!
//! ```text
//! cargo run --release -p pedinorm-validation --bin regional_volumes -- \
//!     [--normals 10] [--subjects 6] [--resolution 2] [--seed 1]
//! ```

use pedinorm_registration::resample::resample;
use pedinorm_registration::{AffineTransform, DisplacementField, Image, Interpolation};
use pedinorm_templates::model::regional::subject_volumes;
use pedinorm_templates::model::{
    BuildOptions, MappingParams, NativeSubject, TemplateSpace, TissuePriors, member_tissues,
    regional_volumes, template_tissues,
};
use pedinorm_validation::phantom_database::{
    PhantomDatabaseSpec, octants, phantom_database, phantom_generator, phantom_normals, phantom_subject,
};
use pedinorm_validation::subject::{SubjectSpec, SyntheticSubject};
use pedinorm_validation::{Rescan, Site};
use std::time::Instant;

const REGIONS: usize = 8;

struct Options {
    normals: usize,
    subjects: usize,
    resolution_mm: f64,
    seed: u64,
}

fn options() -> Options {
    let mut o = Options { normals: 10, subjects: 6, resolution_mm: 2.0, seed: 1 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        match pair[0].as_str() {
            "--normals" => o.normals = value.parse().expect("--normals: a count"),
            "--subjects" => o.subjects = value.parse().expect("--subjects: a count"),
            "--resolution" => o.resolution_mm = value.parse().expect("--resolution: mm"),
            "--seed" => o.seed = value.parse().expect("--seed: an integer"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// Truth volumes (ml) in the order of `subject_volumes`' measures: totals, then per region
/// CSF, GM, WM (tissue labels 1, 2, 3 inside the base atlas carried by the truth deformation).
fn truth_volumes(s: &SyntheticSubject, base_labels: &Image<f32>) -> Vec<f64> {
    let voxel_ml = s.truth.labels.grid().spacing().iter().product::<f64>() / 1000.0;
    let carried =
        resample(base_labels, s.truth.labels.grid(), &s.truth.deformation, Interpolation::Nearest, 0.0);
    let mut tissue = [0f64; 3];
    let mut regional = [[0f64; 3]; REGIONS];
    for (&t, &r) in s.truth.labels.as_slice().iter().zip(carried.as_slice()) {
        if (1.0..=3.0).contains(&t) {
            let t = t as usize - 1;
            tissue[t] += voxel_ml;
            if r >= 1.0 {
                regional[r as usize - 1][t] += voxel_ml;
            }
        }
    }
    let [csf, gm, wm] = tissue;
    let mut values = vec![gm, wm, csf, gm + wm, gm + wm + csf];
    values.extend(regional.iter().flat_map(|r| r.iter().copied()));
    values
}

fn main() {
    let o = options();
    let mm = o.resolution_mm;
    let generator = phantom_generator(mm);
    let started = Instant::now();
    let normals = phantom_normals(&generator, mm, o.normals, (7.0, 11.0), o.seed);
    let mut mapping = MappingParams::standard();
    mapping.affine_iterations = vec![100, 50, 20];
    mapping.deformable_iterations = vec![40, 20, 10];
    let defaults = BuildOptions::default();
    let spec = PhantomDatabaseSpec {
        bracket: ("7-11y", 7.0, 11.0),
        mapping,
        rates: (defaults.voxel_rate, defaults.cluster_rate),
        atlas: ("octants", &octants),
    };
    let (db, parcels) = phantom_database(&generator, normals, &spec).unwrap();
    let base_labels = parcels.labels;
    eprintln!("database of {} normals built in {:.0} s", o.normals, started.elapsed().as_secs_f64());

    let mut names = Vec::new();
    let mut errors: Vec<Vec<f64>> = Vec::new();
    let mut retest_diffs: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    let mut truths: Vec<Vec<f64>> = Vec::new();
    for s in 0..o.subjects {
        let age = 7.3 + 3.4 * s as f64 / o.subjects.max(2).saturating_sub(1) as f64;
        let seed = o.seed * 1000 + 500 + s as u64;
        let test = phantom_subject(&generator, mm, age, seed, Site::reference());
        let mut spec = SubjectSpec::normal(age, test.sex, seed);
        spec.resolution_mm = mm;
        let measured = subject_volumes(&db, &test.image, age, "test").unwrap();
        let a = &measured.volumes.measures.values_ml;
        let truth = truth_volumes(&test, &base_labels);
        names = measured.volumes.measures.names.clone();
        errors.push(a.iter().zip(&truth).map(|(m, t)| (m - t) / t).collect());
        for (k, rescan) in [Rescan::moderate(seed), Rescan::strong(seed)].iter().enumerate() {
            let again = rescan.image(&generator, &spec).unwrap();
            let b = subject_volumes(&db, &again.image, age, "retest").unwrap().volumes.measures.values_ml;
            retest_diffs[k].push(a.iter().zip(&b).map(|(x, y)| (x - y).abs() / x).collect());
        }
        truths.push(truth);
        eprintln!("subject {s} (age {age:.1}) measured");
    }
    let n = o.subjects as f64;
    println!(
        "| measure | mean truth (ml) | mean relative error | mean \\|relative error\\| | retest moderate: mean / max \\|difference\\| | retest strong: mean / max |"
    );
    println!("|---|---|---|---|---|---|");
    for (m, name) in names.iter().enumerate() {
        let mean = |f: &dyn Fn(usize) -> f64| (0..o.subjects).map(f).sum::<f64>() / n;
        let retest = |k: usize| {
            let max = (0..o.subjects).map(|s| retest_diffs[k][s][m]).fold(0.0, f64::max);
            format!("{:.2} % / {:.2} %", 100.0 * mean(&|s| retest_diffs[k][s][m]), 100.0 * max)
        };
        println!(
            "| {name} | {:.1} | {:+.1} % | {:.1} % | {} | {} |",
            mean(&|s| truths[s][m]),
            100.0 * mean(&|s| errors[s][m]),
            100.0 * mean(&|s| errors[s][m].abs()),
            retest(0),
            retest(1)
        );
    }

    // Speed of the volumes step alone at 1 mm: a 1 mm phantom subject with the template's own
    // tissues as priors, through an identity mapping (same work as after a real mapping).
    let fine = phantom_generator(1.0);
    let fine_space = TemplateSpace::new(fine.base_on_grid(), None).unwrap();
    let seeded = template_tissues(&fine_space).unwrap();
    let member = member_tissues(&fine_space.template, &fine_space, &seeded, "t").unwrap();
    let mut bracket = db.brackets[0].clone();
    bracket.template = fine_space.template.clone();
    bracket.mask = fine_space.mask.clone();
    bracket.labels = Some(octants(&fine_space.mask, fine.brain_centre()).labels);
    bracket.priors = TissuePriors::from_members(&fine_space, &[&member]);
    let one_mm = phantom_subject(&fine, 1.0, 9.0, 77, Site::reference());
    let native = NativeSubject {
        image: one_mm.image.clone(),
        affine: AffineTransform::identity(),
        inverse: DisplacementField::zeros(fine_space.template.grid()),
    };
    let dims = one_mm.image.grid().dims();
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let result = regional_volumes(&native, &bracket, db.atlas.as_ref(), "timing").unwrap();
        times.push(start.elapsed().as_secs_f64());
        assert!(result.measures.get("icv").unwrap() > 0.0);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "\nvolumes step at 1 mm ({}×{}×{} voxels, {} threads): median {:.2} s of 3 runs (min {:.2} s)",
        dims[0],
        dims[1],
        dims[2],
        rayon::current_num_threads(),
        times[1],
        times[0]
    );
}
