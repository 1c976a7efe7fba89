//! Similar-case retrieval on synthetic disease classes, and the speed of a query.
//!
//! A normative database is built in memory from phantom normals (one bracket, the base as its
//! template, 27 slab parcels as its atlas). Members of every disease class
//! (`pedinorm_validation::disease_classes`: a characteristic pattern at a typical site, varied
//! in size, strength and position, at ages spread over the bracket) are scored against it as
//! cases, exactly as `pedinorm deviation` scores them, and reduced to signatures. Figures:
//!
//! - leave-one-out top-1 and top-3 retrieval (a hit: a case of the query's class among the
//!   first k), against random order (exact expectation) and nearest age;
//! - the same classes imaged at a scanner site neither the database nor the library has seen
//!   (other contrast, blur, noise and bias), queried against the reference-site library;
//! - the time to query an index of 10,000 signatures (the cohort's own, repeated with small
//!   seeded perturbations), median of 50 queries.
//!
//! ```text
//! cargo run -p pedinorm-validation --bin similar_cases -- \
//!     [--normals 12] [--per-class 5] [--resolution 3] [--seed 1] [--index 10000]
//! ```

use pedinorm_templates::model::MappingParams;
use pedinorm_templates::model::score::{DeviationOptions, compute_deviation};
use pedinorm_templates::similarity::{RetrievalFigures, Signature, SignatureIndex, leave_one_out};
use pedinorm_validation::disease_classes::{DISEASE_CLASSES, class_members};
use pedinorm_validation::phantom_database::{
    PhantomDatabaseSpec, phantom_database, phantom_generator, phantom_normals, phantom_spec, slabs,
};
use pedinorm_validation::{Site, rng};
use std::time::Instant;

struct Options {
    normals: usize,
    per_class: usize,
    resolution_mm: f64,
    seed: u64,
    index: usize,
}

fn options() -> Options {
    let mut o = Options { normals: 12, per_class: 5, resolution_mm: 3.0, seed: 1, index: 10_000 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        match pair[0].as_str() {
            "--normals" => o.normals = value.parse().expect("--normals: a count"),
            "--per-class" => o.per_class = value.parse().expect("--per-class: a count"),
            "--resolution" => o.resolution_mm = value.parse().expect("--resolution: mm"),
            "--seed" => o.seed = value.parse().expect("--seed: an integer"),
            "--index" => o.index = value.parse().expect("--index: a count"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// The bracket's age range (years): cases and normals span it.
const AGES: (f64, f64) = (5.0, 12.0);

fn print_figures(title: &str, figures: &RetrievalFigures) {
    println!("\n{title}: {} cases, {} classes\n", figures.cases, figures.labels);
    println!(
        "| method | {} |",
        figures.cutoffs.iter().map(|k| format!("top-{k}")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(figures.cutoffs.len()));
    for (name, rates) in [
        ("signature similarity", &figures.signature),
        ("age only", &figures.age_only),
        ("random", &figures.random),
    ] {
        let cells: Vec<String> = rates.iter().map(|r| format!("{:.0} %", 100.0 * r)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// Per class: how often its first match (leave-one-out) is of its class, and what it is
/// mistaken for.
fn print_confusions(library: &[(String, Signature)]) {
    let index = SignatureIndex::new(library.iter().enumerate().map(|(i, (_, s))| (i, s.clone())).collect());
    println!("\n| class | top-1 of its class | first matches of other classes |");
    println!("|---|---|---|");
    for class in DISEASE_CLASSES {
        let mut right = 0;
        let mut wrong: Vec<String> = Vec::new();
        let members: Vec<usize> = (0..library.len()).filter(|&i| library[i].0 == class.name).collect();
        for &q in &members {
            let first = &index.query(&library[q].1, 1, |&i| i != q)[0];
            if library[first.key].0 == class.name {
                right += 1;
            } else {
                wrong.push(library[first.key].0.clone());
            }
        }
        println!("| {} | {right}/{} | {} |", class.name, members.len(), wrong.join(", "));
    }
}

fn main() {
    let o = options();
    let mm = o.resolution_mm;
    let started = Instant::now();
    let generator = phantom_generator(mm);
    let normals = phantom_normals(&generator, mm, o.normals, AGES, o.seed);
    let mut mapping = MappingParams::standard();
    mapping.affine_iterations = vec![100, 50, 20];
    mapping.deformable_iterations = vec![40, 20, 10];
    let spec = PhantomDatabaseSpec {
        bracket: ("5-12y", AGES.0, AGES.1),
        mapping,
        rates: (0.01, 0.1),
        atlas: ("slabs", &|mask, centre| slabs(mask, centre, 20.0)),
    };
    let (db, _) = phantom_database(&generator, normals, &spec).expect("the database builds");
    eprintln!("database of {} normals built in {:.0} s", o.normals, started.elapsed().as_secs_f64());

    let template = phantom_spec(mm, AGES.0, 0, Site::reference());
    let score = |site: &Site, seed: u64| -> Vec<(String, Signature)> {
        let members =
            class_members(&generator, &template, o.per_class, AGES, seed, site).expect("valid members");
        members
            .into_iter()
            .map(|(class, subject)| {
                let options = DeviationOptions {
                    age_years: subject.age_years,
                    sex: Some(subject.sex),
                    max_regions: 30,
                    site: None,
                };
                let result = compute_deviation(&db, &subject.image, &options).expect("the case scores");
                let signature = Signature::of_result(&result).expect("finite results");
                eprintln!(
                    "{} age {:.1}: {} significant clusters, {} local volume findings ({:.0} s)",
                    class.name,
                    subject.age_years,
                    result.clusters.iter().filter(|c| c.significant).count(),
                    result.local_volume.as_ref().map_or(0, |l| l.findings.len()),
                    started.elapsed().as_secs_f64()
                );
                (class.name.to_owned(), signature)
            })
            .collect()
    };
    let library = score(&Site::reference(), o.seed);
    let figures = leave_one_out(&library, &[1, 3]);
    println!("Classes: {}", DISEASE_CLASSES.map(|c| c.name).join(", "));
    print_figures("Leave-one-out, reference site", &figures);
    print_confusions(&library);

    // Queries imaged at an unseen site against the reference-site library.
    let unseen = Site::draw("S9", o.seed + 90);
    let queries = score(&unseen, o.seed + 1);
    let index = SignatureIndex::new(library.clone());
    let mut hits = [0usize; 2];
    for (label, signature) in &queries {
        let ranked = index.query(signature, 3, |_| true);
        for (h, k) in [1usize, 3].into_iter().enumerate() {
            if ranked.iter().take(k).any(|m| m.key == *label) {
                hits[h] += 1;
            }
        }
    }
    let n = queries.len().max(1) as f64;
    println!(
        "\nUnseen site {} (wm contrast {:.2}, blur {:.1} mm, SNR {:.0}): {} queries against the {}-case library: \
         top-1 {:.0} %, top-3 {:.0} %",
        unseen.id,
        unseen.wm_contrast,
        unseen.blur_fwhm_mm,
        unseen.snr,
        queries.len(),
        library.len(),
        100.0 * hits[0] as f64 / n,
        100.0 * hits[1] as f64 / n
    );

    // Query time over an index of `o.index` signatures.
    let mut noise = rng::stream(o.seed, 99);
    let many: Vec<(usize, Signature)> = (0..o.index)
        .map(|i| {
            let mut signature = library[i % library.len()].1.clone();
            for values in signature.regions.values_mut() {
                for v in values.iter_mut() {
                    *v += 0.05 * rng::standard_normal(&mut noise);
                }
            }
            for point in &mut signature.clusters {
                point.peak_template_mm[0] += rng::standard_normal(&mut noise);
            }
            (i, signature)
        })
        .collect();
    let built = Instant::now();
    let index = SignatureIndex::new(many);
    let build_ms = built.elapsed().as_secs_f64() * 1000.0;
    let mut times: Vec<f64> = (0..50)
        .map(|q| {
            let start = Instant::now();
            let ranked = index.query(&queries[q % queries.len()].1, 10, |_| true);
            assert_eq!(ranked.len(), 10);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "\nQuery of {} signatures (k = 10): median {:.1} ms, max {:.1} ms over 50 queries ({} threads); index built in {:.0} ms",
        o.index,
        times[times.len() / 2],
        times[times.len() - 1],
        rayon::current_num_threads(),
        build_ms
    );
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
}
