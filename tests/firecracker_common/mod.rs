//! What the Firecracker-compatibility tests share: a running `wisp --api-sock` driven with curl.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too
#![allow(dead_code)] // each test binary uses part of it

use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, spawn_with_lines, unikernel};

pub const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// Hang guards only; no assertion is about speed.
pub const GUARD: Duration = Duration::from_secs(60);
pub const MIB: u64 = 1 << 20;

/// A running `wisp --api-sock`, its stdout lines (the guest console) on a channel.
pub struct Wisp {
    pub child: Child,
    pub sock: PathBuf,
    pub lines: mpsc::Receiver<String>,
}

impl Wisp {
    pub fn start(sock: &Path, extra: &[&str]) -> Wisp {
        let mut cmd = Command::new(WISP);
        cmd.arg("--api-sock").arg(sock).args(extra);
        let (mut child, lines) = spawn_with_lines(cmd);
        let start = Instant::now();
        while UnixStream::connect(sock).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wisp exited ({status}) before its socket accepted");
            }
            assert!(start.elapsed() < GUARD, "the API socket never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
        Wisp {
            child,
            sock: sock.to_path_buf(),
            lines,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let text = body.map(Value::to_string);
        curl(&self.sock, method, path, text.as_deref())
    }

    pub fn ok(&self, method: &str, path: &str, body: &Value) {
        let (status, answer) = self.call(method, path, Some(body));
        assert_eq!(status, 204, "{method} {path} {body}: {answer}");
    }

    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn start_unikernel(&self, boot_args: &str, mem_mib: u32) {
        let kernel = unikernel();
        self.ok(
            "PUT",
            "/boot-source",
            &json!({"kernel_image_path": kernel, "boot_args": boot_args}),
        );
        self.ok(
            "PUT",
            "/machine-config",
            &json!({"vcpu_count": 1, "mem_size_mib": mem_mib}),
        );
        self.ok("PUT", "/actions", &json!({"action_type": "InstanceStart"}));
    }

    /// Waits for a console line containing `want`; returns it.
    pub fn wait_for(&self, want: &str) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return line,
                Ok(_) => {}
                Err(e) => panic!("no console line with {want:?}: {e}"),
            }
        }
    }

    /// The VMM process's resident memory (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kib: u64 = line
            .trim_start_matches("VmRSS:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kib * 1024
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
