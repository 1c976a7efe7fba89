//! The regional table of a case: its measures (volumes in ml) with centile, z and flag, as a
//! TSV for readers and a one-page SVG summary sheet (each measure's z as a dot against the
//! normal band and the calibrated limit).

use super::growth_chart::escape;
use pedinorm_templates::centiles::PlacedMeasure;
use pedinorm_templates::model::case_local_volume::CaseLocalVolume;

/// The table as TSV, in the order given.
pub fn regional_tsv(rows: &[PlacedMeasure]) -> String {
    let mut text = String::from(
        "measure\tvalue_ml\tcentile\tz\tflagged\tnormal_p2_5\tnormal_p50\tnormal_p97_5\tsite_known\tage_covered\n",
    );
    for r in rows {
        text.push_str(&format!(
            "{}\t{:.3}\t{:.2}\t{:.3}\t{}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\n",
            r.measure,
            r.value,
            r.centile,
            r.z,
            r.flagged,
            r.normal_range[0],
            r.normal_range[1],
            r.normal_range[2],
            r.site_known,
            r.age_covered
        ));
    }
    text
}

/// Rows for the regional table from the case's local volume change: `local_volume_loss` (its
/// lowest standardized neighbourhood mean of the log-Jacobian z) and `local_volume_gain` (its
/// highest); `value_ml` is the volume beyond the calibrated limit in that direction, `z` the
/// score, `flagged` whether the limit is passed. A score is read against the family-wise
/// limit, not a centile, so the centile and normal-range columns are `NA`.
pub fn local_volume_rows(local: &CaseLocalVolume) -> String {
    let mut text = String::new();
    for (direction, score) in [("loss", local.lowest_score), ("gain", local.highest_score)] {
        let volume: f64 =
            local.findings.iter().filter(|f| f.direction == direction).map(|f| f.volume_ml).sum();
        let flagged = local.findings.iter().any(|f| f.direction == direction);
        text.push_str(&format!(
            "local_volume_{direction}\t{volume:.3}\tNA\t{score:.3}\t{flagged}\tNA\tNA\tNA\tNA\tNA\n"
        ));
    }
    text
}

const ROW: f64 = 16.0;
const LABEL_WIDTH: f64 = 230.0;
const PLOT_WIDTH: f64 = 360.0;
const Z_RANGE: f64 = 6.0;

/// The summary sheet: one row per measure, z from −6 to 6 (clipped, marked when beyond), the
/// ±1.96 band shaded and the calibrated limit drawn; flagged measures in red.
pub fn regional_summary_svg(rows: &[PlacedMeasure], limit_z: f64, title: &str) -> String {
    let top = 50.0;
    let height = top + ROW * rows.len() as f64 + 40.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 110.0;
    let x = |z: f64| LABEL_WIDTH + (z.clamp(-Z_RANGE, Z_RANGE) + Z_RANGE) / (2.0 * Z_RANGE) * PLOT_WIDTH;
    let bottom = top + ROW * rows.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n\
         <text x=\"10\" y=\"36\" fill=\"#555\">z of each measure against normals of the same age and sex; \
         shaded: 2.5th–97.5th centile; dashed: flag limit |z| = {limit_z:.2}</text>\n",
        escape(title)
    );
    svg.push_str(&format!(
        "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#2b6cb0\" fill-opacity=\"0.15\"/>\n",
        x(-1.96),
        x(1.96) - x(-1.96),
        bottom - top
    ));
    for z in [-limit_z, limit_z] {
        svg.push_str(&format!(
            "<path d=\"M{0:.1},{top}L{0:.1},{bottom:.1}\" stroke=\"#c53030\" stroke-dasharray=\"4,3\"/>\n",
            x(z)
        ));
    }
    svg.push_str(&format!("<path d=\"M{0:.1},{top}L{0:.1},{bottom:.1}\" stroke=\"#999\"/>\n", x(0.0)));
    for (i, r) in rows.iter().enumerate() {
        let y = top + ROW * (i as f64 + 0.5);
        let colour = if r.flagged { "#c53030" } else { "#1a365d" };
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{:.1} ml, centile {:.1}{}</text>\n",
            LABEL_WIDTH - 8.0,
            y + 4.0,
            escape(&r.measure),
            x(r.z),
            LABEL_WIDTH + PLOT_WIDTH + 8.0,
            y + 4.0,
            r.value,
            r.centile,
            if r.z.abs() > Z_RANGE { " (off scale)" } else { "" }
        ));
    }
    for z in [-6, -4, -2, 0, 2, 4, 6] {
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{z}</text>\n",
            x(z as f64),
            bottom + 16.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">z</text>\n</svg>\n",
        x(0.0),
        bottom + 32.0
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(measure: &str, z: f64, flagged: bool) -> PlacedMeasure {
        PlacedMeasure {
            measure: measure.into(),
            value: 100.0,
            centile: 50.0,
            z,
            normal_range: [80.0, 100.0, 120.0],
            flagged,
            site_known: true,
            age_covered: true,
        }
    }

    #[test]
    fn table_and_sheet_show_every_measure_and_the_flags() {
        let rows = [row("total_brain", 0.3, false), row("hippocampus_gm", -7.5, true)];
        let tsv = regional_tsv(&rows);
        assert_eq!(tsv.lines().count(), 3);
        assert!(tsv.lines().nth(2).unwrap().starts_with("hippocampus_gm\t100.000\t50.00\t-7.500\ttrue"));
        let svg = regional_summary_svg(&rows, 3.1, "case <1>");
        assert!(svg.contains("case &lt;1&gt;"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("fill=\"#c53030\"/>").count(), 1);
        assert!(svg.contains("(off scale)"));
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
    }
}
