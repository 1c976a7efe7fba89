//! Start-up sweep of identified staging data left by a crash: upload folders
//! (`incoming/upload-*`), PACS retrievals (`incoming/<id>.partial`), received studies that no
//! study still waiting for ingest owns (`incoming/<id>`), and ingest staging folders
//! (`archive/.staging/<pid>-*`) of processes that are gone. Identified data lives only as long
//! as the request or job that needs it; after `kill -9` this is where it ends.

use super::layout::StateEntry;
use super::store::Store;
use std::path::Path;

/// What a sweep removed (counts only: the folders' names may derive from identities).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Folders removed.
    pub folders: u64,
    /// Files in them.
    pub files: u64,
    /// Bytes in them.
    pub bytes: u64,
}

/// Removes the leftovers under `data_dir` that no study or job owns. Runs before the job
/// workers start, so no request or job of this process can own an upload or staging folder.
pub fn sweep_staging(data_dir: &Path, store: &Store) -> Result<SweepReport, rusqlite::Error> {
    let waiting = studies_waiting_for_ingest(store)?;
    let mut report = SweepReport::default();
    for entry in entries(&StateEntry::Incoming.under(data_dir)) {
        let name = entry.file_name().to_string_lossy().to_string();
        let owned = name.parse::<i64>().is_ok_and(|id| waiting.contains(&id));
        let ours = name.starts_with("upload-") || name.ends_with(".partial") || name.parse::<i64>().is_ok();
        if ours && !owned {
            remove(&entry.path(), &mut report);
        }
    }
    let staging = StateEntry::Archive.under(data_dir).join(crate::ingest::store::STAGING_DIR_NAME);
    for entry in entries(&staging) {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive =
            pid.is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            remove(&entry.path(), &mut report);
        }
    }
    let _ = std::fs::remove_dir(&staging);
    Ok(report)
}

/// Studies whose received objects are still needed: not yet decided by ingest.
fn studies_waiting_for_ingest(store: &Store) -> Result<std::collections::HashSet<i64>, rusqlite::Error> {
    let connection = store.lock();
    let mut statement =
        connection.prepare("SELECT id FROM studies WHERE status NOT IN ('admitted', 'refused')")?;
    let ids = statement.query_map([], |row| row.get::<_, i64>(0))?.collect::<Result<_, _>>()?;
    Ok(ids)
}

fn entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir).map(|entries| entries.flatten().collect()).unwrap_or_default()
}

fn remove(path: &Path, report: &mut SweepReport) {
    let (mut files, mut bytes) = (0, 0);
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_file() {
            files += 1;
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match removed {
        Ok(()) => {
            report.folders += 1;
            report.files += files;
            report.bytes += bytes;
        }
        Err(error) => tracing::error!("cannot remove leftover staging data: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_go_and_owned_data_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let waiting = super::super::studies::insert(
            &store.lock(),
            super::super::consent::Database::B,
            "upload",
            "C1",
            "sci",
            None,
        )
        .unwrap();
        let write = |relative: &str| {
            let path = dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"identified").unwrap();
        };
        write("incoming/upload-x1/000001.dcm");
        write("incoming/9999/000001.dcm");
        write(&format!("incoming/{waiting}.partial/000001.dcm"));
        write(&format!("incoming/{waiting}/000001.dcm"));
        write("archive/.staging/4194999-1/s/x.dcm");
        write("archive/B/p/s/sidecar.json");
        let report = sweep_staging(dir.path(), &store).unwrap();
        assert_eq!(report, SweepReport { folders: 4, files: 4, bytes: 40 });
        assert!(dir.path().join(format!("incoming/{waiting}/000001.dcm")).is_file());
        assert!(dir.path().join("archive/B/p/s/sidecar.json").is_file());
        assert!(!dir.path().join("archive/.staging").exists());
    }
}
