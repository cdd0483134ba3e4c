//! The plots, drawn by `plotters` into SVG strings that the page embeds.
//!
//! Colour is never the only encoding: runs differ by marker shape as well as colour, NLL and
//! entropy by solid and dashed lines, and every plot has numeric axes (the page adds tables of the
//! plotted numbers).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use surprisal_metrics::CalibrationBin;

use crate::stats::{bin_label, Band, Histogram, Histogram2d};

/// A plot that could not be drawn (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the {plot} plot: {message}")]
pub struct PlotError {
    /// Which plot.
    pub plot: &'static str,
    /// plotters' message.
    pub message: String,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";
const BAR: RGBColor = RGBColor(0x4c, 0x72, 0xb0);

/// Draws `(w, h)` pixels with `f` and returns the SVG document.
fn svg(
    plot: &'static str,
    (w, h): (u32, u32),
    f: impl FnOnce(&Area) -> Drawn,
) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        let drawn = area
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| f(&area).map_err(|e| e.to_string()))
            .and_then(|()| area.present().map_err(|e| e.to_string()));
        drawn.map_err(|message| PlotError { plot, message })?;
    }
    // Inline SVG in HTML needs no namespace declaration; without it the page holds no URL at all.
    Ok(out.replacen(r#" xmlns="http://www.w3.org/2000/svg""#, "", 1))
}

/// The colour of series `k` (Tableau 10: distinct, and readable on white).
pub fn series_color(k: usize) -> RGBColor {
    let c = colorous::TABLEAU10[k % colorous::TABLEAU10.len()];
    RGBColor(c.r, c.g, c.b)
}

/// The glyph of marker `k`, for legends and tables.
pub fn marker_glyph(k: usize) -> char {
    ['●', '▲', '✕', '■'][k % 4]
}

/// One curve of a by-position plot.
pub struct Curve<'a> {
    /// Legend text.
    pub label: String,
    /// The bins.
    pub bands: &'a [Band],
    /// Index of the run (colour and marker).
    pub series: usize,
    /// Dashed (entropy) or solid (NLL, KL).
    pub dashed: bool,
}

/// Means with 95 % bands against the log2 context-length bins.
pub fn by_position(title: &str, y_desc: &str, curves: &[Curve]) -> Result<String, PlotError> {
    let bins = || {
        curves
            .iter()
            .flat_map(|c| c.bands.iter().map(|b| b.bin as i32))
    };
    // one empty bin of room on each side, so that edge points and their bands are not clipped
    let (lo, hi) = (bins().min().unwrap_or(0) - 1, bins().max().unwrap_or(0) + 1);
    let y_max = curves
        .iter()
        .flat_map(|c| c.bands.iter().map(|b| b.hi))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1.08;
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    svg("by-position", (900, 420), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0f64..y_max)?;
        let fmt = |k: &i32| usize::try_from(*k).map(bin_label).unwrap_or_default();
        chart
            .configure_mesh()
            .x_labels((hi - lo + 1) as usize)
            .x_label_formatter(&fmt)
            .x_desc("tokens of context (log2 bins)")
            .y_desc(y_desc)
            .axis_desc_style((FONT, 15))
            .label_style((FONT, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for c in curves {
            let color = series_color(c.series);
            let mut outline: Vec<(i32, f64)> =
                c.bands.iter().map(|b| (b.bin as i32, b.hi)).collect();
            outline.extend(c.bands.iter().rev().map(|b| (b.bin as i32, b.lo)));
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.18).filled(),
            )))?;
            let points: Vec<(i32, f64)> = c.bands.iter().map(|b| (b.bin as i32, b.mean)).collect();
            draw_line(
                &mut chart,
                &points,
                color,
                c.dashed.then_some((8, 5)),
                format!("{} {}", marker_glyph(c.series), c.label),
            )?;
            // the interval also as an error bar: a band of one bin is no area
            chart.draw_series(c.bands.iter().map(|b| {
                let x = b.bin as i32;
                PathElement::new(vec![(x, b.lo), (x, b.hi)], color.stroke_width(1))
            }))?;
            // marker shape by run, as well as colour
            draw_markers(&mut chart, c.series, &points)?;
        }
        draw_legend(&mut chart, 13)
    })
}

/// A series' line through `points` (2 px, solid, or dashed as (dash, gap)) with its legend
/// entry: two segments, touching for a solid line and apart for a dashed one.
fn draw_line<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    points: &[(X::ValueType, Y::ValueType)],
    color: RGBColor,
    dashed: Option<(u32, u32)>,
    label: String,
) -> Drawn
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let style = color.stroke_width(2);
    let pts = points.iter().cloned();
    let drawn = match dashed {
        Some((dash, gap)) => chart.draw_series(DashedLineSeries::new(pts, dash, gap, style))?,
        None => chart.draw_series(LineSeries::new(pts, style))?,
    };
    let gap = if dashed.is_some() { 4 } else { 0 };
    drawn.label(label).legend(move |(x, y)| {
        EmptyElement::at((x, y))
            + PathElement::new(vec![(0, 0), (8, 0)], style)
            + PathElement::new(vec![(8 + gap, 0), (16 + gap, 0)], style)
    });
    Ok(())
}

/// The legend box, upper right, in `font_size` px.
fn draw_legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    font_size: u32,
) -> Drawn
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, font_size))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// The markers of series `k` at `points`: shape ([`marker_glyph`]) as well as colour.
fn draw_markers<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    k: usize,
    points: &[(X::ValueType, Y::ValueType)],
) -> Drawn
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let color = series_color(k);
    let (filled, thick) = (color.filled(), color.stroke_width(2));
    let pts = points.iter().cloned();
    match k % 4 {
        0 => chart.draw_series(pts.map(|p| Circle::new(p, 4, filled)))?,
        1 => chart.draw_series(pts.map(|p| TriangleMarker::new(p, 5, filled)))?,
        2 => chart.draw_series(pts.map(|p| Cross::new(p, 4, thick)))?,
        _ => chart.draw_series(
            pts.map(|p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], filled)),
        )?,
    };
    Ok(())
}

/// What the x axis of a history chart is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAxis {
    /// The checkpoint step.
    Step,
    /// Seconds since the Unix epoch (when each run finished).
    Date,
}

impl XAxis {
    /// `checkpoint step` / `finish time (UTC)`.
    pub fn words(self) -> &'static str {
        match self {
            XAxis::Step => "checkpoint step",
            XAxis::Date => "finish time (UTC)",
        }
    }
}

/// A point of a history line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoryPoint {
    /// Step or epoch seconds.
    pub x: f64,
    /// The metric.
    pub y: f64,
    /// Its 95 % interval, if any.
    pub ci: Option<(f64, f64)>,
    /// The run's recorded gate verdict: `Some(true)` passed (a ring around the marker),
    /// `Some(false)` a regression (a square around it and the word "regression"), `None` not gated.
    pub gate: Option<bool>,
}

/// One line of a history chart.
pub struct HistoryLine {
    /// Legend text.
    pub label: String,
    /// Colour and marker.
    pub series: usize,
    /// The points (drawn in x order).
    pub points: Vec<HistoryPoint>,
    /// Dashed (a macro-average) or solid (a run's series).
    pub dashed: bool,
}

/// Decimals that tell ticks `span / 5` apart.
fn decimals(span: f64) -> usize {
    if span > 0.0 && span.is_finite() {
        (1.0 - (span / 5.0).log10()).floor().clamp(0.0, 9.0) as usize
    } else {
        4
    }
}

/// x in thousandths, on an integer axis (plotters' f64 axes take no custom ticks): a step or a
/// time in seconds, dodged by fractions of a unit.
fn milli(x: f64) -> i64 {
    (x * 1e3).round() as i64
}

/// A metric over checkpoint steps or dates: a line per series with markers and 95 % error bars.
/// Lines that share an x are dodged apart by a small fraction of the x range.
pub fn history(
    title: &str,
    y_desc: &str,
    axis: XAxis,
    lines: &[HistoryLine],
) -> Result<String, PlotError> {
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.x), b.max(p.x))
    });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    let x_span = if x1 > x0 { x1 - x0 } else { x0.abs().max(1.0) };
    let (y0, y1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        let (lo, hi) = p.ci.unwrap_or((p.y, p.y));
        (a.min(lo).min(p.y), b.max(hi).max(p.y))
    });
    let (y0, y1) = if y0.is_finite() { (y0, y1) } else { (0.0, 1.0) };
    let y_pad = if y1 > y0 {
        (y1 - y0) * 0.12
    } else {
        y0.abs().max(1e-3) * 0.05
    };
    let gated = |v: bool| all().any(|p| p.gate == Some(v));
    let (any_pass, any_regression) = (gated(true), gated(false));
    // room above the data for the legend (about 17 px a line in a plot area of about 290 px)
    let legend_lines = lines.len() + usize::from(any_pass) + usize::from(any_regression);
    let legend = ((legend_lines as f64 * 17.0 + 14.0) / 290.0).min(0.6);
    let ylo = y0 - y_pad;
    let yhi = y1 + y_pad + (y1 + y_pad - ylo) * legend / (1.0 - legend);
    let (xlo, xhi) = (x0 - x_span * 0.08, x1 + x_span * 0.08);
    let dodge = x_span * 0.012;
    let n = lines.len() as f64;
    let y_dec = decimals(yhi - ylo);
    let date_fmt = if x_span > 3.0 * 86400.0 {
        "%Y-%m-%d"
    } else if x_span > 2.0 * 3600.0 {
        "%m-%d %H:%M"
    } else {
        "%H:%M:%S"
    };
    // the x ticks at the runs' own steps or times (at most 8 of them, 6 for the wider dates)
    let mut xs: Vec<f64> = all().map(|p| p.x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let most = if axis == XAxis::Step { 8 } else { 6 };
    let ticks: Vec<f64> = if xs.len() <= most {
        xs
    } else {
        (0..most)
            .map(|k| xs[k * (xs.len() - 1) / (most - 1)])
            .collect()
    };
    // times of one day: the day in the axis description
    let x_desc = match chrono::DateTime::from_timestamp(x0.round() as i64, 0) {
        Some(d) if axis == XAxis::Date && date_fmt == "%H:%M:%S" => {
            format!("{} on {}", axis.words(), d.format("%Y-%m-%d"))
        }
        _ => axis.words().to_string(),
    };
    svg("history", (560, 400), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 17))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(
                (milli(xlo)..milli(xhi)).with_key_points(ticks.iter().map(|&t| milli(t)).collect()),
                ylo..yhi,
            )?;
        let x_fmt = |v: &i64| match axis {
            XAxis::Step => format!("{}", (*v as f64 / 1e3).round()),
            XAxis::Date => chrono::DateTime::from_timestamp((*v as f64 / 1e3).round() as i64, 0)
                .map(|d| d.format(date_fmt).to_string())
                .unwrap_or_default(),
        };
        let y_fmt = |v: &f64| format!("{v:.y_dec$}");
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(7)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc(&x_desc)
            .y_desc(y_desc)
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        for (k, l) in lines.iter().enumerate() {
            let color = series_color(l.series);
            let shift = (k as f64 - (n - 1.0) / 2.0) * dodge;
            let mut pts: Vec<HistoryPoint> = l
                .points
                .iter()
                .map(|p| HistoryPoint {
                    x: p.x + shift,
                    ..*p
                })
                .collect();
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            let xy: Vec<(i64, f64)> = pts.iter().map(|p| (milli(p.x), p.y)).collect();
            draw_line(
                &mut chart,
                &xy,
                color,
                l.dashed.then_some((7, 4)),
                l.label.clone(),
            )?;
            let cap = x_span * 0.006;
            chart.draw_series(pts.iter().filter_map(|p| {
                let (lo, hi) = p.ci?;
                Some(PathElement::new(
                    vec![(milli(p.x), lo), (milli(p.x), hi)],
                    color.stroke_width(1),
                ))
            }))?;
            chart.draw_series(pts.iter().filter_map(|p| p.ci.map(|c| (c, p))).flat_map(
                |((lo, hi), p)| {
                    [lo, hi].map(|y| {
                        PathElement::new(
                            vec![(milli(p.x - cap), y), (milli(p.x + cap), y)],
                            color.stroke_width(1),
                        )
                    })
                },
            ))?;
            draw_markers(&mut chart, l.series, &xy)?;
            // gate verdicts: shapes and a word, never colour alone
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.gate == Some(true))
                    .map(|p| Circle::new((milli(p.x), p.y), 8, BLACK.stroke_width(2))),
            )?;
            chart.draw_series(pts.iter().filter(|p| p.gate == Some(false)).map(|p| {
                EmptyElement::at((milli(p.x), p.y))
                    + Rectangle::new([(-8, -8), (8, 8)], BLACK.stroke_width(2))
                    + Text::new(
                        "regression",
                        (10, -20),
                        (FONT, 11).into_font().color(&BLACK),
                    )
            }))?;
        }
        if any_pass {
            chart
                .draw_series(std::iter::empty::<Circle<(i64, f64), i32>>())?
                .label("gate passed (ring)")
                .legend(|(x, y)| Circle::new((x + 8, y), 6, BLACK.stroke_width(2)));
        }
        if any_regression {
            chart
                .draw_series(std::iter::empty::<Circle<(i64, f64), i32>>())?
                .label("gate regression (square)")
                .legend(|(x, y)| {
                    Rectangle::new([(x + 2, y - 6), (x + 14, y + 6)], BLACK.stroke_width(2))
                });
        }
        draw_legend(&mut chart, 12)
    })
}

/// Reliability diagram: accuracy against top-1 confidence per bin (bars), the bins' mean
/// confidence (dots), the diagonal of perfect calibration, each bin's token count above its bar.
pub fn calibration(title: &str, bins: &[CalibrationBin]) -> Result<String, PlotError> {
    svg("calibration", (560, 460), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1.08f64)?;
        chart
            .configure_mesh()
            .x_desc("top-1 probability (confidence)")
            .y_desc("top-1 accuracy")
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(bins.iter().filter_map(|b| {
            let acc = b.accuracy?;
            Some(Rectangle::new(
                [(b.lower, 0.0), (b.upper, acc)],
                BAR.mix(0.55).filled(),
            ))
        }))?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(1)));
        chart
            .draw_series(bins.iter().filter_map(|b| {
                Some(Circle::new(
                    (b.mean_confidence?, b.accuracy?),
                    3,
                    BLACK.filled(),
                ))
            }))?
            .label("bin: mean confidence, accuracy")
            .legend(|(x, y)| Circle::new((x + 8, y), 3, BLACK.filled()));
        let grey = BLACK.mix(0.75);
        let small = TextStyle::from((FONT, 10).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom))
            .color(&grey);
        chart.draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
            let top = b.accuracy.unwrap_or(0.0);
            Text::new(
                compact(b.count),
                ((b.lower + b.upper) / 2.0, top + 0.01),
                small.clone(),
            )
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        Ok(())
    })
}

/// `12345` → `12.3k`: bin counts that fit above a bar.
fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A vertical line with its legend text.
pub struct Marker {
    /// x value.
    pub x: f64,
    /// Shaded interval around it (e.g. the 95 % CI), if any.
    pub interval: Option<(f64, f64)>,
    /// Legend text.
    pub label: String,
}

/// A histogram (bars) with optional vertical markers.
pub fn histogram(
    title: &str,
    x_desc: &str,
    h: &Histogram,
    markers: &[Marker],
) -> Result<String, PlotError> {
    let y_max = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    svg("histogram", (560, 400), |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(h.lo..h.hi, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("tokens")
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let w = h.width();
        chart.draw_series(
            h.counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(k, &c)| {
                    let x0 = h.lo + k as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w, c as f64)], BAR.mix(0.75).filled())
                }),
        )?;
        for (k, m) in markers.iter().enumerate() {
            let color = series_color(k + 1);
            if let Some((a, b)) = m.interval {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(a, 0.0), (b, y_max)],
                    color.mix(0.25).filled(),
                )))?;
            }
            chart
                .draw_series(LineSeries::new(
                    vec![(m.x, 0.0), (m.x, y_max)],
                    color.stroke_width(2),
                ))?
                .label(m.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        if !markers.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }
        Ok(())
    })
}

/// The colour of `t ∈ [0, 1]` on a perceptual map.
pub fn map_color(map: colorous::Gradient, t: f64) -> RGBColor {
    let c = map.eval_continuous(t.clamp(0.0, 1.0));
    RGBColor(c.r, c.g, c.b)
}

/// Entropy (x) against NLL (y), cells coloured by log count (viridis), with the diagonal
/// NLL = entropy and a colour bar with counts. Above the diagonal the token was more surprising
/// than the model expected; the upper left holds the confidently wrong predictions.
pub fn histogram_2d(title: &str, h: &Histogram2d) -> Result<String, PlotError> {
    let max = h.max().max(1) as f64;
    let shade = |c: u64| map_color(colorous::VIRIDIS, (c as f64).ln_1p() / max.ln_1p());
    svg("entropy-vs-NLL", (620, 480), |area| {
        let (main, bar) = area.split_horizontally(540);
        let mut chart = ChartBuilder::on(&main)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(h.x.0..h.x.1, h.y.0..h.y.1)?;
        chart
            .configure_mesh()
            .x_desc("entropy of the prediction (nats)")
            .y_desc("NLL of the token (nats)")
            .axis_desc_style((FONT, 14))
            .label_style((FONT, 12))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let nx = h.counts[0].len() as f64;
        let ny = h.counts.len() as f64;
        let (dx, dy) = ((h.x.1 - h.x.0) / nx, (h.y.1 - h.y.0) / ny);
        chart.draw_series(h.counts.iter().enumerate().flat_map(|(iy, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(move |(ix, &c)| {
                    let (x0, y0) = (h.x.0 + ix as f64 * dx, h.y.0 + iy as f64 * dy);
                    Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], shade(c).filled())
                })
        }))?;
        let d = h.x.1.min(h.y.1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(h.x.0.max(h.y.0), h.x.0.max(h.y.0)), (d, d)],
                6,
                4,
                RED.stroke_width(1),
            ))?
            .label("NLL = entropy")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(1)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        color_bar(&bar, "tokens per cell", max, true, colorous::VIRIDIS)
    })
}

/// A vertical colour bar for `[0, max]` on `map` (log-scaled: `ln(1 + v)`, as the cells).
fn color_bar(area: &Area, desc: &str, max: f64, log: bool, map: colorous::Gradient) -> Drawn {
    let steps = 48;
    let from_t = |t: f64| {
        if log {
            (t * max.ln_1p()).exp_m1()
        } else {
            t * max
        }
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(40)
        .margin_bottom(56)
        .margin_right(6)
        .y_label_area_size(0)
        .right_y_label_area_size(52)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    let label = |t: &f64| {
        let v = from_t(*t);
        if v >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&label)
        .y_desc(desc)
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 13))
        .draw()?;
    chart.draw_series((0..steps).map(|k| {
        let (t0, t1) = (k as f64 / steps as f64, (k + 1) as f64 / steps as f64);
        Rectangle::new(
            [(0.0, t0), (1.0, t1)],
            map_color(map, (t0 + t1) / 2.0).filled(),
        )
    }))?;
    Ok(())
}

/// A horizontal colour bar for the coloured text: `steps` swatches over `[0, max]` nats, swatch
/// `k` in `color(k)` (the token classes' colours).
pub fn text_scale(
    max_nats: f64,
    steps: usize,
    color: impl Fn(usize) -> colorous::Color,
) -> Result<String, PlotError> {
    svg("colour scale", (560, 74), |area| {
        let mut chart = ChartBuilder::on(area)
            .margin_left(12)
            .margin_right(24)
            .margin_top(6)
            .x_label_area_size(40)
            .build_cartesian_2d(0f64..max_nats, 0f64..1f64)?;
        let fmt = |v: &f64| {
            if (*v - max_nats).abs() < 1e-9 {
                format!("≥{v:.0}")
            } else {
                format!("{v:.0}")
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .disable_y_axis()
            .x_labels(max_nats as usize + 1)
            .x_label_formatter(&fmt)
            .x_desc("token surprisal, NLL (nats)")
            .axis_desc_style((FONT, 13))
            .label_style((FONT, 12))
            .draw()?;
        let w = max_nats / steps as f64;
        chart.draw_series((0..steps).map(|k| {
            let x0 = k as f64 * w;
            let c = color(k);
            Rectangle::new([(x0, 0.0), (x0 + w, 1.0)], RGBColor(c.r, c.g, c.b).filled())
        }))?;
        Ok(())
    })
}
