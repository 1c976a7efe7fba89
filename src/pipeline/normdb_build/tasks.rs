//! The steps of a staged normative-database build, each run as its own process: `space` (one
//! bracket's template space), `map` (one normal mapped to its bracket's template), `partial`
//! (statistics of a chunk of subjects) and `reduce` (statistics, calibration, the written
//! database). The layout of the build directory is in the parent module.

use super::*;

/// Result of one subject's map step (`done.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalMapRecord {
    /// Subject identifier.
    pub id: String,
    /// Bracket name.
    pub bracket: String,
    /// Correlation of the warped subject with the template (QC).
    #[serde(with = "exact_f64")]
    pub similarity: f64,
    /// Intensity-histogram distance to the template (NaN in records written before it).
    #[serde(with = "exact_f64", default = "unknown")]
    pub histogram_distance: f64,
    /// Brain-mask Dice with the template mask (NaN in records written before it).
    #[serde(with = "exact_f64", default = "unknown")]
    pub mask_dice: f64,
    /// Whether the subject passed QC (and is accumulated).
    pub qc_passed: bool,
    /// The affine part of the template → subject mapping, row by row (4 × 4); with
    /// `corrected.nii.gz` and `inverse.nii.gz` it carries the template's labels and priors to
    /// the subject for its regional volumes (empty in records written before them).
    #[serde(default)]
    pub affine: Vec<String>,
    /// Wall time of the step (s); not part of the result.
    pub seconds: f64,
    /// Output sizes (bytes), to validate them on resume.
    pub outputs: Vec<(String, u64)>,
}

impl StepOutputs for NormalMapRecord {
    fn outputs(&self) -> &[(String, u64)] {
        &self.outputs
    }
}

fn map_done(build_dir: &Path, id: &str) -> Option<NormalMapRecord> {
    completed(&subject_dir(build_dir, id).join("done.json"))
}

/// The `space` step of one bracket: the template's brain mask (and the atlas carried to the
/// template), written next to a copy of the template. Skipped when already done.
pub fn run_space(build_dir: &Path, bracket: &str) -> Result<(), NormdbBuildError> {
    let dir = bracket_dir(build_dir, bracket);
    run_step::<_, NormdbBuildError>(
        &dir.join("done.json"),
        || format!("space of bracket {bracket}"),
        || {
            let manifest = NormdbManifest::read(build_dir)?;
            let entry = &manifest.brackets[manifest.bracket_index(bracket)?];
            let template = read_image(&entry.template)?;
            let space = TemplateSpace::new(template, None)?;
            let mut names = vec!["template.nii.gz".to_string(), "mask.nii.gz".to_string()];
            write_image(&dir.join("template.nii.gz"), &space.template, VoxelType::F32)?;
            write_image(&dir.join("mask.nii.gz"), &space.mask, VoxelType::F32)?;
            if let Some(atlas) = &manifest.atlas {
                let labels = carry_atlas(
                    &space,
                    &read_image(&atlas.reference)?,
                    &read_image(&atlas.labels)?,
                    &manifest.parameters.options().mapping,
                )?;
                write_image(&dir.join("labels.nii.gz"), &labels, VoxelType::F32)?;
                names.push("labels.nii.gz".to_string());
            }
            Ok(((), names))
        },
    )?;
    Ok(())
}

/// Reads a bracket's template space written by [`run_space`].
fn read_space(
    build_dir: &Path,
    manifest: &NormdbManifest,
    b: usize,
) -> Result<BracketInput, NormdbBuildError> {
    let entry = &manifest.brackets[b];
    let dir = bracket_dir(build_dir, &entry.name);
    if !step_done(&dir.join("done.json")) {
        return Err(NormdbBuildError::Invalid(format!(
            "bracket {} has no template space yet (run `normdb space` first)",
            entry.name
        )));
    }
    let template = read_image(&dir.join("template.nii.gz"))?;
    let mask = read_image(&dir.join("mask.nii.gz"))?;
    let labels = if manifest.atlas.is_some() { Some(read_image(&dir.join("labels.nii.gz"))?) } else { None };
    Ok(BracketInput {
        name: entry.name.clone(),
        min_years: entry.min_years,
        max_years: entry.max_years,
        space: TemplateSpace::new(template, Some(mask))?,
        labels,
    })
}

/// The `map` step of one subject: registration to its bracket's template, normalized
/// intensity and log-Jacobian maps on the template grid. Skipped when already done.
pub fn run_normal_map(build_dir: &Path, id: &str) -> Result<NormalMapRecord, NormdbBuildError> {
    if let Some(record) = map_done(build_dir, id) {
        return Ok(record);
    }
    let start = Instant::now();
    let manifest = NormdbManifest::read(build_dir)?;
    let subject = manifest.subject(id)?;
    let bracket = read_space(build_dir, &manifest, subject.bracket)?;
    let options = manifest.parameters.options();
    let image = read_image(&subject.path)?;
    let maps = map_to_template(&image, &bracket.space, &options.mapping, id)?;
    let space = &bracket.space;
    let members = template_members_of(
        &options,
        id,
        subject.bracket,
        manifest.subjects.iter().map(|s| (s.id.as_str(), s.bracket)),
    );
    let on_members = calibrates_on_members(&options, manifest.subjects.iter().map(|s| s.id.as_str()));
    let again = map_again_if_calibrated(&image, space, &maps, members, on_members, &options.mapping, id)?;
    let (similarity, histogram_distance, mask_dice) = recorded_quality(space, &maps, again.as_ref(), members);
    let tissues = member_tissues(&maps.warped, space, &template_tissues(space)?, id)?;
    let dir = subject_dir(build_dir, id);
    write_image(&dir.join("intensity.nii.gz"), &maps.intensity, VoxelType::F32)?;
    write_image(&dir.join("logjac.nii.gz"), &maps.logjac, VoxelType::F32)?;
    let mut outputs = vec![
        "intensity.nii.gz",
        "logjac.nii.gz",
        "csf.nii.gz",
        "gm.nii.gz",
        "wm.nii.gz",
        "corrected.nii.gz",
        "inverse.nii.gz",
    ];
    if let Some(again) = &again {
        // Masked like the values the calibration reads back.
        for (name, map) in AS_NEW_CASE.iter().zip([&again.intensity, &again.logjac]) {
            let masked = scatter(space.template.grid(), &space.indices, &gather(map, &space.indices), 0.0);
            write_image(&dir.join(name), &masked, VoxelType::F32)?;
        }
        outputs.extend(AS_NEW_CASE);
    }
    for (name, values) in TISSUES.iter().zip(&tissues) {
        let map = scatter(space.template.grid(), &space.indices, values, 0.0);
        write_image(&dir.join(format!("{name}.nii.gz")), &map, VoxelType::F32)?;
    }
    write_image(&dir.join("corrected.nii.gz"), &maps.corrected, VoxelType::F32)?;
    write_vector_image(&dir.join("inverse.nii.gz"), maps.inverse.components(), VoxelType::F32)?;
    let record = NormalMapRecord {
        id: id.to_owned(),
        bracket: bracket.name.clone(),
        similarity,
        histogram_distance,
        mask_dice,
        qc_passed: similarity >= options.min_similarity,
        // Rust's shortest round-trip form: read back bit for bit.
        affine: maps.affine.matrix().transpose().iter().map(|v| v.to_string()).collect(),
        seconds: start.elapsed().as_secs_f64(),
        outputs: file_sizes(&dir, &outputs)?,
    };
    write_json(&dir.join("done.json"), &record)?;
    Ok(record)
}

/// A template member's intensity and log-Jacobian maps as a new case gets them, written by its
/// map step when the calibration has to use template members (see
/// [`pedinorm_templates::model::map_as_new_case`]).
const AS_NEW_CASE: [&str; 2] = ["intensity_as_new_case.nii.gz", "logjac_as_new_case.nii.gz"];

/// Reads the mapped subjects of `range` (build order) back from their map steps, with their
/// native images and inverse mappings when `with_native`.
fn read_mapped(
    build_dir: &Path,
    manifest: &NormdbManifest,
    brackets: &[BracketInput],
    range: std::ops::Range<usize>,
    with_native: bool,
) -> Result<Vec<MappedNormal>, NormdbBuildError> {
    let subjects = &manifest.subjects[range];
    let missing: Vec<&str> =
        subjects.iter().filter(|s| map_done(build_dir, &s.id).is_none()).map(|s| s.id.as_str()).collect();
    if !missing.is_empty() {
        return Err(NormdbBuildError::Invalid(format!(
            "the map step of subject(s) {} is not done",
            missing.join(", ")
        )));
    }
    subjects
        .iter()
        .map(|s| {
            let dir = subject_dir(build_dir, &s.id);
            let record: NormalMapRecord = read_json(&dir.join("done.json"))?;
            let indices = &brackets[s.bracket].space.indices;
            let intensity = read_image(&dir.join("intensity.nii.gz"))?;
            let logjac = read_image(&dir.join("logjac.nii.gz"))?;
            let tissues: Vec<Vec<f32>> = TISSUES
                .iter()
                .map(|name| Ok(gather(&read_image(&dir.join(format!("{name}.nii.gz")))?, indices)))
                .collect::<Result<_, NormdbBuildError>>()?;
            Ok(MappedNormal {
                record: SubjectRecord {
                    pseudonym: s.id.clone(),
                    age_years: s.age_years,
                    sex: s.sex,
                    scanner: s.scanner.clone(),
                    bracket: brackets[s.bracket].name.clone(),
                    qc_similarity: record.similarity,
                    qc_histogram_distance: record.histogram_distance,
                    qc_mask_dice: record.mask_dice,
                    qc_passed: record.qc_passed,
                },
                bracket: s.bracket,
                values: [gather(&intensity, indices), gather(&logjac, indices)],
                tissues: tissues.try_into().expect("three tissues"),
                native: if with_native { read_native(&dir, &record)? } else { None },
                as_new_case: read_as_new_case(&dir, &record, indices)?,
            })
        })
        .collect()
}

/// A template member's maps as a new case gets them, when its map step wrote them.
fn read_as_new_case(
    dir: &Path,
    record: &NormalMapRecord,
    indices: &[usize],
) -> Result<Option<[Vec<f32>; 2]>, NormdbBuildError> {
    if !record.outputs.iter().any(|(name, _)| name == AS_NEW_CASE[0]) {
        return Ok(None);
    }
    let [intensity, logjac] = AS_NEW_CASE.map(|name| dir.join(name));
    Ok(Some([gather(&read_image(&intensity)?, indices), gather(&read_image(&logjac)?, indices)]))
}

/// A subject's native image and inverse mapping written by its map step (`None` for steps
/// done before they were written).
fn read_native(dir: &Path, record: &NormalMapRecord) -> Result<Option<NativeSubject>, NormdbBuildError> {
    if record.affine.len() != 16 {
        return Ok(None);
    }
    let done = dir.join("done.json");
    let values: Vec<f64> = record
        .affine
        .iter()
        .map(|v| v.parse().map_err(|_| file_error(&done, format!("affine: {v:?} is not a number"))))
        .collect::<Result<_, _>>()?;
    let inverse: [Image<f32>; 3] = read_vector_image(&dir.join("inverse.nii.gz"))?
        .try_into()
        .map_err(|_| file_error(&dir.join("inverse.nii.gz"), "must hold three displacement components"))?;
    Ok(Some(NativeSubject {
        image: read_image(&dir.join("corrected.nii.gz"))?,
        affine: AffineTransform::from_matrix(nalgebra::Matrix4::from_row_slice(&values)),
        inverse: DisplacementField::from_components(inverse),
    }))
}

/// The age nodes of every bracket: they adapt to the ages of the QC-passed subjects, so they
/// are known once every map step is done.
fn nodes_of(
    manifest: &NormdbManifest,
    brackets: &[BracketInput],
    passed: &[bool],
    options: &BuildOptions,
) -> Vec<Vec<pedinorm_templates::stats::AgeNode>> {
    brackets
        .iter()
        .enumerate()
        .map(|(b, bracket)| {
            let ages: Vec<f64> = manifest
                .subjects
                .iter()
                .zip(passed)
                .filter(|(s, p)| s.bracket == b && **p)
                .map(|(s, _)| s.age_years)
                .collect();
            bracket_nodes(
                bracket.min_years,
                bracket.max_years,
                options.nodes_per_bracket,
                &ages,
                options.min_node_subjects,
            )
        })
        .collect()
}

fn qc_of_all(build_dir: &Path, manifest: &NormdbManifest) -> Result<Vec<bool>, NormdbBuildError> {
    manifest
        .subjects
        .iter()
        .map(|s| {
            map_done(build_dir, &s.id).map(|r| r.qc_passed).ok_or_else(|| {
                NormdbBuildError::Invalid(format!("the map step of subject {} is not done", s.id))
            })
        })
        .collect()
}

/// A database holding only statistics (no subjects, no calibration): the file format of a
/// chunk's partial sums.
fn statistics_only(
    brackets: &[BracketInput],
    stats: Vec<[NormativeAccumulator; 2]>,
    options: &BuildOptions,
) -> NormativeDb {
    NormativeDb {
        metadata: Metadata::new(
            options.build_parameters(),
            "partial statistics of a chunk of subjects",
            &now_utc(),
        ),
        brackets: brackets.iter().zip(stats).map(|(b, stats)| b.with_stats(stats, None, None)).collect(),
        subjects: Vec::new(),
        calibration: None,
        atlas: None,
        regional: None,
        centiles: None,
    }
}

/// Accumulates subjects into statistics with the given nodes (QC-passed only, in order).
fn accumulate_with_nodes(
    brackets: &[BracketInput],
    nodes: &[Vec<pedinorm_templates::stats::AgeNode>],
    mapped: &[MappedNormal],
) -> Result<Vec<[NormativeAccumulator; 2]>, NormdbBuildError> {
    brackets
        .iter()
        .enumerate()
        .map(|(b, bracket)| {
            let n = bracket.space.indices.len();
            let mut stats = [
                NormativeAccumulator::new(nodes[b].clone(), n).map_err(NormDbError::from)?,
                NormativeAccumulator::new(nodes[b].clone(), n).map_err(NormDbError::from)?,
            ];
            for m in mapped.iter().filter(|m| m.bracket == b && m.record.qc_passed) {
                for (accumulator, values) in stats.iter_mut().zip(&m.values) {
                    accumulator
                        .add_subject(m.record.age_years, m.record.sex, values)
                        .map_err(NormDbError::from)?;
                }
            }
            Ok(stats)
        })
        .collect()
}

/// The `partial` step of one chunk of subjects: their statistics (same nodes as the whole
/// build), written as a statistics-only HDF5 file. Skipped when already done.
pub fn run_partial(build_dir: &Path, chunk: usize) -> Result<(), NormdbBuildError> {
    let dir = partial_dir(build_dir, chunk);
    let step = || format!("partial statistics of chunk {chunk}");
    run_step::<_, NormdbBuildError>(&dir.join("done.json"), step, || {
        let manifest = NormdbManifest::read(build_dir)?;
        let chunks = manifest.chunks();
        let Some(range) = chunks.get(chunk).cloned() else {
            return Err(NormdbBuildError::Invalid(format!(
                "chunk {chunk} is not in this build ({} chunks)",
                chunks.len()
            )));
        };
        let options = manifest.parameters.options();
        let brackets: Vec<BracketInput> = (0..manifest.brackets.len())
            .map(|b| read_space(build_dir, &manifest, b))
            .collect::<Result<_, _>>()?;
        let passed = qc_of_all(build_dir, &manifest)?;
        let nodes = nodes_of(&manifest, &brackets, &passed, &options);
        let mapped = read_mapped(build_dir, &manifest, &brackets, range, false)?;
        let stats = accumulate_with_nodes(&brackets, &nodes, &mapped)?;
        statistics_only(&brackets, stats, &options).write(&dir.join("stats.h5"))?;
        Ok(((), vec!["stats.h5".to_string()]))
    })?;
    Ok(())
}

/// The `reduce` step: statistics (merged from the chunks in chunk order, or accumulated
/// subject by subject), leave-one-out calibration, and the database written atomically to the
/// manifest's output. Skipped when already done.
pub fn run_normdb_reduce(build_dir: &Path) -> Result<NormativeDb, NormdbBuildError> {
    let manifest = NormdbManifest::read(build_dir)?;
    let built = run_step::<_, NormdbBuildError>(
        &reduce_marker(build_dir),
        || "reduce".into(),
        || {
            let options = manifest.parameters.options();
            let brackets: Vec<BracketInput> = (0..manifest.brackets.len())
                .map(|b| read_space(build_dir, &manifest, b))
                .collect::<Result<_, _>>()?;
            let mapped = read_mapped(build_dir, &manifest, &brackets, 0..manifest.subjects.len(), true)?;
            let atlas = match &manifest.atlas {
                Some(a) => Some(crate::pipeline::database::atlas_table(&a.labels, &a.names)?),
                None => None,
            };
            let db = match manifest.parameters.chunk_size {
                // Exactly the in-memory build.
                None => assemble(&brackets, &mapped, &options, atlas, &now_utc())?,
                Some(_) => {
                    let passed: Vec<bool> = mapped.iter().map(|m| m.record.qc_passed).collect();
                    let nodes = nodes_of(&manifest, &brackets, &passed, &options);
                    let mut stats = accumulate_with_nodes(&brackets, &nodes, &[])?;
                    // Fixed chunk order: the merged moments do not depend on task timing.
                    for chunk in 0..manifest.chunks().len() {
                        let dir = partial_dir(build_dir, chunk);
                        if !step_done(&dir.join("done.json")) {
                            return Err(NormdbBuildError::Invalid(format!(
                                "the partial step of chunk {chunk} is not done"
                            )));
                        }
                        let partial = NormativeDb::read(&dir.join("stats.h5"))?;
                        for (mine, theirs) in stats.iter_mut().zip(&partial.brackets) {
                            for channel in Channel::ALL {
                                mine[channel.index()]
                                    .merge(theirs.channel(channel))
                                    .map_err(NormDbError::from)?;
                            }
                        }
                    }
                    assemble_with_stats(&brackets, stats, &mapped, &options, atlas, &now_utc())?
                }
            };
            db.write(&manifest.output)?;
            // The output is an absolute path: the record names it whole.
            Ok((db, vec![manifest.output.to_string_lossy().into_owned()]))
        },
    )?;
    match built {
        Some(db) => Ok(db),
        None => Ok(NormativeDb::read(&manifest.output)?),
    }
}
