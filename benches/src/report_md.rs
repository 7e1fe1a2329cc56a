//! results.md: the tables people read. Every number in it comes from `Results`.

use crate::results::{Comparison, Density, Results, SuiteOutcome, Unit, VmmRuns};
use crate::stats::{ratio, Summary};
use std::fmt::Write as _;

/// The name of the VMM every peer is compared to.
pub const WISP: &str = "wisp";

pub fn render(results: &Results) -> String {
    let mut md = String::new();
    let m = &results.machine;
    let _ = writeln!(md, "# wisp-bench results\n");
    let _ = writeln!(
        md,
        "Started {} — {} runs per VMM, commands interleaved (A B A B …). \
         p99 is nearest-rank (with fewer than 100 runs it is the maximum).\n",
        results.started_utc, results.runs
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} ({} CPUs) |", cell(&m.cpu_model), m.cpus);
    let _ = writeln!(
        md,
        "| memory | {} |",
        format_value(m.mem_total_kib as f64, Unit::Kibibytes)
    );
    let _ = writeln!(md, "| kernel | {} |", cell(&m.kernel));
    let _ = writeln!(md, "| /dev/kvm | {} |", cell(&m.host_kvm));
    let _ = writeln!(md, "| load average at start | {} |", cell(&m.load_average));
    let _ = writeln!(
        md,
        "| QEMU | {} |",
        cell(m.qemu_version.as_deref().unwrap_or("not compared"))
    );
    let _ = writeln!(
        md,
        "| Firecracker | {} |",
        cell(m.firecracker_version.as_deref().unwrap_or("not compared"))
    );
    let _ = writeln!(
        md,
        "| wisp | {} |",
        cell(m.wisp_version.as_deref().unwrap_or("unknown"))
    );
    for suite in &results.suites {
        let _ = writeln!(md, "\n## {}\n", suite.suite);
        match &suite.outcome {
            SuiteOutcome::Skipped { reason } => {
                let _ = writeln!(md, "skipped: {reason}");
            }
            SuiteOutcome::Comparison(c) => render_comparison(&mut md, c),
            SuiteOutcome::Density(d) => render_density(&mut md, d),
        }
    }
    md
}

fn render_comparison(md: &mut String, c: &Comparison) {
    for note in &c.notes {
        let _ = writeln!(md, "- {note}");
    }
    for metric in &c.metrics {
        let rows: Vec<(&VmmRuns, Summary)> = c
            .vmms
            .iter()
            .filter_map(|v| v.summary(&metric.key).map(|s| (v, s)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n### {}\n", metric.label);
        let _ = writeln!(md, "| VMM | n | min | median | p99 | max |");
        let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|");
        for (vmm, s) in rows {
            let f = |v| format_value(v, metric.unit);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                vmm.name,
                s.n,
                f(s.min),
                f(s.median),
                f(s.p99),
                f(s.max)
            );
        }
    }
    render_ratios(md, c);
    if c.vmms.iter().any(|v| !v.failures.is_empty()) {
        let _ = writeln!(md, "\n### Runs that did not count\n");
        for vmm in &c.vmms {
            // A VMM that failed every run is one line: the count and its first error.
            if let Some(line) = vmm.every_run_failed() {
                let _ = writeln!(md, "- **{}**", cell(&line));
                continue;
            }
            for why in &vmm.failures {
                let _ = writeln!(md, "- {}: {}", vmm.name, cell(why));
            }
        }
    }
    let _ = writeln!(md, "\n### Commands\n");
    for vmm in &c.vmms {
        let _ = writeln!(md, "- {}: `{}`", vmm.name, vmm.command);
    }
}

/// Wisp's median over each peer's, per metric both measured.
fn render_ratios(md: &mut String, c: &Comparison) {
    let Some(wisp) = c.vmms.iter().find(|v| v.name == WISP) else {
        return;
    };
    let peers: Vec<&VmmRuns> = c.vmms.iter().filter(|v| v.name != WISP).collect();
    if peers.is_empty() {
        return;
    }
    let mut body = String::new();
    for metric in &c.metrics {
        let Some(w) = wisp.summary(&metric.key) else {
            continue;
        };
        let cells: Vec<String> = peers
            .iter()
            .map(|p| {
                match p
                    .summary(&metric.key)
                    .and_then(|s| ratio(w.median, s.median))
                {
                    Some(r) => format_ratio(r),
                    None => "—".to_string(),
                }
            })
            .collect();
        if cells.iter().all(|c| c == "—") {
            continue;
        }
        let _ = writeln!(body, "| {} | {} |", metric.label, cells.join(" | "));
    }
    if body.is_empty() {
        return;
    }
    let caption = if c.metrics.iter().all(|m| m.unit.is_rate()) {
        "above 1: Wisp is faster"
    } else if c.metrics.iter().any(|m| m.unit.is_rate()) {
        "times and sizes below 1, rates above 1: Wisp is faster or smaller"
    } else {
        "below 1: Wisp is faster or smaller"
    };
    let _ = writeln!(md, "\n### Wisp / peer, ratio of medians ({caption})\n");
    let header: Vec<String> = peers.iter().map(|p| format!("wisp / {}", p.name)).collect();
    let _ = writeln!(md, "| metric | {} |", header.join(" | "));
    let _ = writeln!(md, "|---|{}", "--:|".repeat(peers.len()));
    md.push_str(&body);
}

fn render_density(md: &mut String, d: &Density) {
    let _ = writeln!(
        md,
        "{} VMs of `{}` started one after another and kept running (target {}).",
        d.creates.len(),
        d.command,
        d.target_vms
    );
    if let Some(why) = &d.stopped_early {
        let _ = writeln!(md, "\n**Stopped early:** {why}");
    }
    for note in &d.notes {
        let _ = writeln!(md, "- {note}");
    }
    let us = |v| format_value(v, Unit::Microseconds);
    let kib = |v| format_value(v, Unit::Kibibytes);
    let _ = writeln!(
        md,
        "\n| running VMs | create time of this VM | median create so far | PSS total | PSS per VM | host used Δ per VM |"
    );
    let _ = writeln!(md, "|--:|--:|--:|--:|--:|--:|");
    for point in &d.memory {
        let upto: Vec<f64> = d
            .creates
            .iter()
            .take(point.running)
            .map(|c| c.create_us)
            .collect();
        let this = upto.last().copied().map_or("—".to_string(), us);
        let median = Summary::of(&upto).map_or("—".to_string(), |s| us(s.median));
        let n = point.running.max(1) as f64;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            point.running,
            this,
            median,
            kib(point.total_pss_kib as f64),
            kib(point.total_pss_kib as f64 / n),
            kib(point.host_used_delta_kib as f64 / n),
        );
    }
}

/// Times in µs/ms/s, sizes in KiB/MiB/GiB, with precision that fits the magnitude.
pub fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Microseconds if value.abs() < 1_000.0 => format!("{value:.1} µs"),
        Unit::Microseconds if value.abs() < 10_000_000.0 => format!("{:.2} ms", value / 1e3),
        Unit::Microseconds => format!("{:.2} s", value / 1e6),
        Unit::Kibibytes if value.abs() < 1024.0 => format!("{value:.0} KiB"),
        Unit::Kibibytes if value.abs() < 1024.0 * 1024.0 => format!("{:.1} MiB", value / 1024.0),
        Unit::Kibibytes => format!("{:.2} GiB", value / (1024.0 * 1024.0)),
        Unit::MegabytesPerSecond => format!("{value:.1} MB/s"),
        Unit::OpsPerSecond => format!("{value:.0} IOPS"),
    }
}

/// A ratio with two decimals, or two significant digits when it is small (0.00083, not 0.00).
pub fn format_ratio(r: f64) -> String {
    if r.is_finite() && r > 0.0 && r < 0.095 {
        let decimals = (-r.log10().floor()) as usize + 1;
        format!("{r:.decimals$}")
    } else {
        format!("{r:.2}")
    }
}

/// Text safe inside a table cell: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::tests::sample_results;

    #[test]
    fn tables_have_one_row_per_vmm_with_summaries() {
        let md = render(&sample_results());
        assert!(
            md.contains("| VMM | n | min | median | p99 | max |"),
            "{md}"
        );
        assert!(md.contains("|---|--:|--:|--:|--:|--:|"));
        // Two runs: 40 and 42 ms → median 41 ms, p99 = max = 42 ms.
        assert!(
            md.contains("| wisp | 2 | 40.00 ms | 41.00 ms | 42.00 ms | 42.00 ms |"),
            "{md}"
        );
        assert!(md.contains("| qemu-microvm | 2 | 100.00 ms | 105.00 ms | 110.00 ms | 110.00 ms |"));
        assert!(
            md.contains("| wisp | 2 | 4.0 MiB | 4.0 MiB | 4.0 MiB | 4.0 MiB |"),
            "{md}"
        );
    }

    #[test]
    fn ratio_table_divides_wisp_median_by_each_peer() {
        let md = render(&sample_results());
        assert!(md.contains("| metric | wisp / qemu-microvm |"), "{md}");
        // 41 / 105 = 0.39.
        assert!(
            md.contains("| process start → first serial line | 0.39 |"),
            "{md}"
        );
    }

    #[test]
    fn skipped_suites_and_failures_are_stated() {
        let md = render(&sample_results());
        assert!(
            md.contains("## api\n\nskipped: wisp has no --api-sock flag"),
            "{md}"
        );
        assert!(md.contains("- qemu-microvm: exited with status 1"));
        assert!(md.contains("| /dev/kvm | kvm_pvm |"));
        assert!(
            md.contains("| QEMU | QEMU emulator version 10.0.2 (/usr/bin/qemu-system-x86_64) |")
        );
        assert!(md.contains("| Firecracker | not compared |"), "{md}");
        assert!(md.contains("| load average at start | 0.50 0.40 0.30 |"));
    }

    #[test]
    fn a_vmm_that_failed_every_run_is_listed_once() {
        let mut results = sample_results();
        let SuiteOutcome::Comparison(cold) = &mut results.suites[0].outcome else {
            unreachable!()
        };
        cold.vmms[1].runs.clear();
        cold.vmms[1].failures = (1..=20)
            .map(|i| format!("run {i}/20: no bootable device"))
            .collect();
        let md = render(&results);
        assert!(
            md.contains(
                "- **qemu-microvm: every run failed (20 failed, none counted); the first: \
                 run 1/20: no bootable device**"
            ),
            "{md}"
        );
        assert!(!md.contains("run 2/20"), "{md}");
    }

    #[test]
    fn density_table_has_a_row_per_checkpoint() {
        let md = render(&sample_results());
        assert!(
            md.contains("| running VMs | create time of this VM |"),
            "{md}"
        );
        // 10 VMs: the 10th took 40.9 ms, median of 40.0..40.9 is 40.45 ms, 30000 KiB total.
        assert!(
            md.contains("| 10 | 40.90 ms | 40.45 ms | 29.3 MiB | 2.9 MiB | 4.9 MiB |"),
            "{md}"
        );
    }

    #[test]
    fn values_are_formatted_by_magnitude() {
        assert_eq!(format_value(250.0, Unit::Microseconds), "250.0 µs");
        assert_eq!(format_value(42_920.0, Unit::Microseconds), "42.92 ms");
        assert_eq!(format_value(12_500_000.0, Unit::Microseconds), "12.50 s");
        assert_eq!(format_value(512.0, Unit::Kibibytes), "512 KiB");
        assert_eq!(format_value(4096.0, Unit::Kibibytes), "4.0 MiB");
        assert_eq!(
            format_value(3.0 * 1024.0 * 1024.0, Unit::Kibibytes),
            "3.00 GiB"
        );
        assert_eq!(format_value(93.96, Unit::MegabytesPerSecond), "94.0 MB/s");
        assert_eq!(format_ratio(0.39), "0.39");
        assert_eq!(format_ratio(1.5), "1.50");
        assert_eq!(format_ratio(0.000_834), "0.00083");
        assert_eq!(format_ratio(0.0087), "0.0087");
        assert_eq!(format_value(768.6, Unit::OpsPerSecond), "769 IOPS");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
