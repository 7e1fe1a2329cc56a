//! End to end through the real `wisp` binary: `wisp --api-sock PATH` waits for configuration,
//! curl configures the Wisp unikernel and starts it, the guest's serial line appears on wisp's
//! stdout, and `GET /` reports the state.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, unikernel, Scratch};

/// The binary under test.
const WISP: &str = env!("CARGO_BIN_EXE_wisp");

const HELLO: &str = "hello from wisp unikernel";
/// Hang guards only (a broken build must fail, not hang); no assertion is about speed.
const SOCKET_GUARD: Duration = Duration::from_secs(30);
const GUEST_GUARD: Duration = Duration::from_secs(60);

/// A running `wisp --api-sock`, its stdout lines arriving on a channel.
struct Wisp {
    child: Child,
    sock: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Wisp {
    fn start(sock: &Path) -> Wisp {
        let mut child = Command::new(WISP)
            .arg("--api-sock")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        while UnixStream::connect(sock).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wisp --api-sock exited ({status}) before its socket accepted");
            }
            assert!(
                start.elapsed() < SOCKET_GUARD,
                "the API socket never accepted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Wisp {
            child,
            sock: sock.to_path_buf(),
            lines,
        }
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        curl(&self.sock, method, path, body)
    }

    fn state(&self) -> String {
        let (status, body) = self.curl("GET", "/", None);
        assert_eq!(status, 200, "{body}");
        let info: Value = serde_json::from_str(&body).unwrap();
        info["state"].as_str().unwrap().to_owned()
    }

    fn wait_for_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < GUEST_GUARD, "wisp did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// InstanceStart for a guest configured with `idle`, then waits until it has printed its
    /// line and halted: from then on it runs until wisp stops it.
    fn start_idle_guest(&self) {
        let (status, body) = self.curl("PUT", "/actions", Some(INSTANCE_START));
        assert_eq!(status, 204, "{body}");
        self.wait_for_line(HELLO);
        self.wait_for_line("idle: halting");
    }

    fn wait_for_line(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + GUEST_GUARD;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return seen,
                Ok(line) => seen.push(line),
                Err(_) => panic!("guest never printed {want:?}; stdout was {seen:#?}"),
            }
        }
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PUT /boot-source`'s body: the unikernel with `boot_args` (its commands).
fn unikernel_boot(boot_args: &str) -> String {
    json!({"kernel_image_path": unikernel(), "boot_args": boot_args}).to_string()
}

const INSTANCE_START: &str = r#"{"action_type": "InstanceStart"}"#;

/// `idle` on the unikernel's command line keeps it running until the host stops it, so the
/// state and the refusal of a second start are checked on a guest that is surely running.
#[test]
fn configure_and_start_the_unikernel_over_the_api() {
    let scratch = Scratch::new("api-start");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    assert_eq!(wisp.state(), "Not started");

    let boot = unikernel_boot("idle");
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    let mc = r#"{"vcpu_count": 1, "mem_size_mib": 32}"#;
    assert_eq!(wisp.curl("PUT", "/machine-config", Some(mc)).0, 204);
    let (status, config) = wisp.curl("GET", "/vm/config", None);
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["machine-config"]["mem_size_mib"], 32, "{config}");

    wisp.start_idle_guest();
    assert_eq!(wisp.state(), "Running");
    let (status, body) = wisp.curl("PUT", "/actions", Some(INSTANCE_START));
    assert_eq!(status, 400, "second InstanceStart: {body}");
    assert!(body.contains("already been started"), "{body}");
    assert_eq!(wisp.state(), "Running");
}

/// With nothing on its command line the unikernel prints its line and powers off: wisp, which
/// served the API until then, ends with status 0.
#[test]
fn wisp_exits_cleanly_when_the_guest_started_over_the_api_powers_off() {
    let scratch = Scratch::new("api-poweroff");
    let mut wisp = Wisp::start(&scratch.join("api.sock"));
    assert_eq!(
        wisp.curl("PUT", "/boot-source", Some(&unikernel_boot("")))
            .0,
        204
    );
    let (status, body) = wisp.curl("PUT", "/actions", Some(INSTANCE_START));
    assert_eq!(status, 204, "{body}");
    wisp.wait_for_line(HELLO);
    let status = wisp.wait_for_exit();
    assert_eq!(status.code(), Some(0), "wisp ended with {status}");
}

/// An `idle` guest (see above) drives the lifecycle deterministically. (The refusal of a
/// second start is checked above.)
#[test]
fn a_running_guest_is_paused_and_resumed_and_its_config_is_frozen() {
    let scratch = Scratch::new("api-pause");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let boot = unikernel_boot("idle");
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    wisp.start_idle_guest();

    let (status, body) = wisp.curl("PUT", "/boot-source", Some(&boot));
    assert_eq!(status, 400);
    assert!(
        body.contains("not allowed after the microVM started"),
        "{body}"
    );
    let mc = r#"{"vcpu_count": 1, "mem_size_mib": 64}"#;
    assert_eq!(wisp.curl("PUT", "/machine-config", Some(mc)).0, 400);

    assert_eq!(
        wisp.curl("PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).0,
        204
    );
    assert_eq!(wisp.state(), "Paused");
    assert_eq!(
        wisp.curl("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#)).0,
        204
    );
    assert_eq!(wisp.state(), "Running");
    let (status, config) = wisp.curl("GET", "/vm/config", None);
    assert_eq!(status, 200);
    assert!(config.contains("\"boot_args\":\"idle\""), "{config}");
}

/// SendCtrlAltDel queues the chord on the i8042 keyboard. The unikernel runs no keyboard
/// driver, so the keys pile up: once the controller's buffer cannot hold another chord the
/// action is refused with a fault message, and the VM runs on (a Linux guest that reads the
/// keyboard restarts instead: tests/linux_api.rs).
#[test]
fn send_ctrl_alt_del_is_refused_when_the_guest_never_reads_the_keyboard() {
    let scratch = Scratch::new("api-cad");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let cad = r#"{"action_type": "SendCtrlAltDel"}"#;
    let (status, body) = wisp.curl("PUT", "/actions", Some(cad));
    assert_eq!(status, 400, "before start: {body}");
    let boot = unikernel_boot("idle");
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    wisp.start_idle_guest();

    assert_eq!(wisp.curl("PUT", "/actions", Some(cad)).0, 204);
    assert_eq!(wisp.curl("PUT", "/actions", Some(cad)).0, 204);
    let (status, body) = wisp.curl("PUT", "/actions", Some(cad));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not reading the i8042"), "{body}");
    assert_eq!(wisp.state(), "Running");
}

/// PUT /metrics, then FlushMetrics appends a JSON line with counters per API request kind and
/// per device (the line wisp appends when the VM ends: tests/config_file.rs).
#[test]
fn flush_metrics_appends_api_and_device_counters() {
    let scratch = Scratch::new("api-metrics");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let metrics = scratch.join("metrics.json");
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    let (status, body) = wisp.curl("PUT", "/actions", Some(flush));
    assert_eq!(status, 400, "no metrics path yet: {body}");
    let put_metrics = json!({"metrics_path": metrics}).to_string();
    assert_eq!(wisp.curl("PUT", "/metrics", Some(&put_metrics)).0, 204);
    assert_eq!(wisp.curl("PUT", "/entropy", Some("{}")).0, 204);
    let boot = unikernel_boot("rng idle");
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    wisp.start_idle_guest();
    assert_eq!(wisp.curl("GET", "/nowhere", None).0, 404);
    assert_eq!(wisp.curl("PUT", "/actions", Some(flush)).0, 204);

    let text = std::fs::read_to_string(&metrics).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let endpoints = &line["api"]["endpoints"];
    assert_eq!(endpoints["put_metrics"]["count"], 1, "{line}");
    assert_eq!(endpoints["put_boot_source"]["count"], 1, "{line}");
    // FlushMetrics before /metrics failed; InstanceStart; this FlushMetrics is counted as it
    // is answered, so at least the first two.
    assert!(
        endpoints["put_actions"]["count"].as_u64().unwrap() >= 2,
        "{line}"
    );
    assert!(
        endpoints["put_actions"]["fails"].as_u64().unwrap() >= 1,
        "{line}"
    );
    assert_eq!(line["api"]["not_found"], 1, "{line}");
    assert!(
        line["devices"]["rng:rng"]["bytes_read"].as_u64().unwrap() > 0,
        "{line}"
    );
}

#[test]
fn instance_start_without_a_boot_source_is_refused_and_wisp_keeps_serving() {
    let scratch = Scratch::new("api-noboot");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let (status, body) = wisp.curl(
        "PUT",
        "/actions",
        Some(r#"{"action_type":"InstanceStart"}"#),
    );
    assert_eq!(status, 400);
    assert!(body.contains("no boot source"), "{body}");
    let (status, body) = wisp.curl(
        "PUT",
        "/machine-config",
        Some(r#"{"vcpu_count":0,"mem_size_mib":32}"#),
    );
    assert_eq!(status, 400);
    assert!(body.contains("vcpu_count 0 is out of range"), "{body}");
    assert_eq!(wisp.state(), "Not started");
}

#[test]
fn a_second_wisp_refuses_a_live_api_socket() {
    let scratch = Scratch::new("api-twice");
    let sock = scratch.join("api.sock");
    let first = Wisp::start(&sock);
    let out = Command::new(WISP)
        .arg("--api-sock")
        .arg(&sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(first.state(), "Not started");
}
