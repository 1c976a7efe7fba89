//! The study store: accepted studies under a data directory, in this layout:
//!
//! ```text
//! DATA/
//!   index.sqlite                                  study index (see `index`)
//!   <database>/<pseudonym>/<study-uid>/<series-uid>/
//!       volume.nii.gz                             the series as a NIfTI volume (RAS+)
//!       sidecar.json                              metadata (no identities)
//!       dicom/<sop-instance-uid>.dcm              de-identified DICOM copies
//!   .staging/                                     work in progress (empty when idle)
//! ```
//!
//! UIDs in paths are the de-identified ones. Every series is written completely into a
//! staging directory on the same file system and then renamed into place, so a series
//! directory is either absent or complete. The store never deletes or overwrites a stored
//! series.

use std::path::{Path, PathBuf};

/// Name of the staging directory inside the data directory.
pub const STAGING_DIR_NAME: &str = ".staging";

/// A NIfTI volume of a stored study: its path, size on disk and the class its sidecar gives.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVolume {
    /// The volume file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The series class of the sidecar next to it (`None`: stored before series were
    /// classified, or not readable).
    pub class: Option<super::series_class::SeriesClass>,
}

/// Every NIfTI volume of a stored study, in file-name order, with its class.
pub fn study_volumes(study_dir: &Path) -> Vec<StoredVolume> {
    use super::series_class::SeriesClass;
    walkdir::WalkDir::new(study_dir)
        .max_depth(4)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".nii.gz"))
        .map(|e| StoredVolume {
            class: crate::formats::dicom::Sidecar::next_to(e.path())
                .and_then(|sidecar| sidecar.series_class)
                .and_then(|class| SeriesClass::parse(&class)),
            bytes: e.metadata().map(|m| m.len()).unwrap_or(0),
            path: e.path().to_owned(),
        })
        .collect()
}

/// The volumes of a stored study a reader looks at: the one the pipeline scores first (see
/// [`structural_among`]), then the other contrasts in file-name order; diffusion series and
/// localizers are left out.
pub fn viewable_volumes(study_dir: &Path) -> Vec<(PathBuf, Option<super::series_class::SeriesClass>)> {
    use super::series_class::SeriesClass;
    let stored = study_volumes(study_dir);
    let scored = structural_among(&stored);
    let mut volumes: Vec<(PathBuf, Option<SeriesClass>)> = stored
        .into_iter()
        .map(|v| (v.path, v.class))
        .filter(|(_, class)| !matches!(class, Some(SeriesClass::Dwi | SeriesClass::Localizer)))
        .collect();
    if let Some((first, _)) = scored
        && let Some(at) = volumes.iter().position(|(path, _)| *path == first)
    {
        let scored = volumes.remove(at);
        volumes.insert(0, scored);
    }
    volumes
}

/// The volume of a stored study the pipeline registers, with its class: the largest T1w
/// volume, else the largest T2w (by the `SeriesClass` of the sidecar next to each volume).
/// A study stored before series were classified (no volume has a class) gives its largest
/// volume, class `None`, as before; a classified study without T1w or T2w gives nothing.
pub fn structural_volume(study_dir: &Path) -> Option<(PathBuf, Option<super::series_class::SeriesClass>)> {
    structural_among(&study_volumes(study_dir))
}

/// [`structural_volume`] among a study's `volumes` (see [`study_volumes`]).
pub fn structural_among(
    volumes: &[StoredVolume],
) -> Option<(PathBuf, Option<super::series_class::SeriesClass>)> {
    use super::series_class::SeriesClass;
    let largest = |wanted: Option<SeriesClass>| {
        volumes.iter().filter(|v| v.class == wanted).max_by_key(|v| v.bytes).map(|v| v.path.clone())
    };
    if volumes.iter().all(|v| v.class.is_none()) {
        return largest(None).map(|path| (path, None));
    }
    [SeriesClass::T1w, SeriesClass::T2w]
        .into_iter()
        .find_map(|class| largest(Some(class)).map(|p| (p, Some(class))))
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// The layout of a data directory.
#[derive(Debug, Clone)]
pub struct StudyStore {
    root: PathBuf,
}

impl StudyStore {
    /// The store rooted at `data_dir` (nothing is created until something is written).
    pub fn new(data_dir: &Path) -> Self {
        Self { root: data_dir.to_path_buf() }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A study's directory relative to the data directory.
    pub fn study_relative(database: &str, pseudonym: &str, study_uid: &str) -> PathBuf {
        Path::new(database).join(pseudonym).join(study_uid)
    }

    /// Creates a fresh staging directory, removed again when dropped.
    pub fn staging(&self) -> Result<Staging, StoreError> {
        let parent = self.root.join(STAGING_DIR_NAME);
        std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = parent.join(format!("{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(io_error(&path))?;
        Ok(Staging { path })
    }

    /// Moves a complete staged series directory to `relative` (a series directory relative
    /// to the data directory). Returns `false` without touching anything when the destination
    /// already exists (left by an earlier ingest: series are deterministic, so it holds the
    /// same content).
    pub fn publish(&self, staged: &Path, relative: &Path) -> Result<bool, StoreError> {
        let destination = self.root.join(relative);
        if destination.exists() {
            return Ok(false);
        }
        if let Some(parent) = destination.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        // rename(2) of a directory onto an existing non-empty directory fails, so a racing
        // writer can never have its series replaced.
        match std::fs::rename(staged, &destination) {
            Ok(()) => Ok(true),
            Err(_) if destination.exists() => Ok(false),
            Err(source) => Err(StoreError::Io { path: destination, source }),
        }
    }
}

/// A staging directory for one ingest; removed (with whatever is left in it) on drop.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file (atomically) at `relative` inside the staging directory.
    pub fn write(&self, relative: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.path.join(relative);
        crate::atomic::write_bytes(&path, bytes).map_err(io_error(&path))?;
        Ok(path)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Only work in progress lives here; stored series have been renamed out already.
        let _ = std::fs::remove_dir_all(&self.path);
        if let Some(parent) = self.path.parent() {
            // Succeeds only when no other ingest is staging.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structural_volume_is_the_largest_t1w_else_t2w_else_nothing() {
        use crate::formats::dicom::Sidecar;
        use crate::ingest::series_class::SeriesClass;
        let dir = tempfile::tempdir().unwrap();
        let series = |name: &str, bytes: usize, class: Option<&str>| {
            let folder = dir.path().join(name);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("volume.nii.gz"), vec![0u8; bytes]).unwrap();
            let sidecar = Sidecar { series_class: class.map(str::to_owned), ..Default::default() };
            std::fs::write(folder.join("sidecar.json"), serde_json::to_vec(&sidecar).unwrap()).unwrap();
            folder.join("volume.nii.gz")
        };
        // Before classes: the largest volume.
        let big = series("dwi", 900, None);
        series("small", 100, None);
        assert_eq!(structural_volume(dir.path()), Some((big, None)));
        // With classes: a FLAIR or DWI never stands in for the T1w.
        let flair = series("flair", 800, Some("FLAIR"));
        std::fs::remove_dir_all(dir.path().join("dwi")).unwrap();
        std::fs::remove_dir_all(dir.path().join("small")).unwrap();
        assert_eq!(structural_volume(dir.path()), None);
        let t2 = series("t2", 300, Some("T2w"));
        assert_eq!(structural_volume(dir.path()), Some((t2, Some(SeriesClass::T2w))));
        let t1 = series("t1", 200, Some("T1w"));
        assert_eq!(structural_volume(dir.path()), Some((t1, Some(SeriesClass::T1w))));
        assert!(flair.exists());
    }

    #[test]
    fn publish_moves_once_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = StudyStore::new(dir.path());
        let relative = StudyStore::study_relative("B", "ab", "2.25.1").join("2.25.2");
        {
            let staging = store.staging().unwrap();
            staging.write(Path::new("s/sidecar.json"), b"{}").unwrap();
            assert!(store.publish(&staging.path().join("s"), &relative).unwrap());
        }
        assert_eq!(std::fs::read(dir.path().join(&relative).join("sidecar.json")).unwrap(), b"{}");
        {
            let staging = store.staging().unwrap();
            staging.write(Path::new("s/sidecar.json"), b"changed").unwrap();
            assert!(!store.publish(&staging.path().join("s"), &relative).unwrap());
        }
        assert_eq!(std::fs::read(dir.path().join(&relative).join("sidecar.json")).unwrap(), b"{}");
        assert!(!dir.path().join(STAGING_DIR_NAME).exists());
    }
}
