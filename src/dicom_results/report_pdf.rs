//! The one-page report (`report.pdf`, A4, laid out for print and read on screen): the case,
//! the database and its calibration, key slices with the fused overlay, the cluster table, the
//! region table, the regional volumes with their growth charts (drawn as vector paths from the
//! curves `report.json` carries) and the caveats of the method. Built with `lopdf`: Helvetica (a standard PDF
//! font, nothing embedded), key slices as RGB image objects compressed with Flate.

use super::source::SourceSeries;
use super::{ResultMaps, ResultsError, Significant};
use crate::formats::png::Canvas;
use crate::report::growth_chart::{BAND_OPACITY, GrowthCurves, format_tick};
use lopdf::content::{Content, Operation};
use lopdf::{Document, Object, Stream, dictionary};
use std::io::Write;

/// Page size (A4, points).
const PAGE: (f64, f64) = (595.0, 842.0);
const MARGIN: f64 = 40.0;
/// Key slices shown (at the peaks of the largest clusters).
const KEY_SLICES: usize = 3;

/// The method's caveats, printed on every report.
pub const CAVEATS: [&str; 4] = [
    "Thresholds are calibrated on held-out normals of the database (leave-one-out) and validated on",
    "synthetic lesions; they are not validated for diagnosis. A map without clusters does not exclude",
    "disease: small, subtle or diffuse changes, and changes the normals also show, may not reach them.",
    "Read every finding against the images; the maps are an aid, not a diagnosis.",
];

/// Warnings printed at most (the rest are named by count; report.json has them all).
const MAX_WARNINGS: usize = 6;
/// Characters per line of a wrapped paragraph at 8 points (Helvetica averages about half its
/// size per character; the text block is 515 points wide).
const WRAP_CHARS: usize = 120;

/// Text the standard fonts can show: ASCII, with the report's few other symbols spelled out
/// (anything else becomes `?`).
fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2013}' | '\u{2014}' | '\u{2212}' => out.push('-'),
            '\u{2265}' => out.push_str(">="),
            '\u{2264}' => out.push_str("<="),
            '\u{00d7}' => out.push('x'),
            '\u{00b1}' => out.push_str("+/-"),
            '\u{03c3}' => out.push_str("sigma"),
            '\u{00b7}' => out.push('*'),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// `text` broken into lines of at most `width` characters at spaces (a longer word stands on
/// its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// A page being laid out top to bottom.
struct Page {
    operations: Vec<Operation>,
    y: f64,
}

impl Page {
    fn text(&mut self, x: f64, size: f64, bold: bool, text: &str) {
        self.text_at(x, self.y, size, bold, text);
    }

    /// Text at a point of the page, leaving the layout's line where it is.
    fn text_at(&mut self, x: f64, y: f64, size: f64, bold: bool, text: &str) {
        self.operations.extend([
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec![if bold { "F2" } else { "F1" }.into(), size.into()]),
            Operation::new("Td", vec![x.into(), y.into()]),
            Operation::new("Tj", vec![Object::string_literal(ascii(text))]),
            Operation::new("ET", vec![]),
        ]);
    }

    fn line(&mut self, size: f64, bold: bool, text: &str) {
        self.text(MARGIN, size, bold, text);
        self.y -= size * 1.35;
    }

    /// A table row: cells at the given x offsets.
    fn row(&mut self, size: f64, bold: bool, cells: &[(f64, String)]) {
        for (x, cell) in cells {
            self.text(MARGIN + x, size, bold, cell);
        }
        self.y -= size * 1.35;
    }

    fn gap(&mut self, points: f64) {
        self.y -= points;
    }
}

fn number(value: &serde_json::Value, decimals: usize) -> String {
    value.as_f64().map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "-".into())
}

/// The slice of `source` holding a cluster's peak.
fn peak_slice(source: &SourceSeries, cluster: &Significant) -> usize {
    let voxel = source.grid.world_to_voxel(cluster.peak_native_mm);
    (voxel[2].round().max(0.0) as usize).min(source.grid.dims()[2].saturating_sub(1))
}

/// Height of a growth chart on the page (points), and the room the caveats below need.
const CHART_HEIGHT: f64 = 150.0;
const CAVEATS_HEIGHT: f64 = 75.0;
/// Growth charts drawn side by side below the tables.
const CHARTS_PER_ROW: usize = 2;
/// The least height of a growth chart drawn in a free key-slice slot (points).
const MIN_SLOT_CHART_HEIGHT: f64 = 130.0;

/// The growth charts of `report.json` (total brain and intracranial volume first).
fn growth_charts(report: &serde_json::Value) -> Vec<GrowthCurves> {
    report["growth_charts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::from_value(c.clone()).ok())
        .collect()
}

/// Growth charts side by side below the tables, when the page has room for them (else a line
/// naming the SVG files that hold them).
fn draw_growth_charts(page: &mut Page, charts: &[GrowthCurves]) {
    if charts.is_empty() {
        return;
    }
    page.gap(6.0);
    if page.y - CHART_HEIGHT - 14.0 < MARGIN + CAVEATS_HEIGHT {
        page.line(9.0, false, "Growth charts: see the growth_*.svg files of the result.");
        return;
    }
    page.line(11.0, true, "Growth charts");
    let width = (PAGE.0 - 2.0 * MARGIN - 20.0 * (CHARTS_PER_ROW - 1) as f64) / CHARTS_PER_ROW as f64;
    let top = page.y;
    for (n, chart) in charts.iter().take(CHARTS_PER_ROW).enumerate() {
        let frame = Frame { left: MARGIN + n as f64 * (width + 20.0), top, width, height: CHART_HEIGHT };
        frame.draw(page, chart);
    }
    page.y = top - CHART_HEIGHT - 4.0;
}

/// Where a chart is drawn: its box on the page (points; `top` is the upper edge).
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Frame {
    /// Space for the title above and the age labels below, and the value labels at the left.
    const TITLE: f64 = 12.0;
    const BELOW: f64 = 22.0;
    const LABELS: f64 = 34.0;

    fn draw(&self, page: &mut Page, chart: &GrowthCurves) {
        let (low, high) = chart.value_range();
        let max_age = chart.max_age();
        let (x0, x1) = (self.left + Self::LABELS, self.left + self.width);
        let (y0, y1) = (self.top - self.height + Self::BELOW, self.top - Self::TITLE - 4.0);
        let x = |age: f64| x0 + age.clamp(0.0, max_age) / max_age * (x1 - x0);
        let y = |value: f64| y0 + (value - low) / (high - low) * (y1 - y0);
        let number = |v: f64| Object::Real(v as f32);
        // A path through chart points (age, value): move to the first, lines to the rest.
        let path = |points: &[(f64, f64)]| -> Vec<Operation> {
            points
                .iter()
                .enumerate()
                .map(|(i, &(age, value))| {
                    Operation::new(if i == 0 { "m" } else { "l" }, vec![number(x(age)), number(y(value))])
                })
                .collect()
        };
        let ops = &mut page.operations;
        // Bands from the outer in, each in its colour stacked over the ones below it (the
        // SVG's transparency, flattened for print).
        let mut colour = [1.0f64; 3];
        for (band, opacity) in chart.bands().iter().zip(BAND_OPACITY) {
            for (c, blue) in colour.iter_mut().zip(BAND_RGB) {
                *c += opacity * (blue - *c);
            }
            ops.push(Operation::new("rg", colour.iter().map(|&c| number(c)).collect()));
            ops.extend(path(band));
            ops.push(Operation::new("h", vec![]));
            ops.push(Operation::new("f", vec![]));
        }
        ops.push(Operation::new("RG", vec![number(0.10), number(0.21), number(0.36)]));
        ops.push(Operation::new("w", vec![number(1.2)]));
        ops.extend(path(&chart.median()));
        ops.push(Operation::new("S", vec![]));
        // Axes.
        ops.push(Operation::new("RG", vec![number(0.0), number(0.0), number(0.0)]));
        ops.push(Operation::new("w", vec![number(0.6)]));
        ops.extend([
            Operation::new("m", vec![number(x0), number(y1)]),
            Operation::new("l", vec![number(x0), number(y0)]),
            Operation::new("l", vec![number(x1), number(y0)]),
            Operation::new("S", vec![]),
        ]);
        if let Some(case) = chart.case {
            // A filled dot: four Bézier quarter circles.
            let (cx, cy, r) = (x(case.age), y(case.value), 2.6);
            let k = 0.5523 * r;
            ops.push(Operation::new("rg", vec![number(0.77), number(0.19), number(0.19)]));
            ops.push(Operation::new("m", vec![number(cx + r), number(cy)]));
            for (a, b, c, d, e, f) in [
                (cx + r, cy + k, cx + k, cy + r, cx, cy + r),
                (cx - k, cy + r, cx - r, cy + k, cx - r, cy),
                (cx - r, cy - k, cx - k, cy - r, cx, cy - r),
                (cx + k, cy - r, cx + r, cy - k, cx + r, cy),
            ] {
                ops.push(Operation::new("c", [a, b, c, d, e, f].into_iter().map(number).collect()));
            }
            ops.push(Operation::new("f", vec![]));
            ops.push(Operation::new("rg", vec![number(0.0), number(0.0), number(0.0)]));
        }
        let mut label =
            |px: f64, py: f64, size: f64, bold: bool, text: &str| page.text_at(px, py, size, bold, text);
        label(
            self.left,
            self.top - 9.0,
            8.0,
            true,
            &format!("{} ({}), {}", chart.measure, chart.unit, chart.sex),
        );
        for age in (0..=max_age as usize).step_by(4) {
            label(x(age as f64) - 3.0, y0 - 10.0, 7.0, false, &age.to_string());
        }
        label((x0 + x1) / 2.0 - 20.0, y0 - 19.0, 7.0, false, "age (years)");
        for k in 0..=2 {
            let value = low + (high - low) * k as f64 / 2.0;
            label(self.left, y(value) - 2.5, 7.0, false, &format_tick(value));
        }
        if let Some(case) = chart.case {
            let text = format!("case: centile {:.1}", case.centile);
            let px = if x(case.age) > (x0 + x1) / 2.0 { x(case.age) - 70.0 } else { x(case.age) + 5.0 };
            label(px, y(case.value) + 5.0, 7.0, true, &text);
        }
    }
}

/// The bands' colour (#2b6cb0, as in the SVG charts) in PDF's 0–1 RGB.
const BAND_RGB: [f64; 3] = [43.0 / 255.0, 108.0 / 255.0, 176.0 / 255.0];

/// The one-page report as PDF bytes. `pictures` holds the fused intensity pictures of the
/// key slices (slice index, picture).
pub fn report_pdf(
    maps: &ResultMaps,
    source: &SourceSeries,
    clusters: &[Significant],
    pictures: &dyn Fn(usize) -> Canvas,
) -> Result<Vec<u8>, ResultsError> {
    let report = &maps.report;
    let mut page = Page { operations: Vec::new(), y: PAGE.1 - MARGIN - 8.0 };
    page.line(16.0, true, "pedinorm deviation report");
    page.gap(4.0);
    let sex = report["sex"].as_str().unwrap_or("not given");
    page.line(
        10.0,
        false,
        &format!(
            "Case {}   age {} y   sex {}   template bracket {}",
            report["case"].as_str().unwrap_or("-"),
            number(&report["age_years"], 1),
            sex,
            report["bracket"].as_str().unwrap_or("-")
        ),
    );
    page.line(
        10.0,
        false,
        &format!(
            "Database {}   software {}   created {}",
            report["normdb"].as_str().unwrap_or("-"),
            report["software"].as_str().unwrap_or("-"),
            report["created_utc"].as_str().unwrap_or("-")
        ),
    );
    for threshold in report["thresholds"].as_array().into_iter().flatten() {
        let calibrated =
            if threshold["calibrated"].as_bool() == Some(true) { "calibrated" } else { "NOT calibrated" };
        page.line(
            9.0,
            false,
            &format!(
                "{}: |z| > {} ({calibrated}; voxel rate nominal {} achieved {}; cluster rate nominal {} achieved {})",
                threshold["channel"].as_str().unwrap_or("-"),
                number(&threshold["z_threshold"], 2),
                number(&threshold["nominal_voxel_rate"], 4),
                number(&threshold["achieved_voxel_rate"], 4),
                number(&threshold["nominal_cluster_rate"], 2),
                number(&threshold["achieved_cluster_rate"], 2),
            ),
        );
    }
    // Every warning of the report (an unreliable comparison first, as the report orders
    // them): a finding on this page must not be read without them.
    let warnings: Vec<&str> =
        report["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str()).collect();
    if !warnings.is_empty() {
        page.gap(4.0);
        page.line(11.0, true, "Warnings");
        for warning in warnings.iter().take(MAX_WARNINGS) {
            let bold = warning.starts_with("COMPARISON UNRELIABLE");
            for (i, line) in wrap(&ascii(warning), WRAP_CHARS).iter().enumerate() {
                page.line(8.0, bold, &format!("{}{line}", if i == 0 { "- " } else { "  " }));
            }
        }
        if warnings.len() > MAX_WARNINGS {
            page.line(8.0, false, &format!("- and {} more in report.json", warnings.len() - MAX_WARNINGS));
        }
    }

    // Key slices: the fused intensity picture at the peaks of the largest clusters (else the
    // middle slice).
    let mut slices: Vec<usize> = clusters.iter().map(|c| peak_slice(source, c)).collect();
    slices.dedup();
    slices.truncate(KEY_SLICES);
    if slices.is_empty() {
        slices.push(source.grid.dims()[2] / 2);
    }
    page.gap(6.0);
    let mut images = Vec::new();
    let width = (PAGE.0 - 2.0 * MARGIN - 10.0 * (KEY_SLICES - 1) as f64) / KEY_SLICES as f64;
    let mut tallest: f64 = 0.0;
    for (n, &k) in slices.iter().enumerate() {
        let canvas = pictures(k);
        let height = width * canvas.height as f64 / canvas.width as f64;
        tallest = tallest.max(height);
        let x = MARGIN + n as f64 * (width + 10.0);
        images.push((format!("Im{n}"), canvas, x, width, height, k));
    }
    let image_top = page.y;
    for (name, _, x, w, h, _) in &images {
        page.operations.extend([
            Operation::new("q", vec![]),
            Operation::new(
                "cm",
                vec![(*w).into(), 0.into(), 0.into(), (*h).into(), (*x).into(), (image_top - h).into()],
            ),
            Operation::new("Do", vec![Object::Name(name.clone().into_bytes())]),
            Operation::new("Q", vec![]),
        ]);
    }
    // Slots the key slices leave free carry the first growth charts; the rest go below the
    // tables.
    let charts = growth_charts(report);
    let beside = charts.len().min(KEY_SLICES - images.len());
    let slot_height = tallest.max(MIN_SLOT_CHART_HEIGHT);
    for (n, chart) in charts[..beside].iter().enumerate() {
        let left = MARGIN + (images.len() + n) as f64 * (width + 10.0);
        Frame { left, top: image_top, width, height: slot_height }.draw(&mut page, chart);
    }
    let below = &charts[beside..];
    page.y = image_top - if beside > 0 { slot_height } else { tallest } - 12.0;
    for (_, _, x, _, _, k) in &images {
        page.text(*x, 8.0, false, &format!("slice {} of {}", k + 1, source.grid.dims()[2]));
    }
    page.gap(14.0);

    page.line(11.0, true, "Significant clusters");
    let columns = [0.0, 140.0, 210.0, 260.0];
    page.row(
        9.0,
        true,
        &[
            (0.0, "cluster".into()),
            (140.0, "volume ml".into()),
            (210.0, "peak z".into()),
            (260.0, "region at peak".into()),
        ],
    );
    if clusters.is_empty() {
        page.line(9.0, false, "none");
    }
    for cluster in clusters.iter().take(12) {
        let cells = [
            cluster.label.clone(),
            format!("{:.2}", cluster.volume_ml),
            format!("{:.2}", cluster.peak_z),
            cluster.region.clone().unwrap_or_else(|| "-".into()),
        ];
        page.row(9.0, false, &columns.iter().copied().zip(cells).collect::<Vec<_>>());
    }
    page.gap(6.0);
    page.line(11.0, true, "Regions (most deviant first)");
    page.row(
        9.0,
        true,
        &[(0.0, "region".into()), (200.0, "mean intensity z".into()), (300.0, "mean log-Jacobian z".into())],
    );
    let regions: Vec<&serde_json::Value> =
        report["regions"].as_array().into_iter().flatten().take(8).collect();
    if regions.is_empty() {
        page.line(9.0, false, "no atlas in the database");
    }
    for region in regions {
        page.row(
            9.0,
            false,
            &[
                (0.0, region["name"].as_str().unwrap_or("-").chars().take(40).collect()),
                (200.0, number(&region["intensity_mean_z"], 2)),
                (300.0, number(&region["logjac_mean_z"], 2)),
            ],
        );
    }
    let placed: Vec<&serde_json::Value> =
        report["regional"]["centiles"].as_array().into_iter().flatten().take(8).collect();
    if !placed.is_empty() {
        page.gap(6.0);
        page.line(11.0, true, "Regional volumes against the growth models");
        page.row(
            9.0,
            true,
            &[(0.0, "measure".into()), (200.0, "ml".into()), (260.0, "centile".into()), (320.0, "z".into())],
        );
        for measure in placed {
            page.row(
                9.0,
                false,
                &[
                    (0.0, measure["measure"].as_str().unwrap_or("-").chars().take(40).collect()),
                    (200.0, number(&measure["value"], 1)),
                    (260.0, number(&measure["centile"], 1)),
                    (320.0, number(&measure["z"], 2)),
                ],
            );
        }
    }
    draw_growth_charts(&mut page, below);
    page.gap(8.0);
    page.line(11.0, true, "Caveats");
    for line in CAVEATS {
        page.line(9.0, false, line);
    }

    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let regular =
        doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" });
    let bold = doc
        .add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica-Bold" });
    let mut xobjects = lopdf::Dictionary::new();
    for (name, canvas, ..) in &images {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let compressed = encoder
            .write_all(&canvas.pixels)
            .and_then(|()| encoder.finish())
            .map_err(|e| ResultsError::Pdf(format!("cannot compress a key slice: {e}")))?;
        let image = Stream::new(
            dictionary! {
                "Type" => "XObject",
                "Subtype" => "Image",
                "Width" => canvas.width as i64,
                "Height" => canvas.height as i64,
                "ColorSpace" => "DeviceRGB",
                "BitsPerComponent" => 8,
                "Filter" => "FlateDecode",
            },
            compressed,
        );
        xobjects.set(name.as_bytes(), doc.add_object(image));
    }
    let resources = doc.add_object(dictionary! {
        "Font" => dictionary! { "F1" => regular, "F2" => bold },
        "XObject" => xobjects,
    });
    let content =
        Content { operations: page.operations }.encode().map_err(|e| ResultsError::Pdf(e.to_string()))?;
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id =
        doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages",
            "Kids" => vec![page_id.into()],
            "Count" => 1,
            "Resources" => resources,
            "MediaBox" => vec![0.into(), 0.into(), (PAGE.0 as i64).into(), (PAGE.1 as i64).into()],
        }),
    );
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    doc.compress();
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).map_err(|e| ResultsError::Pdf(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_wrap_at_spaces_within_the_width() {
        let text = "the comparison is unreliable because the case lies outside what the normals represent";
        let lines = wrap(text, 30);
        assert!(lines.len() > 2 && lines.iter().all(|l| l.len() <= 30), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        assert_eq!(wrap("", 10), Vec::<String>::new());
        assert_eq!(wrap("averyveryverylongword x", 5), vec!["averyveryverylongword", "x"]);
    }

    /// A report with one growth chart: ages 0–18, three nested bands around a median.
    fn report_with_chart(case_value: f64) -> serde_json::Value {
        let ages: Vec<f64> = (0..=18).map(f64::from).collect();
        let centiles = [2.5, 10.0, 25.0, 50.0, 75.0, 90.0, 97.5];
        let values: Vec<Vec<f64>> = centiles
            .iter()
            .map(|c| ages.iter().map(|a| 900.0 + 30.0 * a + 4.0 * (c - 50.0)).collect())
            .collect();
        let chart = GrowthCurves {
            measure: "total_brain".into(),
            sex: "girls".into(),
            unit: "ml".into(),
            ages,
            centiles: centiles.to_vec(),
            values,
            case: Some(crate::report::growth_chart::CasePoint { age: 9.0, value: case_value, centile: 1.3 }),
        };
        serde_json::json!({ "growth_charts": [chart] })
    }

    fn shown_text(page: &Page) -> String {
        page.operations
            .iter()
            .filter(|o| o.operator == "Tj")
            .filter_map(|o| o.operands.first().and_then(|t| t.as_str().ok()))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn growth_charts_are_drawn_as_bands_median_and_the_case() {
        let mut page = Page { operations: Vec::new(), y: 500.0 };
        draw_growth_charts(&mut page, &growth_charts(&report_with_chart(1000.0)));
        let fills = page.operations.iter().filter(|o| o.operator == "f").count();
        assert_eq!(fills, 3 + 1, "three bands and the case's dot");
        let text = shown_text(&page);
        assert!(text.contains("Growth charts") && text.contains("total_brain (ml), girls"), "{text}");
        assert!(text.contains("case: centile 1.3") && text.contains("age (years)"), "{text}");
        assert!(page.y < 500.0 - CHART_HEIGHT, "the page continues below the chart");
        // Every point drawn lies inside the chart's box.
        for o in page.operations.iter().filter(|o| o.operator == "m" || o.operator == "l") {
            let x = o.operands[0].as_float().unwrap() as f64;
            let y = o.operands[1].as_float().unwrap() as f64;
            assert!(
                (MARGIN..=PAGE.0 - MARGIN).contains(&x) && y > 500.0 - CHART_HEIGHT - 20.0 && y < 500.0,
                "{x} {y}"
            );
        }
        // No room left above the caveats: the charts are named, not drawn.
        let mut full = Page { operations: Vec::new(), y: MARGIN + CAVEATS_HEIGHT + 40.0 };
        draw_growth_charts(&mut full, &growth_charts(&report_with_chart(1000.0)));
        assert!(shown_text(&full).contains("growth_*.svg"));
        assert_eq!(full.operations.iter().filter(|o| o.operator == "f").count(), 0);
        // No charts in the report: nothing at all.
        let mut none = Page { operations: Vec::new(), y: 500.0 };
        draw_growth_charts(&mut none, &growth_charts(&serde_json::json!({})));
        assert!(none.operations.is_empty());
    }

    #[test]
    fn symbols_of_the_warnings_are_spelled_in_ascii() {
        assert_eq!(
            ascii("ages 0\u{2013}17 y, \u{2265} 19 normals, 1.10\u{00d7}, \u{03c3} 4 mm"),
            "ages 0-17 y, >= 19 normals, 1.10x, sigma 4 mm"
        );
        assert_eq!(ascii("caf\u{00e9}"), "caf?");
    }
}
