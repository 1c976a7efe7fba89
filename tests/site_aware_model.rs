//! The site-aware normative model end to end: a miniature demo whose normals come from two
//! scanner sites estimates each site's location and scale, keeps them in the HDF5 database,
//! scores cases of a known site against their site's offsets and cases of any other site
//! against the pooled model with widened variance, and measures false positives on normals of
//! a third site the database has never seen.

mod demo_common;

use demo_common::{miniature_demo, quick_mapping};
use pedinorm::normdb::NormDbFile;
use pedinorm::pipeline::demo::run_demo;
use pedinorm::pipeline::deviation::{DeviationOptions, compute_deviation};
use pedinorm_registration::Grid;
use pedinorm_templates::model::{NormalSubject, NormativeDb, add_subject};
use pedinorm_templates::site_effects::SiteAdjustment;
use pedinorm_validation::{BaseBrain, Generator, Site, SubjectSpec};
use std::path::Path;

#[test]
fn two_site_database_corrects_known_sites_widens_unknown_ones_and_reports_held_out_false_positives() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = quick_mapping();
    let mut config = miniature_demo(dir.path().join("demo"), 12, mapping.clone());
    config.sites = 2;
    config.held_out_normals = 2;
    config.held_out_cases = 1;
    let summary = run_demo(&config).unwrap();

    // Both sites have their own effect in both channels, read back from the file.
    let db = NormativeDb::read(&summary.normdb).unwrap();
    let effects = db.calibration.as_ref().unwrap().site_effects.as_ref().expect("site effects stored");
    assert_eq!(effects.len(), 2);
    for channel in effects {
        let sites: Vec<&str> = channel.sites.iter().map(|s| s.site.as_str()).collect();
        assert_eq!(sites, ["S1", "S2"]);
        assert!(channel.sites.iter().all(|s| s.normals == 6 && s.location.len() == channel.classes()));
        assert!(channel.unseen_scale.iter().all(|&w| w >= 1.0));
    }

    // The case (site S1 or S2) was scored against its own site.
    let case = &summary.cases[0];
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["site"]["kind"], "seen", "{}", report["site"]);
    assert!(["S1", "S2"].contains(&report["site"]["site"].as_str().unwrap()));

    // Held-out normals of site S3: figures for both channels, every normal accounted for.
    let held_out = summary.held_out.as_ref().expect("held-out figures");
    assert_eq!(held_out.sites, ["S3"]);
    assert_eq!(held_out.normals.len(), 2);
    assert_eq!(held_out.voxel_rates.len(), 2);
    assert!(held_out.voxel_rates.iter().all(|r| r.achieved.is_finite() && r.nominal == 0.01));
    // Its case is compared with the truth: the strong lesion ranks above the rest of the brain.
    let [out_of_site] = summary.held_out_cases.as_slice() else { panic!("one held-out case") };
    assert_eq!(out_of_site.site, "S3");
    assert!(out_of_site.voxel_auc > 0.8, "{out_of_site:?}");
    assert!(summary.cases[0].voxel_auc > 0.8, "{:?}", summary.cases[0]);

    // One subject scored as its own site, as an unknown one and with no site given.
    let n = |extent: f64| (extent / 4.0).round() as usize;
    let grid = Grid::axis_aligned([n(140.0), n(170.0), n(130.0)], [4.0; 3], [-70.0, -100.0, -60.0]).unwrap();
    let base = BaseBrain::phantom(&grid);
    let generator = Generator::new(&base, 4.0).unwrap();
    let mut spec = SubjectSpec::normal(10.0, pedinorm_validation::Sex::Female, 4242);
    spec.resolution_mm = 4.0;
    spec.site = Site::numbered(1, 1, config.seed).remove(0);
    let subject = generator.subject(&spec).unwrap();
    let score = |site: Option<&str>| {
        let options =
            DeviationOptions { age_years: 10.0, sex: None, max_regions: 0, site: site.map(str::to_owned) };
        compute_deviation(&db, &subject.image, &options).unwrap()
    };
    let seen = score(Some("S1"));
    assert!(
        matches!(seen.site_adjustment, Some(SiteAdjustment::Seen { ref site, normals: 6 }) if site == "S1")
    );
    let unseen = score(Some("S9"));
    match &unseen.site_adjustment {
        Some(SiteAdjustment::Unseen { site, mean_widening }) => {
            assert_eq!(site.as_deref(), Some("S9"));
            assert!(*mean_widening >= 1.0);
        }
        other => panic!("expected the pooled model for an unknown site, got {other:?}"),
    }
    assert!(
        unseen.warnings.iter().any(|w| w.contains("site S9") && w.contains("widened")),
        "{:?}",
        unseen.warnings
    );
    assert!(matches!(score(None).site_adjustment, Some(SiteAdjustment::Unseen { site: None, .. })));

    // A normal of S1 added later joins its site's estimate (the moments are kept in the file),
    // and the grown database reads back with the same model.
    let mut grown = db.clone();
    let newcomer = NormalSubject {
        pseudonym: "added-S1".into(),
        age_years: 10.0,
        sex: pedinorm_templates::stats::Sex::Female,
        scanner: "S1".into(),
        image: subject.image.clone(),
    };
    assert!(add_subject(&mut grown, &newcomer, "2026-01-02T00:00:00Z").unwrap().qc_passed);
    let calibration = grown.calibration.as_ref().unwrap();
    assert_eq!(calibration.site_moments[0].normals.len(), 13);
    let s1 = |c: &pedinorm_templates::model::CalibrationRecord| {
        c.site_effects.as_ref().unwrap()[0].sites.iter().find(|e| e.site == "S1").unwrap().normals
    };
    assert_eq!(s1(calibration), 7);
    let grown_path = dir.path().join("grown.h5");
    grown.write(&grown_path).unwrap();
    let reread = NormativeDb::read(&grown_path).unwrap();
    assert_eq!(reread.calibration.as_ref().unwrap().site_moments, calibration.site_moments);
    assert_eq!(reread.calibration.as_ref().unwrap().site_effects, calibration.site_effects);

    // The layout, read by h5py.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".data/venv/bin/python");
    let script = r#"
import sys, h5py
g = h5py.File(sys.argv[1], "r")["calibration"]["site_effects"]
for ch in ("intensity", "logjac"):
    c = g[ch]
    k = int(c.attrs["classes"])
    sites = [x.decode() if isinstance(x, bytes) else x for x in c["site"][:]]
    assert sites == ["S1", "S2"], sites
    assert c["location"].shape == (2 * k,) and c["scale"].shape == (2 * k,) and c["unseen_scale"].shape == (k,)
    assert list(c["normals"][:]) == [6, 6]
    m = g.parent["site_moments"][ch]
    n = len(m["pseudonym"])
    assert n == 12 and m["mean"].shape == (n * k,) and m["square"].shape == (n * k,), n
    assert sorted(set(x.decode() if isinstance(x, bytes) else x for x in m["site"][:])) == ["S1", "S2"]
print("ok")
"#;
    let output =
        std::process::Command::new(python).arg("-c").arg(script).arg(&summary.normdb).output().unwrap();
    assert!(output.status.success(), "h5py: {}", String::from_utf8_lossy(&output.stderr));
}
