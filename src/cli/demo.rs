//! `pedinorm demo`: the whole job on built-in synthetic data (see
//! [`pedinorm::pipeline::demo`]); this module reads the arguments, shows progress and prints
//! the summary.

use crate::cli::progress;
use indicatif::ProgressBar;
use pedinorm::pipeline::demo::{
    CaseOutcome, DemoBrackets, DemoConfig, DemoProgress, DemoSummary, data_dir_inputs, run_demo_with_progress,
};
use pedinorm_templates::model::BuildOptions;
use std::path::PathBuf;
use std::sync::Mutex;

/// Arguments of `pedinorm demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (cohort, templates, normdb.h5, case results).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Normal subjects of the database (spread evenly over the brackets).
    #[arg(long, default_value_t = 56)]
    pub normals: usize,
    /// Cases with known abnormalities.
    #[arg(long, default_value_t = 4)]
    pub cases: usize,
    /// Voxel size of the synthetic images (mm).
    #[arg(long, default_value_t = 2.0)]
    pub resolution: f64,
    /// Youngest normal (years).
    #[arg(long, default_value_t = 0.0)]
    pub min_age: f64,
    /// Upper end of the age range (years, exclusive).
    #[arg(long, default_value_t = 18.0)]
    pub max_age: f64,
    /// Age brackets, one template each: `default` (the paediatric brackets 0–1, 1–2, 2–4, 4–7,
    /// 7–11, 11–14, 14–18 years that meet the age range, with the same number of normals each)
    /// or a number of equal splits of the age range.
    #[arg(long, default_value = "default")]
    pub brackets: DemoBrackets,
    /// Scanner sites of the database's normals (`S1`, `S2`, …, drawn from the seed); 0 images
    /// every subject at the reference site.
    #[arg(long, default_value_t = 3)]
    pub sites: usize,
    /// Normals of one further site the database has never seen, scored as cases to measure
    /// false positives (0: none).
    #[arg(long, default_value_t = 7)]
    pub held_out_normals: usize,
    /// Cases of that unseen site, scored and compared with their truth like the others.
    #[arg(long, default_value_t = 0)]
    pub held_out_cases: usize,
    /// Pool every site as one (no site effects in the database): for comparison.
    #[arg(long)]
    pub no_site_model: bool,
    /// Deformable iterations of each template build.
    #[arg(long, default_value_t = 2)]
    pub template_iterations: usize,
    /// Seed of the synthetic cohort.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Concurrent template-build tasks.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Folder with the MNI base brain (`mni/`) and atlases (`atlases/`).
    #[arg(long, default_value = ".data")]
    pub data_dir: PathBuf,
    /// A further base brain: a folder with `t1.nii.gz`, `gm.nii.gz` and `wm.nii.gz` (skull
    /// stripped, aligned to the MNI base, grey/white probabilities). Repeat it to draw the
    /// cohort from several individuals in turn.
    #[arg(long = "extra-base", value_name = "DIR")]
    pub extra_bases: Vec<PathBuf>,
}

/// The demo's configuration from the command line.
fn config(args: &Args) -> anyhow::Result<DemoConfig> {
    let (base, atlas) = data_dir_inputs(&args.data_dir, args.resolution)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    Ok(DemoConfig {
        out_dir: args.out_dir.clone(),
        base,
        extra_bases: args.extra_bases.clone(),
        atlas,
        normals: args.normals,
        cases: args.cases,
        abnormalities: Vec::new(),
        resolution_mm: args.resolution,
        age_range: (args.min_age, args.max_age),
        brackets: args.brackets.clone(),
        sites: args.sites,
        held_out_normals: args.held_out_normals,
        held_out_cases: args.held_out_cases,
        template_iterations: args.template_iterations,
        template_schedule: (vec![100, 50, 25], vec![40, 20, 10]),
        seed: args.seed,
        jobs: args.jobs.unwrap_or(cores).max(1),
        build: BuildOptions { site_effects: !args.no_site_model, ..BuildOptions::default() },
    })
}

/// Runs `pedinorm demo`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = config(&args)?;
    // One bar per task of the demo, in turn.
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    let show = |event: DemoProgress<'_>| {
        let mut current = bar.lock().expect("progress lock");
        match event {
            DemoProgress::Started { task, total } => *current = Some(progress::bar(total as u64, task)),
            DemoProgress::Step => current.iter().for_each(|b| b.inc(1)),
            DemoProgress::Finished => current.take().iter().for_each(ProgressBar::finish),
        }
    };
    let summary = run_demo_with_progress(&config, &show)?;
    print_summary(&config, &summary);
    Ok(())
}

fn print_cases(cases: &[CaseOutcome]) {
    println!(
        "{:<10} {:<22} {:>4} {:>6} {:>9} {:>9} {:>10} {:>6} {:>8} {:>6}",
        "case", "truth", "site", "age", "truth ml", "detected", "peak z", "AUC", "others", "s"
    );
    for c in cases {
        let peak = c
            .matching_cluster
            .as_ref()
            .map(|m| format!("{} {:+.1}", m.channel, m.peak_z))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<22} {:>4} {:>6.1} {:>9.2} {:>9} {:>10} {:>6.3} {:>8} {:>6.1}",
            c.id,
            c.kind,
            c.site,
            c.age_years,
            c.truth_volume_ml,
            if c.detected { "yes" } else { "no" },
            peak,
            c.voxel_auc,
            c.other_significant_clusters,
            c.seconds
        );
    }
    let detected = cases.iter().filter(|c| c.detected).count();
    println!(
        "{detected} of {} abnormalities detected by a significant cluster overlapping the truth",
        cases.len()
    );
}

fn print_summary(config: &DemoConfig, summary: &DemoSummary) {
    let out = &config.out_dir;
    println!();
    println!("pedinorm demo — synthetic data only (a generated cohort, not real patients)");
    println!("results in {}", out.display());
    println!("  cohort:            {}", out.join("cohort/cohort.csv").display());
    println!("  templates:         {}", out.join("templates").display());
    println!("  normative database {}", summary.normdb.display());
    println!("  case results:      {}", out.join("cases").display());
    println!();
    for c in &summary.calibration {
        println!(
            "calibration {:9}: |z| > {:.2} (nominal voxel FPR {}, achieved on held-out normals {:.5}); \
             cluster mass > {:.1} (held-out normals with a cluster: {:.1} %)",
            c.channel,
            c.z_threshold,
            c.nominal_voxel_rate,
            c.achieved_voxel_rate,
            c.cluster_mass_threshold,
            100.0 * c.achieved_cluster_rate
        );
    }
    println!();
    print_cases(&summary.cases);
    if !summary.held_out_cases.is_empty() {
        println!();
        println!("cases of a site the database has never seen:");
        print_cases(&summary.held_out_cases);
    }
    if let Some(held_out) = &summary.held_out {
        println!();
        println!(
            "false positives on {} normals of site {} (not in the database), scored as cases:",
            held_out.normals.len(),
            held_out.sites.join(", ")
        );
        for rate in &held_out.voxel_rates {
            println!(
                "  {:9} voxels beyond threshold {:.5} (nominal {}, {:.1}x)",
                rate.channel,
                rate.achieved,
                rate.nominal,
                rate.achieved / rate.nominal
            );
        }
        println!(
            "  normals with a significant cluster {:.0} % (nominal {:.0} %); flagged unreliable {:.0} %",
            100.0 * held_out.cluster_rate,
            100.0 * held_out.nominal_cluster_rate,
            100.0 * held_out.flagged_rate
        );
    }
    for (name, s) in &summary.timings {
        println!("  {name:22} {s:7.1} s");
    }
    println!();
    println!(
        "try: pedinorm deviation --normdb {} --case <image.nii.gz> --age <years> --sex F --out-dir <dir>",
        summary.normdb.display()
    );
}
