//! Per-device counters the VMM can flush as JSON (serde).
//!
//! Counters are atomics so the VMM can read them from any thread while the event loop updates
//! them; `snapshot()` gives a plain serde value.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of one virtio device.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
    interrupts: AtomicU64,
    throttled: AtomicU64,
    log_suppressed: AtomicU64,
}

/// A point-in-time copy of [`DeviceMetrics`], ready for `serde_json`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Requests (descriptor chains or packets) completed.
    pub requests: u64,
    /// Bytes the device wrote into guest memory (guest reads).
    pub bytes_read: u64,
    /// Bytes the device took from guest memory (guest writes).
    pub bytes_written: u64,
    /// Malformed chains, failed backend I/O, protocol violations by the guest.
    pub errors: u64,
    /// Interrupts raised towards the guest.
    pub interrupts: u64,
    /// Times a queue stopped because its rate limiter had no tokens left.
    pub throttled: u64,
    /// Guest-triggered log lines dropped by the log limiter.
    pub log_suppressed: u64,
}

impl DeviceMetrics {
    /// One request completed.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` bytes written into guest memory.
    pub fn read_bytes(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes taken from guest memory.
    pub fn written_bytes(&self, n: usize) {
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One failed request or guest protocol violation.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// One interrupt raised.
    pub fn interrupt(&self) {
        self.interrupts.fetch_add(1, Ordering::Relaxed);
    }

    /// A queue waits for its rate limiter.
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// A guest-triggered log line was dropped.
    pub fn log_suppressed(&self) {
        self.log_suppressed.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy of the counters (each counter is read atomically).
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            interrupts: self.interrupts.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            log_suppressed: self.log_suppressed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_serializes_counters_as_json() {
        let m = DeviceMetrics::default();
        m.request();
        m.error();
        m.read_bytes(512);
        let json = serde_json::to_string(&m.snapshot()).unwrap();
        assert_eq!(
            json,
            r#"{"requests":1,"bytes_read":512,"bytes_written":0,"errors":1,"interrupts":0,"throttled":0,"log_suppressed":0}"#
        );
    }
}
