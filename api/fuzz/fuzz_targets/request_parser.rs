//! Fuzzes the request-to-action step and the configuration store behind it: any method, path
//! and body must give an action or an error, never a panic. Input layout: one byte picks the
//! method, the path runs to the first newline, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_http::routes::parse_request;
use wisp_api::{HostLimits, VmResources, VmState};

const METHODS: [&str; 6] = ["GET", "PUT", "PATCH", "POST", "DELETE", "get"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(m) % METHODS.len()];
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    if let Ok(action) = parse_request(method, path, body) {
        for state in [VmState::NotStarted, VmState::Running] {
            let mut store = VmResources::new(HostLimits::default());
            let _ = store.apply(&action, state);
        }
    }
});
