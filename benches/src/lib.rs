//! wisp-bench: the boot-time benchmarking harness. Measures Wisp and its peers (QEMU `-M
//! microvm`, Firecracker) on the same guest in the same run, interleaved, and writes
//! results.json (raw samples and the machine), results.md (tables) and SVG plots.

pub mod cli;
pub mod http_unix;
pub mod l1_timer;
pub mod launch;
pub mod machine;
pub mod peers;
pub mod plots;
pub mod report_md;
pub mod results;
pub mod setup;
pub mod stats;
pub mod suites;
