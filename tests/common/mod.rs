//! Shared helpers for the end-to-end tests: run the real `wisp` binary on a real guest with a
//! deadline, and capture what it printed.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `wisp` binary under test.
pub fn wisp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wisp"))
}

/// The Wisp unikernel, built by build.rs.
pub fn unikernel() -> PathBuf {
    PathBuf::from(env!("WISP_UNIKERNEL"))
}

/// What a finished (or killed) `wisp` run left behind.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when the run was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn assert_success(&self) {
        assert_eq!(self.code(), Some(0), "wisp did not exit 0: {self:#?}");
    }
}

/// Runs `cmd` with `input` on stdin, killing it after `deadline`.
pub fn run_with_deadline(mut cmd: Command, input: &[u8], deadline: Duration) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wisp");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    // Keep stdin open (not EOF) until the guest is done: dropped with the child below.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(stdin);
    Outcome {
        status,
        stdout: String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned(),
    }
}

/// `wisp run --kernel KERNEL ARGS...`, 20 s deadline.
pub fn wisp_run(kernel: &Path, args: &[&str]) -> Outcome {
    let mut cmd = wisp();
    cmd.arg("run").arg("--kernel").arg(kernel).args(args);
    run_with_deadline(cmd, b"", Duration::from_secs(20))
}

/// A temporary file that is removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("wisp-test-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A scratch directory (`$TMPDIR/wisp-<name>-<pid>`), emptied first and removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("wisp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace with a tap device whose host side is 10.0.2.1/24.
pub struct NetNs {
    pub name: String,
    pub tap: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("wisp{tag}{}", std::process::id());
        let tap = format!("wtap{}", std::process::id() % 100_000);
        let ns = NetNs { name, tap };
        for args in [
            vec!["netns", "add", &ns.name],
            vec!["-n", &ns.name, "tuntap", "add", &ns.tap, "mode", "tap"],
            vec!["-n", &ns.name, "addr", "add", "10.0.2.1/24", "dev", &ns.tap],
            vec!["-n", &ns.name, "link", "set", &ns.tap, "up"],
        ] {
            let st = Command::new("ip")
                .args(&args)
                .status()
                .expect("ip (iproute2)");
            assert!(st.success(), "ip {args:?} failed");
        }
        ns
    }

    /// The MAC address of the tap's host side.
    pub fn host_mac(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat"])
            .arg(format!("/sys/class/net/{}/address", self.tap))
            .output()
            .expect("read the tap's address");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
