//! One VM, two front ends, one state: a VM created through wispd is paused with `wisp ctl` and
//! its own REST socket says Paused; paused and resumed over REST, and `wisp ctl list` says so;
//! stopped through wispd, and its REST socket is gone with it.
#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::path::Path;
use std::time::Duration;
use wisp_test_support::curl;
use wispd_common::{api_socket_of, eventually, unikernel_config, Wispd};

/// The state the VM's own REST API reports.
fn rest_state(api: &Path) -> String {
    let (status, body) = curl(api, "GET", "/", None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["state"].as_str().unwrap().to_string()
}

/// The state `wisp ctl list` reports for `id`.
fn ctl_state(w: &Wispd, id: &str) -> String {
    let (ok, list, err) = w.ctl(&["list"]);
    assert!(ok, "{err}");
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
        .to_string();
    ["running", "paused", "halted", "failed"]
        .into_iter()
        .find(|s| line.contains(s))
        .unwrap_or_else(|| panic!("no state in {line}"))
        .to_string()
}

#[test]
fn pause_and_resume_through_either_front_end_show_in_both() {
    let w = Wispd::start("front-ends", 1, 64);
    let config = unikernel_config(&w.dir, "idle");
    let (ok, out, err) = w.ctl(&[
        "create",
        "--config",
        config.to_str().unwrap(),
        "--wait-boot",
    ]);
    assert!(ok, "{out}{err}");
    let id = out.split_whitespace().next().unwrap().to_string();
    let api = api_socket_of(&out);
    let api = api.as_path();
    assert_eq!(rest_state(api), "Running");
    assert_eq!(ctl_state(&w, &id), "running");

    // wisp ctl → the REST API sees it.
    assert!(w.ctl(&["pause", &id]).0);
    assert_eq!(rest_state(api), "Paused");
    assert_eq!(ctl_state(&w, &id), "paused");
    assert!(w.ctl(&["resume", &id]).0);
    assert_eq!(rest_state(api), "Running");

    // REST → wisp ctl sees it.
    let (status, body) = curl(api, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#));
    assert_eq!(status, 204, "{body}");
    assert_eq!(rest_state(api), "Paused");
    assert_eq!(ctl_state(&w, &id), "paused");
    let (status, body) = curl(api, "PATCH", "/vm", Some(r#"{"state": "Resumed"}"#));
    assert_eq!(status, 204, "{body}");
    assert_eq!(ctl_state(&w, &id), "running");

    // Stopped through wispd: the VM's own API goes with it.
    assert!(w.ctl(&["destroy", &id]).0);
    assert!(
        eventually(Duration::from_secs(5), || curl(api, "GET", "/", None).0
            == 0),
        "the REST API still answers after destroy"
    );
}
