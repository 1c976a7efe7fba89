//! Growth charts as SVG: a measure's centile bands over 0–18 years for one sex, as the
//! paediatric growth charts of height and head circumference show them, with the case as a
//! point when there is one.

use pedinorm_templates::centiles::{CentileModel, curves};
use pedinorm_templates::stats::Sex;

/// What a chart shows.
#[derive(Debug, Clone)]
pub struct GrowthChart<'a> {
    /// The measure's model.
    pub model: &'a CentileModel,
    /// Sex of the curves (none: the midpoint of both).
    pub sex: Option<Sex>,
    /// The case: age (years), value and centile.
    pub case: Option<(f64, f64, f64)>,
    /// Unit of the measure, shown on the axis.
    pub unit: &'a str,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const MAX_AGE: f64 = 18.0;
/// Centiles drawn, outer to inner; bands join centile `i` to `len − 1 − i`.
const DRAWN: [f64; 7] = [2.5, 10.0, 25.0, 50.0, 75.0, 90.0, 97.5];

/// The chart as an SVG document.
pub fn growth_chart_svg(chart: &GrowthChart<'_>) -> String {
    let ages: Vec<f64> = (0..=180).map(|i| i as f64 * MAX_AGE / 180.0).collect();
    let lines = curves(chart.model, chart.sex, &ages, &DRAWN);
    let mut low = lines[0].iter().copied().fold(f64::INFINITY, f64::min);
    let mut high = lines[DRAWN.len() - 1].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if let Some((_, value, _)) = chart.case {
        low = low.min(value);
        high = high.max(value);
    }
    let pad = 0.05 * (high - low).max(f64::EPSILON);
    let (low, high) = (low - pad, high + pad);
    let x = |age: f64| LEFT + age / MAX_AGE * (WIDTH - LEFT - RIGHT);
    let y = |value: f64| TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM);
    let path = |values: &[f64]| -> String {
        ages.iter()
            .zip(values)
            .enumerate()
            .map(|(i, (&a, &v))| format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(a), y(v)))
            .collect()
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let sex = match chart.sex {
        Some(Sex::Female) => "girls",
        Some(Sex::Male) => "boys",
        None => "both sexes",
    };
    svg.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"22\" font-size=\"15\">{} — centiles by age, {sex}</text>\n",
        escape(&chart.model.measure)
    ));
    for (band, opacity) in [(0, 0.15), (1, 0.2), (2, 0.3)] {
        let outer = &lines[band];
        let inner = &lines[DRAWN.len() - 1 - band];
        let mut d = path(outer);
        for (&a, &v) in ages.iter().zip(inner).rev() {
            d.push_str(&format!("L{:.1},{:.1}", x(a), y(v)));
        }
        svg.push_str(&format!("<path d=\"{d}Z\" fill=\"#2b6cb0\" fill-opacity=\"{opacity}\"/>\n"));
    }
    svg.push_str(&format!(
        "<path d=\"{}\" fill=\"none\" stroke=\"#1a365d\" stroke-width=\"2\"/>\n",
        path(&lines[DRAWN.len() / 2])
    ));
    for (i, centile) in DRAWN.iter().enumerate() {
        let value = lines[i][ages.len() - 1];
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{centile}</text>\n",
            WIDTH - 2.0,
            y(value) + 3.0
        ));
    }
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    svg.push_str(&format!("<path d=\"M{x0},{y0}L{x0},{y1}L{x1},{y1}\" fill=\"none\" stroke=\"black\"/>\n"));
    for age in (0..=18).step_by(2) {
        let ax = x(age as f64);
        svg.push_str(&format!(
            "<path d=\"M{ax:.1},{y1}L{ax:.1},{:.1}\" stroke=\"black\"/><text x=\"{ax:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{age}</text>\n",
            y1 + 5.0,
            y1 + 18.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">age (years)</text>\n",
        (x0 + x1) / 2.0,
        HEIGHT - 10.0
    ));
    for k in 0..=4 {
        let value = low + (high - low) * k as f64 / 4.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x0 - 6.0,
            y(value) + 4.0,
            format_tick(value)
        ));
    }
    svg.push_str(&format!(
        "<text transform=\"translate(14,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        (y0 + y1) / 2.0,
        escape(chart.unit)
    ));
    if let Some((age, value, centile)) = chart.case {
        let (cx, cy) = (x(age.min(MAX_AGE)), y(value));
        svg.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"#c53030\" stroke=\"white\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c53030\">case: centile {centile:.1}</text>\n",
            cx + 8.0,
            cy - 8.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn format_tick(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}

/// Text made safe inside SVG/XML.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pedinorm_templates::centiles::{Covariates, FitOptions, fit_measure};

    #[test]
    fn chart_has_bands_median_axes_and_the_case() {
        let covariates: Vec<Covariates> =
            (0..60).map(|i| Covariates { age: i as f64 * 0.3, sex: Some(Sex::Female), site: None }).collect();
        let values: Vec<f64> =
            covariates.iter().enumerate().map(|(i, c)| 500.0 + 40.0 * c.age + (i % 7) as f64 * 9.0).collect();
        let model = fit_measure("total<brain>", &values, &covariates, &FitOptions::default()).unwrap();
        let svg = growth_chart_svg(&GrowthChart {
            model: &model,
            sex: Some(Sex::Female),
            case: Some((6.0, 900.0, 99.2)),
            unit: "ml",
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("fill=\"#2b6cb0\"").count(), 3);
        assert!(svg.contains("total&lt;brain&gt; — centiles by age, girls"));
        assert!(svg.contains("<circle") && svg.contains("centile 99.2"));
        assert!(svg.contains(">age (years)</text>"));
    }
}
