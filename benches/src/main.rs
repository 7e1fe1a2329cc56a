//! wisp-bench: boot-time benchmarking harness.

fn main() {}
