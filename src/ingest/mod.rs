//! Ingest of DICOM studies: de-identification (PS3.15 Annex E), national pseudonym, admission
//! rules, the study store and its index.
//!
//! [`ingest_study`] takes the files of one study and either refuses it — with every reason,
//! writing nothing — or stores it under the data directory (see [`store`] for the layout):
//! one NIfTI volume and JSON sidecar per series, and de-identified copies of its DICOM files,
//! recorded in the SQLite index (see [`index`]). Ingesting the same study again adds nothing.
//! Every series is classified (T1w, T2w, FLAIR, DWI, localizer, other; see [`series_class`])
//! from its headers; the class and its rule go into the sidecar and the index.
//!
//! Privacy: the patient's name, identifiers and birth date are read only in memory. Logs name
//! the patient by the first digits of the pseudonym; errors name rules, never values.

pub mod admission;
pub mod deidentify;
pub mod descriptors;
pub mod index;
mod profile_table;
pub mod pseudonym;
pub mod series_class;
pub mod store;

use crate::formats::dicom::{self, DicomError, SeriesVolume};
use admission::{Database, RefusalReason, SeriesFacts, StudyFacts};
use deidentify::{Deidentifier, DeidentifyError};
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use index::{IndexError, SeriesRecord, StudyIndex, StudyRecord};
use pseudonym::{NationalId, Pseudonym, PseudonymError, PseudonymKey};
use rayon::prelude::*;
use series_class::{Classification, SeriesAttributes};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use store::{StoreError, StudyStore};

/// Where the national identifier comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentifierSource {
    /// Given by the caller (never printed).
    Explicit(String),
    /// Looked up in OtherPatientIDsSequence (and the top-level Patient ID) by this
    /// IssuerOfPatientID (compared without case and surrounding spaces).
    Issuer(String),
    /// No identifier: the study is refused unless unlinked studies are allowed.
    None,
}

/// How to ingest a study.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// The database the study is offered to (with its class for database A).
    pub database: Database,
    /// The data directory holding the store and its index.
    pub data_dir: PathBuf,
    /// Where the national identifier comes from.
    pub identifier: IdentifierSource,
    /// Accept a study without a national identifier, under a pseudonym keyed on the study.
    pub allow_unlinked: bool,
    /// The pseudonym key file; `None` reads the file named by `PEDINORM_PSEUDONYM_KEY_FILE`.
    pub key_file: Option<PathBuf>,
}

/// What happened to an offered study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngestStatus {
    /// The study was stored.
    Ingested,
    /// The study was already stored; series it lacked were added.
    SeriesAdded,
    /// The study was already stored with all these series; nothing was written.
    AlreadyIngested,
}

/// One stored series.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeriesReport {
    /// De-identified SeriesInstanceUID.
    pub series_uid: String,
    /// Series directory relative to the data directory.
    pub path: PathBuf,
    /// Whether this ingest stored it (false: it was there already).
    pub newly_stored: bool,
    /// Its class (`T1w`, `T2w`, `FLAIR`, `DWI`, `localizer`, `other`); `None` for a series
    /// stored before classes were recorded.
    pub series_class: Option<String>,
}

/// A series of the study that was not stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SkippedSeries {
    /// `series <SeriesNumber>` (never patient data).
    pub series: String,
    /// Why.
    pub reason: String,
}

/// The outcome of [`ingest_study`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IngestReport {
    /// What happened.
    pub status: IngestStatus,
    /// `"A"` or `"B"`.
    pub database: String,
    /// `"A1"`/`"A2"` for database A.
    pub class: Option<String>,
    /// The patient's pseudonym.
    pub pseudonym: String,
    /// Whether the pseudonym comes from a national identifier.
    pub linked: bool,
    /// De-identified StudyInstanceUID.
    pub study_uid: String,
    /// Study directory relative to the data directory.
    pub study_dir: PathBuf,
    /// Age at the study in years.
    pub age_years: Option<f64>,
    /// The study's series in the store.
    pub series: Vec<SeriesReport>,
    /// Non-image series (reports, presentation states) and series that could not be converted.
    pub skipped_series: Vec<SkippedSeries>,
    /// Files in the inputs that were not DICOM and were skipped.
    pub skipped_files: usize,
}

/// Why a study could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The study breaks admission or privacy rules; every reason is listed. Nothing was written.
    #[error("study refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<RefusalReason>),
    /// The study is in the other database already.
    #[error("study already ingested into database {existing}; not adding it to database {requested}")]
    OtherDatabase {
        /// Where it is.
        existing: String,
        /// Where it was offered.
        requested: String,
    },
    /// No input was given.
    #[error("no input files given")]
    NoInputs,
    /// An input could not be read.
    #[error("{path}: {message}")]
    Input {
        /// The input.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The pseudonym key could not be loaded.
    #[error(transparent)]
    Pseudonym(#[from] PseudonymError),
    /// A file could not be de-identified.
    #[error(transparent)]
    Deidentify(#[from] DeidentifyError),
    /// No series could be converted to a volume.
    #[error(transparent)]
    Dicom(#[from] DicomError),
    /// Writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A volume or sidecar could not be written.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Progress of an ingest, for progress bars and job status.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestProgress {
    /// Reading headers: files done of total.
    Scanning(usize, usize),
    /// Converting and de-identifying: series done of total.
    Storing(usize, usize),
}

/// Ingests one study (see the module documentation).
pub fn ingest_study(inputs: &[PathBuf], options: &IngestOptions) -> Result<IngestReport, IngestError> {
    ingest_study_with_progress(inputs, options, &|_| {})
}

/// What the header pass learns about one DICOM file.
struct FileHeader {
    object: dicom::InputObject,
    study_uid: String,
    series_uid: String,
    is_image: bool,
    burned_in: bool,
    identifiers: Vec<String>,
    facts: SeriesFacts,
    age_years: Option<f64>,
    patient_sex: Option<String>,
    identity: descriptors::IdentityTokens,
    attributes: SeriesAttributes,
}

/// [`ingest_study`] reporting progress to `progress`.
pub fn ingest_study_with_progress(
    inputs: &[PathBuf],
    options: &IngestOptions,
    progress: &(dyn Fn(IngestProgress) + Sync),
) -> Result<IngestReport, IngestError> {
    if inputs.is_empty() {
        return Err(IngestError::NoInputs);
    }
    let key = PseudonymKey::load(options.key_file.as_deref())?;
    // The same inputs as `pedinorm convert`: files, folders, zip archives (entries that escape
    // the archive refused, objects read with a size limit).
    let candidates = dicom::enumerate_inputs(inputs)?;
    let mut skipped_files = 0;

    // Header pass (pixel data not parsed), in parallel; results keep input order.
    let total = candidates.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let headers: Vec<Result<Option<FileHeader>, IngestError>> = candidates
        .into_par_iter()
        .map(|object| {
            let label = object.label();
            let explicit = object.is_explicit();
            let header = read_header(object, options);
            let count = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(IngestProgress::Scanning(count, total));
            match header {
                Ok(header) => Ok(Some(header)),
                Err(_) if !explicit => Ok(None),
                Err(message) => Err(IngestError::Input { path: label, message }),
            }
        })
        .collect();
    let mut files = Vec::new();
    for header in headers {
        match header? {
            Some(header) => files.push(header),
            None => skipped_files += 1,
        }
    }

    let mut reasons = Vec::new();
    let studies: BTreeSet<&str> = files.iter().map(|f| f.study_uid.as_str()).collect();
    if studies.len() > 1 {
        reasons.push(RefusalReason::MultipleStudies { studies: studies.len() });
    }
    let burned_in = files.iter().filter(|f| f.burned_in).count();
    if burned_in > 0 {
        reasons.push(RefusalReason::BurnedInAnnotation { files: burned_in });
    }
    let original_study_uid = files.first().map(|f| f.study_uid.clone()).unwrap_or_default();
    let (pseudonym, linked) = match resolve_identifier(options, &files) {
        Ok(Some(id)) => (Some(id.pseudonym(&key)), true),
        Ok(None) if options.allow_unlinked => (Some(Pseudonym::unlinked(&key, &original_study_uid)), false),
        Ok(None) => {
            reasons.push(RefusalReason::Unlinked);
            (None, false)
        }
        Err(reason) => {
            reasons.push(reason);
            (None, false)
        }
    };

    // Series: image series are admitted and stored; others are reported and skipped.
    let mut series: BTreeMap<String, Vec<&FileHeader>> = BTreeMap::new();
    let mut skipped_series = Vec::new();
    for file in &files {
        series.entry(file.series_uid.clone()).or_default().push(file);
    }
    series.retain(|_, members| {
        if members.iter().any(|f| f.is_image) {
            members.retain(|f| f.is_image);
            true
        } else {
            let first = members[0];
            skipped_series.push(SkippedSeries {
                series: first.facts.label.clone(),
                reason: format!(
                    "no image objects (modality {})",
                    first.facts.modality.as_deref().unwrap_or("unknown")
                ),
            });
            false
        }
    });
    let age_years = files.iter().find_map(|f| f.age_years);
    let classifications: BTreeMap<&String, Classification> =
        series.iter().map(|(uid, members)| (uid, classify_members(members))).collect();
    let facts = StudyFacts {
        age_years,
        series: series
            .iter()
            .map(|(uid, members)| SeriesFacts {
                classification: Some(classifications[uid].clone()),
                ..members[0].facts.clone()
            })
            .collect(),
    };
    reasons.extend(admission::admission_reasons(options.database, &facts));
    if !reasons.is_empty() {
        tracing::info!(reasons = reasons.len(), "study refused");
        return Err(IngestError::Refused(reasons));
    }
    let pseudonym = pseudonym.expect("a study without reasons to refuse has a pseudonym");
    // Clean Descriptors: every identity any file carries (and the one given explicitly).
    let mut identity = descriptors::IdentityTokens::default();
    for file in &files {
        identity.merge(file.identity.clone());
    }
    if let IdentifierSource::Explicit(raw) = &options.identifier {
        identity.add_identifier(raw);
    }
    let deidentifier = Deidentifier::new(&key, &pseudonym).with_clean_descriptors(&identity);
    let study_uid = deidentifier.uid(&original_study_uid);
    let database = options.database.name();
    let study_relative = StudyStore::study_relative(database, pseudonym.as_str(), &study_uid);
    let patient_sex = files.iter().find_map(|f| f.patient_sex.clone());
    let span = tracing::info_span!("ingest", pseudonym = pseudonym.short(), database);
    let _entered = span.enter();

    // Idempotence: look before converting anything.
    let existing_series: BTreeMap<String, Option<String>> =
        match StudyIndex::open_existing(&options.data_dir)? {
            Some(index) => match index.study_database(&study_uid)? {
                Some(existing) if existing != database => {
                    return Err(IngestError::OtherDatabase { existing, requested: database.to_owned() });
                }
                Some(_) => index.series_classes(&study_uid)?.into_iter().collect(),
                None => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };
    let mut report = IngestReport {
        status: IngestStatus::AlreadyIngested,
        database: database.to_owned(),
        class: options.database.class().map(|c| c.as_str().to_owned()),
        pseudonym: pseudonym.as_str().to_owned(),
        linked,
        study_uid: study_uid.clone(),
        study_dir: study_relative.clone(),
        age_years,
        series: Vec::new(),
        skipped_series,
        skipped_files,
    };
    let pending: Vec<(&String, &Vec<&FileHeader>)> =
        series.iter().filter(|(uid, _)| !existing_series.contains_key(&deidentifier.uid(uid))).collect();
    for (uid, series_class) in &existing_series {
        report.series.push(SeriesReport {
            series_uid: uid.clone(),
            path: study_relative.join(uid),
            newly_stored: false,
            series_class: series_class.clone(),
        });
    }
    if pending.is_empty() {
        tracing::info!(study = %short_uid(&study_uid), "already ingested");
        return Ok(report);
    }

    // Convert and de-identify into a staging directory.
    let store = StudyStore::new(&options.data_dir);
    let staging = store.staging()?;
    let mut staged: Vec<(SeriesRecord, PathBuf)> = Vec::new();
    let mut first_conversion_error = None;
    let pending_total = pending.len();
    for (done, (original_series_uid, members)) in pending.into_iter().enumerate() {
        progress(IngestProgress::Storing(done, pending_total));
        let label = members[0].facts.label.clone();
        let classification = &classifications[original_series_uid];
        let objects: Vec<dicom::InputObject> = members.iter().map(|f| f.object.clone()).collect();
        let volumes = match dicom::load_series_from_objects(&objects) {
            Ok(volumes) if !volumes.is_empty() => volumes,
            Ok(_) => {
                report.skipped_series.push(SkippedSeries { series: label, reason: "no volume".into() });
                continue;
            }
            Err(error) => {
                tracing::warn!(series = %label, "series not converted: {error}");
                report.skipped_series.push(SkippedSeries { series: label, reason: error.to_string() });
                first_conversion_error.get_or_insert(error);
                continue;
            }
        };
        let series_uid = deidentifier.uid(original_series_uid);
        let staged_dir = staging.path().join(&series_uid);
        write_volumes(&staging, &series_uid, &volumes, &deidentifier, &pseudonym, age_years, classification)?;
        let deidentified: Vec<Result<(String, Vec<u8>), DeidentifyError>> = objects
            .par_iter()
            .map(|input| {
                let label = input.label();
                let original = input.read().map_err(|error| DeidentifyError::Read {
                    path: label.clone(),
                    message: error.to_string(),
                })?;
                let (bytes, object) = deidentifier.deidentify_bytes(&label, &original)?;
                let sop = object
                    .get(tags::SOP_INSTANCE_UID)
                    .and_then(|e| e.value().to_str().ok().map(|s| s.trim_end_matches('\0').trim().to_owned()))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| deidentifier.uid(&label.display().to_string()));
                Ok((sop, bytes))
            })
            .collect();
        let mut dicom_files = BTreeSet::new();
        for item in deidentified {
            let (sop, bytes) = item?;
            // Duplicate copies of one instance collapse to one file.
            if dicom_files.insert(sop.clone()) {
                staging.write(&Path::new(&series_uid).join("dicom").join(format!("{sop}.dcm")), &bytes)?;
            }
        }
        let first = &volumes[0];
        let dims = first.image.grid().dims();
        let spacing = first.image.grid().spacing();
        staged.push((
            SeriesRecord {
                series_uid: series_uid.clone(),
                modality: members[0].facts.modality.clone(),
                body_part_examined: members[0].facts.body_part_examined.clone(),
                magnetic_field_strength: members[0].facts.magnetic_field_strength,
                dimensions: format!("{}×{}×{}", dims[0], dims[1], dims[2]),
                voxel_size_mm: format!("{:.4}×{:.4}×{:.4}", spacing[0], spacing[1], spacing[2]),
                file_count: dicom_files.len(),
                path: study_relative.join(&series_uid).to_string_lossy().into_owned(),
                series_class: Some(classification.class.as_str().to_owned()),
                series_class_rule: Some(classification.rule.code().to_owned()),
            },
            staged_dir,
        ));
    }
    progress(IngestProgress::Storing(pending_total, pending_total));
    if staged.is_empty() && existing_series.is_empty() {
        // Nothing could be converted: say why, rather than just "no series".
        return Err(match first_conversion_error {
            Some(error) => IngestError::Dicom(error),
            None => IngestError::Refused(vec![RefusalReason::NoSeries]),
        });
    }
    // Database B's T1w/T2w must also have converted into a volume.
    if options.database == Database::B
        && existing_series.is_empty()
        && !staged.iter().any(|(record, _)| {
            record
                .series_class
                .as_deref()
                .and_then(series_class::SeriesClass::parse)
                .is_some_and(|c| c.is_structural())
        })
    {
        let mut series: Vec<String> = facts
            .series
            .iter()
            .filter(|f| f.is_structural())
            .map(|f| format!("{} not converted", f.class_label()))
            .collect();
        series.extend(facts.series.iter().filter(|f| !f.is_structural()).map(SeriesFacts::class_label));
        return Err(IngestError::Refused(vec![RefusalReason::NoStructuralSeries { series }]));
    }

    // Publish and record in one index transaction: a failure to move records nothing.
    let study_record = StudyRecord {
        study_uid: study_uid.clone(),
        pseudonym: pseudonym.as_str().to_owned(),
        linked,
        database: database.to_owned(),
        class: report.class.clone(),
        age_years,
        patient_sex,
        path: study_relative.to_string_lossy().into_owned(),
    };
    let records: Vec<SeriesRecord> = staged.iter().map(|(record, _)| record.clone()).collect();
    let staged_dirs: BTreeMap<String, PathBuf> =
        staged.into_iter().map(|(record, dir)| (record.series_uid, dir)).collect();
    let mut index = StudyIndex::open(&options.data_dir)?;
    let new_series = index.record(&study_record, &records, |new| -> Result<(), StoreError> {
        for record in new {
            store.publish(&staged_dirs[&record.series_uid], Path::new(&record.path))?;
        }
        Ok(())
    })??;
    drop(staging);
    for record in &records {
        report.series.push(SeriesReport {
            series_uid: record.series_uid.clone(),
            path: PathBuf::from(&record.path),
            newly_stored: new_series.contains(&record.series_uid),
            series_class: record.series_class.clone(),
        });
    }
    report.series.sort_by(|a, b| a.series_uid.cmp(&b.series_uid));
    report.status = match (new_series.is_empty(), existing_series.is_empty()) {
        (true, _) => IngestStatus::AlreadyIngested,
        (false, true) => IngestStatus::Ingested,
        (false, false) => IngestStatus::SeriesAdded,
    };
    tracing::info!(study = %short_uid(&study_uid), series = new_series.len(), "ingested");
    Ok(report)
}

/// The last digits of a (de-identified) UID, for logs.
fn short_uid(uid: &str) -> &str {
    &uid[uid.len().saturating_sub(12)..]
}

/// Writes `volume.nii.gz` and `sidecar.json` (further volumes split out of the series as
/// `volume_<n>.nii.gz`, `sidecar_<n>.json`) into the staged series directory.
fn write_volumes(
    staging: &store::Staging,
    series_uid: &str,
    volumes: &[SeriesVolume],
    deidentifier: &Deidentifier<'_>,
    pseudonym: &Pseudonym,
    age_years: Option<f64>,
    classification: &Classification,
) -> Result<(), IngestError> {
    for (number, volume) in volumes.iter().enumerate() {
        let suffix = if number == 0 { String::new() } else { format!("_{}", number + 1) };
        let directory = staging.path().join(series_uid);
        let volume_path = directory.join(format!("volume{suffix}.nii.gz"));
        std::fs::create_dir_all(&directory)
            .map_err(|source| StoreError::Io { path: directory.clone(), source })?;
        crate::formats::nifti::write_image(
            &volume_path,
            &volume.image,
            crate::formats::nifti::VoxelType::F32,
        )
        .map_err(|error| IngestError::Write { path: volume_path.clone(), message: error.to_string() })?;
        let mut sidecar = volume.sidecar.clone();
        sidecar.pseudonym = Some(pseudonym.as_str().to_owned());
        sidecar.series_description =
            sidecar.series_description.as_deref().and_then(|d| deidentifier.clean_descriptor(d));
        sidecar.protocol_name =
            sidecar.protocol_name.as_deref().and_then(|d| deidentifier.clean_descriptor(d));
        sidecar.deidentification_method =
            Some(deidentifier.method_codes().iter().map(|&(_, meaning)| meaning.to_owned()).collect());
        if sidecar.age_years.is_none() {
            sidecar.age_years = age_years;
        }
        sidecar.series_class = Some(classification.class.as_str().to_owned());
        sidecar.series_class_rule = Some(classification.rule.code().to_owned());
        sidecar.series_class_reason = Some(classification.reason.clone());
        let json = serde_json::to_vec_pretty(&sidecar).map_err(|error| IngestError::Write {
            path: directory.join("sidecar.json"),
            message: error.to_string(),
        })?;
        staging.write(&Path::new(series_uid).join(format!("sidecar{suffix}.json")), &json)?;
    }
    Ok(())
}

/// Reads the header (everything before the pixel data) of one file. The error message names
/// what is wrong, never a value.
fn read_header(input: dicom::InputObject, options: &IngestOptions) -> Result<FileHeader, String> {
    let label = input.label();
    let object = parse_header(&input)?;
    let study_uid = uid_of(&object, tags::STUDY_INSTANCE_UID).ok_or("StudyInstanceUID is missing")?;
    // The grouping key `pedinorm convert` uses: SeriesInstanceUID, else its documented fallback.
    let (series_uid, _) = dicom::series_key(&object, &label).map_err(|error| error.to_string())?;
    let series_number = text(&object, tags::SERIES_NUMBER).and_then(|s| s.parse::<i64>().ok());
    let label = match series_number {
        Some(number) => format!("series {number}"),
        None => "series (no number)".to_owned(),
    };
    let descriptions = [tags::SERIES_DESCRIPTION, tags::PROTOCOL_NAME, tags::STUDY_DESCRIPTION]
        .into_iter()
        .filter_map(|tag| text(&object, tag))
        .collect();
    let facts = SeriesFacts {
        label,
        modality: text(&object, tags::MODALITY),
        body_part_examined: text(&object, tags::BODY_PART_EXAMINED),
        descriptions,
        magnetic_field_strength: text(&object, tags::MAGNETIC_FIELD_STRENGTH).and_then(|s| s.parse().ok()),
        // Decided per series once all its objects are read.
        classification: None,
    };
    let identifiers = match &options.identifier {
        IdentifierSource::Issuer(issuer) => identifiers_by_issuer(&object, issuer),
        _ => Vec::new(),
    };
    Ok(FileHeader {
        object: input,
        study_uid,
        series_uid,
        is_image: object.get(tags::ROWS).is_some(),
        burned_in: deidentify::has_burned_in_annotation(&object),
        identifiers,
        facts,
        age_years: age_of(&object),
        patient_sex: text(&object, tags::PATIENT_SEX).map(|s| s.to_ascii_uppercase()),
        identity: descriptors::IdentityTokens::from_object(&object),
        attributes: SeriesAttributes::from_object(&object),
    })
}

/// The class of a series from the headers of all its image objects.
fn classify_members(members: &[&FileHeader]) -> Classification {
    let mut attributes = members[0].attributes.clone();
    for member in &members[1..] {
        attributes.merge(&member.attributes);
    }
    series_class::classify(&attributes)
}

/// The elements before the pixel data of one Part-10 object; the error names the rule broken.
fn parse_header(input: &dicom::InputObject) -> Result<dicom_object::DefaultDicomObject, String> {
    let label = input.label();
    let bytes = input.read().map_err(|error| error.to_string())?;
    if !dicom::has_dicom_prefix(&bytes) {
        return Err("not a readable DICOM file: no DICM prefix at byte 128 (not a Part-10 file)".into());
    }
    dicom::guard(&label, || OpenFileOptions::new().read_until(tags::PIXEL_DATA).from_reader(&bytes[..]))
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("not a readable DICOM file: {error}"))
}

/// One series as [`classify_inputs`] reports it: no identities.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassifiedSeries {
    /// `series <SeriesNumber>`.
    pub series: String,
    /// The first object of the series (its path, or `archive.zip/entry`).
    pub first_object: PathBuf,
    /// Objects in the series.
    pub objects: usize,
    /// Modality.
    pub modality: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// The class.
    pub class: series_class::SeriesClass,
    /// The code of the rule that decided it.
    pub rule: &'static str,
    /// The rule in words with the values it read.
    pub reason: String,
    /// What the description suggests.
    pub hint: Option<series_class::SeriesClass>,
}

/// An input [`classify_inputs`] could not read, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UnreadableObject {
    /// The object.
    pub object: PathBuf,
    /// Why.
    pub reason: String,
}

/// Classifies the series of DICOM files, folders and zip archives from their headers alone
/// (pixel data is never decoded), as ingest does. Objects that are not DICOM are listed
/// with the reason, not an error. With `each_object`, every object is classified on its own
/// as a sample of its series (the image count is then unknown and decides nothing).
pub fn classify_inputs(
    inputs: &[PathBuf],
    each_object: bool,
) -> Result<(Vec<ClassifiedSeries>, Vec<UnreadableObject>), IngestError> {
    let mut unreadable = Vec::new();
    let mut series: BTreeMap<String, (ClassifiedSeries, SeriesAttributes)> = BTreeMap::new();
    for input in dicom::enumerate_inputs(inputs)? {
        let label = input.label();
        let object = match parse_header(&input) {
            Ok(object) => object,
            Err(reason) => {
                unreadable.push(UnreadableObject { object: label, reason });
                continue;
            }
        };
        // On its own, an object needs no series key.
        let key = match dicom::series_key(&object, &label) {
            _ if each_object => label.display().to_string(),
            Ok((key, _)) => key,
            Err(error) => {
                unreadable.push(UnreadableObject { object: label, reason: error.to_string() });
                continue;
            }
        };
        let attributes = SeriesAttributes { sample: each_object, ..SeriesAttributes::from_object(&object) };
        match series.get_mut(&key) {
            Some((entry, merged)) => {
                entry.objects += 1;
                merged.merge(&attributes);
            }
            None => {
                let number = text(&object, tags::SERIES_NUMBER).and_then(|s| s.parse::<i64>().ok());
                let entry = ClassifiedSeries {
                    series: number.map_or_else(|| "series (no number)".to_owned(), |n| format!("series {n}")),
                    first_object: label,
                    objects: 1,
                    modality: attributes.modality.clone(),
                    manufacturer: attributes.manufacturer.clone(),
                    class: series_class::SeriesClass::Other,
                    rule: "",
                    reason: String::new(),
                    hint: None,
                };
                series.insert(key, (entry, attributes));
            }
        }
    }
    let mut classified: Vec<ClassifiedSeries> = series
        .into_values()
        .map(|(entry, attributes)| {
            let decision = series_class::classify(&attributes);
            ClassifiedSeries {
                class: decision.class,
                rule: decision.rule.code(),
                reason: decision.reason,
                hint: decision.hint,
                ..entry
            }
        })
        .collect();
    classified.sort_by(|a, b| a.first_object.cmp(&b.first_object));
    Ok((classified, unreadable))
}

/// Age in years: from birth and study (or series, acquisition, content) dates, else from
/// PatientAge — the rule the conversion sidecar uses.
fn age_of(object: &InMemDicomObject) -> Option<f64> {
    let birth = text(object, tags::PATIENT_BIRTH_DATE).and_then(|d| dicom::sidecar::parse_dicom_date(&d));
    let study = [tags::STUDY_DATE, tags::SERIES_DATE, tags::ACQUISITION_DATE, tags::CONTENT_DATE]
        .into_iter()
        .find_map(|tag| text(object, tag).and_then(|d| dicom::sidecar::parse_dicom_date(&d)));
    match (birth, study) {
        (Some(birth), Some(study)) => dicom::sidecar::age_from_dates(birth, study),
        _ => None,
    }
    .or_else(|| text(object, tags::PATIENT_AGE).and_then(|a| dicom::sidecar::age_from_patient_age(&a)))
}

/// Patient IDs whose IssuerOfPatientID is `issuer`: items of OtherPatientIDsSequence and the
/// top-level Patient ID.
fn identifiers_by_issuer(object: &InMemDicomObject, issuer: &str) -> Vec<String> {
    let matches = |item: &InMemDicomObject| {
        text(item, tags::ISSUER_OF_PATIENT_ID).is_some_and(|found| found.eq_ignore_ascii_case(issuer.trim()))
    };
    let mut found = Vec::new();
    if matches(object)
        && let Some(id) = text(object, tags::PATIENT_ID)
    {
        found.push(id);
    }
    if let Some(Value::Sequence(sequence)) = object.get(tags::OTHER_PATIENT_I_DS_SEQUENCE).map(|e| e.value())
    {
        for item in sequence.items() {
            if matches(item)
                && let Some(id) = text(item, tags::PATIENT_ID)
            {
                found.push(id);
            }
        }
    }
    found
}

/// The national identifier of the study, per the options: `Ok(None)` when there is none.
fn resolve_identifier(
    options: &IngestOptions,
    files: &[FileHeader],
) -> Result<Option<NationalId>, RefusalReason> {
    let invalid = |error: PseudonymError| match error {
        PseudonymError::InvalidIdentifier(problem) => {
            RefusalReason::InvalidIdentifier { problem: problem.to_string() }
        }
        other => RefusalReason::InvalidIdentifier { problem: other.to_string() },
    };
    match &options.identifier {
        IdentifierSource::Explicit(raw) => NationalId::codice_fiscale(raw).map(Some).map_err(invalid),
        IdentifierSource::None => Ok(None),
        IdentifierSource::Issuer(_) => {
            let mut distinct: Vec<NationalId> = Vec::new();
            for raw in files.iter().flat_map(|f| f.identifiers.iter()) {
                let id = NationalId::codice_fiscale(raw).map_err(invalid)?;
                if !distinct.contains(&id) {
                    distinct.push(id);
                }
            }
            match distinct.len() {
                0 => Ok(None),
                1 => Ok(distinct.pop()),
                _ => Err(RefusalReason::ConflictingIdentifiers),
            }
        }
    }
}

/// A string value, trimmed of padding; `None` when absent or empty.
fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let element = object.get(tag)?;
    if element.vr() == dicom_core::VR::SQ {
        return None;
    }
    let value = element.value().to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_owned())
}

fn uid_of(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    text(object, tag)
}
