//! The self-contained HTML report of a backtest.
//!
//! [`render`] turns a [`ReportData`] into one HTML page: inline CSS, charts as
//! inline SVG written here by hand, no script, and a Content-Security-Policy
//! that forbids every external load, so the page reads the same offline, as a
//! CI artefact or as an attachment. The headline compares the model's MSE with
//! each baseline's so a reader sees at once whether the model wins.
//!
//! Charts never panic and never print a non-finite coordinate: non-finite
//! values become gaps, an empty or all-non-finite chart says "no data", a
//! constant series gets a widened axis, and a line longer than 2,000 points
//! is thinned to each bucket's minimum and maximum (which keeps spikes visible
//! and a 100k-row report at a few hundred KB).

use std::fmt::{self, Write as _};
use std::path::Path;

/// Everything the report shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportData {
    /// Page title, e.g. "recur backtest: ETTh2.csv".
    pub title: String,
    /// Key/value lines shown at the top (rows, predictions, mse, naive_mse, elapsed, ...).
    pub summary: Vec<(String, String)>,
    /// Forecast against actual, one chart per panel.
    pub series: Vec<SeriesPanel>,
    /// Rolling error of the model against the baselines; no chart when `None`.
    pub rolling: Option<RollingPanel>,
    /// Rolling coverage of the intervals; no chart when `None`.
    pub coverage: Option<CoveragePanel>,
    /// Error by horizon step; the headline verdict averages these (or, when empty, the rolling error).
    pub by_step: Vec<StepError>,
    /// Rows of the metrics table.
    pub metrics: Vec<MetricRow>,
    /// Rows of the per-stream table; shown when there are at least two.
    pub per_stream: Vec<StreamRow>,
    /// Free text lines (the settings used), shown at the bottom.
    pub notes: Vec<String>,
}

/// One chart of forecast against actual over a span of rows.
///
/// Point `i` pairs `x[i]` with each line's value `i`; values beyond the shorter side are ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesPanel {
    /// Panel heading, e.g. the stream and target name.
    pub name: String,
    /// Row position of each point.
    pub x: Vec<f64>,
    /// Observed values.
    pub actual: Vec<f64>,
    /// The model's forecasts for the same rows.
    pub forecast: Vec<f64>,
    /// The naive baseline's forecasts for the same rows, if shown.
    pub naive: Option<Vec<f64>>,
    /// recur's intervals for the same rows, widest first.
    pub bands: Vec<Band>,
}

/// One level's interval bounds along a [`SeriesPanel`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Band {
    /// The level, e.g. 0.95.
    pub level: f64,
    /// Lower bounds, one per point.
    pub lo: Vec<f64>,
    /// Upper bounds, one per point.
    pub hi: Vec<f64>,
}

/// Rolling coverage of recur's intervals over `window` one-step forecasts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoveragePanel {
    /// Forecast components each point averages.
    pub window: usize,
    /// Row position of each point.
    pub x: Vec<f64>,
    /// Per level: the level and the rolling share of actual values inside.
    pub levels: Vec<(f64, Vec<f64>)>,
}

/// Rolling mean squared error over `window` predictions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollingPanel {
    /// Number of predictions each point averages.
    pub window: usize,
    /// Row position of each point.
    pub x: Vec<f64>,
    /// The model's rolling MSE.
    pub model: Vec<f64>,
    /// The naive baseline's rolling MSE.
    pub naive: Vec<f64>,
    /// The seasonal baseline's rolling MSE, if computed.
    pub seasonal: Option<Vec<f64>>,
    /// The linear baseline's rolling MSE, if computed.
    pub linear: Option<Vec<f64>>,
}

/// Error at one horizon step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepError {
    /// Horizon step, 1 for the next value.
    pub step: usize,
    /// The model's MSE at this step.
    pub model_mse: f64,
    /// The naive baseline's MSE at this step.
    pub naive_mse: f64,
    /// The seasonal baseline's MSE at this step, if computed.
    pub seasonal_mse: Option<f64>,
    /// The linear baseline's MSE at this step, if computed.
    pub linear_mse: Option<f64>,
}

/// One row of the metrics table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricRow {
    /// What the row covers, e.g. "model, all streams" or "naive, OT".
    pub scope: String,
    /// Units the errors are in, e.g. "original" or "scaled".
    pub units: String,
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Symmetric mean absolute percentage error.
    pub smape: f64,
    /// Mean absolute scaled error.
    pub mase: f64,
}

/// One stream's errors: the model against the naive and linear baselines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamRow {
    /// The stream key.
    pub stream: String,
    /// Units the errors are in.
    pub units: String,
    /// Values scored.
    pub n: u64,
    /// The model's (MSE, MAE).
    pub model: (f64, f64),
    /// The naive baseline's (MSE, MAE).
    pub naive: (f64, f64),
    /// The linear baseline's (MSE, MAE).
    pub linear: (f64, f64),
}

/// Most points one chart line is drawn with.
const MAX_LINE_POINTS: usize = 2000;

/// Renders the page.
pub fn render(data: &ReportData) -> String {
    let mut out = String::with_capacity(64 * 1024);
    page(&mut out, data).expect("formatting into a String cannot fail");
    out
}

/// Renders and writes the page to `path`.
pub fn write(data: &ReportData, path: &Path) -> std::io::Result<()> {
    std::fs::write(path, render(data))
}

// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
const ACTUAL: &str = "#222222";
const MODEL: &str = "#0072b2";
const NAIVE: &str = "#e69f00";
const SEASONAL: &str = "#009e73";
const LINEAR: &str = "#cc79a7";

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1a1a1a;\
background:#fff;margin:0 auto;max-width:1000px;padding:16px 20px 40px}
h1{font-size:22px;margin:8px 0 12px;overflow-wrap:anywhere}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 4px;overflow-wrap:anywhere}
.verdict{border-left:6px solid #888;background:#f4f4f4;padding:10px 14px;margin:12px 0}
.verdict.win{border-color:#1a7f37;background:#edf7ef}
.verdict.mixed{border-color:#bf8700;background:#fdf6e3}
.verdict.lose{border-color:#cf222e;background:#fdeded}
.headline{font-size:18px;font-weight:600;margin:0 0 4px}
.verdict ul{margin:4px 0;padding-left:20px}
.basis,.nodata,.hint{color:#555;font-size:13px;margin:4px 0}
dl.summary{display:grid;grid-template-columns:max-content 1fr;gap:2px 18px;margin:8px 0}
dl.summary dt{color:#555}
dl.summary dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:right}
th.l,td.l{text-align:left}
svg.chart{display:block;width:100%;height:auto;max-width:960px}
svg.chart text{font-family:system-ui,sans-serif;font-size:12px;fill:#444}
footer ul{padding-left:20px;color:#333}
";

fn page(out: &mut String, data: &ReportData) -> fmt::Result {
    let title = Esc(&data.title);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    )?;
    verdict_section(out, data)?;
    if !data.summary.is_empty() {
        out.push_str("<dl class=\"summary\">\n");
        for (key, value) in &data.summary {
            writeln!(out, "<dt>{}</dt><dd>{}</dd>", Esc(key), Esc(value))?;
        }
        out.push_str("</dl>\n");
    }
    metrics_section(out, &data.metrics)?;
    if data.per_stream.len() > 1 {
        streams_section(out, &data.per_stream)?;
    }

    out.push_str("<h2>Error by horizon step</h2>\n");
    bar_chart(out, &data.by_step)?;

    if let Some(r) = &data.rolling {
        out.push_str("<h2>Rolling error</h2>\n");
        let title = format!("Rolling MSE over the last {} predictions", r.window);
        writeln!(out, "<p class=\"hint\">{title}; lower is better.</p>")?;
        let mut lines = vec![
            Line::new("model", MODEL, &r.model),
            Line::new("naive", NAIVE, &r.naive),
        ];
        if let Some(s) = &r.seasonal {
            lines.push(Line::new("seasonal", SEASONAL, s));
        }
        if let Some(l) = &r.linear {
            lines.push(Line::new("linear", LINEAR, l));
        }
        line_chart(out, "rolling", &title, ("row", "MSE"), &r.x, &lines, &[])?;
    }

    if let Some(c) = &data.coverage {
        coverage_section(out, c)?;
    }

    out.push_str("<h2>Forecast against actual</h2>\n");
    if data.series.is_empty() {
        out.push_str("<p class=\"nodata\">No forecast panels.</p>\n");
    }
    for panel in &data.series {
        writeln!(out, "<h3>{}</h3>", Esc(&panel.name))?;
        let mut lines = vec![
            Line::new("actual", ACTUAL, &panel.actual),
            Line::new("forecast", MODEL, &panel.forecast),
        ];
        if let Some(n) = &panel.naive {
            lines.push(Line {
                dash: Some("5 3"),
                ..Line::new("naive", NAIVE, n)
            });
        }
        let title = format!("Forecast against actual: {}", panel.name);
        line_chart(
            out,
            "series",
            &title,
            ("row", "value"),
            &panel.x,
            &lines,
            &panel.bands,
        )?;
    }

    if !data.notes.is_empty() {
        out.push_str("<footer>\n<h2>Settings</h2>\n<ul>\n");
        for note in &data.notes {
            writeln!(out, "<li>{}</li>", Esc(note))?;
        }
        out.push_str("</ul>\n</footer>\n");
    }
    out.push_str("</body>\n</html>\n");
    Ok(())
}

/// The headline: does the model's MSE beat each baseline's?
fn verdict_section(out: &mut String, data: &ReportData) -> fmt::Result {
    let Some(v) = Verdict::of(data) else {
        out.push_str(
            "<section class=\"verdict\"><p class=\"headline\">No baseline comparison available.</p></section>\n",
        );
        return Ok(());
    };
    let beaten: Vec<&str> = v
        .baselines
        .iter()
        .filter(|b| v.model < b.1)
        .map(|b| b.0)
        .collect();
    let missed: Vec<&str> = v
        .baselines
        .iter()
        .filter(|b| v.model >= b.1)
        .map(|b| b.0)
        .collect();
    let (class, headline) = match (beaten.as_slice(), missed.as_slice()) {
        ([one], []) => ("win", format!("The model beats the {one} baseline.")),
        (_, []) => ("win", "The model beats every baseline.".to_string()),
        ([], [one]) => (
            "lose",
            format!("The model does not beat the {one} baseline."),
        ),
        ([], _) => ("lose", "The model does not beat any baseline.".to_string()),
        _ => (
            "mixed",
            format!(
                "The model beats the {} baseline but not the {} baseline.",
                beaten.join(" and "),
                missed.join(" and ")
            ),
        ),
    };
    writeln!(
        out,
        "<section class=\"verdict {class}\">\n<p class=\"headline\">{headline}</p>\n<ul>"
    )?;
    for (name, mse) in &v.baselines {
        let pct = (v.model - mse) / mse * 100.0;
        let change = if pct.is_finite() {
            let word = if pct < 0.0 { "lower" } else { "higher" };
            format!(": {}% {word}", fmt_pct(pct.abs()))
        } else {
            String::new()
        };
        writeln!(
            out,
            "<li>model MSE {} against {name} {}{change}</li>",
            fmt_num(v.model),
            fmt_num(*mse)
        )?;
    }
    writeln!(out, "</ul>\n<p class=\"basis\">{}</p>\n</section>", v.basis)
}

/// Mean model and baseline MSE, from the by-step errors or else the rolling error.
struct Verdict {
    model: f64,
    baselines: Vec<(&'static str, f64)>,
    basis: String,
}

impl Verdict {
    fn of(data: &ReportData) -> Option<Verdict> {
        let steps = &data.by_step;
        let model = finite_mean(steps.iter().map(|s| s.model_mse));
        if let Some(model) = model {
            let mut baselines = Vec::new();
            if let Some(n) = finite_mean(steps.iter().map(|s| s.naive_mse)) {
                baselines.push(("naive", n));
            }
            if let Some(s) = finite_mean(steps.iter().filter_map(|s| s.seasonal_mse)) {
                baselines.push(("seasonal", s));
            }
            if let Some(l) = finite_mean(steps.iter().filter_map(|s| s.linear_mse)) {
                baselines.push(("linear", l));
            }
            let basis = match steps.len() {
                1 => "MSE of the one horizon step.".to_string(),
                n => format!("MSE averaged over {n} horizon steps."),
            };
            return (!baselines.is_empty()).then_some(Verdict {
                model,
                baselines,
                basis,
            });
        }
        let r = data.rolling.as_ref()?;
        let model = finite_mean(r.model.iter().copied())?;
        let mut baselines = Vec::new();
        if let Some(n) = finite_mean(r.naive.iter().copied()) {
            baselines.push(("naive", n));
        }
        if let Some(s) = r
            .seasonal
            .as_ref()
            .and_then(|s| finite_mean(s.iter().copied()))
        {
            baselines.push(("seasonal", s));
        }
        if let Some(l) = r
            .linear
            .as_ref()
            .and_then(|l| finite_mean(l.iter().copied()))
        {
            baselines.push(("linear", l));
        }
        let basis = format!("Mean of the rolling MSE over {} predictions.", r.window);
        (!baselines.is_empty()).then_some(Verdict {
            model,
            baselines,
            basis,
        })
    }
}

fn finite_mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|v| v.is_finite()) {
        sum += v;
        n += 1;
    }
    let mean = sum / n as f64;
    (n > 0 && mean.is_finite()).then_some(mean)
}

fn metrics_section(out: &mut String, rows: &[MetricRow]) -> fmt::Result {
    out.push_str("<h2>Scores</h2>\n");
    if rows.is_empty() {
        out.push_str("<p class=\"nodata\">No metrics.</p>\n");
        return Ok(());
    }
    out.push_str(
        "<table class=\"metrics\">\n<thead><tr><th class=\"l\">scope</th><th class=\"l\">units</th>\
         <th>MSE</th><th>MAE</th><th>RMSE</th><th>sMAPE</th><th>MASE</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td>",
            Esc(&r.scope),
            Esc(&r.units)
        )?;
        for v in [r.mse, r.mae, r.rmse, r.smape, r.mase] {
            write!(out, "<td>{}</td>", fmt_num(v))?;
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    Ok(())
}

fn streams_section(out: &mut String, rows: &[StreamRow]) -> fmt::Result {
    out.push_str(
        "<h2>Per stream</h2>\n<p class=\"hint\">Each baseline forecasts each stream from that stream's own values.</p>\n\
         <table class=\"streams\">\n<thead><tr><th class=\"l\">stream</th><th class=\"l\">units</th><th>values</th>\
         <th>recur MSE</th><th>naive MSE</th><th>linear MSE</th>\
         <th>recur MAE</th><th>naive MAE</th><th>linear MAE</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td>",
            Esc(&r.stream),
            Esc(&r.units),
            r.n
        )?;
        for v in [
            r.model.0, r.naive.0, r.linear.0, r.model.1, r.naive.1, r.linear.1,
        ] {
            write!(out, "<td>{}</td>", fmt_num(v))?;
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    Ok(())
}

// ---- charts ----

const W: f64 = 960.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// One line of a line chart.
struct Line<'a> {
    label: &'a str,
    colour: &'a str,
    dash: Option<&'a str>,
    ys: &'a [f64],
}

impl<'a> Line<'a> {
    fn new(label: &'a str, colour: &'a str, ys: &'a [f64]) -> Self {
        Line {
            label,
            colour,
            dash: None,
            ys,
        }
    }
}

/// Maps a data range onto `[0, 1]`; a zero range is widened so every value lands somewhere sane.
struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    /// An axis over `[lo, hi]` (finite, `lo <= hi`) with `pad` of the range added on each side.
    fn new(lo: f64, hi: f64, pad: f64) -> Axis {
        let finite = |v: f64| v.clamp(-f64::MAX, f64::MAX);
        let (lo, hi) = (finite(lo), finite(hi));
        let w = if hi <= lo {
            if lo == 0.0 {
                1.0
            } else {
                (lo.abs() * 0.1).max(1e-300)
            }
        } else {
            // Half the span times twice the pad: cannot overflow.
            (hi / 2.0 - lo / 2.0) * (2.0 * pad)
        };
        Axis {
            lo: finite(lo - w),
            hi: finite(hi + w),
        }
    }

    /// Where `v` sits between `lo` (0) and `hi` (1), halved first so huge ranges cannot overflow.
    fn frac(&self, v: f64) -> f64 {
        let span = self.hi / 2.0 - self.lo / 2.0;
        let f = (v / 2.0 - self.lo / 2.0) / span;
        if span > 0.0 && f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.5
        }
    }

    fn px_x(&self, v: f64) -> f64 {
        LEFT + self.frac(v) * (W - LEFT - RIGHT)
    }

    fn px_y(&self, v: f64) -> f64 {
        TOP + (1.0 - self.frac(v)) * (H - TOP - BOTTOM)
    }

    /// About `target` round tick values inside the axis, and their spacing.
    fn ticks(&self, target: usize) -> (Vec<f64>, f64) {
        let span = self.hi - self.lo;
        let raw = span / target as f64;
        let mag = 10f64.powf(raw.log10().floor());
        let norm = raw / mag;
        let step = mag
            * if norm < 1.5 {
                1.0
            } else if norm < 3.0 {
                2.0
            } else if norm < 7.0 {
                5.0
            } else {
                10.0
            };
        let first = (self.lo / step).ceil() * step;
        if !(step > 0.0 && step.is_finite() && first.is_finite()) {
            return (vec![self.lo, self.hi], 0.0);
        }
        let ticks = (0..=2 * target + 2)
            .map(|k| first + k as f64 * step)
            .take_while(|t| *t <= self.hi + step * 1e-9)
            .collect();
        (ticks, step)
    }
}

/// A line's points, thinned to at most `cap`; `None` marks a gap left by non-finite values.
///
/// Up to `cap` points every finite point is kept; beyond that the points are cut
/// into `cap / 2` buckets and each keeps its lowest and highest value, in order.
fn thin(x: &[f64], y: &[f64], cap: usize) -> Vec<Option<(f64, f64)>> {
    let n = x.len().min(y.len());
    let buckets = if n <= cap { n } else { (cap / 2).max(1) };
    let mut out = Vec::with_capacity(buckets.min(cap) + 1);
    for b in 0..buckets {
        let (start, end) = (b * n / buckets, (b + 1) * n / buckets);
        let (mut lo, mut hi): (Option<usize>, Option<usize>) = (None, None);
        for i in start..end {
            if !(x[i].is_finite() && y[i].is_finite()) {
                continue;
            }
            if lo.is_none_or(|j| y[i] < y[j]) {
                lo = Some(i);
            }
            if hi.is_none_or(|j| y[i] > y[j]) {
                hi = Some(i);
            }
        }
        match (lo, hi) {
            (Some(a), Some(b)) if a != b => {
                let (first, second) = (a.min(b), a.max(b));
                out.push(Some((x[first], y[first])));
                out.push(Some((x[second], y[second])));
            }
            (Some(a), _) => out.push(Some((x[a], y[a]))),
            _ => {
                if matches!(out.last(), Some(Some(_))) {
                    out.push(None);
                }
            }
        }
    }
    out
}

/// Smallest and largest finite x and y seen.
#[derive(Default)]
struct Bounds(Option<(f64, f64, f64, f64)>);

impl Bounds {
    fn add(&mut self, (x, y): (f64, f64)) {
        self.0 = Some(match self.0 {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        });
    }
}

fn open_svg(out: &mut String, class: &str, title: &str) -> fmt::Result {
    writeln!(
        out,
        "<svg class=\"chart {class}\" role=\"img\" viewBox=\"0 0 {W} {H}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title>{}</title>",
        Esc(title)
    )
}

fn no_data(out: &mut String) -> fmt::Result {
    writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" style=\"font-size:16px\">no data</text>",
        W / 2.0,
        H / 2.0
    )
}

/// Gridlines, y tick labels and the axis names; x ticks are drawn by the caller.
fn y_axis(out: &mut String, ya: &Axis, (x_name, y_name): (&str, &str)) -> fmt::Result {
    let (ticks, step) = ya.ticks(5);
    for t in ticks {
        let y = ya.px_y(t);
        writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e6e6e6\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(t, step)
        )?;
    }
    let (bottom, mid) = (H - BOTTOM, TOP + (H - TOP - BOTTOM) / 2.0);
    writeln!(
        out,
        "<path d=\"M{LEFT} {TOP}V{bottom}H{}\" fill=\"none\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text transform=\"translate(14 {mid}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        W - RIGHT,
        W - RIGHT,
        H - 4.0,
        Esc(x_name),
        Esc(y_name)
    )
}

fn x_tick(out: &mut String, x: f64, label: &str) -> fmt::Result {
    let bottom = H - BOTTOM;
    writeln!(
        out,
        "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{bottom}\" y2=\"{}\" stroke=\"#888\"/>\
         <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
        bottom + 5.0,
        bottom + 18.0
    )
}

/// Legend along the top edge: a swatch and a label per entry.
fn legend(out: &mut String, entries: &[(&str, &str, Option<&str>)]) -> fmt::Result {
    let mut x = LEFT;
    for (label, colour, dash) in entries {
        let dash = dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        writeln!(
            out,
            "<line x1=\"{x}\" x2=\"{}\" y1=\"14\" y2=\"14\" stroke=\"{colour}\" stroke-width=\"3\"{dash}/>\
             <text x=\"{}\" y=\"18\">{}</text>",
            x + 20.0,
            x + 25.0,
            Esc(label)
        )?;
        x += 45.0 + 7.0 * label.chars().count() as f64;
    }
    Ok(())
}

/// The rolling coverage chart: one line per level, each with its target dashed.
fn coverage_section(out: &mut String, c: &CoveragePanel) -> fmt::Result {
    out.push_str("<h2>Interval coverage</h2>\n");
    let title = format!(
        "Rolling coverage of the one-step intervals over the last {} forecasts",
        c.window
    );
    writeln!(
        out,
        "<p class=\"hint\">{title}; each level's line should stay near its dashed target.</p>"
    )?;
    let names: Vec<String> = c
        .levels
        .iter()
        .map(|(l, _)| format!("{:.0}%", l * 100.0))
        .collect();
    let targets: Vec<Vec<f64>> = c.levels.iter().map(|(l, _)| vec![*l; c.x.len()]).collect();
    let target_names: Vec<String> = names.iter().map(|n| format!("{n} target")).collect();
    let colours = [MODEL, NAIVE, SEASONAL, LINEAR];
    let mut lines = Vec::new();
    for (k, (_, ys)) in c.levels.iter().enumerate() {
        let colour = colours[k % colours.len()];
        lines.push(Line::new(&names[k], colour, ys));
        lines.push(Line {
            dash: Some("4 4"),
            ..Line::new(&target_names[k], colour, &targets[k])
        });
    }
    line_chart(
        out,
        "coverage",
        &title,
        ("row", "coverage"),
        &c.x,
        &lines,
        &[],
    )
}

fn line_chart(
    out: &mut String,
    class: &str,
    title: &str,
    names: (&str, &str),
    x: &[f64],
    lines: &[Line<'_>],
    bands: &[Band],
) -> fmt::Result {
    let points: Vec<_> = lines
        .iter()
        .map(|l| thin(x, l.ys, MAX_LINE_POINTS))
        .collect();
    let band_points: Vec<_> = bands
        .iter()
        .map(|b| {
            (
                thin(x, &b.lo, MAX_LINE_POINTS),
                thin(x, &b.hi, MAX_LINE_POINTS),
            )
        })
        .collect();
    let mut bounds = Bounds::default();
    points
        .iter()
        .chain(band_points.iter().flat_map(|(lo, hi)| [lo, hi]))
        .flatten()
        .flatten()
        .for_each(|p| bounds.add(*p));
    open_svg(out, class, title)?;
    let Some((x0, x1, y0, y1)) = bounds.0 else {
        no_data(out)?;
        return out.write_str("</svg>\n");
    };
    let (xa, ya) = (Axis::new(x0, x1, 0.0), Axis::new(y0, y1, 0.05));
    y_axis(out, &ya, names)?;
    let (ticks, step) = xa.ticks(8);
    for t in ticks {
        x_tick(out, xa.px_x(t), &tick_label(t, step))?;
    }
    // Bands first, widest first, under the lines.
    for (band, (lo, hi)) in bands.iter().zip(&band_points) {
        let px = |p: &Option<(f64, f64)>| p.map(|(x, y)| (xa.px_x(x), ya.px_y(y)));
        let (lo, hi): (Vec<_>, Vec<_>) = (
            lo.iter().filter_map(px).collect(),
            hi.iter().filter_map(px).collect(),
        );
        if lo.len() < 2 || lo.len() != hi.len() {
            continue;
        }
        let mut d = String::with_capacity(lo.len() * 24);
        for (i, (x, y)) in lo.iter().chain(hi.iter().rev()).enumerate() {
            write!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { " L" })?;
        }
        let opacity = if band.level >= 0.9 { 0.12 } else { 0.22 };
        writeln!(
            out,
            "<path d=\"{d} Z\" fill=\"{MODEL}\" fill-opacity=\"{opacity}\" stroke=\"none\"><title>{:.0}% interval</title></path>",
            band.level * 100.0
        )?;
    }
    // Drawn last-first so the legend's first line (actual, or the model) ends on top.
    for (line, pts) in lines.iter().zip(&points).rev() {
        let mut d = String::with_capacity(pts.len() * 12);
        let mut dots = String::new();
        for seg in pts.split(|p| p.is_none()) {
            let seg: Vec<(f64, f64)> = seg
                .iter()
                .flatten()
                .map(|&(x, y)| (xa.px_x(x), ya.px_y(y)))
                .collect();
            match seg.as_slice() {
                [] => {}
                [(x, y)] => write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{}\"/>",
                    line.colour
                )?,
                [(x, y), rest @ ..] => {
                    write!(d, "M{x:.1} {y:.1}")?;
                    for (x, y) in rest {
                        write!(d, " {x:.1} {y:.1}")?;
                    }
                }
            }
        }
        if !d.is_empty() {
            let dash = line
                .dash
                .map(|d| format!(" stroke-dasharray=\"{d}\""))
                .unwrap_or_default();
            writeln!(
                out,
                "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" stroke-linejoin=\"round\"{dash}/>",
                line.colour
            )?;
        }
        out.push_str(&dots);
    }
    let entries: Vec<_> = lines.iter().map(|l| (l.label, l.colour, l.dash)).collect();
    legend(out, &entries)?;
    out.write_str("</svg>\n")
}

/// Bars of MSE per horizon step: model, naive and (when present) seasonal and linear side by side.
fn bar_chart(out: &mut String, steps: &[StepError]) -> fmt::Result {
    type Value = fn(&StepError) -> f64;
    let mut series: Vec<(&str, &str, Value)> = vec![
        ("model", MODEL, |s| s.model_mse),
        ("naive", NAIVE, |s| s.naive_mse),
    ];
    if steps.iter().any(|s| s.seasonal_mse.is_some()) {
        series.push(("seasonal", SEASONAL, |s| s.seasonal_mse.unwrap_or(f64::NAN)));
    }
    if steps.iter().any(|s| s.linear_mse.is_some()) {
        series.push(("linear", LINEAR, |s| s.linear_mse.unwrap_or(f64::NAN)));
    }
    let value = |s: &StepError, k: usize| (series[k].2)(s);
    let mut bounds = Bounds::default();
    for s in steps {
        for k in 0..series.len() {
            let v = value(s, k);
            if v.is_finite() {
                bounds.add((0.0, v));
            }
        }
    }
    open_svg(
        out,
        "by-step",
        "MSE by horizon step: model against baselines",
    )?;
    let Some((_, _, lo, hi)) = bounds.0 else {
        no_data(out)?;
        return out.write_str("</svg>\n");
    };
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let ya = if hi > lo {
        Axis::new(lo, hi + (hi / 2.0 - lo / 2.0) * 0.1, 0.0)
    } else {
        Axis::new(0.0, 1.0, 0.0)
    };
    y_axis(out, &ya, ("horizon step", "MSE"))?;

    let n = steps.len() as f64;
    let group = (W - LEFT - RIGHT) / n;
    let bar = (group * 0.8 / series.len() as f64).min(40.0);
    let label_every = nice_every(steps.len(), 24);
    let with_titles = steps.len() <= 200;
    let zero = ya.px_y(0.0);
    for (i, s) in steps.iter().enumerate() {
        let centre = LEFT + group * (i as f64 + 0.5);
        let left = centre - bar * series.len() as f64 / 2.0;
        for (k, (name, colour, _)) in series.iter().enumerate() {
            let v = value(s, k);
            if !v.is_finite() {
                continue;
            }
            let y = ya.px_y(v);
            let (top, height) = (y.min(zero), (y - zero).abs());
            write!(
                out,
                "<rect x=\"{:.2}\" y=\"{top:.1}\" width=\"{bar:.2}\" height=\"{height:.1}\" fill=\"{colour}\"",
                left + bar * k as f64
            )?;
            if with_titles {
                writeln!(
                    out,
                    "><title>step {}, {name}: MSE {}</title></rect>",
                    s.step,
                    fmt_num(v)
                )?;
            } else {
                out.push_str("/>\n");
            }
        }
        if i % label_every == 0 {
            x_tick(out, centre, &s.step.to_string())?;
        }
    }
    let entries: Vec<_> = series.iter().map(|&(l, c, _)| (l, c, None)).collect();
    legend(out, &entries)?;
    out.write_str("</svg>\n")
}

/// Label every k-th of `n` items, k from 1, 2, 5, 10, 20, ... so at most `target` are labelled.
fn nice_every(n: usize, target: usize) -> usize {
    let mut mag = 1usize;
    loop {
        for m in [1, 2, 5] {
            if n.div_ceil(mag * m) <= target.max(1) {
                return mag * m;
            }
        }
        mag *= 10;
    }
}

// ---- numbers and text ----

/// A table number: four significant digits, exponent form when very large or small.
fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-4..1e6).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

fn fmt_pct(p: f64) -> String {
    if p >= 100.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// An axis label for tick `v` of ticks `step` apart, with just the decimals the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if step >= 1.0 && a < 1e15 {
        format!("{v:.0}")
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = if step > 0.0 && step.is_finite() {
            (-step.log10().floor()).clamp(0.0, 6.0) as usize
        } else {
            3
        };
        format!("{v:.decimals$}")
    }
}

/// Text escaped for HTML content and attribute values.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> ReportData {
        let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let actual: Vec<f64> = x.iter().map(|t| (t / 20.0).sin()).collect();
        let forecast: Vec<f64> = actual.iter().map(|a| a * 0.9 + 0.05).collect();
        let mut naive = vec![f64::NAN];
        naive.extend_from_slice(&actual[..n.saturating_sub(1)]);
        ReportData {
            title: "recur backtest: test.csv".into(),
            summary: vec![
                ("rows".into(), n.to_string()),
                ("mse".into(), "0.0123".into()),
            ],
            series: vec![
                SeriesPanel {
                    name: "a".into(),
                    x: x.clone(),
                    actual: actual.clone(),
                    forecast: forecast.clone(),
                    naive: Some(naive),
                    bands: Vec::new(),
                },
                SeriesPanel {
                    name: "b".into(),
                    x: x.clone(),
                    actual,
                    forecast,
                    naive: None,
                    bands: Vec::new(),
                },
            ],
            rolling: Some(RollingPanel {
                window: 50,
                x: x.clone(),
                model: vec![0.01; n],
                naive: vec![0.02; n],
                seasonal: Some(vec![0.015; n]),
                linear: None,
            }),
            coverage: None,
            by_step: (1..=24)
                .map(|step| StepError {
                    step,
                    model_mse: 0.01 * step as f64,
                    naive_mse: 0.02 * step as f64,
                    seasonal_mse: Some(0.015 * step as f64),
                    linear_mse: None,
                })
                .collect(),
            metrics: vec![MetricRow {
                scope: "model".into(),
                units: "original".into(),
                mse: 0.0123456,
                mae: 0.09,
                rmse: 0.111,
                smape: 12.5,
                mase: 0.8,
            }],
            per_stream: Vec::new(),
            notes: vec!["cell = lstm".into()],
        }
    }

    fn svgs(html: &str) -> Vec<&str> {
        html.match_indices("<svg ")
            .map(|(i, _)| {
                let end = html[i..].find("</svg>").expect("every svg is closed");
                &html[i..i + end]
            })
            .collect()
    }

    /// Numbers in every path's `d` attribute, as coordinate pairs.
    fn path_points(svg: &str) -> Vec<usize> {
        svg.match_indices("<path d=\"M")
            .skip(1) // the axis frame
            .map(|(i, _)| {
                let d = &svg[i + 9..];
                let d = &d[..d.find('"').unwrap()];
                d.split([' ', 'M']).filter(|s| !s.is_empty()).count() / 2
            })
            .collect()
    }

    #[test]
    fn one_svg_per_chart_with_its_class() {
        let html = render(&sample(300));
        assert_eq!(svgs(&html).len(), 4);
        assert_eq!(
            html.matches("<svg class=\"chart series\" role=\"img\"")
                .count(),
            2
        );
        assert_eq!(
            html.matches("<svg class=\"chart rolling\" role=\"img\"")
                .count(),
            1
        );
        assert_eq!(
            html.matches("<svg class=\"chart by-step\" role=\"img\"")
                .count(),
            1
        );
        for svg in svgs(&html) {
            assert!(svg.contains("<title>"), "every chart has a title");
        }
        assert_eq!(html.matches("<rect ").count(), 24 * 3);
        assert!(html.contains("The model beats every baseline."));
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        // Nothing the browser could fetch.
        assert!(!html.contains("src=") && !html.contains("href=") && !html.contains("<script"));
    }

    #[test]
    fn data_text_is_escaped() {
        let mut data = sample(10);
        data.title = "<script>alert('x')</script> & co".into();
        data.series[0].name = "\"><script>".into();
        data.summary.push(("<b>".into(), "<i>".into()));
        data.notes.push("a < b".into());
        let html = render(&data);
        assert!(!html.contains("<script"));
        assert!(!html.contains("<b>") && !html.contains("<i>"));
        assert!(
            html.contains(
                "<title>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</title>"
            )
        );
        assert!(html.contains("a &lt; b"));
    }

    #[test]
    fn non_finite_values_never_reach_the_svg() {
        let mut data = sample(100);
        for v in data.series[0].actual.iter_mut().step_by(7) {
            *v = f64::NAN;
        }
        data.series[0].forecast[3] = f64::INFINITY;
        data.series[1].x[5] = f64::NEG_INFINITY;
        data.series[1].actual = vec![f64::NAN; 100];
        data.series[1].forecast = vec![f64::MAX, -f64::MAX, 1e-320, f64::MIN_POSITIVE];
        let r = data.rolling.as_mut().unwrap();
        r.model[10] = f64::NAN;
        r.naive = vec![f64::INFINITY; 100];
        data.by_step[0].model_mse = f64::NAN;
        data.by_step[1].naive_mse = f64::INFINITY;
        data.by_step[2].seasonal_mse = None;
        data.metrics[0].mse = f64::NAN;
        let html = render(&data);
        for svg in svgs(&html) {
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        assert_eq!(svgs(&html).len(), 4);
        assert!(html.contains("<td>n/a</td>"));
    }

    #[test]
    fn long_lines_are_thinned_but_keep_their_extremes() {
        let mut data = sample(100_000);
        data.series[0].actual[54_321] = 50.0; // a spike must survive
        let html = render(&data);
        for svg in svgs(&html) {
            for n in path_points(svg) {
                assert!(n <= MAX_LINE_POINTS, "{n} points in one line");
            }
        }
        let pts = thin(&data.series[0].x, &data.series[0].actual, MAX_LINE_POINTS);
        assert!(
            pts.iter()
                .flatten()
                .any(|&(x, y)| x == 54_321.0 && y == 50.0)
        );
        assert!(html.len() < 600_000, "{} bytes", html.len());
    }

    #[test]
    fn interval_bands_and_rolling_coverage_are_drawn() {
        let mut data = sample(100);
        let f = data.series[0].forecast.clone();
        let band = |level: f64, w: f64| Band {
            level,
            lo: f.iter().map(|v| v - w).collect(),
            hi: f.iter().map(|v| v + w).collect(),
        };
        data.series[0].bands = vec![band(0.95, 0.3), band(0.8, 0.1)];
        data.coverage = Some(CoveragePanel {
            window: 50,
            x: (0..10).map(f64::from).collect(),
            levels: vec![(0.8, vec![0.79; 10]), (0.95, vec![0.96; 10])],
        });
        let html = render(&data);
        assert!(html.contains("95% interval</title>") && html.contains("80% interval</title>"));
        assert!(html.contains("<h2>Interval coverage</h2>") && html.contains("95% target"));
        // The band's outline runs along the lower bounds and back along the upper ones.
        let band_path = html
            .split("fill-opacity=\"0.12\"")
            .next()
            .and_then(|before| before.rsplit("<path d=\"").next())
            .unwrap();
        assert_eq!(band_path.matches(" L").count(), 2 * f.len() - 1);
        assert!(
            sample(100).coverage.is_none() && !render(&sample(100)).contains("Interval coverage")
        );
    }

    #[test]
    fn gaps_split_lines_and_lone_points_become_dots() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 2.0, f64::NAN, 3.0, f64::NAN, 4.0];
        let pts = thin(&x, &y, MAX_LINE_POINTS);
        assert_eq!(pts.iter().filter(|p| p.is_none()).count(), 2);
        let mut out = String::new();
        line_chart(
            &mut out,
            "series",
            "t",
            ("row", "value"),
            &x,
            &[Line::new("a", ACTUAL, &y)],
            &[],
        )
        .unwrap();
        assert_eq!(path_points(&out), vec![2]);
        assert_eq!(out.matches("<circle").count(), 2);
    }

    #[test]
    fn empty_single_point_and_constant_data_render() {
        let html = render(&ReportData::default());
        assert_eq!(svgs(&html).len(), 1, "the by-step chart says no data");
        assert!(html.contains("no data") && html.contains("No forecast panels."));
        assert!(html.contains("No baseline comparison available."));

        let mut data = sample(0);
        data.series[1] = SeriesPanel {
            name: "one".into(),
            x: vec![7.0],
            actual: vec![3.0],
            forecast: vec![3.0],
            naive: Some(vec![]),
            bands: Vec::new(),
        };
        data.rolling.as_mut().unwrap().x = vec![0.0, 1.0, 2.0];
        data.rolling.as_mut().unwrap().model = vec![2.5; 3];
        data.by_step.truncate(1);
        data.by_step[0] = StepError {
            step: 1,
            model_mse: 0.0,
            naive_mse: 0.0,
            seasonal_mse: None,
            linear_mse: None,
        };
        let html = render(&data);
        let charts = svgs(&html);
        assert_eq!(charts.len(), 4);
        assert!(charts[2].contains("no data"), "the empty panel");
        assert!(charts[3].contains("<circle"), "the single point");
        for svg in charts {
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        assert!(html.contains("The model does not beat the naive baseline."));
    }

    #[test]
    fn verdict_names_what_the_model_beats() {
        let mut data = sample(10);
        for s in &mut data.by_step {
            s.seasonal_mse = Some(0.001);
        }
        let html = render(&data);
        assert!(html.contains("The model beats the naive baseline but not the seasonal baseline."));
        assert!(html.contains("class=\"verdict mixed\""));
        data.by_step.clear();
        let html = render(&data);
        assert!(html.contains("Mean of the rolling MSE over 50 predictions."));
        assert!(html.contains("class=\"verdict win\""));
    }

    #[test]
    fn the_linear_baseline_has_bars_a_line_and_a_verdict() {
        let mut data = sample(300);
        for s in &mut data.by_step {
            s.linear_mse = Some(0.001 * s.step as f64);
        }
        data.rolling.as_mut().unwrap().linear = Some(vec![0.005; 300]);
        let html = render(&data);
        assert_eq!(html.matches("<rect ").count(), 24 * 4);
        assert!(html.contains("step 3, linear: MSE 0.003000"));
        let rolling = svgs(&html)
            .into_iter()
            .find(|s| s.contains("chart rolling"))
            .unwrap();
        assert!(rolling.contains(&format!("stroke=\"{LINEAR}\"")));
        assert!(html.contains(
            "The model beats the naive and seasonal baseline but not the linear baseline."
        ));
        assert!(html.contains("against linear"));
    }

    #[test]
    fn the_per_stream_table_needs_two_streams() {
        let mut data = sample(10);
        let row = |name: &str| StreamRow {
            stream: name.into(),
            units: "original".into(),
            n: 7,
            model: (0.25, 0.5),
            naive: (0.5, 0.75),
            linear: (0.125, 0.375),
        };
        data.per_stream = vec![row("only")];
        assert!(!render(&data).contains("<h2>Per stream</h2>"));
        data.per_stream.push(row("<second>"));
        let html = render(&data);
        assert!(html.contains("<h2>Per stream</h2>"));
        assert!(html.contains("<td class=\"l\">&lt;second&gt;</td>"));
        assert!(
            html.contains("<td>0.1250</td><td>0.5000</td>"),
            "linear MSE, then recur MAE"
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(fmt_num(0.0123456), "0.01235");
        assert_eq!(fmt_num(12.3456), "12.35");
        assert_eq!(fmt_num(1234.56), "1235");
        assert_eq!(fmt_num(-0.5), "-0.5000");
        assert_eq!(fmt_num(1.5e-7), "1.500e-7");
        assert_eq!(fmt_num(f64::NAN), "n/a");
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(12000.0, 2000.0), "12000");
        assert_eq!(tick_label(-1e-17, 0.2), "0");
        assert_eq!(nice_every(24, 24), 1);
        assert_eq!(nice_every(96, 24), 5);
        assert_eq!(nice_every(720, 24), 50);
    }
}
