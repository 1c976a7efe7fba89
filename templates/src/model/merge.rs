//! Merging two databases built on the same templates with the same parameters.

use super::database::{CalibrationRecord, DatabaseError, NormativeDb};
use super::site;

impl NormativeDb {
    /// Merges `other` into a copy of `self`: same templates, masks, nodes and parameters are
    /// required; statistics are combined exactly (Chan), subjects concatenated (a pseudonym in
    /// both is refused, it would count twice) and the calibration recomputed from the union of
    /// both databases' null summaries (marked stale when either keeps none).
    pub fn merged(&self, other: &NormativeDb, now_utc: &str) -> Result<NormativeDb, DatabaseError> {
        if self.metadata.parameters != other.metadata.parameters {
            return Err(DatabaseError::Incompatible(format!(
                "build parameters differ: {:?} against {:?}",
                self.metadata.parameters, other.metadata.parameters
            )));
        }
        if self.brackets.len() != other.brackets.len() {
            return Err(DatabaseError::Incompatible("different numbers of age brackets".into()));
        }
        for subject in &other.subjects {
            if self.subjects.iter().any(|s| s.pseudonym == subject.pseudonym) {
                return Err(DatabaseError::Incompatible(format!(
                    "subject {} is in both databases",
                    subject.pseudonym
                )));
            }
        }
        let mut merged = self.clone();
        for (mine, theirs) in merged.brackets.iter_mut().zip(&other.brackets) {
            if mine.name != theirs.name || mine.template != theirs.template || mine.mask != theirs.mask {
                return Err(DatabaseError::Incompatible(format!(
                    "bracket {} against {}: templates must be identical to merge statistics",
                    mine.name, theirs.name
                )));
            }
            for c in 0..2 {
                mine.stats[c].merge(&theirs.stats[c])?;
            }
            mine.priors = match (&mine.priors, &theirs.priors) {
                (Some(a), Some(b)) => Some(a.merged(b)),
                (a, b) => a.clone().or_else(|| b.clone()),
            };
        }
        merged.subjects.extend(other.subjects.iter().cloned());
        // Both tables of regional volumes, when both files keep one with the same measures.
        merged.regional = match (&self.regional, &other.regional) {
            (Some(a), Some(b)) if a.names == b.names => {
                let mut table = a.clone();
                table.rows.extend(b.rows.iter().cloned());
                Some(table)
            }
            _ => None,
        };
        // Pool the null summaries of both; without them (schema version 1) the first
        // database's thresholds are kept and marked stale.
        let calibrated = |db: &NormativeDb| {
            db.calibration.as_ref().is_some_and(|c| {
                c.nulls.len() == db.subjects.iter().filter(|s| s.qc_passed).count() && !c.stale
            })
        };
        if let (Some(mine), Some(theirs)) = (
            self.calibration.as_ref().filter(|_| calibrated(self)),
            other.calibration.as_ref().filter(|_| calibrated(other)),
        ) {
            let nulls = mine.nulls.iter().chain(&theirs.nulls).cloned().collect();
            let p = &self.metadata.parameters;
            let incompatible =
                |e: String| DatabaseError::Incompatible(format!("calibration of the merged database: {e}"));
            let mut calibration = CalibrationRecord::from_nulls(nulls, p.voxel_rate, p.cluster_rate)
                .map_err(|e| incompatible(e.to_string()))?;
            // The site effects of the union: two single-site databases become a two-site model.
            // Each database's null summaries stay as corrected (or not) in their own database.
            let moments = site::union(&mine.site_moments, &theirs.site_moments)
                .map_err(|e| incompatible(e.to_string()))?;
            calibration.site_effects = site::effects(&moments);
            calibration.site_moments = moments;
            merged.calibration = Some(calibration);
        } else if let Some(calibration) = merged.calibration.as_mut() {
            calibration.stale = true;
        }
        merged.refit_centiles();
        merged.metadata.history.extend(other.metadata.history.iter().map(|h| format!("(merged) {h}")));
        merged
            .metadata
            .touch(&format!("merged {} + {} subjects", self.subjects.len(), other.subjects.len()), now_utc);
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::tiny;

    const NOW: &str = "2026-01-02T00:00:00Z";

    #[test]
    fn merge_refuses_duplicates_and_different_templates() {
        let a = tiny(1, 5);
        assert!(matches!(a.merged(&a, NOW), Err(DatabaseError::Incompatible(_))));
        let mut b = tiny(2, 5);
        b.brackets[0].template.as_mut_slice()[0] = 99.0;
        assert!(matches!(a.merged(&b, NOW), Err(DatabaseError::Incompatible(_))));
        let c = tiny(2, 5);
        let merged = a.merged(&c, NOW).unwrap();
        assert_eq!(merged.subjects.len(), 10);
        // The normals' regional volumes travel with them.
        let regional = merged.regional.as_ref().unwrap();
        assert_eq!(regional.rows.len(), 10);
        assert_eq!(regional.rows[7], c.regional.as_ref().unwrap().rows[2]);
        assert_eq!(merged.brackets[0].priors.as_ref().unwrap().members, 10);
        // Both keep null summaries: the merged calibration is recomputed from all ten, in
        // pseudonym order, whichever database comes first.
        let calibration = merged.calibration.as_ref().unwrap();
        assert!(!calibration.stale);
        assert_eq!(calibration.nulls.len(), 10);
        assert_eq!(calibration.channels[0].cluster.max_mass_per_subject.len(), 10);
        assert_eq!(c.merged(&a, NOW).unwrap().calibration, merged.calibration);
        // Without null summaries (schema version 1) the thresholds are kept, marked stale.
        let mut old = tiny(3, 5);
        old.calibration.as_mut().unwrap().nulls.clear();
        assert!(old.merged(&c, NOW).unwrap().calibration.unwrap().stale);
    }

    /// `db` as calibrated at one site whose normals' z sit `shift` above the pool.
    fn at_site(mut db: NormativeDb, site: &str, shift: f64) -> NormativeDb {
        use crate::site_effects::{NormalMoments, SiteMoments};
        let normals: Vec<NormalMoments> = db
            .subjects
            .iter()
            .map(|s| NormalMoments {
                pseudonym: s.pseudonym.clone(),
                site: site.into(),
                mean: vec![shift; 2],
                square: vec![1.0 + shift * shift; 2],
            })
            .collect();
        let moments = SiteMoments::new(2, 3, normals).unwrap();
        let calibration = db.calibration.as_mut().unwrap();
        calibration.site_moments = vec![moments.clone(), moments];
        calibration.site_effects = site::effects(&calibration.site_moments);
        db
    }

    #[test]
    fn two_single_site_databases_merge_into_a_two_site_model() {
        let a = at_site(tiny(1, 5), "S1", 1.0);
        let b = at_site(tiny(2, 4), "S2", -1.0);
        // One site each: nothing to tell apart, no effects of their own.
        assert!(a.calibration.as_ref().unwrap().site_effects.is_none());
        let merged = a.merged(&b, NOW).unwrap();
        let calibration = merged.calibration.as_ref().unwrap();
        assert_eq!(calibration.site_moments[0].normals.len(), 9);
        let effects = calibration.site_effects.as_ref().expect("two sites after the merge");
        let sites: Vec<(&str, usize)> =
            effects[0].sites.iter().map(|e| (e.site.as_str(), e.normals)).collect();
        assert_eq!(sites, [("S1", 5), ("S2", 4)]);
        // Shrunk towards the pool with a prior of two normals: 5/7 of +1, 4/6 of −1.
        assert!((effects[0].sites[0].location[0] - 5.0 / 7.0).abs() < 1e-12);
        assert!((effects[1].sites[1].location[1] + 4.0 / 6.0).abs() < 1e-12);
        // The same model whichever database comes first.
        assert_eq!(b.merged(&a, NOW).unwrap().calibration, merged.calibration);
        // A database that keeps no moments (site model off) merges without site effects.
        let plain = tiny(3, 3);
        assert!(a.merged(&plain, NOW).unwrap().calibration.unwrap().site_effects.is_none());
    }
}
