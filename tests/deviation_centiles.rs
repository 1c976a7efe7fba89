//! A case's regional volumes and growth-chart centiles in its deviation outputs: a miniature
//! demo (phantom cohort, 4 mm) with enough normals for centile models, then the case's
//! `regional.tsv`, summary sheet, growth charts and the `regional` part of `report.json`.

mod demo_common;

use demo_common::{miniature_demo, quick_mapping};
use pedinorm::normdb::NormDbFile;
use pedinorm::pipeline::demo::run_demo;
use pedinorm_templates::model::NormativeDb;

#[test]
fn deviation_reports_regional_volumes_against_the_databases_centiles() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run_demo(&miniature_demo(dir.path().join("demo"), 24, quick_mapping())).unwrap();
    let db = NormativeDb::read(&summary.normdb).unwrap();
    let table = db.regional.as_ref().expect("the normals' regional volumes");
    let set = db.centiles.as_ref().expect("24 normals give centile models");
    assert!(set.model("total_brain").is_some() && set.model("icv").is_some());
    assert!(set.models.iter().all(|m| m.subjects == table.rows.len()));

    let case = &summary.cases[0];
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.out_dir.join("report.json")).unwrap()).unwrap();
    let regional = &report["regional"];
    let centiles = regional["centiles"].as_array().expect("centiles in the report");
    assert_eq!(centiles[0]["measure"], "total_brain", "whole-brain measures first");
    assert_eq!(centiles[1]["measure"], "icv");
    for row in centiles {
        let centile = row["centile"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&centile));
        let range = row["normal_range"].as_array().unwrap();
        assert!(range[0].as_f64() < range[2].as_f64());
    }
    assert!(regional["flag_limit_z"].as_f64().unwrap() >= 1.959);
    // The case's total brain volume is that of a normal child of its age: inside the limit.
    assert_eq!(centiles[0]["flagged"], false, "{}", centiles[0]);

    let tsv = std::fs::read_to_string(case.out_dir.join("regional.tsv")).unwrap();
    assert!(tsv.starts_with("measure\tvalue_ml\tcentile\tz\tflagged"));
    // One row per centile measure, then the local volume change (loss and gain) when the
    // database calibrates it.
    let local_volume = tsv.lines().filter(|l| l.starts_with("local_volume_")).count();
    assert_eq!(local_volume, if report["local_volume"].is_null() { 0 } else { 2 }, "{tsv}");
    assert_eq!(tsv.lines().count(), centiles.len() + 1 + local_volume);
    let sheet = std::fs::read_to_string(case.out_dir.join("regional_summary.svg")).unwrap();
    assert_eq!(sheet.matches("<circle").count(), centiles.len());
    let chart = std::fs::read_to_string(case.out_dir.join("growth_total_brain.svg")).unwrap();
    assert!(chart.contains("total_brain — centiles by age") && chart.contains("<circle"));
    let outputs: Vec<&str> =
        report["outputs"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
    for name in ["regional.tsv", "regional_summary.svg", "growth_total_brain.svg", "growth_icv.svg"] {
        assert!(outputs.contains(&name), "{name} missing from {outputs:?}");
    }
}
