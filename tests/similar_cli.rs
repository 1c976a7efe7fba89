//! `pedinorm similar` end to end, a small version of the retrieval validation: a phantom
//! database at 4 mm (ten normals, 27 slab parcels as atlas), three members of each synthetic
//! disease class scored by the deviation pipeline into output folders, a labels file, then the
//! command's leave-one-out figures (against random and age-only baselines) and a new case's
//! most similar results, read back from the folders' `report.json`.

use pedinorm::pipeline::deviation::{DeviationOptions, run_case};
use pedinorm_templates::model::{MappingParams, NormativeDb};
use pedinorm_validation::Site;
use pedinorm_validation::disease_classes::{DiseaseClass, class_members};
use pedinorm_validation::phantom_database::{
    PhantomDatabaseSpec, phantom_database, phantom_generator, phantom_normals, phantom_spec, slabs,
};
use pedinorm_validation::subject::{Generator, SyntheticSubject};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const MM: f64 = 4.0;
const AGES: (f64, f64) = (5.0, 12.0);

fn database(generator: &Generator) -> NormativeDb {
    let mut mapping = MappingParams::standard();
    mapping.affine_iterations = vec![60, 30, 10];
    mapping.deformable_iterations = vec![20, 10, 5];
    mapping.bias_correction = false;
    mapping.smoothing_fwhm_mm = 6.0;
    let spec = PhantomDatabaseSpec {
        bracket: ("5-12y", AGES.0, AGES.1),
        mapping,
        rates: (0.01, 0.1),
        atlas: ("slabs", &|mask, centre| slabs(mask, centre, 20.0)),
    };
    let normals = phantom_normals(generator, MM, 10, AGES, 3);
    phantom_database(generator, normals, &spec).unwrap().0
}

fn members(generator: &Generator, per_class: usize, seed: u64) -> Vec<(DiseaseClass, SyntheticSubject)> {
    let template = phantom_spec(MM, AGES.0, 0, Site::reference());
    class_members(generator, &template, per_class, AGES, seed, &Site::reference()).unwrap()
}

fn score(db: &NormativeDb, subject: &SyntheticSubject, out_dir: &Path) {
    let options = DeviationOptions {
        age_years: subject.age_years,
        sex: Some(subject.sex),
        max_regions: 30,
        site: None,
    };
    run_case(db, &subject.image, &options, "case", "normdb.h5", out_dir).unwrap();
}

fn similar(args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pedinorm")).arg("similar").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), serde_json::from_str(&stdout).unwrap_or(Value::Null), stderr)
}

#[test]
fn similar_finds_cases_of_the_same_disease_class_across_ages() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library");
    let generator = phantom_generator(MM);
    let db = database(&generator);
    let mut labels = String::from("id,label\n");
    for (n, (class, subject)) in members(&generator, 3, 1).iter().enumerate() {
        let id = format!("case-{n:02}");
        score(&db, subject, &library.join(&id));
        labels.push_str(&format!("{id},{}\n", class.name));
    }
    let labels_file = dir.path().join("labels.csv");
    std::fs::write(&labels_file, &labels).unwrap();
    let (library_arg, labels_arg) = (library.to_str().unwrap(), labels_file.to_str().unwrap());

    let (ok, figures, stderr) =
        similar(&["--library", library_arg, "--labels", labels_arg, "--leave-one-out", "--k", "3", "--json"]);
    assert!(ok, "{stderr}");
    assert_eq!(figures["cases"], 15, "{figures}");
    assert_eq!(figures["cutoffs"], serde_json::json!([1, 3]));
    let rate = |method: &str, c: usize| figures[method][c].as_f64().unwrap();
    // Three members a class at 4 mm: the weak atrophy patterns are found less often than at the
    // validation's size (validation/RESULTS.md), the lesions always; far above both baselines.
    assert!(rate("signature", 1) >= 2.0 / 3.0, "top-3 retrieval {figures}");
    assert!(rate("signature", 1) > rate("random", 1) + 0.25, "top-3 well above random {figures}");
    assert!(rate("signature", 0) > rate("random", 0) + 0.3, "top-1 well above random {figures}");
    assert!(rate("signature", 1) > rate("age_only", 1), "{figures}");

    // A new case of each of two classes, outside the library: its class comes back among the
    // first three, scores in decreasing order.
    for (class, subject) in members(&generator, 1, 2).into_iter().take(2) {
        let query = dir.path().join(format!("query-{}", class.name));
        score(&db, &subject, &query);
        let (ok, rows, stderr) = similar(&[
            "--library",
            library_arg,
            "--labels",
            labels_arg,
            "--query",
            query.to_str().unwrap(),
            "--k",
            "3",
            "--json",
        ]);
        assert!(ok, "{stderr}");
        let rows = rows.as_array().unwrap().clone();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().any(|r| r["label"] == class.name), "{}: {rows:?}", class.name);
        let scores: Vec<f64> = rows.iter().map(|r| r["similarity"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }

    // A labels file naming a folder that is not there: the file, the id and the rule.
    let broken = dir.path().join("broken.csv");
    std::fs::write(&broken, format!("{labels}case-99,x\n")).unwrap();
    let (ok, _, stderr) =
        similar(&["--library", library_arg, "--labels", broken.to_str().unwrap(), "--leave-one-out"]);
    assert!(!ok);
    assert!(stderr.contains("broken.csv") && stderr.contains("id `case-99`: no folder"), "{stderr}");
}
