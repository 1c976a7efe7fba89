//! What the database knows about its own limits: the SD floors of each bracket and the
//! distribution of the out-of-distribution indices over its calibration normals (the rules are
//! in [`crate::safeguards`]).

use super::database::{BracketDb, NormativeDb};
use crate::safeguards::{GlobalIndices, OodReference, channel_floors};

impl BracketDb {
    /// The SD floors of this bracket's channels (`[intensity, logjac]`; zero when the
    /// database's model has no floor).
    pub fn sd_floors(&self, params: &crate::normative::NormativeParams) -> [f64; 2] {
        let data = self.template.as_slice();
        let in_mask: Vec<f32> = self.mask_indices().into_iter().map(|i| data[i]).collect();
        channel_floors(params, &in_mask)
    }
}

impl NormativeDb {
    /// The global indices of every calibration normal (its leave-one-out null map at the
    /// calibrated thresholds and its mapping figures), in pseudonym order.
    pub fn calibration_indices(&self) -> Vec<(String, GlobalIndices)> {
        let Some(calibration) = &self.calibration else { return Vec::new() };
        let thresholds =
            [calibration.channels[0].voxel.z_threshold, calibration.channels[1].voxel.z_threshold];
        calibration
            .nulls
            .iter()
            .filter_map(|null| {
                let subject = self.subjects.iter().find(|s| s.pseudonym == null.pseudonym)?;
                let indices = GlobalIndices::from_histograms(
                    [&null.channels[0].histogram, &null.channels[1].histogram],
                    thresholds,
                    subject.qc_similarity,
                    subject.qc_histogram_distance,
                    subject.qc_mask_dice,
                );
                Some((null.pseudonym.clone(), indices))
            })
            .collect()
    }

    /// The reference distributions of the out-of-distribution indices (`None` without null
    /// summaries, e.g. schema version 1 or fewer than three normals).
    pub fn ood_reference(&self) -> Option<OodReference> {
        let normals: Vec<GlobalIndices> = self.calibration_indices().into_iter().map(|(_, g)| g).collect();
        (!normals.is_empty()).then(|| OodReference::from_normals(&normals))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reference_comes_from_the_calibration_normals_and_floors_from_the_template() {
        let db = crate::model::testing::tiny(3, 12);
        let indices = db.calibration_indices();
        let calibrated = db.calibration.as_ref().unwrap().nulls.len();
        assert_eq!(indices.len(), calibrated);
        let reference = db.ood_reference().unwrap();
        let similarity = reference.indices.iter().find(|r| r.name == "registration_similarity").unwrap();
        assert_eq!(similarity.values.len(), calibrated);
        let floors = db.brackets[0].sd_floors(&db.metadata.parameters.normative);
        assert!(floors[0] > 0.0 && floors[1] == 0.04, "{floors:?}");
    }
}
