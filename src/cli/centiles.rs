//! `pedinorm centiles`: growth-chart centile models of regional measures.

use anyhow::Context;
use pedinorm::formats::measures::read_measures;
use pedinorm::pipeline::centiles::{
    CentileModels, adapt, centile_table, fit, format_scores, read_models, score, write_chart, write_models,
};
use pedinorm::report::growth_chart::GrowthChart;
use pedinorm_templates::centiles::{Covariates, FitOptions};
use pedinorm_templates::stats::Sex;
use std::path::PathBuf;

/// Arguments of `pedinorm centiles`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Centile models of regional measures (volumes in ml, or any positive or \
signed measure) by age and sex, with scanner-site effects: for each measure a sinh-arcsinh \
distribution whose location and log-scale follow a cubic B-spline in log(1 + age), fitted by \
penalized maximum likelihood (as Brain Charts' GAMLSS models).\n\n\
Measures tables are TSV with the header `subject age sex site <measure>...` (sex F, M or empty; \
site may be empty; a missing value is empty or NA), as `pedinorm volumes` writes them.")]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Fit a model per measure to the normals of a measures table.
    Fit(FitArgs),
    /// Estimate a new site's effects from its normals, holding the curves.
    Adapt(AdaptArgs),
    /// Centile and z of every value of a measures table.
    Score(ScoreArgs),
    /// Centiles of one measure at chosen ages, and its growth chart.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct FitArgs {
    /// Measures of the normals (TSV).
    #[arg(long)]
    measures: PathBuf,
    /// Models file to write (JSON).
    #[arg(long)]
    out: PathBuf,
    /// Interior knots of the location curve.
    #[arg(long, default_value_t = FitOptions::default().location_knots)]
    location_knots: usize,
    /// Interior knots of the scale curve.
    #[arg(long, default_value_t = FitOptions::default().scale_knots)]
    scale_knots: usize,
    /// Fewest normals a measure needs.
    #[arg(long, default_value_t = FitOptions::default().min_subjects)]
    min_subjects: usize,
}

#[derive(Debug, clap::Args)]
struct AdaptArgs {
    /// Models file to adapt.
    #[arg(long)]
    models: PathBuf,
    /// The new site's name.
    #[arg(long)]
    site: String,
    /// Measures of the new site's normals (TSV; their site column is ignored).
    #[arg(long)]
    measures: PathBuf,
    /// Adapted models file to write (may be the same as --models).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ScoreArgs {
    /// Models file.
    #[arg(long)]
    models: PathBuf,
    /// Measures to score (TSV).
    #[arg(long)]
    measures: PathBuf,
    /// Scores table to write (TSV; standard output when absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// Models file.
    #[arg(long)]
    models: PathBuf,
    /// The measure.
    #[arg(long)]
    measure: String,
    /// Sex of the curves (F or M; both sexes' midpoint when absent).
    #[arg(long, value_parser = parse_sex)]
    sex: Option<Sex>,
    /// Site whose effect applies (the population curve when absent).
    #[arg(long)]
    site: Option<String>,
    /// Ages (years), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0])]
    ages: Vec<f64>,
    /// Growth chart to write (SVG).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Unit of the measure, shown on the chart.
    #[arg(long, default_value = "ml")]
    unit: String,
    /// A case to place on the chart: AGE,VALUE.
    #[arg(long, value_delimiter = ',')]
    case: Vec<f64>,
}

fn parse_sex(text: &str) -> Result<Sex, String> {
    Sex::parse(text).ok_or_else(|| format!("`{text}` is not F or M"))
}

/// Runs `pedinorm centiles`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Fit(a) => {
            let measures = read_measures(&a.measures)?;
            let options = FitOptions {
                location_knots: a.location_knots,
                scale_knots: a.scale_knots,
                min_subjects: a.min_subjects,
                ..FitOptions::default()
            };
            let models = fit(&measures, &a.measures, &options)?;
            write_models(&a.out, &models)?;
            print_summary(&models);
        }
        Command::Adapt(a) => {
            let mut models = read_models(&a.models)?;
            let normals = read_measures(&a.measures)?;
            adapt(&mut models, &a.site, &normals, &a.measures)?;
            write_models(&a.out, &models)?;
            println!("site {}: adapted from {} normals", a.site, normals.subjects.len());
        }
        Command::Score(a) => {
            let models = read_models(&a.models)?;
            let measures = read_measures(&a.measures)?;
            let text = format_scores(&score(&models, &measures)?);
            match a.out {
                Some(path) => pedinorm::atomic::write_bytes(&path, text.as_bytes())
                    .with_context(|| format!("{}", path.display()))?,
                None => print!("{text}"),
            }
        }
        Command::Show(a) => {
            let models = read_models(&a.models)?;
            let model = models
                .model(&a.measure)
                .with_context(|| format!("{}: no model of measure `{}`", a.models.display(), a.measure))?;
            print!("{}", centile_table(model, &a.ages, a.sex, a.site.as_deref()));
            if let Some(path) = a.chart {
                let case = match a.case.as_slice() {
                    [age, value] => {
                        let covariates = Covariates { age: *age, sex: a.sex, site: a.site.clone() };
                        let placed = model
                            .place(*value, &covariates)
                            .with_context(|| format!("--case: {value} is not a value of `{}`", a.measure))?;
                        Some((*age, *value, placed.centile))
                    }
                    [] => None,
                    _ => anyhow::bail!("--case takes AGE,VALUE (two numbers)"),
                };
                write_chart(&path, &GrowthChart { model, sex: a.sex, case, unit: &a.unit })?;
            }
        }
    }
    Ok(())
}

fn print_summary(models: &CentileModels) {
    for m in &models.set.models {
        println!(
            "{}\t{} normals\tages {:.2}–{:.2}\tsites {}",
            m.measure,
            m.subjects,
            m.age_range.0,
            m.age_range.1,
            m.sites.len()
        );
    }
    println!(
        "flag limit |z| > {:.2} (family-wise {} % of normals)",
        models.set.limit.z,
        100.0 * models.set.limit.family_rate
    );
}
