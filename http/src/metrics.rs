//! Counters of API requests, per endpoint (`put_machine_config`, …) and per kind of refusal.
//! The server updates them with relaxed atomics; the VMM takes a `snapshot()` and writes it as
//! part of its JSON metrics line on `FlushMetrics` (Firecracker's per-endpoint `count`/`fails`).

use crate::routes::{Endpoint, ROUTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared between the server's connections and the VMM.
#[derive(Debug)]
pub struct ApiMetrics {
    endpoints: Vec<EndpointCounters>,
    not_found: AtomicU64,
    method_not_allowed: AtomicU64,
    body_too_large: AtomicU64,
    read_timeouts: AtomicU64,
    connections: AtomicU64,
}

#[derive(Debug)]
struct EndpointCounters {
    endpoint: Endpoint,
    count: AtomicU64,
    fails: AtomicU64,
}

/// Requests seen on one endpoint and how many of them failed (any non-2xx answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCount {
    pub count: u64,
    pub fails: u64,
}

/// A point-in-time copy of `ApiMetrics`, ready to serialise.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMetricsSnapshot {
    pub endpoints: BTreeMap<String, EndpointCount>,
    pub not_found: u64,
    pub method_not_allowed: u64,
    pub body_too_large: u64,
    pub read_timeouts: u64,
    pub connections: u64,
}

/// Requests the server refused before they reached an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    ReadTimeout,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    /// All counters at zero, one pair per endpoint in `ROUTES`.
    pub fn new() -> Self {
        let endpoints = ROUTES
            .iter()
            .flat_map(|route| {
                route
                    .methods
                    .iter()
                    .map(move |&method| Endpoint { route, method })
            })
            .map(|endpoint| EndpointCounters {
                endpoint,
                count: AtomicU64::new(0),
                fails: AtomicU64::new(0),
            })
            .collect();
        ApiMetrics {
            endpoints,
            not_found: AtomicU64::new(0),
            method_not_allowed: AtomicU64::new(0),
            body_too_large: AtomicU64::new(0),
            read_timeouts: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    /// Counts one request on `endpoint`, and a failure when `ok` is false.
    pub fn record(&self, endpoint: Endpoint, ok: bool) {
        let found = self.endpoints.iter().find(|c| c.endpoint == endpoint);
        if let Some(c) = found {
            c.count.fetch_add(1, Ordering::Relaxed);
            if !ok {
                c.fails.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a request refused before routing finished.
    pub fn record_refusal(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::NotFound => &self.not_found,
            Refusal::MethodNotAllowed => &self.method_not_allowed,
            Refusal::BodyTooLarge => &self.body_too_large,
            Refusal::ReadTimeout => &self.read_timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an accepted connection.
    pub fn record_connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> ApiMetricsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ApiMetricsSnapshot {
            endpoints: self
                .endpoints
                .iter()
                .map(|c| {
                    let counts = EndpointCount {
                        count: load(&c.count),
                        fails: load(&c.fails),
                    };
                    (c.endpoint.key(), counts)
                })
                .collect(),
            not_found: load(&self.not_found),
            method_not_allowed: load(&self.method_not_allowed),
            body_too_large: load(&self.body_too_large),
            read_timeouts: load(&self.read_timeouts),
            connections: load(&self.connections),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::resolve;

    #[test]
    fn counts_per_endpoint_and_failures() {
        let m = ApiMetrics::new();
        let (put, _) = resolve("PUT", "/machine-config").unwrap();
        let (get, _) = resolve("GET", "/machine-config").unwrap();
        m.record(put, true);
        m.record(put, false);
        m.record(get, true);
        m.record_refusal(Refusal::NotFound);
        let s = m.snapshot();
        assert_eq!(
            s.endpoints["put_machine_config"],
            EndpointCount { count: 2, fails: 1 }
        );
        assert_eq!(
            s.endpoints["get_machine_config"],
            EndpointCount { count: 1, fails: 0 }
        );
        assert_eq!(
            s.endpoints["patch_machine_config"],
            EndpointCount::default()
        );
        assert_eq!(s.not_found, 1);
        let line = serde_json::to_string(&s).unwrap();
        assert!(
            line.contains("\"put_drives\":{\"count\":0,\"fails\":0}"),
            "{line}"
        );
    }
}
