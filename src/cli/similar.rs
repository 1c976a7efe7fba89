//! `pedinorm similar`: the labelled results most like a case's, or how well a library finds
//! its own labels (leave-one-out).

use anyhow::Context;
use pedinorm::pipeline::similar::{read_library, read_signature};
use pedinorm_templates::similarity::{SignatureIndex, leave_one_out};
use std::path::PathBuf;

/// Arguments of `pedinorm similar`.
#[derive(Debug, clap::Args)]
#[command(long_about = "Finds the labelled deviation results most like a case's. A result's \
signature is read from its report.json: per atlas region the mean z and the fraction of voxels \
beyond threshold of each channel, the significant clusters' peaks in template space, and the \
regional centile z when present. Signatures are compared by a cosine over standardized features \
(see docs/similar.md); age takes no part.\n\n\
The library is a folder of `pedinorm deviation` output folders (e.g. a batch's --out-dir) with a \
labels file: CSV with the columns id (a folder name) and label (diagnosis, Orphanet code, class); \
only listed folders are read.\n\n\
With --query CASE_DIR (a deviation output folder) prints the K most similar labelled results; \
with --leave-one-out prints, for every labelled result, whether its own label is among the first \
1 and K others, against random order and nearest age.")]
pub struct Args {
    /// Folder of deviation output folders.
    #[arg(long)]
    pub library: PathBuf,
    /// Labels file (CSV: id,label).
    #[arg(long)]
    pub labels: PathBuf,
    /// A case's deviation output folder to find similar results for.
    #[arg(long, conflicts_with = "leave_one_out", required_unless_present = "leave_one_out")]
    pub query: Option<PathBuf>,
    /// Evaluate the library on itself, each result against all the others.
    #[arg(long)]
    pub leave_one_out: bool,
    /// Results listed (with --query) or the wider cut-off (with --leave-one-out).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub k: u16,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pedinorm similar`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let library = read_library(&args.library, &args.labels)?;
    let k = usize::from(args.k);
    if args.leave_one_out {
        let cases: Vec<(String, _)> = library.into_iter().map(|r| (r.label, r.signature)).collect();
        let cutoffs = if k == 1 { vec![1] } else { vec![1, k] };
        let figures = leave_one_out(&cases, &cutoffs);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&figures)?);
            return Ok(());
        }
        println!("{} results with a label seen at least twice, {} labels", figures.cases, figures.labels);
        println!(
            "method\t{}",
            figures.cutoffs.iter().map(|k| format!("top-{k}")).collect::<Vec<_>>().join("\t")
        );
        for (name, rates) in
            [("signature", &figures.signature), ("age_only", &figures.age_only), ("random", &figures.random)]
        {
            let cells: Vec<String> = rates.iter().map(|r| format!("{:.3}", r)).collect();
            println!("{name}\t{}", cells.join("\t"));
        }
        return Ok(());
    }
    let query_dir = args.query.expect("clap requires --query without --leave-one-out");
    let signature = read_signature(&query_dir)?;
    // The query itself, when it is part of the library, is not its own match.
    let query_canonical = query_dir.canonicalize().with_context(|| format!("{}", query_dir.display()))?;
    let ids: Vec<(String, String, bool)> = library
        .iter()
        .map(|r| {
            let is_query = args.library.join(&r.id).canonicalize().is_ok_and(|p| p == query_canonical);
            (r.id.clone(), r.label.clone(), is_query)
        })
        .collect();
    let index = SignatureIndex::new(library.into_iter().enumerate().map(|(i, r)| (i, r.signature)).collect());
    let matches = index.query(&signature, k, |&i| !ids[i].2);
    if args.json {
        let rows: Vec<serde_json::Value> = matches
            .iter()
            .map(|m| {
                serde_json::json!({ "id": ids[m.key].0, "label": ids[m.key].1, "similarity": m.similarity, "age_years": m.age_years })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("rank\tid\tlabel\tsimilarity\tage_years");
    for (rank, m) in matches.iter().enumerate() {
        println!("{}\t{}\t{}\t{:.3}\t{:.1}", rank + 1, ids[m.key].0, ids[m.key].1, m.similarity, m.age_years);
    }
    Ok(())
}
