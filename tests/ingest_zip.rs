//! `ingest` takes the inputs `convert` takes: a zip archive of a study ingests exactly as the
//! extracted folder does, and an archive with an entry escaping it is refused, writing nothing.

mod ingest_support;

use ingest_support::*;
use pedinorm::ingest::admission::Database;
use pedinorm::ingest::{IdentifierSource, IngestError, IngestOptions, IngestStatus, ingest_study};
use std::io::Write;
use std::path::{Path, PathBuf};

fn options(root: &Path, data: &str, key_file: &Path) -> IngestOptions {
    IngestOptions {
        database: Database::B,
        data_dir: root.join(data),
        identifier: IdentifierSource::Issuer(CF_ISSUER.into()),
        allow_unlinked: false,
        key_file: Some(key_file.to_owned()),
    }
}

/// Zips every file under `folder` (entries relative to it), plus `extra` (name, bytes).
fn zip_folder(folder: &Path, archive: &Path, extra: &[(&str, &[u8])]) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(archive).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    for (relative, bytes) in snapshot(folder) {
        writer.start_file(relative.to_string_lossy(), options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    for (name, bytes) in extra {
        writer.start_file(*name, options).unwrap();
        writer.write_all(bytes).unwrap();
    }
    writer.finish().unwrap();
}

/// The stored files other than the index (which records when it was written).
fn stored(data: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = snapshot(data);
    files.retain(|path, _| !path.to_string_lossy().starts_with("index.sqlite"));
    files
}

#[test]
fn zip_archive_ingests_like_the_extracted_folder() {
    let (dir, key_file, folder) = default_study();
    std::fs::write(folder.join("notes.txt"), b"not DICOM").unwrap();
    let archive = dir.path().join("study.zip");
    zip_folder(&folder, &archive, &[]);

    let from_folder =
        ingest_study(std::slice::from_ref(&folder), &options(dir.path(), "a", &key_file)).unwrap();
    let from_zip =
        ingest_study(std::slice::from_ref(&archive), &options(dir.path(), "b", &key_file)).unwrap();
    assert_eq!(from_zip.status, IngestStatus::Ingested);
    assert_eq!(from_zip, from_folder);
    assert_eq!(from_zip.skipped_files, 1);
    let (a, b) = (stored(&dir.path().join("a")), stored(&dir.path().join("b")));
    assert!(a.keys().any(|p| p.extension().is_some_and(|e| e == "dcm")));
    assert!(a.keys().any(|p| p.to_string_lossy().ends_with("volume.nii.gz")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a == b, "the zip and the folder give different stored bytes");

    // The same study again, from the other form of input: nothing is added.
    let again = ingest_study(std::slice::from_ref(&archive), &options(dir.path(), "a", &key_file)).unwrap();
    assert_eq!(again.status, IngestStatus::AlreadyIngested);
    assert!(stored(&dir.path().join("a")) == a);
}

#[test]
fn zip_with_an_escaping_entry_is_refused_and_writes_nothing() {
    let (dir, key_file, folder) = default_study();
    let archive = dir.path().join("evil.zip");
    zip_folder(&folder, &archive, &[("../escape.dcm", b"x")]);
    let options = options(dir.path(), "data", &key_file);
    let error = ingest_study(std::slice::from_ref(&archive), &options).unwrap_err();
    assert!(matches!(error, IngestError::Dicom(_)), "{error}");
    assert!(error.to_string().contains("../escape.dcm"), "{error}");
    assert!(snapshot(&options.data_dir).is_empty());
}
