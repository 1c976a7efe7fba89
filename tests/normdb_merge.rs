//! `pedinorm normdb merge a.h5 b.h5 --output c.h5` equals the database built from the union of
//! a's and b's subjects, its calibration recomputed from both databases' null summaries;
//! `normdb info` reads it; a bad input is refused without touching the output.

use pedinorm::normdb::NormDbFile;
use pedinorm_registration::{Grid, Image};
use pedinorm_templates::model::{
    BracketInput, BuildOptions, CalibrationRecord, MappedNormal, NormativeDb, SubjectRecord, TemplateSpace,
    assemble, calibrate,
};
use pedinorm_templates::stats::Sex;
use std::path::Path;
use std::process::Command;

/// The time the databases of these tests are recorded as built at.
const NOW: &str = "2026-01-01T00:00:00Z";

fn bracket() -> BracketInput {
    let grid = Grid::axis_aligned([10, 12, 9], [2.0; 3], [-10.0, -12.0, -9.0]).unwrap();
    let mut template = Image::filled(grid.clone(), 0.0f32);
    let mut mask = Image::filled(grid, 0.0f32);
    for i in 2..8 {
        for j in 2..10 {
            for k in 2..7 {
                template.data_mut()[[i, j, k]] = 100.0 + (i * 3 + j * 5 + k) as f32;
                mask.data_mut()[[i, j, k]] = 1.0;
            }
        }
    }
    BracketInput {
        name: "4-10y".into(),
        min_years: 4.0,
        max_years: 10.0,
        space: TemplateSpace::new(template, Some(mask)).unwrap(),
        labels: None,
    }
}

/// Deterministic pseudo-random subjects already mapped to template space.
fn subjects(n: usize, voxels: usize) -> Vec<MappedNormal> {
    let mut state = 12345u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|s| {
            let age = 4.0 + 6.0 * next();
            let sex = if s % 2 == 0 { Sex::Female } else { Sex::Male };
            let intensity: Vec<f32> =
                (0..voxels).map(|v| (100.0 + v as f64 * 0.1 + 3.0 * age + 5.0 * next()) as f32).collect();
            let logjac: Vec<f32> = (0..voxels).map(|_| (0.1 * (next() - 0.5)) as f32).collect();
            MappedNormal {
                record: SubjectRecord {
                    pseudonym: format!("PSN{s:03}"),
                    age_years: age,
                    sex,
                    // One scanner model at both centres: site effects (estimated only when the
                    // normals come from several scanners) would make the union differ from the
                    // merge by design.
                    scanner: "scanner-x".into(),
                    bracket: "4-10y".into(),
                    qc_similarity: 0.95,
                    qc_histogram_distance: 0.02,
                    qc_mask_dice: 0.95,
                    qc_passed: true,
                },
                bracket: 0,
                tissues: [vec![0.2; voxels], vec![0.5; voxels], vec![0.3; voxels]],
                native: None,
                values: [intensity, logjac],
                as_new_case: None,
            }
        })
        .collect()
}

fn pedinorm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pedinorm")).args(args).output().unwrap()
}

/// `pedinorm normdb merge FIRST SECOND --output OUTPUT`.
fn merge(first: &Path, second: &Path, output: &Path) -> std::process::Output {
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    pedinorm(&["normdb", "merge", &path(first), &path(second), "--output", &path(output)])
}

#[test]
fn merge_equals_the_union() {
    let dir = tempfile::tempdir().unwrap();
    let brackets = vec![bracket()];
    let all = subjects(24, brackets[0].space.indices.len());
    let mut options =
        BuildOptions { nodes_per_bracket: 2, min_node_subjects: 3.0, ..BuildOptions::default() };
    options.voxel_rate = 0.01;
    // The node definition (adaptive kernel widths) must be shared: build each database with
    // the nodes the union gets, as two centres agreeing on a protocol would.
    let union = assemble(&brackets, &all, &options, None, NOW).unwrap();
    let nodes = union.brackets[0].stats[0].nodes().to_vec();
    let with_nodes = |part: &[MappedNormal]| {
        let mut db = assemble(&brackets, part, &options, None, NOW).unwrap();
        for stats in db.brackets[0].stats.iter_mut() {
            let mut fresh =
                pedinorm_templates::stats::NormativeAccumulator::new(nodes.clone(), stats.voxel_count())
                    .unwrap();
            std::mem::swap(stats, &mut fresh);
        }
        for m in part {
            for c in 0..2 {
                db.brackets[0].stats[c].add_subject(m.record.age_years, m.record.sex, &m.values[c]).unwrap();
            }
        }
        // Each centre calibrates on its own normals, against its statistics on the shared nodes.
        db.calibration = Some(calibrate(&brackets, &[db.brackets[0].stats.clone()], part, &options).unwrap());
        db
    };
    let (a, b) = all.split_at(11);
    let (a_path, b_path, c_path) =
        (dir.path().join("a.h5"), dir.path().join("b.h5"), dir.path().join("c.h5"));
    with_nodes(a).write(&a_path).unwrap();
    with_nodes(b).write(&b_path).unwrap();
    let out = merge(&a_path, &b_path, &c_path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merged = NormativeDb::read(&c_path).unwrap();
    assert_eq!(merged.subjects.len(), 24);
    assert_eq!(merged.subjects, union.subjects);
    for c in 0..2 {
        let (m, u) = (&merged.brackets[0].stats[c], &union.brackets[0].stats[c]);
        assert_eq!(m.nodes(), u.nodes());
        for (gm, gu) in m.groups().iter().flatten().zip(u.groups().iter().flatten()) {
            assert_eq!(gm.count, gu.count);
            assert!((gm.weight_sum - gu.weight_sum).abs() <= 1e-12 * gu.weight_sum.max(1.0));
            assert!((gm.age_mean - gu.age_mean).abs() <= 1e-10);
            for v in 0..gm.mean.len() {
                assert!((gm.mean[v] - gu.mean[v]).abs() <= 1e-10 * gu.mean[v].abs().max(1.0));
                assert!((gm.m2[v] - gu.m2[v]).abs() <= 1e-8 * gu.m2[v].abs().max(1.0));
                assert!((gm.age_cross[v] - gu.age_cross[v]).abs() <= 1e-8 * gu.age_cross[v].abs().max(1.0));
            }
        }
    }
    // Calibration: recomputed from the union of both halves' null summaries (each normal's
    // leave-one-out null against its own half), not marked stale, independent of the order of
    // the merge, stored and read back from the file.
    let (da, db) = (NormativeDb::read(&a_path).unwrap(), NormativeDb::read(&b_path).unwrap());
    let calibration = merged.calibration.as_ref().unwrap();
    assert!(!calibration.stale);
    assert_eq!(calibration.nulls.len(), 24);
    let pooled: Vec<_> = da
        .calibration
        .as_ref()
        .unwrap()
        .nulls
        .iter()
        .chain(&db.calibration.as_ref().unwrap().nulls)
        .cloned()
        .collect();
    let mut expected =
        CalibrationRecord::from_nulls(pooled, options.voxel_rate, options.cluster_rate).unwrap();
    // The site moments of both halves travel into the merge (one site here: no effects).
    let (ma, mb) =
        (&da.calibration.as_ref().unwrap().site_moments, &db.calibration.as_ref().unwrap().site_moments);
    expected.site_moments = ma.iter().zip(mb).map(|(a, b)| a.union(b).unwrap()).collect();
    assert_eq!(expected.site_moments[0].normals.len(), 24);
    assert!(calibration.site_effects.is_none());
    assert_eq!(calibration, &expected);
    assert_eq!(db.merged(&da, NOW).unwrap().calibration.as_ref(), Some(calibration));
    let union_calibration = union.calibration.as_ref().unwrap();
    for c in 0..2 {
        let (m, u) = (&calibration.channels[c], &union_calibration.channels[c]);
        assert_eq!(m.voxel.subjects, 24);
        assert_eq!(m.cluster.max_mass_per_subject.len(), 24);
        // The union's own leave-one-out scores each normal against 23 others instead of 10 or
        // 12: its null is slightly narrower, so the pooled thresholds are close and not lower.
        let relative = (m.voxel.z_threshold - u.voxel.z_threshold) / u.voxel.z_threshold;
        assert!(
            relative > -0.02 && relative < 0.15,
            "channel {c}: {} vs {}",
            m.voxel.z_threshold,
            u.voxel.z_threshold
        );
        assert!(m.voxel.achieved_rate < 2.0 * options.voxel_rate, "achieved {}", m.voxel.achieved_rate);
    }

    // `info` reads it.
    let out = pedinorm(&["normdb", "info", c_path.to_str().unwrap(), "--subjects"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subjects: 24") && text.contains("PSN023"), "{text}");

    // Merging a database with itself is refused (duplicate pseudonyms); the output is untouched.
    let before = std::fs::read(&c_path).unwrap();
    let out = merge(&a_path, &a_path, &c_path);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PSN000"));
    assert_eq!(std::fs::read(&c_path).unwrap(), before);
    let missing = pedinorm(&["normdb", "info", Path::new("/nonexistent/db.h5").to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/db.h5"));
}
