//! End to end through the real `wisp` binary: `wisp --api-sock PATH` waits for configuration,
//! curl configures the Wisp unikernel and starts it, the guest's serial line appears on wisp's
//! stdout, and `GET /` reports the state.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::Scratch;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HELLO: &str = "hello from wisp unikernel";
/// Hang guards only (a broken build must fail, not hang); no assertion is about speed.
const SOCKET_GUARD: Duration = Duration::from_secs(30);
const GUEST_GUARD: Duration = Duration::from_secs(60);

fn unikernel() -> PathBuf {
    // option_env!, not env!: this file must compile before the root build.rs sets the variable.
    match option_env!("WISP_UNIKERNEL") {
        Some(path) => PathBuf::from(path),
        None => {
            panic!("WISP_UNIKERNEL must be set at build time (the root build.rs builds guest/)")
        }
    }
}

/// A running `wisp --api-sock`, its stdout lines arriving on a channel.
struct Wisp {
    child: Child,
    sock: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Wisp {
    fn start(sock: &Path) -> Wisp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wisp"))
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
        serde_json_lite::parse(&body).state
    }

    fn wait_for_exit(&mut self) {
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < GUEST_GUARD,
                "wisp stopped answering but did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// `GET /`'s `state` without a JSON dependency in the root package.
mod serde_json_lite {
    pub struct Value {
        pub state: String,
    }

    pub fn parse(body: &str) -> Value {
        let key = "\"state\":\"";
        let at = body
            .find(key)
            .unwrap_or_else(|| panic!("no state in {body}"))
            + key.len();
        let end = body[at..].find('"').unwrap() + at;
        Value {
            state: body[at..end].to_string(),
        }
    }
}

fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "--unix-socket"])
        .arg(sock)
        .args(["-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://localhost{path}"));
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl must be installed (apt-get install -y curl)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}

fn json_path(p: &Path) -> String {
    // Paths here are ours (temp dir, build output): no quotes or backslashes to escape.
    format!("\"{}\"", p.display())
}

#[test]
fn configure_and_start_the_unikernel_over_the_api() {
    let scratch = Scratch::new("api-start");
    let mut wisp = Wisp::start(&scratch.0.join("api.sock"));
    assert_eq!(wisp.state(), "Not started");

    let boot = format!(
        r#"{{"kernel_image_path": {}, "boot_args": ""}}"#,
        json_path(&unikernel())
    );
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    let mc = r#"{"vcpu_count": 1, "mem_size_mib": 32}"#;
    assert_eq!(wisp.curl("PUT", "/machine-config", Some(mc)).0, 204);
    let (status, config) = wisp.curl("GET", "/vm/config", None);
    assert_eq!(status, 200);
    assert!(config.contains("\"mem_size_mib\":32"), "{config}");

    let start = r#"{"action_type": "InstanceStart"}"#;
    let (status, body) = wisp.curl("PUT", "/actions", Some(start));
    assert_eq!(status, 204, "{body}");
    wisp.wait_for_line(HELLO);

    // The guest may power off right after its line. While wisp still answers, the state and
    // the refusal of a second start must be right; once it stops serving, it must exit.
    let (status, body) = wisp.curl("GET", "/", None);
    // Refused connection, or the server still up for a moment after the VMM thread ended.
    let going_away =
        |status: u16, body: &str| status == 0 || (status == 500 && body.contains("not running"));
    if going_away(status, &body) {
        wisp.wait_for_exit();
        return;
    }
    assert_eq!(status, 200, "{body}");
    let state = serde_json_lite::parse(&body).state;
    assert!(state == "Running" || state == "Halted", "state {state}");
    let (status, body) = wisp.curl("PUT", "/actions", Some(start));
    assert!(
        status == 400 || going_away(status, &body),
        "second InstanceStart answered {status} {body}"
    );
}

/// `idle` on the unikernel's command line keeps it running until the host stops it, so the
/// lifecycle can be driven deterministically.
#[test]
fn a_running_guest_is_paused_and_resumed_and_its_config_is_frozen() {
    let scratch = Scratch::new("api-pause");
    let wisp = Wisp::start(&scratch.0.join("api.sock"));
    let boot = format!(
        r#"{{"kernel_image_path": {}, "boot_args": "idle"}}"#,
        json_path(&unikernel())
    );
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    let start = r#"{"action_type": "InstanceStart"}"#;
    let (status, body) = wisp.curl("PUT", "/actions", Some(start));
    assert_eq!(status, 204, "{body}");
    wisp.wait_for_line(HELLO);
    wisp.wait_for_line("idle: halting");
    assert_eq!(wisp.state(), "Running");

    let (status, body) = wisp.curl("PUT", "/actions", Some(start));
    assert_eq!(status, 400);
    assert!(body.contains("already been started"), "{body}");
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
    let wisp = Wisp::start(&scratch.0.join("api.sock"));
    let cad = r#"{"action_type": "SendCtrlAltDel"}"#;
    let (status, body) = wisp.curl("PUT", "/actions", Some(cad));
    assert_eq!(status, 400, "before start: {body}");
    let boot = format!(
        r#"{{"kernel_image_path": {}, "boot_args": "idle"}}"#,
        json_path(&unikernel())
    );
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(wisp.curl("PUT", "/actions", Some(start)).0, 204);
    wisp.wait_for_line("idle: halting");

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
    let wisp = Wisp::start(&scratch.0.join("api.sock"));
    let metrics = scratch.0.join("metrics.json");
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    let (status, body) = wisp.curl("PUT", "/actions", Some(flush));
    assert_eq!(status, 400, "no metrics path yet: {body}");
    let put_metrics = format!(r#"{{"metrics_path": {}}}"#, json_path(&metrics));
    assert_eq!(wisp.curl("PUT", "/metrics", Some(&put_metrics)).0, 204);
    assert_eq!(wisp.curl("PUT", "/entropy", Some("{}")).0, 204);
    let boot = format!(
        r#"{{"kernel_image_path": {}, "boot_args": "rng idle"}}"#,
        json_path(&unikernel())
    );
    assert_eq!(wisp.curl("PUT", "/boot-source", Some(&boot)).0, 204);
    let start = r#"{"action_type": "InstanceStart"}"#;
    assert_eq!(wisp.curl("PUT", "/actions", Some(start)).0, 204);
    wisp.wait_for_line("idle: halting");
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
    let wisp = Wisp::start(&scratch.0.join("api.sock"));
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
    let sock = scratch.0.join("api.sock");
    let first = Wisp::start(&sock);
    let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
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
