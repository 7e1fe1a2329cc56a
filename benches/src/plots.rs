//! SVG plots (plotters' SVG backend): per-VMM distributions of each metric as strip plots with
//! the median marked, and for the density suite create time and memory against running VMs.

use crate::results::{Comparison, Density, MetricDef, Unit};
use crate::stats::Summary;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("cannot draw {path}: {message}")]
pub struct PlotError {
    path: PathBuf,
    message: String,
}

const SIZE: (u32, u32) = (800, 480);
const PALETTE: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Draws one strip plot per metric of `c`; returns the files written.
pub fn comparison(dir: &Path, suite: &str, c: &Comparison) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    for metric in &c.metrics {
        let series: Vec<(&str, Vec<f64>)> = c
            .vmms
            .iter()
            .map(|v| (v.name.as_str(), v.samples(&metric.key)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let path = dir.join(format!("{suite}-{}.svg", metric.key));
        strip_plot(
            &path,
            &format!("{suite}: {}", metric.label),
            metric,
            &series,
        )
        .map_err(|message| PlotError {
            path: path.clone(),
            message,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Plot units: ms for times, MiB for sizes, rates as they are.
fn scaled(value: f64, unit: Unit) -> f64 {
    match unit {
        Unit::Microseconds => value / 1e3,
        Unit::Kibibytes => value / 1024.0,
        Unit::MegabytesPerSecond | Unit::OpsPerSecond => value,
    }
}

fn unit_label(unit: Unit) -> &'static str {
    match unit {
        Unit::Microseconds => "ms",
        Unit::Kibibytes => "MiB",
        Unit::MegabytesPerSecond => "MB/s",
        Unit::OpsPerSecond => "IOPS",
    }
}

/// A fixed, well-spread horizontal offset per sample (golden-ratio sequence), so the same
/// results always draw the same picture.
fn jitter(i: usize) -> f64 {
    ((i as f64 * 0.618_033_988_75) % 1.0 - 0.5) * 0.5
}

fn strip_plot(
    path: &Path,
    title: &str,
    metric: &MetricDef,
    series: &[(&str, Vec<f64>)],
) -> Result<(), String> {
    let values = || {
        series
            .iter()
            .flat_map(|(_, s)| s.iter())
            .map(|v| scaled(*v, metric.unit))
    };
    let max = values().fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let names: Vec<String> = series.iter().map(|(n, _)| n.to_string()).collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5_f64..(series.len() as f64 - 0.5), 0.0_f64..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(series.len().max(2) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit_label(metric.unit))
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, (_, samples)) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let x = index as f64;
        chart
            .draw_series(samples.iter().enumerate().map(|(i, v)| {
                Circle::new(
                    (x + jitter(i), scaled(*v, metric.unit)),
                    3,
                    color.mix(0.7).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        if let Some(s) = Summary::of(samples) {
            let median = scaled(s.median, metric.unit);
            chart
                .draw_series(LineSeries::new(
                    [(x - 0.35, median), (x + 0.35, median)],
                    BLACK.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// create-vs-running.svg and memory-vs-running.svg.
pub fn density(dir: &Path, d: &Density) -> Result<Vec<PathBuf>, PlotError> {
    let mut written = Vec::new();
    if !d.creates.is_empty() {
        let path = dir.join("density-create-vs-running.svg");
        let points: Vec<(f64, f64)> = d
            .creates
            .iter()
            .map(|c| (c.running_before as f64, c.create_us / 1e3))
            .collect();
        xy_plot(
            &path,
            "density: create time (process start → first line) vs running VMs",
            "ms",
            &[("create time", points)],
            false,
        )
        .map_err(|message| PlotError {
            path: path.clone(),
            message,
        })?;
        written.push(path);
    }
    if !d.memory.is_empty() {
        let path = dir.join("density-memory-vs-running.svg");
        let pss = d
            .memory
            .iter()
            .map(|m| (m.running as f64, m.total_pss_kib as f64 / 1024.0))
            .collect();
        let used = d
            .memory
            .iter()
            .map(|m| (m.running as f64, m.host_used_delta_kib as f64 / 1024.0))
            .collect();
        xy_plot(
            &path,
            "density: host memory vs running VMs",
            "MiB",
            &[
                ("PSS of all VMM processes", pss),
                ("host used (Δ MemAvailable)", used),
            ],
            true,
        )
        .map_err(|message| PlotError {
            path: path.clone(),
            message,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn xy_plot(
    path: &Path,
    title: &str,
    y_unit: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    lines: bool,
) -> Result<(), String> {
    let all = || series.iter().flat_map(|(_, s)| s.iter());
    let x_max = all().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_max = all().map(|p| p.1).fold(0.0_f64, f64::max);
    let y_min = all().map(|p| p.1).fold(0.0_f64, f64::min);
    let y_top = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0_f64..x_max * 1.05, y_min.min(0.0)..y_top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("running VMs")
        .y_desc(y_unit)
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let drawn = if lines {
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
        } else {
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new(*p, 3, color.mix(0.7).filled())),
            )
        };
        drawn
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample_results;
    use crate::results::SuiteOutcome;

    #[test]
    fn plots_are_written_as_non_empty_svg() {
        let dir = std::env::temp_dir().join(format!("wisp-bench-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let results = sample_results();
        let mut files = Vec::new();
        for suite in &results.suites {
            match &suite.outcome {
                SuiteOutcome::Comparison(c) => {
                    files.extend(comparison(&dir, &suite.suite, c).unwrap())
                }
                SuiteOutcome::Density(d) => files.extend(density(&dir, d).unwrap()),
                SuiteOutcome::Skipped { .. } => {}
            }
        }
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "cold-first_line_us.svg",
                "cold-max_rss_kib.svg",
                "density-create-vs-running.svg",
                "density-memory-vs-running.svg"
            ]
        );
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(text.starts_with("<svg"), "{}", file.display());
            assert!(
                text.contains("<circle") || text.contains("<polyline"),
                "{}",
                file.display()
            );
            assert!(text.trim_end().ends_with("</svg>"));
        }
        // The strip plot names the VMMs on its axis.
        let cold = std::fs::read_to_string(&files[0]).unwrap();
        assert!(cold.contains("qemu-microvm") && cold.contains("wisp"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
