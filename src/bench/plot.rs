//! Plots of a run as SVG (plotters' SVG backend: text stays `<text>`, no font files): time to
//! Ready, refresh margins over time, Kubernetes writes and Gebeta calls per second, and RSS.
//! `gebeta-bench` writes them beside its JSON (or from a stored report with `--show`);
//! `gebeta-demo` draws its own refresh margins with [`margins_svg`]. Each plot has its legend
//! in a strip below the axes, so that it never hides a point.

use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use plotters::{
    coord::{
        Shift,
        ranged1d::{AsRangedCoord, ValueFormatter},
        types::RangedCoordf64,
    },
    element::{Circle, EmptyElement, PathElement, Text},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{Report, stats::Summary, timeline::PhaseMark};

/// Pixel width of every plot, and height of the part above the legend.
const WIDTH: u32 = 860;
const CHART_HEIGHT: u32 = 400;
const FONT: &str = "sans-serif";
/// Font sizes as plotters takes them (its SVG backend writes `size / 1.24`).
const TITLE_SIZE: u32 = 21;
const LABEL_SIZE: u32 = 15;
const NOTE_SIZE: u32 = 13;
/// The legend strip: rows of this height, entries from the plot area's left edge.
const LEGEND_ROW: u32 = 20;
const LEGEND_LEFT: i32 = 72;

/// Colours that stay apart in print and for the colour-blind (Tableau 10); series take
/// them in this order.
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PALETTE: [RGBColor; 4] = [BLUE, ORANGE, GREEN, RED];
const GREY: RGBColor = RGBColor(150, 150, 150);
/// The line where the old token expires (darker than the phases, not the axes' black).
const EXPIRY: RGBColor = RGBColor(70, 70, 70);
/// The bottom of the log-scale rates axis, where 0 is drawn.
const RATE_FLOOR: f64 = 0.5;

/// A plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {plot}: {message}")]
    Draw { plot: &'static str, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The plots of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plot {
    /// (1) Time from create to Ready, as a CDF per kind.
    Ready,
    /// (2) Seconds left on the old token when the new one was written, over the run.
    Margins,
    /// (3) Kubernetes writes and Gebeta calls per second over the run.
    Rates,
    /// (4) The operator's RSS over the run.
    Rss,
}

impl Plot {
    pub const ALL: [Plot; 4] = [Plot::Ready, Plot::Margins, Plot::Rates, Plot::Rss];

    /// The end of the file name: `<stem>-<suffix>.svg`.
    pub fn suffix(self) -> &'static str {
        match self {
            Plot::Ready => "ready",
            Plot::Margins => "margins",
            Plot::Rates => "rates",
            Plot::Rss => "rss",
        }
    }

    /// The plot as SVG text; `None` when the report has no data for it (made before the
    /// series were recorded).
    pub fn draw(self, report: &Report) -> Result<Option<String>, PlotError> {
        match self {
            Plot::Ready => ready_svg(report),
            Plot::Margins => report_margins_svg(report),
            Plot::Rates => rates_svg(report),
            Plot::Rss => rss_svg(report),
        }
    }
}

/// What [`write_plots`] did.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    /// Plots the report has no data for.
    pub skipped: Vec<Plot>,
}

/// Writes every plot the report has data for to `dir/<stem>-<plot>.svg`.
pub fn write_plots(report: &Report, dir: &Path, stem: &str) -> Result<Written, PlotError> {
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Written::default();
    for plot in Plot::ALL {
        match plot.draw(report)? {
            Some(svg) => {
                let path = dir.join(format!("{stem}-{}.svg", plot.suffix()));
                std::fs::write(&path, svg).map_err(|source| PlotError::Write {
                    path: path.clone(),
                    source,
                })?;
                written.files.push(path);
            }
            None => written.skipped.push(plot),
        }
    }
    Ok(written)
}

/// A named set of points for [`margins_svg`].
#[derive(Clone, Debug)]
pub struct MarginSeries {
    pub name: String,
    /// `[seconds on the x axis, seconds left on the old token]`.
    pub points: Vec<[f64; 2]>,
}

/// Refresh margins as points over time, one colour per series, with the line where the old
/// token expires (margin 0) and `phases` marked (the x axis spans them and the points).
pub fn margins_svg(
    title: &str,
    x_desc: &str,
    series: &[MarginSeries],
    phases: &[PhaseMark],
) -> Result<String, PlotError> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = bounds(all().map(|p| p[0]).chain(phases.iter().map(|p| p.at)));
    let (y0, y1) = bounds(all().map(|p| p[1]).chain([0.0]));
    let pad = ((x1 - x0) * 0.03).max(1.0);
    let ypad = ((y1 - y0) * 0.08).max(1.0);
    let axes = Axes {
        title,
        x_desc,
        y_desc: "seconds left on the old token",
        x: (x0 - pad).max(0.0)..x1 + pad,
        // Room above the points for the phases' names.
        y: y0 - ypad..y1 + ypad * 2.0,
    };
    let mut legend = vec![Entry::line("old token expires (margin 0)", EXPIRY)];
    legend.extend(
        series
            .iter()
            .zip(PALETTE.iter().cycle())
            .map(|(s, c)| Entry::dot(format!("{} ({})", s.name, s.points.len()), *c)),
    );
    render("margins", &legend, |area| {
        let mut chart = axes.chart(area, axes.y.clone(), &tick)?;
        let chart = &mut chart;
        draw_phases(chart, phases)?;
        let (x0, x1) = (axes.x.start, axes.x.end);
        chart.draw_series(LineSeries::new([(x0, 0.0), (x1, 0.0)], EXPIRY))?;
        for (s, colour) in series.iter().zip(PALETTE.iter().cycle()) {
            let colour = *colour;
            chart.draw_series(
                s.points
                    .iter()
                    .map(move |p| Circle::new((p[0], p[1]), 3, colour.filled())),
            )?;
        }
        Ok(())
    })
}

fn report_margins_svg(report: &Report) -> Result<Option<String>, PlotError> {
    let mut series = Vec::new();
    if !report.refresh.margins.is_empty() {
        series.push(MarginSeries {
            name: format!(
                "refresh phase, {} s tokens, scheduled refreshes",
                report.refresh.lifetime_seconds
            ),
            points: report.refresh.margins.clone(),
        });
    }
    if let Some(o) = report.overload.as_ref().filter(|o| !o.margins.is_empty()) {
        series.push(MarginSeries {
            name: format!(
                "overload phase, {} permit(s), calls take {} ms",
                o.permits, o.latency_ms
            ),
            points: o.margins.clone(),
        });
    }
    if series.is_empty() {
        return Ok(None);
    }
    // The phases from the refresh phase on: margins are measured there.
    let phases = &report.timeline.phases;
    let from = phases
        .iter()
        .find(|p| p.name == "refresh")
        .map_or(f64::INFINITY, |p| p.at);
    let phases: Vec<PhaseMark> = phases.iter().filter(|p| p.at >= from).cloned().collect();
    margins_svg(
        &format!("Refresh margin: {}", run_title(report)),
        "seconds from the start of the run (new token seen in its Secret)",
        &series,
        &phases,
    )
    .map(Some)
}

fn ready_svg(report: &Report) -> Result<Option<String>, PlotError> {
    let apply = &report.apply;
    // (legend, CDF points)
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    if apply.ready_seconds.is_empty() {
        // Reports made before the samples were kept: the CDF through the summary's points.
        for (name, summary) in [
            ("GebetaServiceAccount", &apply.service_accounts),
            ("GebetaAccessToken", &apply.access_tokens),
        ] {
            if let Some(s) = summary {
                curves.push((
                    format!("{name} (n={}; min, p50, p99, max only)", s.count),
                    quantile_points(s),
                ));
            }
        }
    } else {
        for (name, seconds) in &apply.ready_seconds {
            if !seconds.is_empty() {
                curves.push((format!("{name} (n={})", seconds.len()), cdf(seconds)));
            }
        }
    }
    if curves.is_empty() {
        return Ok(None);
    }
    let (_, x1) = bounds(curves.iter().flat_map(|c| c.1.iter().map(|p| p.0)));
    let title = format!("Time to Ready after create: {}", run_title(report));
    let axes = Axes {
        title: &title,
        x_desc: "seconds from the object's create request to Ready",
        y_desc: "objects Ready",
        x: 0.0..x1 * 1.05,
        y: 0.0..1.0,
    };
    let legend: Vec<Entry> = curves
        .iter()
        .zip(PALETTE.iter().cycle())
        .map(|((name, _), c)| Entry::line(name.clone(), *c))
        .collect();
    render("ready", &legend, |area| {
        let percent = |v: &f64| format!("{:.0}%", v * 100.0);
        let mut chart = axes.chart(area, axes.y.clone(), &percent)?;
        for ((_, points), colour) in curves.iter().zip(PALETTE.iter().cycle()) {
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?;
        }
        Ok(())
    })
    .map(Some)
}

fn rates_svg(report: &Report) -> Result<Option<String>, PlotError> {
    let timeline = &report.timeline;
    let writes: Vec<(f64, f64)> = timeline
        .kube_writes_per_second
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64 + 0.5, *n as f64))
        .collect();
    let calls = timeline.gebeta_calls_per_second();
    if writes.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let lines: Vec<_> = [
        (
            "Kubernetes writes by the operator (audit log)",
            writes.as_slice(),
            BLUE,
        ),
        ("Gebeta calls (simulator)", calls.as_slice(), ORANGE),
    ]
    .into_iter()
    .filter(|l| !l.1.is_empty())
    .collect();
    let (_, x1) = bounds(writes.iter().chain(&calls).map(|p| p.0));
    let (_, y1) = bounds(writes.iter().chain(&calls).map(|p| p.1).chain([10.0]));
    let title = format!(
        "Kubernetes writes and Gebeta calls per second: {}",
        run_title(report)
    );
    let axes = Axes {
        title: &title,
        x_desc: "seconds from the start of the run",
        y_desc: "per second (log scale; 0 on the bottom line)",
        x: 0.0..x1,
        // Bursts (apply: every object at once) and a trickle (one refresh at a time) both
        // stay readable on a log scale; 0 sits on the bottom line.
        y: RATE_FLOOR..y1 * 3.0,
    };
    let legend: Vec<Entry> = lines.iter().map(|l| Entry::line(l.0, l.2)).collect();
    render("rates", &legend, |area| {
        let zero = |v: &f64| {
            if *v < 1.0 { "0".to_string() } else { tick(v) }
        };
        let mut chart = axes.chart(area, axes.y.clone().log_scale(), &zero)?;
        let chart = &mut chart;
        chart.draw_series(std::iter::once(
            EmptyElement::at((0.0, RATE_FLOOR))
                + Text::new(
                    "0",
                    (-9, 0),
                    TextStyle::from((FONT, LABEL_SIZE).into_font())
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ),
        ))?;
        draw_phases(chart, &timeline.phases)?;
        for (_, points, colour) in &lines {
            chart.draw_series(LineSeries::new(
                points.iter().map(|(x, y)| (*x, y.max(RATE_FLOOR))),
                colour.stroke_width(2),
            ))?;
        }
        Ok(())
    })
    .map(Some)
}

fn rss_svg(report: &Report) -> Result<Option<String>, PlotError> {
    let timeline = &report.timeline;
    let rss = timeline.rss_mib();
    if rss.is_empty() {
        return Ok(None);
    }
    // One line per operator process: none is drawn across a restart.
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = None;
    for sample in &timeline.samples {
        match sample.rss_mib {
            Some(mib) if current == Some(sample.operator) => {
                runs.last_mut().expect("open").push((sample.at, mib))
            }
            Some(mib) => {
                runs.push(vec![(sample.at, mib)]);
                current = Some(sample.operator);
            }
            None => current = None,
        }
    }
    let x1 = timeline.samples.last().map_or(1.0, |s| s.at.max(1.0));
    let (_, y1) = bounds(rss.iter().map(|p| p.1));
    let title = format!("Operator resident memory: {}", run_title(report));
    let axes = Axes {
        title: &title,
        x_desc: "seconds from the start of the run",
        y_desc: "RSS (MiB)",
        x: 0.0..x1,
        y: 0.0..y1 * 1.2,
    };
    let legend = [Entry::line(
        format!(
            "operator RSS, sampled every second ({} process(es))",
            runs.len()
        ),
        GREEN,
    )];
    render("rss", &legend, |area| {
        let mut chart = axes.chart(area, axes.y.clone(), &tick)?;
        let chart = &mut chart;
        draw_phases(chart, &timeline.phases)?;
        for run in &runs {
            chart.draw_series(LineSeries::new(run.iter().copied(), GREEN.stroke_width(2)))?;
        }
        Ok(())
    })
    .map(Some)
}

/// The frame of a plot.
struct Axes<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x: Range<f64>,
    y: Range<f64>,
}

impl Axes<'_> {
    /// The chart on `area`: title, axes and their labels; `y` is the y range or a log scale
    /// of it, `y_label` formats its ticks.
    fn chart<'a, 'b, Y>(
        &self,
        area: &'a DrawingArea<SVGBackend<'b>, Shift>,
        y: Y,
        y_label: &dyn Fn(&f64) -> String,
    ) -> Result<Chart<'a, 'b, Y::CoordDescType>, Box<dyn std::error::Error>>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, (FONT, TITLE_SIZE))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(self.x.clone(), y)?;
        chart
            .configure_mesh()
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .x_label_formatter(&tick)
            .y_label_formatter(y_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        Ok(chart)
    }
}

/// One entry of a legend: a line or a dot of a colour, and its text.
struct Entry {
    label: String,
    colour: RGBColor,
    dot: bool,
}

impl Entry {
    fn line(label: impl Into<String>, colour: RGBColor) -> Entry {
        Entry {
            label: label.into(),
            colour,
            dot: false,
        }
    }

    fn dot(label: impl Into<String>, colour: RGBColor) -> Entry {
        Entry {
            dot: true,
            ..Entry::line(label, colour)
        }
    }

    /// Pixels the entry takes in the legend strip (text width estimated for a sans-serif
    /// font, as no font is loaded).
    fn width(&self) -> i32 {
        let em = f64::from(LABEL_SIZE) / 1.24;
        24 + (self.label.chars().count() as f64 * em * 0.55).ceil() as i32 + 28
    }
}

/// The legend's entries laid out in rows across the width: `(row, x)` of each.
fn legend_layout(entries: &[Entry]) -> Vec<(u32, i32)> {
    let right = WIDTH as i32 - 12;
    let (mut row, mut x) = (0, LEGEND_LEFT);
    entries
        .iter()
        .map(|e| {
            if x > LEGEND_LEFT && x + e.width() > right {
                (row, x) = (row + 1, LEGEND_LEFT);
            }
            let at = (row, x);
            x += e.width();
            at
        })
        .collect()
}

type Chart<'a, 'b, Y = RangedCoordf64> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

/// Draws a plot: what `draw` puts above (the chart), and the legend in a strip below.
fn render(
    plot: &'static str,
    legend: &[Entry],
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<String, PlotError> {
    let layout = legend_layout(legend);
    let rows = layout.last().map_or(0, |(row, _)| row + 1);
    let height = CHART_HEIGHT + rows * LEGEND_ROW + 8;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| PlotError::Draw {
            plot,
            message: e.to_string(),
        };
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let (upper, lower) = root.split_vertically(CHART_HEIGHT);
        draw(&upper).map_err(|e| fail(&*e))?;
        draw_legend(&lower, legend, &layout).map_err(|e| fail(&*e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[Entry],
    layout: &[(u32, i32)],
) -> DrawResult {
    let text =
        TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (entry, (row, x)) in entries.iter().zip(layout) {
        let y = (row * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        if entry.dot {
            area.draw(&Circle::new((x + 9, y), 3, entry.colour.filled()))?;
        } else {
            area.draw(&PathElement::new(
                [(*x, y), (x + 18, y)],
                entry.colour.stroke_width(2),
            ))?;
        }
        area.draw(&Text::new(entry.label.clone(), (x + 24, y), text.clone()))?;
    }
    Ok(())
}

/// A thin grey line at each phase's start inside the x range, its name at the top (on two
/// rows, so that short phases do not overprint each other).
fn draw_phases<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, '_, Y>,
    phases: &[PhaseMark],
) -> DrawResult {
    let (x, y) = (chart.x_range(), chart.y_range());
    let inside = phases.iter().filter(|p| x.contains(&p.at));
    for (i, p) in inside.enumerate() {
        chart.draw_series(LineSeries::new(
            [(p.at, y.start), (p.at, y.end)],
            GREY.mix(0.6),
        ))?;
        let row = (i % 2) as i32;
        chart.draw_series(std::iter::once(
            EmptyElement::at((p.at, y.end))
                + Text::new(
                    p.name.clone(),
                    (3, 3 + row * 12),
                    (FONT, NOTE_SIZE).into_font().color(&GREY),
                ),
        ))?;
    }
    Ok(())
}

/// Tick labels: whole numbers without decimals.
fn tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `N=…, M=…, lifetime …` and the day of the run.
fn run_title(report: &Report) -> String {
    let a = &report.args;
    format!(
        "gebeta-bench N={} M={}, {} s tokens, {}",
        a.accounts,
        a.tokens,
        a.token_ttl,
        report.started_at.get(..10).unwrap_or(&report.started_at)
    )
}

/// The smallest and largest finite value (0..1 when there is none; never an empty range).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// The empirical CDF of sorted samples as a staircase.
fn cdf(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut points = Vec::with_capacity(sorted.len() * 2);
    for (i, s) in sorted.iter().enumerate() {
        points.push((*s, i as f64 / n));
        points.push((*s, (i + 1) as f64 / n));
    }
    points
}

/// The CDF through a summary's min, p50, p99 and max.
fn quantile_points(s: &Summary) -> Vec<(f64, f64)> {
    vec![(s.min, 0.0), (s.p50, 0.5), (s.p99, 0.99), (s.max, 1.0)]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::load_report;

    /// One element of an SVG: its name, attributes and the text directly inside it.
    #[derive(Debug)]
    struct Element {
        name: String,
        attrs: BTreeMap<String, String>,
        text: String,
    }

    /// Checks that `svg` is well-formed XML with one `<svg>` root (every tag closed and nested,
    /// attributes quoted and unique, no stray `&`) and returns its elements in document order.
    fn parse(svg: &str) -> Result<Vec<Element>, String> {
        let mut elements: Vec<Element> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut roots = 0;
        let mut rest = svg;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                check_text(rest)?;
                if !rest.trim().is_empty() {
                    return Err(format!("text after the root: {rest:?}"));
                }
                break;
            };
            let text = &rest[..lt];
            check_text(text)?;
            match open.last() {
                Some(&i) => elements[i].text.push_str(text.trim()),
                None if !text.trim().is_empty() => {
                    return Err(format!("text outside the root: {text:?}"));
                }
                None => {}
            }
            rest = &rest[lt..];
            let gt = rest.find('>').ok_or("a tag is not closed")?;
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if tag.starts_with('?') || tag.starts_with("!--") {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let i = open.pop().ok_or(format!("</{name}> closes nothing"))?;
                if elements[i].name != name.trim() {
                    return Err(format!("</{name}> closes <{}>", elements[i].name));
                }
                continue;
            }
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(tag) => (tag, true),
                None => (tag, false),
            };
            let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
            let name = &tag[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad tag name in <{tag}>"));
            }
            let attrs = parse_attrs(&tag[name_end..])?;
            if open.is_empty() {
                roots += 1;
            }
            elements.push(Element {
                name: name.into(),
                attrs,
                text: String::new(),
            });
            if !empty {
                open.push(elements.len() - 1);
            }
        }
        if let Some(&i) = open.last() {
            return Err(format!("<{}> is never closed", elements[i].name));
        }
        if roots != 1 || elements.first().map(|e| e.name.as_str()) != Some("svg") {
            return Err(format!("{roots} roots; the first element must be <svg>"));
        }
        Ok(elements)
    }

    fn parse_attrs(mut rest: &str) -> Result<BTreeMap<String, String>, String> {
        let mut attrs = BTreeMap::new();
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                return Ok(attrs);
            }
            let eq = rest
                .find('=')
                .ok_or(format!("attribute without value: {rest}"))?;
            let name = rest[..eq].trim();
            let quote = rest[eq + 1..]
                .chars()
                .next()
                .filter(|q| *q == '"' || *q == '\'');
            let quote = quote.ok_or(format!("unquoted attribute {name}"))?;
            let value_start = eq + 2;
            let len = rest[value_start..]
                .find(quote)
                .ok_or(format!("attribute {name} is not closed"))?;
            let value = &rest[value_start..value_start + len];
            check_text(value)?;
            if value.contains('<') {
                return Err(format!("< in attribute {name}"));
            }
            if attrs.insert(name.to_string(), value.to_string()).is_some() {
                return Err(format!("attribute {name} twice"));
            }
            rest = &rest[value_start + len + 1..];
        }
    }

    /// Every `&` starts an entity XML knows.
    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            let known = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity)
                || (entity.starts_with("&#") && entity.ends_with(';'));
            if !known {
                return Err(format!("stray & in {text:?}"));
            }
        }
        Ok(())
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// Points of each `<polyline>` drawn in `colour`.
    fn polylines(svg: &[Element], colour: RGBColor) -> Vec<usize> {
        svg.iter()
            .filter(|e| e.name == "polyline" && e.attrs.get("stroke") == Some(&hex(colour)))
            .map(|e| e.attrs["points"].split_whitespace().count())
            .collect()
    }

    fn circles(svg: &[Element], colour: RGBColor) -> usize {
        svg.iter()
            .filter(|e| e.name == "circle" && e.attrs.get("fill") == Some(&hex(colour)))
            .count()
    }

    fn texts(svg: &[Element]) -> Vec<String> {
        svg.iter()
            .filter(|e| e.name == "text")
            .map(|e| e.text.replace("&apos;", "'"))
            .collect()
    }

    fn testdata(name: &str) -> Report {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bench/testdata");
        load_report(&path.join(name)).expect("a valid report")
    }

    /// The small run stored with its time series (see README, "Benchmarks").
    fn stored() -> Report {
        testdata("report-plots.json")
    }

    fn draw(plot: Plot, report: &Report) -> Vec<Element> {
        let svg = plot.draw(report).unwrap().expect("data for the plot");
        parse(&svg).unwrap_or_else(|e| panic!("{plot:?} is not well-formed: {e}\n{svg}"))
    }

    #[test]
    fn the_checker_refuses_what_is_not_well_formed() {
        assert!(parse(r#"<svg a="1"><text>x &amp; y</text><circle r="1"/></svg>"#).is_ok());
        for bad in [
            "<svg><text>x</svg>",
            "<svg></svg><svg></svg>",
            r#"<svg a=1></svg>"#,
            r#"<svg a="1" a="2"></svg>"#,
            "<svg><text>a & b</text></svg>",
            "<svg>",
            "<g></g>",
            "<svg></g>",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn ready_is_a_cdf_per_kind() {
        let report = stored();
        let svg = draw(Plot::Ready, &report);
        let kinds: Vec<_> = report.apply.ready_seconds.iter().collect();
        assert_eq!(kinds.len(), 2, "both kinds are stored");
        for ((kind, seconds), colour) in kinds.into_iter().zip(PALETTE) {
            // A staircase of two points per object, and the legend's line.
            assert_eq!(
                polylines(&svg, colour),
                vec![2 * seconds.len(), 2],
                "{kind}"
            );
            let label = format!("{kind} (n={})", seconds.len());
            assert!(texts(&svg).contains(&label), "no legend entry {label:?}");
        }
        assert!(texts(&svg).contains(&"100%".to_string()));
    }

    #[test]
    fn margins_show_the_refresh_and_the_overload_phase_in_two_colours() {
        let report = stored();
        let overload = report.overload.as_ref().expect("the stored run has one");
        assert!(!report.refresh.margins.is_empty() && !overload.margins.is_empty());
        let svg = draw(Plot::Margins, &report);
        // A point per replacement, and one in the legend.
        assert_eq!(circles(&svg, BLUE), report.refresh.margins.len() + 1);
        assert_eq!(circles(&svg, ORANGE), overload.margins.len() + 1);
        let texts = texts(&svg);
        for label in [
            format!(
                "refresh phase, {} s tokens, scheduled refreshes ({})",
                report.refresh.lifetime_seconds,
                report.refresh.margins.len()
            ),
            format!(
                "overload phase, {} permit(s), calls take {} ms ({})",
                overload.permits,
                overload.latency_ms,
                overload.margins.len()
            ),
            "old token expires (margin 0)".to_string(),
            "refresh".to_string(),
            "overload".to_string(),
        ] {
            assert!(texts.contains(&label), "no text {label:?} in {texts:?}");
        }
        // The phases before the refresh phase lie outside the x range.
        assert!(!texts.contains(&"apply".to_string()));
    }

    #[test]
    fn rates_have_a_line_for_writes_and_one_for_calls() {
        let report = stored();
        let timeline = &report.timeline;
        assert!(timeline.kube_writes_per_second.iter().sum::<u64>() > 0);
        let svg = draw(Plot::Rates, &report);
        assert_eq!(
            polylines(&svg, BLUE),
            vec![timeline.kube_writes_per_second.len(), 2]
        );
        assert_eq!(
            polylines(&svg, ORANGE),
            vec![timeline.gebeta_calls_per_second().len(), 2]
        );
        let texts = texts(&svg);
        for label in [
            "Kubernetes writes by the operator (audit log)",
            "Gebeta calls (simulator)",
        ] {
            assert!(texts.contains(&label.to_string()), "no legend {label:?}");
        }
        for phase in &timeline.phases {
            assert!(texts.contains(&phase.name), "phase {} unmarked", phase.name);
        }
    }

    #[test]
    fn rss_has_one_line_per_operator_process() {
        let report = stored();
        let timeline = &report.timeline;
        let svg = draw(Plot::Rss, &report);
        let lines = polylines(&svg, GREEN);
        // First process, restarted process, overload process; and the legend's line.
        assert_eq!(lines.len(), 3 + 1, "{lines:?}");
        assert_eq!(lines.iter().sum::<usize>(), timeline.rss_mib().len() + 2);
        assert!(texts(&svg).contains(&"operator RSS, sampled every second (3 process(es))".into()));
    }

    #[test]
    fn a_report_made_before_the_series_draws_the_cdf_from_its_quantiles_only() {
        let report = testdata("report.json");
        assert!(report.timeline.is_empty() && report.apply.ready_seconds.is_empty());
        let svg = draw(Plot::Ready, &report);
        assert_eq!(polylines(&svg, BLUE), vec![4, 2]);
        assert_eq!(polylines(&svg, ORANGE), vec![4, 2]);
        assert!(
            texts(&svg).contains(&"GebetaServiceAccount (n=20; min, p50, p99, max only)".into())
        );
        for plot in [Plot::Margins, Plot::Rates, Plot::Rss] {
            assert!(plot.draw(&report).unwrap().is_none(), "{plot:?}");
        }
    }

    #[test]
    fn the_demo_margin_plot_has_a_point_per_refresh_and_series_per_token() {
        let series = [
            MarginSeries {
                name: "GebetaAccessToken/a".into(),
                points: vec![[10.0, 3.2], [17.5, 2.9]],
            },
            MarginSeries {
                name: "GebetaAccessToken/b".into(),
                points: vec![[11.0, -0.4]],
            },
        ];
        let svg = margins_svg("demo", "seconds", &series, &[]).unwrap();
        let svg = parse(&svg).unwrap();
        assert_eq!((circles(&svg, BLUE), circles(&svg, ORANGE)), (3, 2));
        let texts = texts(&svg);
        assert!(texts.contains(&"GebetaAccessToken/a (2)".into()));
        assert!(texts.contains(&"GebetaAccessToken/b (1)".into()));
        // The zero line spans the x range.
        assert_eq!(polylines(&svg, EXPIRY), vec![2, 2]);
        // No refresh yet: still a valid plot, with only the zero line.
        let empty = margins_svg("demo", "seconds", &[], &[]).unwrap();
        assert_eq!(circles(&parse(&empty).unwrap(), BLUE), 0);
    }

    #[test]
    fn plots_are_written_beside_each_other_under_the_stem() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_plots(&stored(), dir.path(), "small").unwrap();
        let names: Vec<String> = written
            .files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "small-ready.svg",
                "small-margins.svg",
                "small-rates.svg",
                "small-rss.svg"
            ]
        );
        assert!(written.skipped.is_empty());
        let old = write_plots(&testdata("report.json"), dir.path(), "old").unwrap();
        assert_eq!((old.files.len(), old.skipped.len()), (1, 3));
    }
}
