//! The steps of a template build, each run by its own process: `init` (the first target),
//! `map` (one subject registered to the current target) and `reduce` (average, shape update,
//! sharpening and QC of one iteration).

use super::*;

impl StepOutputs for MapRecord {
    fn outputs(&self) -> &[(String, u64)] {
        &self.outputs
    }
}

/// The `init` step: the centre-of-mass-aligned weighted average on the template grid (the
/// grid of the highest-weight subject, first by id on ties, at the configured spacing).
/// Skipped when already done.
pub fn run_init(build_dir: &Path) -> Result<(), TemplateBuildError> {
    run_step::<_, TemplateBuildError>(
        &init_marker(build_dir),
        || "init".into(),
        || {
            let manifest = BuildManifest::read(build_dir)?;
            let reference = manifest
                .subjects
                .iter()
                .fold(None::<&ManifestSubject>, |best, s| match best {
                    Some(b) if b.weight >= s.weight => Some(b),
                    _ => Some(s),
                })
                .expect("manifest has subjects");
            let reference_image = read_image(&reference.path)?;
            let grid = template_grid(reference_image.grid(), manifest.config.template_spacing_mm);
            drop(reference_image);
            let target = init_target(
                &grid,
                manifest.subjects.len(),
                |index| {
                    let subject = &manifest.subjects[index];
                    read_image(&subject.path)
                        .map(|image| (image, subject.weight))
                        .map_err(|e| TemplateError::InvalidInput(e.to_string()))
                },
                manifest.config.normalize_intensity,
            )
            .map_err(|source| TemplateBuildError::Compute { context: "init".into(), source })?;
            let dir = build_dir.join("init");
            write_image(&dir.join("target.nii.gz"), &target, VoxelType::F32)?;
            Ok(((), vec!["target.nii.gz".to_string()]))
        },
    )?;
    Ok(())
}

/// The template a map step of `iteration` registers to.
pub fn target_of_iteration(build_dir: &Path, iteration: usize) -> PathBuf {
    if iteration == 0 {
        build_dir.join("init").join("target.nii.gz")
    } else {
        iteration_dir(build_dir, iteration - 1).join("template.nii.gz")
    }
}

/// The `map` step of one subject in one iteration with pedinorm's registration. Skipped when
/// already done.
pub fn run_map(build_dir: &Path, iteration: usize, id: &str) -> Result<MapRecord, TemplateBuildError> {
    let manifest = BuildManifest::read(build_dir)?;
    let registrar = PedinormRegistrar { settings: manifest.config.registration.clone() };
    run_map_with(build_dir, &manifest, iteration, id, &registrar)
}

/// The `map` step with a given registrar.
pub fn run_map_with(
    build_dir: &Path,
    manifest: &BuildManifest,
    iteration: usize,
    id: &str,
    registrar: &dyn Registrar,
) -> Result<MapRecord, TemplateBuildError> {
    manifest.check_iteration(iteration)?;
    let subject = manifest.subject(id)?;
    let dir = subject_dir(build_dir, iteration, id);
    let marker = dir.join("done.json");
    if let Some(record) = completed::<MapRecord>(&marker) {
        return Ok(record);
    }
    let start = Instant::now();
    let target_path = target_of_iteration(build_dir, iteration);
    if !target_path.is_file() {
        return Err(TemplateBuildError::Invalid(format!(
            "iteration {iteration} needs {} (run the previous step first)",
            target_path.display()
        )));
    }
    let template = read_image(&target_path)?;
    let image = read_image(&subject.path)?;
    let output =
        map_subject(&template, &image, MapStage::of_iteration(iteration), registrar).map_err(|source| {
            TemplateBuildError::Compute { context: format!("map iteration {iteration} subject {id}"), source }
        })?;
    write_affine(&dir.join("affine.txt"), &output.mapping.affine)?;
    let mut names = vec!["affine.txt", "warped.nii.gz"];
    if let Some(warp) = &output.mapping.warp {
        write_field(&dir.join("warp.nii.gz"), warp)?;
        names.push("warp.nii.gz");
    }
    write_image(&dir.join("warped.nii.gz"), &output.warped, VoxelType::F32)?;
    let record = MapRecord {
        id: id.to_string(),
        iteration,
        weight: subject.weight,
        similarity: output.similarity,
        warp_norm_mm: output.warp_norm_mm,
        seconds: start.elapsed().as_secs_f64(),
        outputs: file_sizes(&dir, &names)?,
    };
    write_json(&marker, &record)?;
    Ok(record)
}

/// The `reduce` step of one iteration: weighted average of the warped subjects, shape update,
/// sharpening, QC. Needs every subject's map step of the iteration. Skipped when already done.
pub fn run_reduce(build_dir: &Path, iteration: usize) -> Result<(), TemplateBuildError> {
    let marker = reduce_marker(build_dir, iteration);
    run_step::<_, TemplateBuildError>(
        &marker,
        || format!("reduce iteration {iteration}"),
        || {
            let manifest = BuildManifest::read(build_dir)?;
            manifest.check_iteration(iteration)?;
            let missing: Vec<&str> = manifest
                .subjects
                .iter()
                .filter(|s| !map_marker(build_dir, iteration, &s.id).is_file())
                .map(|s| s.id.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(TemplateBuildError::Invalid(format!(
                    "reduce of iteration {iteration} needs the map step of subject(s) {}",
                    missing.join(", ")
                )));
            }
            let previous = read_image(&target_of_iteration(build_dir, iteration))?;
            let mut accumulator =
                ReduceAccumulator::new(previous.grid(), manifest.config.normalize_intensity);
            let mut figures = Vec::new();
            // Fixed subject order: the sums, hence the template, do not depend on task timing.
            for subject in &manifest.subjects {
                let dir = subject_dir(build_dir, iteration, &subject.id);
                let record: MapRecord = read_json(&dir.join("done.json"))?;
                let warped = read_image(&dir.join("warped.nii.gz"))?;
                let affine = read_affine(&dir.join("affine.txt"))?;
                let warp = if iteration > 0 { Some(read_field(&dir.join("warp.nii.gz"))?) } else { None };
                accumulator.add(&warped, &SubjectMapping { affine, warp }, subject.weight).map_err(
                    |source| TemplateBuildError::Compute {
                        context: format!("reduce subject {}", subject.id),
                        source,
                    },
                )?;
                figures.push(SubjectFigures {
                    id: subject.id.clone(),
                    weight: subject.weight,
                    similarity: record.similarity,
                    warp_norm_mm: record.warp_norm_mm,
                });
            }
            let template = accumulator
                .finish(manifest.config.gradient_step, manifest.config.sharpening)
                .map_err(|source| TemplateBuildError::Compute {
                    context: format!("reduce iteration {iteration}"),
                    source,
                })?;
            let qc = iteration_qc(iteration, &template, Some(&previous), &figures, manifest.config.outlier_z);
            let dir = iteration_dir(build_dir, iteration);
            write_image(&dir.join("template.nii.gz"), &template, VoxelType::F32)?;
            write_json(&dir.join("qc.json"), &qc)?;
            Ok(((), vec!["template.nii.gz".to_string(), "qc.json".to_string()]))
        },
    )?;
    Ok(())
}
