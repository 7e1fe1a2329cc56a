//! The suites. Each returns a `SuiteOutcome`: measurements, or a skip with its reason (an
//! interface that does not exist yet is a skip, never a made-up number).

pub mod api;
pub mod cold;
pub mod cold_jail;
pub mod density;
pub mod host_tsc;
pub mod linux;
pub mod snapshot;
pub mod snapshot_wispd;
pub mod virtio;
pub mod virtio_net;
pub mod virtio_vsock;
pub mod warm;

use crate::launch::Finished;
use crate::results::{MetricDef, Unit, VmmRuns};
use std::collections::BTreeMap;
use std::time::Duration;

/// Records a run of `record`'s VMM that did not count (`label`: "run 3/20") and says so on
/// stderr: in full for its first failure, and after that only once some run of it has
/// counted. A VMM that fails every run is one line here and one at the end of the suite
/// (main.rs), not a line per run.
pub fn run_failed(suite: &str, record: &mut VmmRuns, label: &str, why: &str) {
    let first = record.failures.is_empty();
    record.failures.push(format!("{label}: {why}"));
    if first || !record.runs.is_empty() {
        eprintln!("[{suite}] {label} {}: failed: {why}", record.name);
    }
}

pub fn metric(key: &str, label: &str, unit: Unit) -> MetricDef {
    MetricDef {
        key: key.to_string(),
        label: label.to_string(),
        unit,
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The metrics every launch yields: first line, Wisp's boot timer, exit (the outcome), gone
/// (every VMM process ended), peak RSS.
pub fn launch_record(f: &Finished) -> BTreeMap<String, f64> {
    let mut record = BTreeMap::new();
    if let Some(line) = f.first_line {
        record.insert("first_line_us".to_string(), micros(line));
    }
    if let Some(us) = f.boot_timer_us {
        record.insert("boot_timer_us".to_string(), us as f64);
    }
    record.insert("exit_us".to_string(), micros(f.exit));
    record.insert("gone_us".to_string(), micros(f.gone));
    record.insert("max_rss_kib".to_string(), f.max_rss_kib as f64);
    record
}
