//! `pedinorm centiles` end to end: fit on normals of two sites, score held-out normals
//! (calibration), adapt to a third site from a few of its normals, show curves and a growth
//! chart, and refuse bad tables naming the file, line and column without writing anything.
//!
//! The normals here are drawn from a log-normal growth model with a sex ratio and per-site
//! gains — another family than the sinh-arcsinh the models fit.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::Command;

fn pedinorm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pedinorm")).args(args).output().expect("run pedinorm")
}

fn ok(args: &[&str]) -> String {
    let output = pedinorm(args);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Writes `n` normals per (site, gain) with two measures.
fn write_normals(path: &Path, rng: &mut ChaCha8Rng, sites: &[(&str, f64, usize)]) {
    let mut text = String::from("subject\tage\tsex\tsite\ttotal_brain\tventricles\n");
    let mut id = 0;
    for &(site, gain, n) in sites {
        for _ in 0..n {
            id += 1;
            let age: f64 = 18.0 * rng.random::<f64>();
            let male = rng.random::<bool>();
            let normal = |rng: &mut ChaCha8Rng| -> f64 {
                // Box–Muller.
                let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            };
            let brain = (1250.0 - 850.0 * (-age / 1.5).exp())
                * if male { 1.09 } else { 1.0 }
                * (0.07 * normal(rng)).exp()
                * gain;
            let ventricles = (8.0 + 0.8 * age) * (0.35 * normal(rng)).exp() * gain;
            text.push_str(&format!(
                "n{id}\t{age:.3}\t{}\t{site}\t{brain:.2}\t{ventricles:.3}\n",
                if male { "M" } else { "F" }
            ));
        }
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn fit_score_adapt_show_and_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    write_normals(Path::new(&path("train.tsv")), &mut rng, &[("A", 1.0, 500), ("B", 0.96, 500)]);
    write_normals(Path::new(&path("held.tsv")), &mut rng, &[("A", 1.0, 1500), ("B", 0.96, 1500)]);
    write_normals(Path::new(&path("new.tsv")), &mut rng, &[("C", 1.1, 40)]);
    write_normals(Path::new(&path("new_held.tsv")), &mut rng, &[("C", 1.1, 2000)]);

    let summary = ok(&["centiles", "fit", "--measures", &path("train.tsv"), "--out", &path("models.json")]);
    assert!(summary.contains("total_brain\t1000 normals"), "{summary}");

    // Held-out normals of the training sites: about 2.5 % beyond each side of the 95 % band.
    let tails = |scores: &str, measure: &str| -> (f64, f64, bool) {
        let rows: Vec<Vec<&str>> = scores
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .filter(|f: &Vec<&str>| f[1] == measure)
            .collect();
        let centiles: Vec<f64> = rows.iter().map(|f| f[3].parse().unwrap()).collect();
        let n = centiles.len() as f64;
        let below = 100.0 * centiles.iter().filter(|&&c| c < 2.5).count() as f64 / n;
        let above = 100.0 * centiles.iter().filter(|&&c| c > 97.5).count() as f64 / n;
        (below, above, rows.iter().all(|f| f[7] == "true"))
    };
    let held = ok(&["centiles", "score", "--models", &path("models.json"), "--measures", &path("held.tsv")]);
    for measure in ["total_brain", "ventricles"] {
        let (below, above, site_known) = tails(&held, measure);
        assert!(
            (1.5..=3.5).contains(&below) && (1.5..=3.5).contains(&above),
            "{measure}: {below:.2} / {above:.2}"
        );
        assert!(site_known);
    }

    // A new site reading 10 % larger: its normals look large until the site is adapted.
    let before =
        ok(&["centiles", "score", "--models", &path("models.json"), "--measures", &path("new_held.tsv")]);
    let (_, above_before, known_before) = tails(&before, "total_brain");
    assert!(above_before > 15.0 && !known_before, "before adaptation {above_before:.1} % above");
    ok(&[
        "centiles",
        "adapt",
        "--models",
        &path("models.json"),
        "--site",
        "C",
        "--measures",
        &path("new.tsv"),
        "--out",
        &path("adapted.json"),
    ]);
    let after =
        ok(&["centiles", "score", "--models", &path("adapted.json"), "--measures", &path("new_held.tsv")]);
    let (below, above, known_after) = tails(&after, "total_brain");
    assert!(
        (1.0..=4.5).contains(&below) && (1.0..=4.5).contains(&above) && known_after,
        "after {below:.2} / {above:.2}"
    );

    // Curves and a growth chart with the case on it.
    let table = ok(&[
        "centiles",
        "show",
        "--models",
        &path("adapted.json"),
        "--measure",
        "total_brain",
        "--sex",
        "F",
        "--ages",
        "1,10",
        "--chart",
        &path("chart.svg"),
        "--case",
        "10,1500",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split('\t').count(), 12);
    let median_at_10: f64 = lines[2].split('\t').nth(6).unwrap().parse().unwrap();
    assert!((median_at_10 / (1250.0 - 850.0 * (-10.0f64 / 1.5).exp()) - 1.0).abs() < 0.03, "{median_at_10}");
    let svg = std::fs::read_to_string(path("chart.svg")).unwrap();
    assert!(svg.contains("<circle") && svg.contains("girls"));

    // Bad input: the file, line and column are named; nothing is written.
    std::fs::write(path("bad.tsv"), "subject\tage\tsex\tsite\ttotal_brain\nx\t3\tF\tA\tlarge\n").unwrap();
    let refused = pedinorm(&["centiles", "fit", "--measures", &path("bad.tsv"), "--out", &path("bad.json")]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(message.contains("bad.tsv, line 2, column `total_brain`: `large` is not a number"), "{message}");
    assert!(!Path::new(&path("bad.json")).exists());
    let unknown = pedinorm(&["centiles", "show", "--models", &path("models.json"), "--measure", "amygdala"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no model of measure `amygdala`"));
}
