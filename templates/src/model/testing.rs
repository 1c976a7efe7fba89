//! Small databases for tests of this crate and of the crates that store or combine databases.

use super::database::{
    AtlasTable, BracketDb, BuildParameters, CalibrationRecord, Metadata, NormativeDb, SubjectNull,
    SubjectRecord, mask_indices,
};
use super::mapping::MappingParams;
use super::regional::{RegionalTable, measure_names, row_of};
use super::tissue_priors::TissuePriors;
use crate::calibration::{LocalVolumeNull, NullSummary, SCALES_MM};
use crate::normative::NormativeParams;
use crate::stats::{AgeNode, NormativeAccumulator, Sex};
use pedinorm_registration::{Grid, Image};

/// A tiny database: one 6×7×5 bracket, a box mask, a few subjects (seeded by `seed`), with null
/// summaries of made-up z-maps and an atlas.
pub fn tiny(seed: u32, subjects: usize) -> NormativeDb {
    let grid = Grid::axis_aligned([6, 7, 5], [2.0; 3], [-6.0, -7.0, -5.0]).unwrap();
    let template = Image::filled(grid.clone(), 0.0f32).map(|_| 0.0);
    let mut template = template;
    for (i, v) in template.as_mut_slice().iter_mut().enumerate() {
        *v = (i % 13) as f32 * 10.0;
    }
    let mut mask = Image::filled(grid.clone(), 0.0f32);
    for i in 1..5 {
        for j in 1..6 {
            for k in 1..4 {
                mask.data_mut()[[i, j, k]] = 1.0;
            }
        }
    }
    let n = mask_indices(&mask).len();
    let nodes =
        vec![AgeNode { age_years: 5.0, sigma_years: 1.5 }, AgeNode { age_years: 8.0, sigma_years: 1.5 }];
    let mut stats =
        [NormativeAccumulator::new(nodes.clone(), n).unwrap(), NormativeAccumulator::new(nodes, n).unwrap()];
    let mut records = Vec::new();
    for s in 0..subjects {
        let age = 4.0 + (s as f64 * 0.37 + seed as f64) % 5.0;
        let sex = if s % 2 == 0 { Sex::Female } else { Sex::Male };
        let values: Vec<f32> =
            (0..n).map(|v| 100.0 + ((v * 7 + s * 13 + seed as usize) % 17) as f32).collect();
        let logjac: Vec<f32> = values.iter().map(|v| (v - 108.0) / 100.0).collect();
        stats[0].add_subject(age, sex, &values).unwrap();
        stats[1].add_subject(age, sex, &logjac).unwrap();
        records.push(SubjectRecord {
            pseudonym: format!("P{seed}-{s:03}"),
            age_years: age,
            sex,
            scanner: "synthetic-3T".into(),
            bracket: "4-9y".into(),
            qc_similarity: 0.9,
            qc_histogram_distance: 0.02,
            qc_mask_dice: 0.95,
            qc_passed: true,
        });
    }
    // Null summaries of small made-up z-maps, one per subject.
    let nulls: Vec<SubjectNull> = records
        .iter()
        .enumerate()
        .map(|(s, r)| {
            let z = ndarray::Array3::from_shape_fn((4, 4, 3), |(i, j, k)| {
                ((i * 5 + j * 3 + k + s + seed as usize) % 9) as f32 * 0.6 - 2.4
            });
            let summary = NullSummary::from_map(&z, None);
            let spread = 0.3 + 0.02 * s as f32;
            let local_volume = Some(LocalVolumeNull {
                min: vec![-spread; SCALES_MM.len()],
                max: vec![0.8 * spread; SCALES_MM.len()],
                mean_square: vec![0.01; SCALES_MM.len()],
            });
            SubjectNull { pseudonym: r.pseudonym.clone(), channels: [summary.clone(), summary], local_volume }
        })
        .collect();
    let parameters = BuildParameters {
        mapping: MappingParams { differential_bias_sigma_mm: Some(15.0), ..MappingParams::standard() },
        normative: NormativeParams::default(),
        voxel_rate: 0.01,
        cluster_rate: 0.2,
        intensity_normalization: "test".into(),
        registration: "test".into(),
    };
    // Tissue priors: CSF at the rim of the box, white matter inside, grey matter between.
    let priors = TissuePriors {
        members: subjects as u64,
        maps: std::array::from_fn(|t| {
            let mut map = mask.clone();
            for ((i, j, k), v) in map.data_mut().indexed_iter_mut() {
                let rim = i == 1 || i == 4 || j == 1 || j == 5 || k == 1 || k == 3;
                let share = match (t, rim) {
                    (0, true) => 0.6,
                    (0, false) => 0.1,
                    (1, true) => 0.3,
                    (1, false) => 0.3,
                    (_, true) => 0.1,
                    (_, false) => 0.6,
                };
                *v *= share;
            }
            map
        }),
    };
    let atlas_table =
        AtlasTable { name: "toy".into(), source: "test".into(), labels: vec![(7, "seven".into())] };
    let regional = RegionalTable {
        names: measure_names(Some(&atlas_table)),
        rows: records
            .iter()
            .enumerate()
            .map(|(s, r)| row_of(r, (0..8).map(|m| 100.0 + (s * 8 + m) as f64 * 0.25).collect()))
            .collect(),
    };
    let mut labels = Image::filled(grid, 0.0f32);
    labels.data_mut()[[2, 2, 2]] = 7.0;
    NormativeDb {
        metadata: Metadata::new(parameters, "built for a test", "2026-01-01T00:00:00Z"),
        brackets: vec![BracketDb {
            name: "4-9y".into(),
            min_years: 4.0,
            max_years: 9.0,
            template,
            mask,
            labels: Some(labels),
            priors: Some(priors),
            stats,
        }],
        subjects: records,
        calibration: Some(CalibrationRecord::from_nulls(nulls, 0.01, 0.2).unwrap()),
        atlas: Some(atlas_table),
        regional: Some(regional),
        centiles: None,
    }
}
