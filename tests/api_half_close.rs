//! Half-closed REST clients against the real `wisp --api-sock` (API thread under its seccomp
//! filter, a real VM): the real `nc -N -U` (netcat-openbsd) sends each request, shuts down its
//! write side at the end of its input, and must still print the answer — for the boot
//! source, for `InstanceStart` (which builds and boots the unikernel) and for pausing and
//! resuming its vCPUs.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, unikernel, Scratch};

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
const IDLE: &str = "idle: halting until the host stops this VM";
/// Hang guard only.
const GUARD: Duration = Duration::from_secs(30);

/// `printf REQUEST | nc -N -U SOCK`: what netcat printed.
fn netcat(sock: &Path, request: &str) -> String {
    let mut nc = Command::new("nc")
        .args(["-N", "-U"])
        .arg(sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("netcat-openbsd (nc) is installed: scripts/install-deps.sh");
    nc.stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let mut stdout = nc.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let end = Instant::now() + GUARD;
    while nc.try_wait().unwrap().is_none() {
        if Instant::now() >= end {
            nc.kill().unwrap();
            nc.wait().unwrap();
            panic!("nc -N -U did not finish within {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    reader.join().unwrap()
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn expect_status(answer: &str, status: &str) {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
        "expected {status}, got {answer:?}"
    );
}

struct Wisp(Child);

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn netcat_half_closing_after_each_request_drives_a_real_vm() {
    let dir = Scratch::new("api-half-close");
    let sock = dir.join("api.sock");
    let mut child = Command::new(WISP)
        .arg("--api-sock")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut wisp = Wisp(child);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + GUARD;
    while UnixStream::connect(&sock).is_err() {
        assert!(wisp.0.try_wait().unwrap().is_none(), "wisp exited");
        assert!(Instant::now() < end, "the API socket never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }

    let answer = netcat(&sock, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    expect_status(&answer, "200 OK");
    assert!(answer.contains("\"state\":\"Not started\""), "{answer}");
    let boot = serde_json::json!({
        "kernel_image_path": unikernel(),
        "boot_args": "idle",
    });
    let answer = netcat(&sock, &request("PUT", "/boot-source", &boot.to_string()));
    expect_status(&answer, "204 No Content");
    let start = r#"{"action_type": "InstanceStart"}"#;
    let answer = netcat(&sock, &request("PUT", "/actions", start));
    expect_status(&answer, "204 No Content");
    let end = Instant::now() + GUARD;
    loop {
        match lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(IDLE) => break,
            Ok(_) => {}
            Err(e) => panic!("the guest never went idle: {e}"),
        }
    }
    for (state, shown) in [("Paused", "Paused"), ("Resumed", "Running")] {
        let body = format!(r#"{{"state": "{state}"}}"#);
        let answer = netcat(&sock, &request("PATCH", "/vm", &body));
        expect_status(&answer, "204 No Content");
        let (status, info) = curl(&sock, "GET", "/", None);
        assert_eq!(status, 200);
        assert!(info.contains(&format!("\"state\":\"{shown}\"")), "{info}");
    }
    assert!(wisp.0.try_wait().unwrap().is_none(), "wisp exited");
}
