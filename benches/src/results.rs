//! The results of one `wisp-bench` invocation: raw samples per suite and VMM plus the machine
//! they were measured on. Serialised as results.json; results.md and the plots are derived
//! from this and nothing else.

use crate::machine::MachineInfo;
use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode results as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{path} is not a wisp-bench results file: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub started_utc: String,
    pub runs: usize,
    pub machine: MachineInfo,
    pub suites: Vec<SuiteResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuiteResult {
    /// "cold", "api", "warm", "density", "linux".
    pub suite: String,
    pub outcome: SuiteOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum SuiteOutcome {
    Skipped { reason: String },
    Comparison(Comparison),
    Density(Density),
}

/// One metric's meaning, shared by every VMM in a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricDef {
    /// Key in each run's record, e.g. "first_line_us".
    pub key: String,
    /// Human name, e.g. "process start → first serial line".
    pub label: String,
    pub unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Microseconds,
    Kibibytes,
    /// Throughput, 10^6 bytes per second.
    MegabytesPerSecond,
    /// Requests per second.
    OpsPerSecond,
}

impl Unit {
    /// Whether more is better (throughput) rather than less (time, memory).
    pub fn is_rate(self) -> bool {
        matches!(self, Unit::MegabytesPerSecond | Unit::OpsPerSecond)
    }
}

/// The same metrics measured on several VMMs with interleaved runs (A B A B …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metrics: Vec<MetricDef>,
    pub vmms: Vec<VmmRuns>,
    /// How the numbers were taken, caveats, peers that were not found.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmmRuns {
    /// "wisp", "qemu-microvm", "firecracker".
    pub name: String,
    /// The command line, as run.
    pub command: String,
    /// One record per clean run: metric key → value. A metric a VMM cannot report is absent.
    pub runs: Vec<BTreeMap<String, f64>>,
    /// Runs that did not count, with the reason.
    pub failures: Vec<String>,
}

impl VmmRuns {
    pub fn new(name: &str, command: String) -> VmmRuns {
        VmmRuns {
            name: name.to_string(),
            command,
            runs: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// It ran and not one run counted: a VMM that does not work here, whose table would be
    /// missing without anyone noticing.
    pub fn failed_every_run(&self) -> bool {
        self.runs.is_empty() && !self.failures.is_empty()
    }

    /// One line for a VMM that failed every run: how many failures, and the first of them
    /// (the later ones are almost always the same).
    pub fn every_run_failed(&self) -> Option<String> {
        if !self.failed_every_run() {
            return None;
        }
        Some(format!(
            "{}: every run failed ({} failed, none counted); the first: {}",
            self.name,
            self.failures.len(),
            self.failures[0]
        ))
    }

    pub fn samples(&self, key: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| r.get(key).copied())
            .collect()
    }

    pub fn summary(&self, key: &str) -> Option<Summary> {
        Summary::of(&self.samples(key))
    }
}

/// Create time and host memory as the number of running VMs grows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Density {
    pub vmm: String,
    pub command: String,
    pub target_vms: usize,
    /// Why the suite stopped before `target_vms`, if it did.
    pub stopped_early: Option<String>,
    /// One per VM started, in order.
    pub creates: Vec<CreatePoint>,
    /// Memory sampled at checkpoints (1, 2, 5, 10, 20, 50, …).
    pub memory: Vec<MemoryPoint>,
    pub notes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatePoint {
    /// VMs already running when this one was started.
    pub running_before: usize,
    /// Process start → the guest's first line.
    pub create_us: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    pub running: usize,
    /// Sum of the VMM processes' PSS (/proc/PID/smaps_rollup).
    pub total_pss_kib: u64,
    /// Host MemTotal − MemAvailable, minus the same before the first VM.
    pub host_used_delta_kib: i64,
}

impl SuiteResult {
    /// [`VmmRuns::every_run_failed`] for each VMM of this suite that failed every run.
    pub fn vmms_that_failed_every_run(&self) -> Vec<String> {
        match &self.outcome {
            SuiteOutcome::Comparison(c) => c
                .vmms
                .iter()
                .filter_map(VmmRuns::every_run_failed)
                .collect(),
            SuiteOutcome::Skipped { .. } | SuiteOutcome::Density(_) => Vec::new(),
        }
    }
}

impl Results {
    pub fn write_json(&self, path: &Path) -> Result<(), ResultsError> {
        let text = serde_json::to_string_pretty(self).map_err(ResultsError::Encode)?;
        fs::write(path, text + "\n").map_err(|source| ResultsError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn read_json(path: &Path) -> Result<Results, ResultsError> {
        let text = fs::read_to_string(path).map_err(|source| ResultsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ResultsError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A results value with every kind of suite outcome, for the writers' tests.
    pub fn sample_results() -> Results {
        let metrics = vec![
            MetricDef {
                key: "first_line_us".into(),
                label: "process start → first serial line".into(),
                unit: Unit::Microseconds,
            },
            MetricDef {
                key: "max_rss_kib".into(),
                label: "peak RSS".into(),
                unit: Unit::Kibibytes,
            },
        ];
        let run = |t: f64, rss: f64| {
            BTreeMap::from([
                ("first_line_us".to_string(), t),
                ("max_rss_kib".to_string(), rss),
            ])
        };
        let mut wisp = VmmRuns::new("wisp", "wisp run --kernel k".into());
        wisp.runs = vec![run(40_000.0, 4096.0), run(42_000.0, 4100.0)];
        let mut qemu = VmmRuns::new("qemu-microvm", "qemu-system-x86_64 -M microvm".into());
        qemu.runs = vec![run(100_000.0, 40_000.0), run(110_000.0, 40_960.0)];
        qemu.failures.push("exited with status 1".into());
        Results {
            started_utc: "2026-11-25T13:00:00Z".into(),
            runs: 2,
            machine: MachineInfo {
                cpu_model: "Test CPU".into(),
                cpus: 2,
                mem_total_kib: 1 << 20,
                kernel: "Linux 6.1".into(),
                host_kvm: "kvm_pvm".into(),
                qemu_version: Some(
                    "QEMU emulator version 10.0.2 (/usr/bin/qemu-system-x86_64)".into(),
                ),
                firecracker_version: None,
                wisp_version: Some("wisp 0.1.0".into()),
                load_average: "0.50 0.40 0.30".into(),
            },
            suites: vec![
                SuiteResult {
                    suite: "cold".into(),
                    outcome: SuiteOutcome::Comparison(Comparison {
                        metrics,
                        vmms: vec![wisp, qemu],
                        notes: vec!["interleaved".into()],
                    }),
                },
                SuiteResult {
                    suite: "api".into(),
                    outcome: SuiteOutcome::Skipped {
                        reason: "wisp has no --api-sock flag".into(),
                    },
                },
                SuiteResult {
                    suite: "density".into(),
                    outcome: SuiteOutcome::Density(Density {
                        vmm: "wisp".into(),
                        command: "wisp run --cmdline echo".into(),
                        target_vms: 10,
                        stopped_early: None,
                        creates: (0..10)
                            .map(|i| CreatePoint {
                                running_before: i,
                                create_us: 40_000.0 + i as f64 * 100.0,
                            })
                            .collect(),
                        memory: vec![
                            MemoryPoint {
                                running: 1,
                                total_pss_kib: 3000,
                                host_used_delta_kib: 5000,
                            },
                            MemoryPoint {
                                running: 10,
                                total_pss_kib: 30_000,
                                host_used_delta_kib: 50_000,
                            },
                        ],
                        notes: vec![],
                    }),
                },
            ],
        }
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let results = sample_results();
        let dir = std::env::temp_dir().join(format!("wisp-bench-json-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        results.write_json(&path).unwrap();
        let back = Results::read_json(&path).unwrap();
        assert_eq!(back, results);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"status\": \"skipped\""), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reading_a_non_results_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("wisp-bench-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        fs::write(&path, "{\"hello\": 1}").unwrap();
        let err = Results::read_json(&path).unwrap_err();
        assert!(err.to_string().contains("not a wisp-bench results file"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_vmm_that_failed_every_run_is_one_line_with_its_first_error() {
        let mut fc = VmmRuns::new("firecracker", String::new());
        assert!(!fc.failed_every_run(), "no runs yet is not a failure");
        fc.failures = vec!["run 1: exited with status 1: no drives".into(); 20];
        fc.failures[1] = "run 2: something else".into();
        assert_eq!(
            fc.every_run_failed().as_deref(),
            Some(
                "firecracker: every run failed (20 failed, none counted); the first: run 1: \
                 exited with status 1: no drives"
            )
        );
        fc.runs.push(BTreeMap::new());
        assert_eq!(fc.every_run_failed(), None);

        let results = sample_results();
        // The sample's QEMU failed one run of three: not every run.
        assert!(results.suites[0].vmms_that_failed_every_run().is_empty());
        let mut suite = results.suites[0].clone();
        if let SuiteOutcome::Comparison(c) = &mut suite.outcome {
            c.vmms[1].runs.clear();
        }
        assert_eq!(
            suite.vmms_that_failed_every_run(),
            vec!["qemu-microvm: every run failed (1 failed, none counted); the first: exited with status 1"]
        );
    }

    #[test]
    fn samples_skip_runs_without_the_metric() {
        let mut v = VmmRuns::new("x", String::new());
        v.runs.push(BTreeMap::from([("a".to_string(), 1.0)]));
        v.runs.push(BTreeMap::new());
        assert_eq!(v.samples("a"), vec![1.0]);
        assert_eq!(v.summary("b"), None);
    }
}
