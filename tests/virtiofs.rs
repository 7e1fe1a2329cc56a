//! virtio-fs through the real `wisp` binary on this host's /dev/kvm, with a real virtiofsd: a
//! VM with `--fs` starts (the vhost-user handshake and memory table happen before the guest
//! runs) and ends cleanly; bad input (missing socket, a socket that is not vhost-user, a tag
//! over 36 bytes, two shares with one tag) is a clear error and no VM starts; `PUT /fs/{id}`
//! validates the same way. The guest is the unikernel (it does not drive virtio-fs; Linux
//! guests do in tests/linux_virtiofs.rs).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wisp_test_support::{curl, run_with_deadline, unikernel, Outcome, Scratch};

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// What the unikernel prints: present only if a VM ran.
const GUEST_LINE: &str = "hello from wisp unikernel";

/// virtiofsd in the test form, killed on drop.
struct Virtiofsd(Child);

impl Virtiofsd {
    fn start(dir: &Scratch) -> (Virtiofsd, PathBuf) {
        let share = dir.join("share");
        std::fs::create_dir_all(&share).unwrap();
        let socket = dir.join("vfs.sock");
        let child = Command::new(wisp_test_support::virtiofsd())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&share)
            .args([
                "--cache",
                "auto",
                "--sandbox",
                "none",
                "--log-level",
                "error",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        (Virtiofsd(child), socket)
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wisp_run(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(WISP);
    cmd.arg("run")
        .arg("--kernel")
        .arg(unikernel())
        .args(["--cmdline", ""])
        .args(args);
    run_with_deadline(cmd, b"", Duration::from_secs(30))
}

fn refused(out: &Outcome, needle: &str) {
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.status.is_some(), "wisp hung: {out:#?}");
    assert!(out.stderr.contains(needle), "no {needle:?} in {out:#?}");
    assert!(!out.stdout.contains(GUEST_LINE), "a VM ran: {out:#?}");
}

#[test]
fn a_vm_with_a_share_starts_against_virtiofsd_and_ends_cleanly() {
    let dir = Scratch::new("vfs-run");
    let (mut daemon, socket) = Virtiofsd::start(&dir);
    let spec = format!("tag=share0,socket={}", socket.display());
    let out = wisp_run(&["--fs", &spec]);
    out.assert_success();
    assert!(out.stdout.contains(GUEST_LINE), "{out:#?}");
    // The frontend's exit closes the vhost-user connection, and virtiofsd ends with it: it
    // had a session with this VM.
    let start = Instant::now();
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "virtiofsd kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn mem_shared_alone_runs_a_vm_on_memfd_memory() {
    let out = wisp_run(&["--mem-shared"]);
    out.assert_success();
    assert!(out.stdout.contains(GUEST_LINE), "{out:#?}");
}

#[test]
fn a_missing_socket_is_refused_before_any_vm() {
    let dir = Scratch::new("vfs-missing");
    let spec = format!("tag=share0,socket={}", dir.join("none.sock").display());
    refused(&wisp_run(&["--fs", &spec]), "does not exist");
}

#[test]
fn a_socket_that_is_not_vhost_user_is_refused_before_any_vm() {
    let dir = Scratch::new("vfs-notvu");
    let path = dir.join("http.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let spec = format!("tag=share0,socket={}", path.display());
    refused(
        &wisp_run(&["--fs", &spec]),
        "does not answer as a vhost-user backend",
    );
    server.join().unwrap();
}

#[test]
fn a_tag_longer_than_36_bytes_is_refused_before_any_vm() {
    let dir = Scratch::new("vfs-tag");
    let (_daemon, socket) = Virtiofsd::start(&dir);
    let spec = format!("tag={},socket={}", "t".repeat(37), socket.display());
    refused(&wisp_run(&["--fs", &spec]), "1 to 36 bytes");
}

#[test]
fn two_shares_with_one_tag_are_refused_before_any_vm() {
    let dir = Scratch::new("vfs-twin");
    let (_daemon, socket) = Virtiofsd::start(&dir);
    let a = format!("tag=same,socket={}", socket.display());
    let b = format!("tag=same,socket={},id=other", socket.display());
    refused(
        &wisp_run(&["--fs", &a, "--fs", &b]),
        "is already used by fs",
    );
}

#[test]
fn put_fs_validates_and_shows_in_the_configuration() {
    let dir = Scratch::new("vfs-api");
    let (_daemon, socket) = Virtiofsd::start(&dir);
    let api = dir.join("api.sock");
    let mut child = Command::new(WISP)
        .arg("--api-sock")
        .arg(&api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&api).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "no API socket");
        std::thread::sleep(Duration::from_millis(10));
    }
    let body = |id: &str, tag: &str, sock: &Path| {
        format!(
            r#"{{"fs_id":"{id}","tag":"{tag}","socket":"{}","queue_size":256}}"#,
            sock.display()
        )
    };
    let (status, text) = curl(
        &api,
        "PUT",
        "/fs/root",
        Some(&body("root", "myfs", &socket)),
    );
    assert_eq!(status, 204, "{text}");
    let (status, text) = curl(&api, "PUT", "/fs/vol", Some(&body("vol", "myfs", &socket)));
    assert_eq!(status, 400);
    assert!(text.contains("already used by fs `root`"), "{text}");
    let long = "x".repeat(37);
    let (status, text) = curl(&api, "PUT", "/fs/vol", Some(&body("vol", &long, &socket)));
    assert_eq!(status, 400);
    assert!(text.contains("1 to 36 bytes"), "{text}");
    let missing = dir.join("missing.sock");
    let (status, text) = curl(&api, "PUT", "/fs/vol", Some(&body("vol", "v", &missing)));
    assert_eq!(status, 400);
    assert!(text.contains("does not exist"), "{text}");
    let (status, text) = curl(&api, "PUT", "/fs/other", Some(&body("vol", "v", &socket)));
    assert_eq!(status, 400, "{text}");
    let (status, text) = curl(&api, "GET", "/vm/config", None);
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["fs"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(config["fs"][0]["tag"], "myfs");
    assert_eq!(config["fs"][0]["queue_size"], 256);
    let _ = child.kill();
    let _ = child.wait();
}
