//! Similar confirmed cases: the signature of each case's latest deviation result, kept in the
//! `case_signatures` table (written when a deviation job finishes, rebuilt from the jobs'
//! outputs on request), and the A1 cases most like a given case among those the caller may
//! read. The signature and the similarity are `pedinorm_templates::similarity`.

use super::error::ApiError;
use super::store::now;
use crate::pipeline::similar::read_signature;
use pedinorm_templates::similarity::{Signature, SignatureIndex};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// How many similar cases one request may ask for.
pub const MAX_K: u32 = 50;

/// One similar confirmed case.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SimilarCase {
    /// Case id.
    pub case_id: i64,
    /// Cosine similarity of the two signatures, in [−1, 1] (1: deviations in the same places,
    /// directions and proportions).
    pub similarity: f64,
    /// Age at scan of the similar case (years).
    pub age_years: f64,
    /// Its Orphanet codes (`ORPHA:<digits>`).
    pub orpha_codes: Vec<String>,
    /// Its clinical data fields (e.g. category, diagnosis), as the case store keeps them.
    #[schema(value_type = Object)]
    pub clinical: serde_json::Map<String, serde_json::Value>,
    /// The centre that submitted it.
    pub centre: String,
    /// The deviation job its signature comes from.
    pub job_id: i64,
}

/// The answer of a similar-case query.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SimilarCases {
    /// The case asked about.
    pub case_id: i64,
    /// The deviation job its signature comes from.
    pub job_id: i64,
    /// Confirmed (A1) cases the signatures were standardized over (every centre's).
    pub indexed: usize,
    /// The most similar confirmed cases the caller may read, most similar first.
    pub similar: Vec<SimilarCase>,
}

/// Records the signature of `case_id`'s deviation result of job `job_id`, replacing an older
/// one (a signature is derived data: the newest result describes the case).
pub fn record(
    connection: &Connection,
    case_id: i64,
    job_id: i64,
    signature: &Signature,
) -> Result<(), ApiError> {
    let text = serde_json::to_string(signature).map_err(ApiError::internal)?;
    connection.execute(
        "INSERT INTO case_signatures (case_id, job_id, age_years, signature, updated) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(case_id) DO UPDATE SET job_id = ?2, age_years = ?3, signature = ?4, updated = ?5
         WHERE excluded.job_id >= case_signatures.job_id",
        params![case_id, job_id, signature.age_years, text, now()],
    )?;
    Ok(())
}

/// Reads the signature of a finished deviation job's outputs and records it for its case.
pub fn record_from_outputs(
    connection: &Connection,
    case_id: i64,
    job_id: i64,
    outputs: &Path,
) -> Result<(), String> {
    let signature = read_signature(outputs).map_err(|e| e.to_string())?;
    record(connection, case_id, job_id, &signature).map_err(|e| e.to_string())
}

/// What a rebuild of the index found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Signatures recorded.
    pub recorded: usize,
    /// Finished deviation jobs whose outputs could not be read (logged).
    pub unreadable: usize,
}

/// Rebuilds the table from every finished deviation job's outputs under `jobs_dir`, oldest
/// first, so each case ends with its newest result.
pub fn rebuild(connection: &Connection, jobs_dir: &Path) -> Result<Rebuilt, ApiError> {
    let mut statement = connection.prepare(
        "SELECT id, json_extract(params, '$.case_id') FROM jobs WHERE kind = 'deviation' AND state = 'done' ORDER BY id",
    )?;
    let jobs: Vec<(i64, Option<i64>)> =
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut rebuilt = Rebuilt::default();
    for (job_id, case_id) in jobs {
        let Some(case_id) = case_id else { continue };
        match record_from_outputs(connection, case_id, job_id, &jobs_dir.join(job_id.to_string())) {
            Ok(()) => rebuilt.recorded += 1,
            Err(message) => {
                tracing::warn!("deviation job {job_id}: no signature: {message}");
                rebuilt.unreadable += 1;
            }
        }
    }
    Ok(rebuilt)
}

fn parse(case_id: i64, text: &str) -> Result<Signature, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::internal(format!("case {case_id}: stored signature does not read: {e}")))
}

/// The A1 signatures indexed: per entry (case id, job id, centre).
struct Confirmed {
    keys: Vec<(i64, i64, String)>,
    index: SignatureIndex<usize>,
}

/// What the A1 signatures are: how many, the newest signature and the newest case change.
/// A signature recorded, a case confirmed or leaving A1 changes it.
type Version = (i64, Option<String>, Option<String>);

/// The index of the A1 signatures between requests: parsing and standardizing every signature
/// is the expensive part of a query (about a second for 10,000), so it is redone only when a
/// signature or a case's status has changed since.
#[derive(Default)]
pub struct IndexCache {
    cached: Mutex<Option<(Version, Arc<Confirmed>)>>,
}

impl IndexCache {
    fn confirmed(&self, connection: &Connection) -> Result<Arc<Confirmed>, ApiError> {
        let version: Version = connection.query_row(
            "SELECT count(*), max(s.updated), max(c.updated) FROM case_signatures s JOIN cases c ON c.id = s.case_id
             WHERE c.status = 'A1'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let mut cached = self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((seen, confirmed)) = cached.as_ref()
            && *seen == version
        {
            return Ok(confirmed.clone());
        }
        let mut statement = connection.prepare(
            "SELECT s.case_id, s.job_id, c.centre, s.signature FROM case_signatures s JOIN cases c ON c.id = s.case_id
             WHERE c.status = 'A1' ORDER BY s.case_id",
        )?;
        let rows: Vec<(i64, i64, String, String)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut entries = Vec::with_capacity(rows.len());
        for (i, (case_id, job_id, centre, text)) in rows.into_iter().enumerate() {
            entries.push((i, parse(case_id, &text)?));
            keys.push((case_id, job_id, centre));
        }
        let confirmed = Arc::new(Confirmed { keys, index: SignatureIndex::new(entries) });
        *cached = Some((version, confirmed.clone()));
        Ok(confirmed)
    }
}

/// The `k` A1 cases most like `case_id` among those of `visible_centre` (`None`: every
/// centre), the case itself excluded. 409 when the case has no deviation result yet.
pub fn most_similar(
    connection: &Connection,
    cache: &IndexCache,
    case_id: i64,
    k: u32,
    visible_centre: Option<&str>,
) -> Result<SimilarCases, ApiError> {
    let query: Option<(i64, String)> = connection
        .query_row(
            "SELECT job_id, signature FROM case_signatures WHERE case_id = ?1",
            params![case_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((job_id, text)) = query else {
        // An unknown case answers 404 (the guard already refused other centres').
        super::cases::get(connection, case_id)?;
        return Err(ApiError::Conflict(format!(
            "case {case_id} has no deviation result yet: request one (POST /api/v1/cases/{case_id}/deviation)"
        )));
    };
    let signature = parse(case_id, &text)?;
    let confirmed = cache.confirmed(connection)?;
    let keys = &confirmed.keys;
    let matches = confirmed.index.query(&signature, k as usize, |&i| {
        keys[i].0 != case_id && visible_centre.is_none_or(|centre| keys[i].2 == centre)
    });
    let indexed = keys.len();
    let mut similar = Vec::with_capacity(matches.len());
    for m in matches {
        let (similar_id, similar_job, centre) = keys[m.key].clone();
        let case = super::cases::get(connection, similar_id)?;
        similar.push(SimilarCase {
            case_id: similar_id,
            similarity: m.similarity,
            age_years: m.age_years,
            orpha_codes: case.orpha_codes,
            clinical: case.clinical,
            centre,
            job_id: similar_job,
        });
    }
    Ok(SimilarCases { case_id, job_id, indexed, similar })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_templates::model::score::RegionReport;

    fn signature(age: f64, region: &str, logjac_z: f64) -> Signature {
        let region = RegionReport {
            label: 1,
            name: region.into(),
            voxels: 50,
            intensity_mean_z: 0.0,
            intensity_fraction_beyond: 0.0,
            logjac_mean_z: logjac_z,
            logjac_fraction_beyond: 0.2,
        };
        Signature::from_findings(age, &[region], &[], &[], &[]).unwrap()
    }

    /// A state file with cases 1–5: (status, centre) as given, each with a deviation job.
    fn store(cases: &[(&str, &str)]) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection = crate::service::store::open_connection(&dir.path().join("state.sqlite")).unwrap();
        for (i, (status, centre)) in cases.iter().enumerate() {
            let id = i as i64 + 1;
            connection
                .execute(
                    "INSERT INTO studies (id, database, source, centre, status, created_by, created, updated)
                     VALUES (?1, 'A', 'upload', ?2, 'admitted', 'x', 't', 't')",
                    params![id, centre],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO cases (id, study_id, status, orpha_codes, clinical, created_by, centre, created, updated)
                     VALUES (?1, ?1, ?2, ?3, '{\"category\": \"neurometabolic\"}', 'x', ?4, 't', 't')",
                    params![id, status, format!("[\"ORPHA:{}\"]", 100 + id), centre],
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO jobs (id, kind, params, state, owner, created) VALUES (?1, 'deviation', ?2, 'done', 'x', 't')",
                    params![id, format!("{{\"case_id\": {id}}}")],
                )
                .unwrap();
        }
        (dir, connection)
    }

    #[test]
    fn confirmed_cases_the_caller_may_read_most_similar_first() {
        let (_dir, db) =
            store(&[("A2", "C1"), ("A1", "C1"), ("A1", "C2"), ("A1", "C1"), ("submitted", "C1")]);
        record(&db, 1, 1, &signature(4.0, "cerebellum", -3.0)).unwrap();
        record(&db, 2, 2, &signature(12.0, "cerebellum", -2.0)).unwrap();
        record(&db, 3, 3, &signature(5.0, "cerebellum", -2.5)).unwrap();
        record(&db, 4, 4, &signature(4.5, "ventricles", 3.0)).unwrap();
        record(&db, 5, 5, &signature(4.0, "cerebellum", -3.0)).unwrap();
        let every = most_similar(&db, &IndexCache::default(), 1, 10, None).unwrap();
        assert_eq!(every.indexed, 3, "A1 cases only");
        let ids: Vec<i64> = every.similar.iter().map(|s| s.case_id).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(*ids.last().unwrap(), 4, "the other pattern last: {ids:?}");
        assert_eq!(every.similar[0].orpha_codes.len(), 1);
        assert_eq!(every.similar[0].clinical["category"], "neurometabolic");
        let own_centre = most_similar(&db, &IndexCache::default(), 1, 10, Some("C1")).unwrap();
        assert!(own_centre.similar.iter().all(|s| s.centre == "C1"));
        assert_eq!(own_centre.similar.len(), 2);
        // An A1 case is not its own match; k bounds the answer.
        let confirmed = most_similar(&db, &IndexCache::default(), 2, 1, None).unwrap();
        assert_eq!(confirmed.similar.len(), 1);
        assert_eq!(confirmed.similar[0].case_id, 3);
    }

    #[test]
    fn the_kept_index_follows_new_signatures_and_confirmations() {
        let (_dir, db) = store(&[("A2", "C1"), ("A1", "C1"), ("A2", "C1")]);
        let cache = IndexCache::default();
        record(&db, 1, 1, &signature(4.0, "cerebellum", -3.0)).unwrap();
        record(&db, 2, 2, &signature(6.0, "cerebellum", -2.0)).unwrap();
        assert_eq!(most_similar(&db, &cache, 1, 5, None).unwrap().indexed, 1);
        record(&db, 3, 3, &signature(7.0, "cerebellum", -2.0)).unwrap();
        assert_eq!(most_similar(&db, &cache, 1, 5, None).unwrap().indexed, 1, "case 3 is not confirmed");
        db.execute("UPDATE cases SET status = 'A1', updated = 'later' WHERE id = 3", []).unwrap();
        let answer = most_similar(&db, &cache, 1, 5, None).unwrap();
        assert_eq!((answer.indexed, answer.similar.len()), (2, 2));
    }

    #[test]
    fn a_case_without_a_result_is_a_conflict_and_an_unknown_one_is_missing() {
        let (_dir, db) = store(&[("A1", "C1")]);
        assert!(matches!(most_similar(&db, &IndexCache::default(), 1, 5, None), Err(ApiError::Conflict(_))));
        assert!(matches!(most_similar(&db, &IndexCache::default(), 9, 5, None), Err(ApiError::NotFound(_))));
    }

    #[test]
    fn the_newest_job_describes_the_case_and_a_rebuild_reads_the_outputs() {
        let (dir, db) = store(&[("A1", "C1"), ("A1", "C1")]);
        record(&db, 1, 2, &signature(4.0, "a", 1.0)).unwrap();
        record(&db, 1, 1, &signature(9.0, "b", 1.0)).unwrap();
        let age: f64 = db
            .query_row("SELECT age_years FROM case_signatures WHERE case_id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(age, 4.0, "an older job does not replace a newer one");
        // Job 1's outputs hold a report; job 2's folder is missing.
        let jobs_dir = dir.path().join("jobs");
        std::fs::create_dir_all(jobs_dir.join("1")).unwrap();
        std::fs::write(
            jobs_dir.join("1/report.json"),
            r#"{"age_years": 7.0, "regions": [], "clusters": [], "thresholds": []}"#,
        )
        .unwrap();
        assert_eq!(rebuild(&db, &jobs_dir).unwrap(), Rebuilt { recorded: 1, unreadable: 1 });
    }
}
