//! Writes that never leave a half-written output: write a temporary file in the same folder,
//! then rename it over the destination.

use std::path::{Path, PathBuf};

/// A temporary path next to `destination` that keeps its full file name suffix (so writers
/// that pick the format from the extension, such as `.nii.gz`, still see it).
pub fn temporary_sibling(destination: &Path) -> PathBuf {
    let name = destination.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = format!(".tmp-{}-{}-{}", std::process::id(), next_counter(), name);
    destination.with_file_name(unique)
}

fn next_counter() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Runs `write` on a temporary sibling of `destination`, then renames it into place. On error
/// the temporary file is removed and `destination` is untouched.
pub fn write_atomically<E>(destination: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    if let Some(parent) = destination.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = temporary_sibling(destination);
    match write(&temporary) {
        Ok(()) => {
            std::fs::rename(&temporary, destination).inspect_err(|_| {
                let _ = std::fs::remove_file(&temporary);
            })?;
            Ok(())
        }
        Err(error) => {
            let _ = std::fs::remove_file(&temporary);
            Err(error)
        }
    }
}

/// Runs `compute` on a temporary sibling folder of `destination`, then renames that folder
/// into place, replacing an older folder of the same name: a reader sees the old folder or the
/// whole new one. On error the temporary folder is removed and `destination` is untouched.
pub fn replace_folder<D, E>(destination: &Path, compute: impl FnOnce(&Path) -> Result<D, E>) -> Result<D, E>
where
    E: From<std::io::Error>,
{
    let parent = destination.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let temporary = temporary_sibling(destination);
    std::fs::create_dir_all(&temporary)?;
    let result = compute(&temporary).and_then(|done| {
        if destination.exists() {
            std::fs::remove_dir_all(destination)?;
        }
        std::fs::rename(&temporary, destination)?;
        Ok(done)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temporary);
    }
    result
}

/// Writes bytes atomically.
pub fn write_bytes(destination: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(destination, |tmp| std::fs::write(tmp, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("out.nii.gz");
        let result: Result<(), std::io::Error> = write_atomically(&destination, |tmp| {
            std::fs::write(tmp, b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_folder_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("results");
        replace_folder(&destination, |tmp| std::fs::write(tmp.join("old.dcm"), b"old")).unwrap();
        let failed: Result<(), std::io::Error> = replace_folder(&destination, |tmp| {
            std::fs::write(tmp.join("new.dcm"), b"new")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(failed.is_err());
        let names = |d: &Path| -> Vec<String> {
            let mut n: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(dir.path()), ["results"]);
        assert_eq!(names(&destination), ["old.dcm"]);
        replace_folder(&destination, |tmp| std::fs::write(tmp.join("new.dcm"), b"new")).unwrap();
        assert_eq!(names(&destination), ["new.dcm"]);
    }

    #[test]
    fn successful_write_replaces_destination() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("a.json");
        write_bytes(&destination, b"one").unwrap();
        write_bytes(&destination, b"two").unwrap();
        assert_eq!(std::fs::read(&destination).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
