//! virtio devices through the real `wisp` binary, driven by the Wisp unikernel's independent
//! virtio-mmio drivers: a disk image on the host, host entropy, a tap device in a network
//! namespace this test creates, and vsock to a host Unix socket.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;
use wisp_test_support::{run_with_deadline, unikernel, NetNs, Outcome, Scratch, TempFile};

/// The binary under test.
const WISP: &str = env!("CARGO_BIN_EXE_wisp");

fn boot(args: &[&str], cmdline: &str) -> Outcome {
    let mut cmd = Command::new(WISP);
    cmd.args(["run", "--cmdline", cmdline, "--kernel"])
        .arg(unikernel())
        .args(args);
    run_with_deadline(cmd, b"", Duration::from_secs(60))
}

fn disk_image(name: &str) -> TempFile {
    let mut image = vec![0u8; 1 << 20];
    image[..16].copy_from_slice(&(0x10u8..0x20).collect::<Vec<_>>());
    image[512..520].copy_from_slice(b"ORIGINAL");
    TempFile::new(name, &image)
}

fn has_line(out: &Outcome, line: &str) -> bool {
    out.stdout.lines().any(|l| l.trim_end() == line)
}

#[test]
fn guest_reads_and_writes_a_disk_and_the_host_file_changes() {
    let disk = disk_image("rw.img");
    let spec = format!("path={},id=wispdisk", disk.0.display());
    let out = boot(&["--disk", &spec, "--rng"], "noxs blk rng");
    out.assert_success();
    for line in [
        "noxs: 2 devices",
        "blk: capacity=2048 sectors",
        "blk: id=wispdisk",
        "blk: sector0=101112131415161718191a1b1c1d1e1f",
        "blk: write ok",
        "rng: ok",
    ] {
        assert!(has_line(&out, line), "missing {line:?}: {out:#?}");
    }
    let image = std::fs::read(&disk.0).unwrap();
    assert_eq!(&image[512..535], b"wisp-unikernel-was-here");
}

#[test]
fn a_read_only_disk_rejects_guest_writes_and_stays_unchanged() {
    let disk = disk_image("ro.img");
    let spec = format!("path={},ro,id=wispdisk", disk.0.display());
    let out = boot(&["--disk", &spec], "blk");
    out.assert_success();
    assert!(has_line(&out, "blk: read-only"), "{out:#?}");
    assert!(has_line(&out, "blk: write rejected"), "{out:#?}");
    assert_eq!(&std::fs::read(&disk.0).unwrap()[512..520], b"ORIGINAL");
}

#[test]
fn guest_gets_entropy_from_the_host() {
    let out = boot(&["--rng"], "rng");
    out.assert_success();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("rng: ") && l.len() == 5 + 64)
        .unwrap_or_else(|| panic!("no random bytes: {out:#?}"));
    assert_ne!(&line[5..], "0".repeat(64));
}

#[test]
fn guest_arps_the_host_through_a_tap_in_a_network_namespace() {
    let ns = NetNs::new("arp");
    let guest_mac = "52:54:00:aa:bb:01";
    let mut cmd = ns.command(WISP);
    cmd.args(["run", "--kernel"])
        .arg(unikernel())
        .args(["--net", &format!("tap={},mac={guest_mac}", ns.tap)])
        .args(["--cmdline", "net"]);
    let out = run_with_deadline(cmd, b"", Duration::from_secs(60));
    out.assert_success();
    assert!(has_line(&out, &format!("net: mac={guest_mac}")), "{out:#?}");
    let want = format!("net: arp reply from {}", ns.host_mac());
    assert!(has_line(&out, &want), "want {want:?}: {out:#?}");
}

#[test]
fn guest_opens_a_vsock_stream_to_a_host_unix_socket() {
    let dir = Scratch::new("vsock");
    let uds = dir.join("v.sock");
    // Guest-initiated connections to host port P land on `<uds>_P` (Firecracker's convention).
    let listener = UnixListener::bind(dir.join("v.sock_1234")).unwrap();
    let host = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(b"hello from the host\n").unwrap();
        line
    });
    let spec = format!("cid=3,uds={}", uds.display());
    let out = boot(&["--vsock", &spec], "vsock");
    let got = host.join().unwrap();
    out.assert_success();
    assert_eq!(got, "hello from the unikernel\n");
    for line in [
        "vsock: cid=3",
        "vsock: got hello from the host",
        "vsock: closed",
    ] {
        assert!(has_line(&out, line), "missing {line:?}: {out:#?}");
    }
}

#[test]
fn a_bad_disk_or_tap_is_one_clear_error() {
    let out = boot(&["--disk", "path=/nonexistent/disk.img"], "");
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("/nonexistent/disk.img"), "{out:#?}");
    let out = boot(&["--disk", "ro"], "");
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stderr.contains("missing path="), "{out:#?}");
    let out = boot(&["--net", "tap=wisp-no-such-tap-x,mac=zz"], "");
    assert_eq!(out.code(), Some(1), "{out:#?}");
}
