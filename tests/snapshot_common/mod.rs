//! The `wisp --api-sock` process the snapshot tests drive (tests/snapshot.rs,
//! tests/snapshot_diff.rs): started on a socket, configured and snapshotted over the REST
//! API, its guest's stdout read line by line.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, spawn_with_lines, unikernel};

pub const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// Hang guards only; no assertion is about speed.
pub const GUARD: Duration = Duration::from_secs(60);
/// What `blk` writes at the start of sector 1 (guest/src/virtio/blk.rs).
pub const BLK_MARKER: &[u8] = b"wisp-unikernel-was-here";

/// A running `wisp --api-sock`, its stdout lines on a channel.
pub struct Wisp {
    pub child: Child,
    pub sock: PathBuf,
    pub lines: mpsc::Receiver<String>,
}

impl Wisp {
    pub fn start(sock: &Path) -> Wisp {
        let mut cmd = Command::new(WISP);
        cmd.arg("--api-sock").arg(sock).stderr(Stdio::inherit());
        let (mut child, lines) = spawn_with_lines(cmd);
        let start = Instant::now();
        while UnixStream::connect(sock).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wisp --api-sock exited ({status}) before its socket accepted");
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

    pub fn put(&self, path: &str, body: &Value) -> (u16, String) {
        curl(&self.sock, "PUT", path, Some(&body.to_string()))
    }

    pub fn state(&self) -> String {
        let (status, body) = curl(&self.sock, "GET", "/", None);
        assert_eq!(status, 200, "{body}");
        let info: Value = serde_json::from_str(&body).unwrap();
        info["state"].as_str().unwrap().to_owned()
    }

    pub fn pause(&self) {
        let (status, body) = curl(&self.sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
        assert_eq!(status, 204, "{body}");
    }

    /// Boots the unikernel with `commands`, `vcpus` vCPUs, 32 MiB and `drives`.
    pub fn boot(&self, commands: &str, vcpus: u8, drives: &[Value]) {
        let boot = json!({"kernel_image_path": unikernel(), "boot_args": commands});
        assert_eq!(self.put("/boot-source", &boot).0, 204);
        let mc = json!({"vcpu_count": vcpus, "mem_size_mib": 32});
        assert_eq!(self.put("/machine-config", &mc).0, 204);
        for d in drives {
            let path = format!("/drives/{}", d["drive_id"].as_str().unwrap());
            let (status, body) = self.put(&path, d);
            assert_eq!(status, 204, "{body}");
        }
        let (status, body) = self.put("/actions", &json!({"action_type": "InstanceStart"}));
        assert_eq!(status, 204, "{body}");
    }

    /// Lines up to and including the first that contains `want`.
    pub fn wait_for_line(&self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + GUARD;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(want);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("guest never printed {want:?}; stdout was {seen:#?}"),
            }
        }
    }

    /// Every line printed so far, waiting `quiet` for stragglers.
    pub fn drain(&self, quiet: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            seen.push(line);
        }
        seen
    }

    pub fn snapshot(&self, dir: &Path) -> (u16, String) {
        self.put(
            "/snapshot/create",
            &json!({
                "snapshot_type": "Full",
                "snapshot_path": dir.join("vm.state"),
                "mem_file_path": dir.join("vm.mem"),
            }),
        )
    }

    pub fn load(&self, state: &Path, mem: &Path, resume: bool) -> (u16, String) {
        self.put(
            "/snapshot/load",
            &json!({
                "snapshot_path": state,
                "mem_backend": {"backend_type": "File", "backend_path": mem},
                "resume_vm": resume,
            }),
        )
    }

    /// Kills the VMM; returns the console lines it printed that were not read yet (all of
    /// them: the reader sees end-of-file once the process is gone).
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(GUARD) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numbers of `count: N` lines. A guest paused in the middle of printing a line finishes
/// it after the restore, in the new process: that line starts with the rest of "count".
pub fn counts(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.split_once(": "))
        .filter(|(word, _)| !word.is_empty() && "count".ends_with(word))
        .filter_map(|(_, n)| n.trim().parse().ok())
        .collect()
}

/// Asserts a refusal: status 400 and `want` in the message (the callers check the state).
pub fn refused((status, body): (u16, String), want: &str) {
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(want), "want {want:?} in {body}");
}
