//! Growth charts as SVG: a measure's centile bands over 0–18 years for one sex, as the
//! paediatric growth charts of height and head circumference show them, with the case as a
//! point when there is one.

use pedinorm_templates::centiles::{CentileModel, curves};
use pedinorm_templates::stats::Sex;
use serde::{Deserialize, Serialize};

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

/// Ages at which the curves are sampled: every quarter year from 0 to [`MAX_AGE`].
const AGE_STEPS: usize = 72;

/// A growth chart as data: the centile curves sampled over age and the case's point. The
/// deviation report carries it (`growth_charts` in `report.json`), so that every renderer (the
/// SVG charts, the PDF report, a reader program) draws the same chart without the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowthCurves {
    /// The measure.
    pub measure: String,
    /// Whose curves: `girls`, `boys` or `both sexes`.
    pub sex: String,
    /// Unit of the measure.
    pub unit: String,
    /// Ages (years) at which the curves are sampled.
    pub ages: Vec<f64>,
    /// The centiles drawn, outer to inner on each side (2.5 … 97.5).
    pub centiles: Vec<f64>,
    /// One curve per centile: the measure at each age.
    pub values: Vec<Vec<f64>>,
    /// The case, when there is one.
    pub case: Option<CasePoint>,
}

/// The case's place on a growth chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CasePoint {
    /// Age (years).
    pub age: f64,
    /// The case's value.
    pub value: f64,
    /// Its centile.
    pub centile: f64,
}

impl GrowthChart<'_> {
    /// The chart's curves sampled from the model.
    pub fn curves(&self) -> GrowthCurves {
        let ages: Vec<f64> = (0..=AGE_STEPS).map(|i| i as f64 * MAX_AGE / AGE_STEPS as f64).collect();
        let values = curves(self.model, self.sex, &ages, &DRAWN);
        let sex = match self.sex {
            Some(Sex::Female) => "girls",
            Some(Sex::Male) => "boys",
            None => "both sexes",
        };
        GrowthCurves {
            measure: self.model.measure.clone(),
            sex: sex.into(),
            unit: self.unit.into(),
            ages,
            centiles: DRAWN.to_vec(),
            values,
            case: self.case.map(|(age, value, centile)| CasePoint { age, value, centile }),
        }
    }
}

impl GrowthCurves {
    /// The chart's title.
    pub fn title(&self) -> String {
        format!("{} — centiles by age, {}", self.measure, self.sex)
    }

    /// The value axis: the outer curves and the case, padded by 5 %.
    pub fn value_range(&self) -> (f64, f64) {
        let mut low = self.values.first().into_iter().flatten().copied().fold(f64::INFINITY, f64::min);
        let mut high = self.values.last().into_iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
        if let Some(case) = self.case {
            low = low.min(case.value);
            high = high.max(case.value);
        }
        let pad = 0.05 * (high - low).max(f64::EPSILON);
        (low - pad, high + pad)
    }

    /// The nested bands, outer first: the closed outline of the area between centile `i` and
    /// centile `len − 1 − i` as `(age, value)` points.
    pub fn bands(&self) -> Vec<Vec<(f64, f64)>> {
        let n = self.values.len();
        (0..n / 2)
            .map(|band| {
                let outer = self.ages.iter().copied().zip(self.values[band].iter().copied());
                let inner = self.ages.iter().copied().zip(self.values[n - 1 - band].iter().copied()).rev();
                outer.chain(inner).collect()
            })
            .collect()
    }

    /// The median curve as `(age, value)` points.
    pub fn median(&self) -> Vec<(f64, f64)> {
        let middle = &self.values[self.values.len() / 2];
        self.ages.iter().copied().zip(middle.iter().copied()).collect()
    }

    /// The oldest age of the curves.
    pub fn max_age(&self) -> f64 {
        self.ages.last().copied().unwrap_or(MAX_AGE)
    }
}

/// The chart as an SVG document.
pub fn growth_chart_svg(chart: &GrowthChart<'_>) -> String {
    curves_svg(&chart.curves())
}

/// A chart's curves as an SVG document.
pub fn curves_svg(chart: &GrowthCurves) -> String {
    let (low, high) = chart.value_range();
    let max_age = chart.max_age();
    let x = |age: f64| LEFT + age / max_age * (WIDTH - LEFT - RIGHT);
    let y = |value: f64| TOP + (high - value) / (high - low) * (HEIGHT - TOP - BOTTOM);
    let path = |points: &[(f64, f64)]| -> String {
        points
            .iter()
            .enumerate()
            .map(|(i, &(a, v))| format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, x(a), y(v)))
            .collect()
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    svg.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"22\" font-size=\"15\">{}</text>\n",
        escape(&chart.title())
    ));
    for (band, opacity) in chart.bands().iter().zip(BAND_OPACITY) {
        svg.push_str(&format!("<path d=\"{}Z\" fill=\"#2b6cb0\" fill-opacity=\"{opacity}\"/>\n", path(band)));
    }
    svg.push_str(&format!(
        "<path d=\"{}\" fill=\"none\" stroke=\"#1a365d\" stroke-width=\"2\"/>\n",
        path(&chart.median())
    ));
    for (centile, curve) in chart.centiles.iter().zip(&chart.values) {
        let value = curve.last().copied().unwrap_or(low);
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{centile}</text>\n",
            WIDTH - 2.0,
            y(value) + 3.0
        ));
    }
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    svg.push_str(&format!("<path d=\"M{x0},{y0}L{x0},{y1}L{x1},{y1}\" fill=\"none\" stroke=\"black\"/>\n"));
    for age in (0..=max_age as usize).step_by(2) {
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
        escape(&chart.unit)
    ));
    if let Some(case) = chart.case {
        let (cx, cy) = (x(case.age.min(max_age)), y(case.value));
        svg.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"5\" fill=\"#c53030\" stroke=\"white\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c53030\">case: centile {:.1}</text>\n",
            cx + 8.0,
            cy - 8.0,
            case.centile
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Opacity of the bands, outer to inner (stacked, so the inner bands look darker).
pub const BAND_OPACITY: [f64; 3] = [0.15, 0.2, 0.3];

/// A value-axis label.
pub fn format_tick(value: f64) -> String {
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
        // The curves round-trip through JSON (how the report carries them) and draw the same.
        let chart =
            GrowthChart { model: &model, sex: Some(Sex::Female), case: Some((6.0, 900.0, 99.2)), unit: "ml" };
        let curves = chart.curves();
        let back: GrowthCurves = serde_json::from_str(&serde_json::to_string(&curves).unwrap()).unwrap();
        assert_eq!(curves_svg(&back), svg);
        assert_eq!(curves.bands().len(), 3);
        assert_eq!(curves.bands()[0].len(), 2 * curves.ages.len());
        let (low, high) = curves.value_range();
        assert!(low < curves.values[0][0] && high > 900.0);
    }
}
