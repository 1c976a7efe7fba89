//! Who may read the data directory: only the service's user. The process creates files 0600
//! and folders 0700 (umask 077), the data directory is created 0700, and an existing data
//! directory open to group or others is refused at start (or only warned about when the
//! configuration says `allow_shared_data_dir = true`): identified studies wait there for
//! consent and ingest.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Makes every file and folder this process creates from now on private to its user.
pub fn private_new_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and missing parents) with mode 0700 when it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The rule an existing data directory breaks, if any: group or others may read, write or
/// enter it.
pub fn shared_access(dir: &Path) -> std::io::Result<Option<String>> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "the data directory {} is open to group or others (mode {mode:03o}); identified studies are kept \
             there, so make it private (chmod 700) or set allow_shared_data_dir = true to only warn",
            dir.display()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_dirs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_private_dir(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(shared_access(&data).unwrap(), None);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o750)).unwrap();
        let rule = shared_access(&data).unwrap().unwrap();
        assert!(rule.contains("mode 750") && rule.contains("chmod 700"), "{rule}");
    }
}
