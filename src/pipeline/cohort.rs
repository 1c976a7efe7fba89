//! Normal cohorts given as a CSV file or a BIDS dataset, checked before any compute: missing
//! or implausible ages, duplicate subjects and unreadable images are all reported, by name,
//! in one error.
//!
//! * CSV: a header row, then one row per image. Columns (case-insensitive): `path` (or
//!   `image`, `file`; relative paths are relative to the CSV's folder) and/or one column per
//!   contrast, `t1w`, `t2w`, `flair` (any may be empty for a subject; `path` is the T1w when
//!   there is no `t1w` column), `age` (or
//!   `age_years`, years), `sex` (`F`/`M`/other text, optional), `site` (or `scanner`,
//!   optional), `id` (or `subject`, `subject_id`, `participant_id`; default: the file name
//!   without `.nii.gz`/`.nii`). When a `kind` column exists (as in `pedinorm synth`'s index),
//!   only rows of kind `normal` (or empty) are part of the normal cohort. Other columns are
//!   ignored.
//! * BIDS: `participants.tsv` (`participant_id`, `age`, optional `sex`, `site`/`scanner`) and
//!   images `sub-*/[ses-*/]anat/*_T1w.nii[.gz]`, `*_T2w.nii[.gz]`, `*_FLAIR.nii[.gz]`; with
//!   sessions, a `sub-X/sub-X_sessions.tsv` with an `age` column overrides the participant's
//!   age per session. Each acquisition (the file name without its contrast suffix) is one
//!   subject of the cohort carrying the contrasts it has.
//!
//! Every image a subject carries is checked. The pipeline registers one contrast, the
//! cohort's reference: T1w when every subject has one, else T2w when every subject has one
//! (a T2w-only cohort, as infant cohorts can be); otherwise the subjects lacking a T1w are
//! reported. The other contrasts are carried (see [`CohortSubject::images`]) but not yet used.

use pedinorm_templates::age::check_age;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// An MR contrast a cohort may carry per subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contrast {
    /// T1-weighted.
    T1w,
    /// T2-weighted.
    T2w,
    /// T2 fluid-attenuated inversion recovery.
    Flair,
}

impl Contrast {
    /// All contrasts.
    pub const ALL: [Contrast; 3] = [Contrast::T1w, Contrast::T2w, Contrast::Flair];

    /// The BIDS suffix (`T1w`, `T2w`, `FLAIR`), also the series class ingest records.
    pub fn bids_suffix(self) -> &'static str {
        match self {
            Contrast::T1w => "T1w",
            Contrast::T2w => "T2w",
            Contrast::Flair => "FLAIR",
        }
    }

    /// The CSV column (`t1w`, `t2w`, `flair`).
    pub fn column(self) -> &'static str {
        match self {
            Contrast::T1w => "t1w",
            Contrast::T2w => "t2w",
            Contrast::Flair => "flair",
        }
    }
}

/// One image of a normal cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortSubject {
    /// Identifier (unique in the cohort).
    pub id: String,
    /// The image the pipeline registers: the cohort's reference contrast (see the module
    /// documentation).
    pub path: PathBuf,
    /// Every contrast the subject has (the reference included).
    pub images: BTreeMap<Contrast, PathBuf>,
    /// Age in years.
    pub age_years: f64,
    /// Sex as given (`F`, `M`, …), if any.
    pub sex: Option<String>,
    /// Site or scanner, if any.
    pub site: Option<String>,
}

/// Why a list of subjects or cases (a cohort, a case list) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The list (or a file it leads to) cannot be read or written at all.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Rows or images break rules; every problem is listed.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// The list's file or folder.
        path: PathBuf,
        /// One line per problem, naming the row or subject, the field and the rule.
        problems: Vec<String>,
    },
}

/// Reads a cohort from a CSV file or a BIDS folder and checks it (ages, duplicates, image
/// headers) before returning.
pub fn read_cohort(path: &Path) -> Result<Vec<CohortSubject>, ListError> {
    let (mut subjects, mut problems) = if path.is_dir() { read_bids(path)? } else { read_csv(path)? };
    problems.extend(choose_reference(&mut subjects));
    problems.extend(check_subjects(&subjects));
    if !problems.is_empty() {
        return Err(ListError::Invalid { path: path.to_owned(), problems });
    }
    Ok(subjects)
}

fn unreadable(path: &Path, message: impl ToString) -> ListError {
    ListError::Unreadable { path: path.to_owned(), message: message.to_string() }
}

/// The index of the first header that is one of `names` (any case, spaces trimmed).
pub(crate) fn column(headers: &[String], names: &[&str]) -> Option<usize> {
    headers.iter().position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
}

/// Sets each subject's reference image (T1w if every subject has one, else T2w if every
/// subject has one); names the subjects lacking it otherwise.
fn choose_reference(subjects: &mut [CohortSubject]) -> Vec<String> {
    let all_have = |contrast| subjects.iter().all(|s: &CohortSubject| s.images.contains_key(&contrast));
    let Some(reference) = [Contrast::T1w, Contrast::T2w].into_iter().find(|&c| all_have(c)) else {
        return subjects
            .iter()
            .filter(|s| !s.images.contains_key(&Contrast::T1w))
            .map(|s| {
                format!(
                    "subject {}: no T1w image (the pipeline registers one contrast: T1w, or T2w when every subject has a T2w)",
                    s.id
                )
            })
            .collect();
    };
    for subject in subjects {
        subject.path = subject.images[&reference].clone();
    }
    Vec::new()
}

/// A CSV list of images (a cohort or a case list) as read: the rows with their line numbers,
/// the columns its header names (an image column — `path`, or for cohorts a contrast column —
/// and `age` are required) and one problem per row that could not be read.
pub(crate) struct CsvList {
    /// Readable rows and their line numbers (the header is line 1).
    pub rows: Vec<(usize, csv::StringRecord)>,
    /// One line per unreadable row.
    pub problems: Vec<String>,
    /// The image column (`path`, `image` or `file`).
    pub path: Option<usize>,
    /// The contrast columns (`t1w`, `t2w`, `flair`).
    pub contrasts: Vec<(Contrast, usize)>,
    /// The age column.
    pub age: usize,
    /// The sex column, if any.
    pub sex: Option<usize>,
    /// The site or scanner column, if any.
    pub site: Option<usize>,
    /// The id column, if any.
    pub id: Option<usize>,
    /// The header's names.
    pub headers: Vec<String>,
    /// The folder relative image paths start from.
    base: PathBuf,
}

impl CsvList {
    /// Reads the list at `path`; `id_names` are the names its id column may have.
    pub(crate) fn read(path: &Path, id_names: &[&str]) -> Result<Self, ListError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_path(path)
            .map_err(|e| unreadable(path, e))?;
        let headers: Vec<String> =
            reader.headers().map_err(|e| unreadable(path, e))?.iter().map(str::to_owned).collect();
        let contrasts: Vec<(Contrast, usize)> = Contrast::ALL
            .into_iter()
            .filter_map(|contrast| column(&headers, &[contrast.column()]).map(|c| (contrast, c)))
            .collect();
        let image_column = column(&headers, &["path", "image", "file"]);
        if image_column.is_none() && contrasts.is_empty() {
            return Err(unreadable(
                path,
                "header: a `path` column (or `t1w`/`t2w`/`flair` columns) is required",
            ));
        }
        let mut list = CsvList {
            rows: Vec::new(),
            problems: Vec::new(),
            path: image_column,
            contrasts,
            age: column(&headers, &["age", "age_years"])
                .ok_or_else(|| unreadable(path, "header: an `age` column is required"))?,
            sex: column(&headers, &["sex"]),
            site: column(&headers, &["site", "scanner"]),
            id: column(&headers, id_names),
            base: path.parent().unwrap_or(Path::new(".")).to_owned(),
            headers,
        };
        for (index, record) in reader.records().enumerate() {
            let line = index + 2;
            match record {
                Ok(record) => list.rows.push((line, record)),
                Err(error) => list.problems.push(format!("line {line}: {error}")),
            }
        }
        Ok(list)
    }

    /// The image a row names: an absolute path as given, a relative one from the list's folder.
    pub(crate) fn image(&self, value: &str) -> PathBuf {
        if Path::new(value).is_absolute() { PathBuf::from(value) } else { self.base.join(value) }
    }
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("n/a")).map(str::to_owned)
}

/// The file name without `.nii.gz` / `.nii`.
pub(crate) fn stem(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.trim_end_matches(".gz").trim_end_matches(".nii").to_string()
}

fn parse_age(text: Option<&str>) -> Result<f64, String> {
    let Some(text) = non_empty(text) else { return Err("age is missing".into()) };
    let age: f64 = text.parse().map_err(|_| format!("age {text:?} is not a number of years"))?;
    check_age(age).map_err(|e| e.to_string())?;
    Ok(age)
}

fn read_csv(path: &Path) -> Result<(Vec<CohortSubject>, Vec<String>), ListError> {
    let list = CsvList::read(path, &["id", "subject", "subject_id", "participant_id"])?;
    let mut subjects = Vec::new();
    let mut problems = list.problems.clone();
    let kind_column = column(&list.headers, &["kind"]);
    for (line, record) in &list.rows {
        if let Some(kind) = kind_column.and_then(|c| non_empty(record.get(c)))
            && !kind.eq_ignore_ascii_case("normal")
        {
            continue;
        }
        // The contrast columns; `path` is the T1w when no `t1w` column is given.
        let mut images = BTreeMap::new();
        for &(contrast, column) in &list.contrasts {
            if let Some(image) = non_empty(record.get(column)) {
                images.insert(contrast, list.image(&image));
            }
        }
        if let Some(image) = list.path.and_then(|c| non_empty(record.get(c)))
            && !list.contrasts.iter().any(|&(c, _)| c == Contrast::T1w)
        {
            images.insert(Contrast::T1w, list.image(&image));
        }
        let Some(first_image) = images.values().next().cloned() else {
            let columns: Vec<&str> = list
                .path
                .map(|_| "path")
                .into_iter()
                .chain(list.contrasts.iter().map(|(c, _)| c.column()))
                .collect();
            problems.push(format!("line {line}: no image ({} all empty)", columns.join(", ")));
            continue;
        };
        let id = list.id.and_then(|c| non_empty(record.get(c))).unwrap_or_else(|| stem(&first_image));
        match parse_age(record.get(list.age)) {
            Ok(age_years) => subjects.push(CohortSubject {
                id,
                path: first_image,
                images,
                age_years,
                sex: list.sex.and_then(|c| non_empty(record.get(c))),
                site: list.site.and_then(|c| non_empty(record.get(c))),
            }),
            Err(rule) => problems.push(format!("line {line} (subject {id}): {rule}")),
        }
    }
    if subjects.is_empty() && problems.is_empty() {
        problems.push("the cohort has no rows".into());
    }
    Ok((subjects, problems))
}

/// Reads a tab-separated table: header plus rows as maps.
fn read_tsv(path: &Path) -> Result<Vec<HashMap<String, String>>, ListError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| unreadable(path, e))?;
    let headers: Vec<String> =
        reader.headers().map_err(|e| unreadable(path, e))?.iter().map(|h| h.to_ascii_lowercase()).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| unreadable(path, e))?;
        rows.push(headers.iter().cloned().zip(record.iter().map(str::to_owned)).collect());
    }
    Ok(rows)
}

fn read_bids(root: &Path) -> Result<(Vec<CohortSubject>, Vec<String>), ListError> {
    let participants_path = root.join("participants.tsv");
    if !participants_path.is_file() {
        return Err(unreadable(root, "not a BIDS dataset: participants.tsv is missing"));
    }
    let participants = read_tsv(&participants_path)?;
    let mut problems = Vec::new();
    let mut subjects = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for row in &participants {
        let Some(participant) = non_empty(row.get("participant_id").map(String::as_str)) else {
            problems.push("participants.tsv: a row has no participant_id".into());
            continue;
        };
        let participant =
            if participant.starts_with("sub-") { participant } else { format!("sub-{participant}") };
        listed.insert(participant.clone());
        let folder = root.join(&participant);
        let mut images: BTreeMap<String, (Option<String>, BTreeMap<Contrast, PathBuf>)> = BTreeMap::new();
        let mut session_ages: HashMap<String, String> = HashMap::new();
        let sessions_path = folder.join(format!("{participant}_sessions.tsv"));
        if sessions_path.is_file() {
            for session in read_tsv(&sessions_path)? {
                if let (Some(id), Some(age)) = (session.get("session_id"), session.get("age")) {
                    session_ages.insert(id.clone(), age.clone());
                }
            }
        }
        let mut anat_dirs = vec![(None, folder.join("anat"))];
        if let Ok(entries) = std::fs::read_dir(&folder) {
            let mut sessions: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ses-"))
                })
                .collect();
            sessions.sort();
            for session in sessions {
                let name = session.file_name().expect("dir name").to_string_lossy().into_owned();
                anat_dirs.push((Some(name), session.join("anat")));
            }
        }
        for (session, anat) in anat_dirs {
            let Ok(entries) = std::fs::read_dir(&anat) else { continue };
            let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            // One acquisition per name without its contrast suffix, carrying every contrast.
            for file in files {
                let file_name = file.to_string_lossy();
                if !(file_name.ends_with(".nii.gz") || file_name.ends_with(".nii")) {
                    continue;
                }
                let name = stem(&file);
                let Some((id, contrast)) = Contrast::ALL.into_iter().find_map(|contrast| {
                    let suffix = format!("_{}", contrast.bids_suffix());
                    name.ends_with(&suffix).then(|| (name.trim_end_matches(&suffix).to_owned(), contrast))
                }) else {
                    continue;
                };
                let entry = images.entry(id).or_insert_with(|| (session.clone(), BTreeMap::new()));
                if let Some(previous) = entry.1.insert(contrast, file.clone()) {
                    problems.push(format!(
                        "{}: two {} images for one acquisition: {} and {}",
                        participant,
                        contrast.bids_suffix(),
                        previous.display(),
                        file.display()
                    ));
                }
            }
        }
        if images.is_empty() {
            problems.push(format!("{participant}: no sub-*/[ses-*/]anat/*_T1w|_T2w|_FLAIR.nii[.gz] image"));
            continue;
        }
        for (id, (session, contrasts)) in images {
            let image = contrasts.values().next().cloned().expect("an acquisition has an image");
            let age_text = session
                .as_ref()
                .and_then(|s| session_ages.get(s))
                .or_else(|| row.get("age"))
                .map(String::as_str);
            match parse_age(age_text) {
                Ok(age_years) => subjects.push(CohortSubject {
                    id,
                    path: image,
                    images: contrasts,
                    age_years,
                    sex: non_empty(row.get("sex").map(String::as_str)),
                    site: non_empty(row.get("site").or_else(|| row.get("scanner")).map(String::as_str)),
                }),
                Err(rule) => problems.push(format!("{id}: {rule}")),
            }
        }
    }
    // Images of participants missing from participants.tsv have no age: report them.
    if let Ok(entries) = std::fs::read_dir(root) {
        let mut unlisted: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("sub-") && !listed.contains(n))
            .collect();
        unlisted.sort();
        for name in unlisted {
            problems.push(format!("{name}: not in participants.tsv (age unknown)"));
        }
    }
    Ok((subjects, problems))
}

/// Duplicate ids and paths, ids unusable as file names, unreadable image headers.
fn check_subjects(subjects: &[CohortSubject]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut paths: HashMap<&Path, &str> = HashMap::new();
    for subject in subjects {
        *ids.entry(subject.id.as_str()).or_default() += 1;
        if subject.id.is_empty()
            || subject.id.starts_with('.')
            || !subject.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems
                .push(format!("subject {:?}: id must use only letters, digits, '-', '_' or '.'", subject.id));
        }
        // Every contrast is checked, used by the pipeline or not.
        for image in subject.images.values() {
            if let Some(other) = paths.insert(image.as_path(), subject.id.as_str()) {
                problems.push(format!(
                    "subject {}: image {} is also subject {other}'s",
                    subject.id,
                    image.display()
                ));
            }
            match nifti::NiftiHeader::from_file(image) {
                Ok(header) if header.dim[0] >= 3 && header.dim[1..4].iter().all(|&d| d > 0) => {}
                Ok(header) => problems.push(format!(
                    "subject {}: {}: header field dim {:?} is not a 3-D volume",
                    subject.id,
                    image.display(),
                    &header.dim[..4]
                )),
                Err(error) => problems.push(format!(
                    "subject {}: {}: unreadable image: {error}",
                    subject.id,
                    image.display()
                )),
            }
        }
    }
    let mut duplicates: Vec<(&str, usize)> = ids.into_iter().filter(|(_, n)| *n > 1).collect();
    duplicates.sort();
    for (id, count) in duplicates {
        problems.push(format!("subject {id} appears {count} times"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_registration::{Grid, Image};

    fn write_volume(path: &Path) {
        let grid = Grid::axis_aligned([4, 4, 4], [2.0; 3], [0.0; 3]).unwrap();
        crate::formats::nifti::write_image(
            path,
            &Image::filled(grid, 1.0),
            crate::formats::nifti::VoxelType::F32,
        )
        .unwrap();
    }

    #[test]
    fn csv_cohort_is_read_with_relative_paths_and_default_ids() {
        let dir = tempfile::tempdir().unwrap();
        write_volume(&dir.path().join("a.nii.gz"));
        write_volume(&dir.path().join("b.nii.gz"));
        std::fs::write(
            dir.path().join("cohort.csv"),
            "Path,Age,Sex,Site,truth\na.nii.gz,1.5,F,s1,x\nb.nii.gz,10,M,,y\n",
        )
        .unwrap();
        let cohort = read_cohort(&dir.path().join("cohort.csv")).unwrap();
        assert_eq!(cohort.len(), 2);
        assert_eq!(cohort[0].id, "a");
        assert_eq!(cohort[0].age_years, 1.5);
        assert_eq!(cohort[0].sex.as_deref(), Some("F"));
        assert_eq!(cohort[1].site, None);
        assert_eq!(cohort[1].path, dir.path().join("b.nii.gz"));
    }

    #[test]
    fn every_problem_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write_volume(&dir.path().join("a.nii.gz"));
        std::fs::write(dir.path().join("broken.nii.gz"), b"not nifti").unwrap();
        std::fs::write(
            dir.path().join("cohort.csv"),
            "id,path,age\ns1,a.nii.gz,2\ns2,a.nii.gz,3\ns3,missing.nii.gz,4\ns4,broken.nii.gz,5\ns5,a2.nii.gz,\ns6,a3.nii.gz,-1\ns1,a4.nii.gz,40\n",
        )
        .unwrap();
        let error = read_cohort(&dir.path().join("cohort.csv")).unwrap_err();
        let text = error.to_string();
        for expected in [
            "subject s2: image", // duplicate path
            "s3",                // missing image
            "subject s4",        // unreadable image
            "line 6 (subject s5): age is missing",
            "line 7 (subject s6): age -1",
            "line 8 (subject s1): age 40",
        ] {
            assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
        }
        let header_error = {
            std::fs::write(dir.path().join("noage.csv"), "path\na.nii.gz\n").unwrap();
            read_cohort(&dir.path().join("noage.csv")).unwrap_err().to_string()
        };
        assert!(header_error.contains("age"), "{header_error}");
    }

    #[test]
    fn csv_contrast_columns_any_may_be_empty_and_t1w_is_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a1.nii.gz", "a2.nii.gz", "b1.nii.gz", "b3.nii.gz", "c1.nii.gz"] {
            write_volume(&dir.path().join(name));
        }
        std::fs::write(
            dir.path().join("cohort.csv"),
            "id,t1w,t2w,flair,age\na,a1.nii.gz,a2.nii.gz,,1\nb,b1.nii.gz,,b3.nii.gz,2\nc,c1.nii.gz,,,3\n",
        )
        .unwrap();
        let cohort = read_cohort(&dir.path().join("cohort.csv")).unwrap();
        assert_eq!(cohort[0].path, dir.path().join("a1.nii.gz"));
        assert_eq!(cohort[0].images.keys().copied().collect::<Vec<_>>(), [Contrast::T1w, Contrast::T2w]);
        assert_eq!(cohort[1].images[&Contrast::Flair], dir.path().join("b3.nii.gz"));
        assert_eq!(cohort[2].images.len(), 1);

        // A T2w-only cohort registers its T2w; a mixed one names the subjects lacking a T1w.
        std::fs::write(dir.path().join("t2.csv"), "id,t1w,t2w,age\na,,a2.nii.gz,1\nb,,b1.nii.gz,2\n")
            .unwrap();
        let t2 = read_cohort(&dir.path().join("t2.csv")).unwrap();
        assert_eq!(t2[0].path, dir.path().join("a2.nii.gz"));
        std::fs::write(
            dir.path().join("mixed.csv"),
            "id,t1w,t2w,age\na,a1.nii.gz,,1\nb,,b1.nii.gz,2\nc,,,3\n",
        )
        .unwrap();
        let text = read_cohort(&dir.path().join("mixed.csv")).unwrap_err().to_string();
        assert!(text.contains("subject b: no T1w image"), "{text}");
        assert!(text.contains("line 4: no image (t1w, t2w all empty)"), "{text}");
        // Every contrast's image is checked, used or not.
        std::fs::write(dir.path().join("bad.csv"), "id,t1w,flair,age\na,a1.nii.gz,missing.nii.gz,1\n")
            .unwrap();
        let text = read_cohort(&dir.path().join("bad.csv")).unwrap_err().to_string();
        assert!(text.contains("subject a: ") && text.contains("missing.nii.gz"), "{text}");
        // The old single column stays the T1w.
        std::fs::write(dir.path().join("old.csv"), "path,age\na1.nii.gz,1\n").unwrap();
        let old = read_cohort(&dir.path().join("old.csv")).unwrap();
        assert_eq!(old[0].images.keys().copied().collect::<Vec<_>>(), [Contrast::T1w]);
        assert_eq!(old[0].id, "a1");
    }

    #[test]
    fn bids_takes_t1w_t2w_and_flair_per_acquisition() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("participants.tsv"), "participant_id\tage\nsub-01\t0.5\nsub-02\t3\n")
            .unwrap();
        std::fs::create_dir_all(root.join("sub-01/anat")).unwrap();
        std::fs::create_dir_all(root.join("sub-02/anat")).unwrap();
        for name in [
            "sub-01/anat/sub-01_T2w.nii.gz",
            "sub-02/anat/sub-02_T2w.nii.gz",
            "sub-02/anat/sub-02_FLAIR.nii.gz",
        ] {
            write_volume(&root.join(name));
        }
        std::fs::write(root.join("sub-01/anat/sub-01_T2w.json"), "{}").unwrap();
        // Both have a T2w and one lacks a T1w: the cohort registers its T2w images.
        let cohort = read_cohort(root).unwrap();
        assert_eq!(cohort.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["sub-01", "sub-02"]);
        assert_eq!(cohort[1].path, root.join("sub-02/anat/sub-02_T2w.nii.gz"));
        assert_eq!(cohort[1].images.len(), 2);
        // With a T1w for everyone, the T1w is the reference.
        write_volume(&root.join("sub-01/anat/sub-01_T1w.nii.gz"));
        write_volume(&root.join("sub-02/anat/sub-02_T1w.nii.gz"));
        let cohort = read_cohort(root).unwrap();
        assert_eq!(cohort[0].path, root.join("sub-01/anat/sub-01_T1w.nii.gz"));
        assert_eq!(cohort[1].images.len(), 3);
    }

    #[test]
    fn duplicate_ids_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_volume(&dir.path().join("a.nii.gz"));
        write_volume(&dir.path().join("b.nii.gz"));
        std::fs::write(dir.path().join("c.csv"), "subject,path,age\nx,a.nii.gz,2\nx,b.nii.gz,3\n").unwrap();
        let text = read_cohort(&dir.path().join("c.csv")).unwrap_err().to_string();
        assert!(text.contains("subject x appears 2 times"), "{text}");
    }

    #[test]
    fn bids_dataset_with_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("participants.tsv"),
            "participant_id\tage\tsex\nsub-01\t4.5\tF\nsub-02\tn/a\tM\nsub-03\t7\tM\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("sub-01/anat")).unwrap();
        write_volume(&root.join("sub-01/anat/sub-01_T1w.nii.gz"));
        std::fs::create_dir_all(root.join("sub-02/ses-a/anat")).unwrap();
        std::fs::create_dir_all(root.join("sub-02/ses-b/anat")).unwrap();
        write_volume(&root.join("sub-02/ses-a/anat/sub-02_ses-a_T1w.nii.gz"));
        write_volume(&root.join("sub-02/ses-b/anat/sub-02_ses-b_T1w.nii.gz"));
        std::fs::write(root.join("sub-02/sub-02_sessions.tsv"), "session_id\tage\nses-a\t1.0\nses-b\t2.0\n")
            .unwrap();
        std::fs::create_dir_all(root.join("sub-03/anat")).unwrap();
        write_volume(&root.join("sub-03/anat/sub-03_T1w.nii.gz"));
        let cohort = read_cohort(root).unwrap();
        let ids: Vec<&str> = cohort.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["sub-01", "sub-02_ses-a", "sub-02_ses-b", "sub-03"]);
        assert_eq!(cohort[2].age_years, 2.0);
        assert_eq!(cohort[0].sex.as_deref(), Some("F"));
        // A participant without an age and an unlisted folder are reported.
        std::fs::create_dir_all(root.join("sub-04/anat")).unwrap();
        std::fs::write(
            root.join("participants.tsv"),
            "participant_id\tage\nsub-01\t\nsub-02\t3\nsub-03\t7\n",
        )
        .unwrap();
        let text = read_cohort(root).unwrap_err().to_string();
        assert!(
            text.contains("sub-01: age is missing") && text.contains("sub-04: not in participants.tsv"),
            "{text}"
        );
    }
}
