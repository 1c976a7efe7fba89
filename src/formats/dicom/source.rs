//! Where DICOM bytes come from: files, folders walked recursively, zip archives, or memory.

use super::DicomError;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest single DICOM object read (protects against zip bombs and lying sizes).
const MAX_OBJECT_BYTES: u64 = 2 << 30;

/// One DICOM object's location.
#[derive(Clone)]
pub(crate) enum Source {
    /// A file on disk.
    File(PathBuf),
    /// An entry of a zip archive (shared, opened once).
    Zip { archive: Arc<Mutex<zip::ZipArchive<File>>>, archive_path: PathBuf, index: usize, name: String },
    /// Bytes already in memory, with a label for messages.
    Memory { label: PathBuf, bytes: Arc<Vec<u8>> },
}

impl Source {
    /// The name used in messages and in [`super::SeriesVolume::files`].
    pub(crate) fn label(&self) -> PathBuf {
        match self {
            Source::File(path) => path.clone(),
            Source::Zip { archive_path, name, .. } => archive_path.join(name),
            Source::Memory { label, .. } => label.clone(),
        }
    }

    /// The object's bytes.
    pub(crate) fn read(&self) -> Result<Arc<Vec<u8>>, DicomError> {
        match self {
            Source::File(path) => {
                let file = File::open(path).map_err(|e| DicomError::io(path, e))?;
                let mut bytes = Vec::new();
                file.take(MAX_OBJECT_BYTES).read_to_end(&mut bytes).map_err(|e| DicomError::io(path, e))?;
                Ok(Arc::new(bytes))
            }
            Source::Zip { archive, archive_path, index, .. } => {
                let zip_error = |message: String| DicomError::Zip { path: archive_path.clone(), message };
                let mut archive = archive.lock().map_err(|_| zip_error("archive lock poisoned".into()))?;
                let entry = archive.by_index(*index).map_err(|e| zip_error(e.to_string()))?;
                let mut bytes = Vec::with_capacity(entry.size().min(64 << 20) as usize);
                entry
                    .take(MAX_OBJECT_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(|e| DicomError::io(self.label(), e))?;
                Ok(Arc::new(bytes))
            }
            Source::Memory { bytes, .. } => Ok(bytes.clone()),
        }
    }
}

/// Whether bytes look like a DICOM Part-10 file (128-byte preamble, then `DICM`).
pub(crate) fn has_dicom_prefix(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"PK\x03\x04"
}

/// Whether a zip entry name stays inside the archive.
fn entry_is_enclosed(name: &str) -> bool {
    let path = Path::new(name);
    !name.starts_with('/')
        && !name.starts_with('\\')
        && !name.contains(":\\")
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && !name.split(['/', '\\']).any(|part| part == "..")
}

/// Enumerates the objects of the inputs: files as given, folders recursively (in sorted
/// order, hidden files skipped), zip archives entry by entry. The second element says whether
/// the object was named explicitly (a non-DICOM file named explicitly is an error; inside a
/// folder or an archive it is skipped).
pub(crate) fn enumerate(inputs: &[PathBuf]) -> Result<Vec<(Source, bool)>, DicomError> {
    let mut sources = Vec::new();
    for input in inputs {
        let metadata = std::fs::metadata(input).map_err(|e| DicomError::io(input, e))?;
        if metadata.is_dir() {
            let walker = walkdir::WalkDir::new(input).follow_links(false).sort_by_file_name();
            for entry in walker {
                let entry = entry.map_err(|e| {
                    let path = e.path().map(Path::to_path_buf).unwrap_or_else(|| input.clone());
                    DicomError::io(path, e.into())
                })?;
                let hidden = entry.file_name().to_string_lossy().starts_with('.') && entry.depth() > 0;
                if !entry.file_type().is_file() || hidden {
                    continue;
                }
                let path = entry.into_path();
                if is_zip(&path) {
                    sources.extend(zip_entries(&path)?.into_iter().map(|s| (s, false)));
                } else {
                    sources.push((Source::File(path), false));
                }
            }
        } else if is_zip(input) {
            sources.extend(zip_entries(input)?.into_iter().map(|s| (s, false)));
        } else {
            sources.push((Source::File(input.clone()), true));
        }
    }
    Ok(sources)
}

fn zip_entries(path: &Path) -> Result<Vec<Source>, DicomError> {
    let file = File::open(path).map_err(|e| DicomError::io(path, e))?;
    let archive = zip::ZipArchive::new(file)
        .map_err(|e| DicomError::Zip { path: path.to_owned(), message: e.to_string() })?;
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let Some(name) = archive.name_for_index(index) else { continue };
        if !entry_is_enclosed(name) {
            return Err(DicomError::ZipTraversal { archive: path.to_owned(), entry: name.to_owned() });
        }
        let hidden = name.split('/').any(|part| part.starts_with('.') && part != ".");
        if name.ends_with('/') || hidden {
            continue;
        }
        entries.push((index, name.to_owned()));
    }
    entries.sort_by(|a, b| a.1.cmp(&b.1));
    let shared = Arc::new(Mutex::new(archive));
    Ok(entries
        .into_iter()
        .map(|(index, name)| Source::Zip {
            archive: shared.clone(),
            archive_path: path.to_owned(),
            index,
            name,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_names_are_refused() {
        assert!(entry_is_enclosed("series/IM0001.dcm"));
        assert!(entry_is_enclosed("./a/b"));
        assert!(!entry_is_enclosed("../evil.dcm"));
        assert!(!entry_is_enclosed("a/../../evil.dcm"));
        assert!(!entry_is_enclosed("/etc/passwd"));
        assert!(!entry_is_enclosed("..\\evil"));
        assert!(!entry_is_enclosed("C:\\evil"));
    }

    #[test]
    fn zip_with_traversal_entry_is_an_error() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("study.zip");
        let mut writer = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        writer.start_file("ok/IM1.dcm", options).unwrap();
        writer.write_all(b"not dicom").unwrap();
        writer.start_file("../escape.dcm", options).unwrap();
        writer.write_all(b"x").unwrap();
        writer.finish().unwrap();
        let error = enumerate(&[path]).err().expect("traversal refused");
        assert!(matches!(error, DicomError::ZipTraversal { .. }), "{error}");
        assert!(error.to_string().contains("../escape.dcm"));
    }
}
