//! Plots with `plotters`: the latency CDF of every contender, and one contender's traffic
//! share over time.
//!
//! The file extension picks the backend. `.svg` files carry every label as SVG text, which
//! the viewer renders with its own fonts. `.png` files are drawn by the bitmap backend
//! *without any text* (no caption, tick labels or legend): rendering text into pixels would
//! need a font file at build or run time (plotters' `ttf` or `ab_glyph` features), which a CI
//! machine may not have. The PNG uses the same colours and layout as the SVG, so the SVG
//! serves as its legend.

use std::{error::Error, path::Path};

use plotters::{coord::Shift, prelude::*};

use crate::{RunReport, ScenarioReport, SimError};

/// Width and height of every plot in pixels.
const SIZE: (u32, u32) = (960, 560);

/// Series colours, one per contender in report order (oracle first), then per group.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 0, 0),
    RGBColor(127, 127, 127),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type DrawResult = Result<(), Box<dyn Error>>;

/// Draws the latency CDF of every run of `report` to `path` (`.svg` or `.png`).
///
/// The x axis is latency in milliseconds on a log scale; the y axis is the percentile on a
/// tail-stretching scale (`-log10(1 - q)`), so that 0 %, 90 %, 99 %, 99.9 % and 99.99 %
/// are evenly spaced and the tails that tell strategies apart are visible.
///
/// # Errors
/// [`SimError::Plot`] if the file cannot be drawn or written.
pub fn plot_cdf(report: &ScenarioReport, path: &Path) -> Result<(), SimError> {
    let result = if is_svg(path) {
        cdf(SVGBackend::new(path, SIZE).into_drawing_area(), report, true)
    } else {
        cdf(BitMapBackend::new(path, SIZE).into_drawing_area(), report, false)
    };
    result.map_err(|e| plot_error(path, e))
}

/// Draws the share of each group in the attempts of `run`, per time bucket, to `path`
/// (`.svg` or `.png`): one line per group, 0–100 %.
///
/// # Errors
/// [`SimError::Plot`] if the file cannot be drawn or written.
pub fn plot_share(run: &RunReport, path: &Path) -> Result<(), SimError> {
    let result = if is_svg(path) {
        share(SVGBackend::new(path, SIZE).into_drawing_area(), run, true)
    } else {
        share(BitMapBackend::new(path, SIZE).into_drawing_area(), run, false)
    };
    result.map_err(|e| plot_error(path, e))
}

fn is_svg(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"))
}

fn plot_error(path: &Path, e: Box<dyn Error>) -> SimError {
    SimError::Plot { path: path.display().to_string(), reason: e.to_string() }
}

/// `-log10(1 - q)`, capped at 4 (99.99 %).
fn tail(q: f64) -> f64 {
    (-(1.0 - q).max(1e-4).log10()).clamp(0.0, 4.0)
}

fn cdf<DB>(root: DrawingArea<DB, Shift>, report: &ScenarioReport, text: bool) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let points = |r: &RunReport| -> Vec<(f64, f64)> {
        r.cdf_ms.iter().filter(|p| p[1] < 1.0).map(|p| (p[0].max(1.0), tail(p[1]))).collect()
    };
    let max_ms = report.runs.iter().flat_map(points).map(|p| p.0).fold(10.0, f64::max) * 1.2;
    let min_ms = report.runs.iter().flat_map(points).map(|p| p.0).fold(f64::INFINITY, f64::min).max(1.0) / 1.2;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(format!("{}: latency CDF (seed {})", report.scenario, report.seed), ("sans-serif", 22))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d((min_ms..max_ms).log_scale(), 0.0..4.0)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("latency (ms, log scale)")
            .y_desc("percentile")
            .y_labels(5)
            .y_label_formatter(&|y| format!("{}%", 100.0 * (1.0 - 10f64.powf(-y))))
            .x_label_formatter(&|x| format!("{x:.0}"));
    } else {
        // Grid lines without their labels: transparent text is never rasterised.
        mesh.y_labels(5).label_style(("sans-serif", 12).into_font().color(&TRANSPARENT));
    }
    mesh.draw()?;
    for (i, r) in report.runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let series = chart.draw_series(LineSeries::new(points(r), color.stroke_width(2)))?;
        if text {
            series
                .label(r.strategy.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn share<DB>(root: DrawingArea<DB, Shift>, run: &RunReport, text: bool) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let s = &run.share;
    let end_s = s.attempts.len() as f64 * s.bucket_s;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                format!("{} / {}: traffic share per {} s", run.scenario, run.strategy, s.bucket_s),
                ("sans-serif", 22),
            )
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let mut chart = builder.build_cartesian_2d(0.0..end_s.max(s.bucket_s), 0.0..100.0)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("simulated time (s)").y_desc("share of attempts (%)");
    } else {
        mesh.label_style(("sans-serif", 12).into_font().color(&TRANSPARENT));
    }
    mesh.draw()?;
    for (g, group) in s.groups.iter().enumerate() {
        let color = PALETTE[(g + 2) % PALETTE.len()];
        let line = s.attempts.iter().enumerate().filter_map(|(b, row)| {
            let total: u32 = row.iter().sum();
            (total > 0).then(|| ((b as f64 + 0.5) * s.bucket_s, 100.0 * f64::from(row[g]) / f64::from(total)))
        });
        let series = chart.draw_series(LineSeries::new(line, color.stroke_width(2)))?;
        if text {
            series
                .label(group.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
