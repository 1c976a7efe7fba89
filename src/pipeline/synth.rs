//! A synthetic cohort written to a folder (`pedinorm synth`): the base brain (MNI files or the
//! procedural phantom) and any further base brains, every subject of the cohort plan with its
//! truth, `base_t1.nii.gz` (the first base) and the `cohort.csv` index.

use crate::synth_io::{
    SynthIoError, WriteOptions, csv_row, load_base, write_base_reference, write_cohort_csv, write_subject,
};
use pedinorm_registration::Grid;
use pedinorm_validation::{
    BaseBrain, CohortMember, CohortSpec, Generator, GeneratorOptions, Site, base_of_subject, cohort_plan,
};
use std::path::{Path, PathBuf};

/// Where the base brain of a synthetic cohort comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SynthBase {
    /// `t1.nii.gz`, `gm.nii.gz`, `wm.nii.gz` in this folder.
    Files(PathBuf),
    /// The procedural phantom on an MNI-like field of view at half the output resolution (at
    /// least 1 mm).
    Phantom,
}

/// What `pedinorm synth` writes.
#[derive(Debug, Clone)]
pub struct SynthCohortOptions {
    /// Number of normal subjects.
    pub normals: usize,
    /// Age range of the cohort (years).
    pub age_range: (f64, f64),
    /// Number of cases with abnormalities (lesions, atrophy, enlarged ventricles in turn).
    pub cases: usize,
    /// Cohort seed: the same seed gives bit-identical output.
    pub seed: u64,
    /// Output voxel size (mm).
    pub resolution_mm: f64,
    /// The base brain.
    pub base: SynthBase,
    /// Further base brains (folders with `t1.nii.gz`, `gm.nii.gz`, `wm.nii.gz`, in the space of
    /// the first); subjects are drawn from every base in turn
    /// ([`pedinorm_validation::base_of_subject`]).
    pub extra_bases: Vec<PathBuf>,
    /// Synthetic scanner sites S1…SN; 0: the reference site S0 only.
    pub sites: usize,
    /// Signal-to-noise ratio of every site instead of each site's own.
    pub snr: Option<f64>,
    /// Smooth warps only (no folding, boundary, CSF, ventricle or asymmetry variation).
    pub smooth_only: bool,
    /// Warps, DICOM series and national identifiers written besides the images.
    pub write: WriteOptions,
    /// Output folder (created if needed).
    pub out_dir: PathBuf,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthCohortWritten {
    /// Subjects written (normals and cases).
    pub subjects: usize,
    /// The `cohort.csv` index.
    pub csv: PathBuf,
}

/// A phantom on an MNI-like field of view at half the output resolution (at least 1 mm).
fn phantom_base(resolution_mm: f64) -> Result<BaseBrain, SynthIoError> {
    let spacing = (resolution_mm / 2.0).max(1.0);
    let extent = [196.0, 232.0, 188.0];
    let dims = extent.map(|e: f64| (e / spacing).round() as usize);
    let origin = [-98.0, -134.0, -72.0];
    let grid = Grid::axis_aligned(dims, [spacing; 3], origin)?;
    Ok(BaseBrain::phantom(&grid))
}

/// Generates the cohort and writes it into `options.out_dir`, one subject after the other.
/// `on_subject` is called before each subject with its plan entry and the number written so far.
pub fn write_synthetic_cohort(
    options: &SynthCohortOptions,
    on_subject: &dyn Fn(&CohortMember, usize, usize),
) -> Result<SynthCohortWritten, SynthIoError> {
    let (min_age, max_age) = options.age_range;
    let base = match &options.base {
        SynthBase::Files(dir) => load_base(dir)?,
        SynthBase::Phantom => phantom_base(options.resolution_mm)?,
    };
    let mut spec = CohortSpec::new(options.normals, min_age, max_age, options.cases, options.seed);
    spec.resolution_mm = options.resolution_mm;
    spec.sites = if options.sites == 0 {
        vec![Site::reference()]
    } else {
        Site::numbered(1, options.sites, options.seed)
    };
    if let Some(snr) = options.snr {
        spec.sites.iter_mut().for_each(|site| site.snr = snr);
    }
    if options.smooth_only {
        spec.options = GeneratorOptions::smooth_only();
    }
    let plan = cohort_plan(&spec)?;
    let mut generators = vec![Generator::new(&base, options.resolution_mm)?];
    drop(base);
    for dir in &options.extra_bases {
        generators.push(Generator::new(&load_base(dir)?, options.resolution_mm)?);
    }
    let out_dir: &Path = &options.out_dir;
    std::fs::create_dir_all(out_dir)
        .map_err(|source| SynthIoError::Io { path: out_dir.to_owned(), source })?;
    write_base_reference(out_dir, &generators[0].base_on_grid())?;
    let mut rows = Vec::with_capacity(plan.len());
    for (index, member) in plan.iter().enumerate() {
        on_subject(member, index, plan.len());
        let generator = &generators[base_of_subject(index, generators.len())];
        let mut subject = generator.subject(&member.spec)?;
        subject.id = member.id.clone();
        let files = write_subject(out_dir, &subject, index + 1, member.spec.seed, options.write)?;
        rows.push(csv_row(&subject, &files));
    }
    let csv = out_dir.join("cohort.csv");
    write_cohort_csv(&csv, &rows)?;
    Ok(SynthCohortWritten { subjects: plan.len(), csv })
}
