//! PNG charts: one image per scenario, one panel per figure, a bar per server at each load
//! point, so servers stand side by side.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::RunResult;

/// Fonts tried, in order (Debian's fonts-dejavu-core and fonts-liberation).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
];

/// Register a system font with plotters; without one, charts cannot be drawn.
pub fn load_font() -> bool {
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type Metric = (&'static str, fn(&RunResult) -> Option<f64>);

const METRICS: &[Metric] = &[
    (
        "server CPU µs per forwarded packet (lower is better)",
        |r| r.cpu_us_per_packet,
    ),
    ("forwarded packets/s", |r| Some(r.forwarded_pps)),
    ("forwarded Mbps", |r| Some(r.forwarded_mbps)),
    ("server CPU %", |r| Some(r.server_cpu_pct)),
    ("RSS KB per participant", |r| r.rss_kb_per_participant),
    ("loss %", |r| Some(r.loss_pct)),
    ("latency p50 / p99 ms (solid / light)", |r| r.latency_p50_ms),
    ("join time p50 ms", |r| r.join_p50_ms),
];

const COLORS: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Draw `results` into `path`.
pub fn draw(path: &Path, title: &str, x_label: &str, results: &[RunResult]) -> Result<(), String> {
    if !FONTS.iter().any(|f| Path::new(f).exists()) {
        return Err("no font to draw text with (install fonts-dejavu-core)".into());
    }
    let mut servers: Vec<&str> = Vec::new();
    for r in results {
        if !servers.contains(&r.server.as_str()) {
            servers.push(&r.server);
        }
    }
    let mut steps: Vec<(usize, &str)> = results.iter().map(|r| (r.x, r.step.as_str())).collect();
    steps.sort();
    steps.dedup();
    if steps.is_empty() {
        return Err("no results".into());
    }
    let root = BitMapBackend::new(path, (1600, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 26))
        .map_err(|e| e.to_string())?;
    let (legend, body) = root.split_vertically(36);
    for (i, s) in servers.iter().enumerate() {
        let x = 20 + i as i32 * 200;
        let color = COLORS[i % COLORS.len()];
        legend
            .draw(&Rectangle::new([(x, 10), (x + 24, 28)], color.filled()))
            .map_err(|e| e.to_string())?;
        legend
            .draw(&Text::new(s.to_string(), (x + 32, 10), ("sans-serif", 20)))
            .map_err(|e| e.to_string())?;
    }
    let panels = body.split_evenly((2, 4));
    for (panel, (name, metric)) in panels.iter().zip(METRICS) {
        let is_latency = name.starts_with("latency");
        let value = |r: &RunResult| {
            if is_latency {
                r.latency_p99_ms.or(metric(r))
            } else {
                metric(r)
            }
        };
        let max = results
            .iter()
            .filter_map(value)
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.15;
        let n = steps.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(*name, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..max)
            .map_err(|e| e.to_string())?;
        let labels: Vec<String> = steps.iter().map(|(_, l)| l.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(2))
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc(x_label)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / servers.len() as f64;
        for (si, server) in servers.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            for (xi, (x, _)) in steps.iter().enumerate() {
                let Some(r) = results.iter().find(|r| r.server == *server && r.x == *x) else {
                    continue;
                };
                let left = xi as f64 - 0.4 + si as f64 * width;
                let right = left + width * 0.9;
                if is_latency && let Some(p99) = r.latency_p99_ms {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(left, 0.0), (right, p99)],
                            color.mix(0.35).filled(),
                        )))
                        .map_err(|e| e.to_string())?;
                }
                if let Some(v) = metric(r) {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(left, 0.0), (right, v)],
                            color.filled(),
                        )))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
