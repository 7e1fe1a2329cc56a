//! Snapshots end to end with the Wisp unikernel on /dev/kvm and the real `wisp` binary: a
//! guest is paused and snapshotted over the REST API, its process killed, and the snapshot
//! restored in a new process (`PUT /snapshot/load`, `wisp run --restore`), where the guest
//! goes on from where it stopped. Bad requests are refused with their reason and leave the
//! VMM as it was.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod snapshot_common;

use serde_json::json;
use snapshot_common::{counts, refused, Wisp, BLK_MARKER, GUARD, WISP};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, spawn_with_lines, unikernel, Scratch};

/// A `count` guest snapshotted into `dir`; returns the last count it printed.
fn snapshot_a_counting_guest(scratch: &Scratch, dir: &Path) -> u64 {
    let wisp = Wisp::start(&scratch.join("first.sock"));
    wisp.boot("count", 1, &[]);
    wisp.wait_for_line("count: 3");
    wisp.pause();
    let mut before = wisp.drain(Duration::from_millis(300));
    let (status, body) = wisp.snapshot(dir);
    assert_eq!(status, 204, "{body}");
    // Every line the paused guest printed, however late the console reader got it.
    before.extend(wisp.kill());
    counts(&before).last().copied().unwrap_or(3)
}

#[test]
fn a_counting_guest_goes_on_from_where_it_stopped_in_a_new_process() {
    let scratch = Scratch::new("snap-count");
    let last = snapshot_a_counting_guest(&scratch, &scratch.join(""));
    let wisp = Wisp::start(&scratch.join("second.sock"));
    let (status, body) = wisp.load(&scratch.join("vm.state"), &scratch.join("vm.mem"), false);
    assert_eq!(status, 204, "{body}");
    assert_eq!(wisp.state(), "Paused");
    // Loaded paused: the guest does not run until it is resumed.
    assert!(counts(&wisp.drain(Duration::from_millis(300))).is_empty());
    let (status, body) = curl(&wisp.sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
    assert_eq!(status, 204, "{body}");
    let after = counts(&wisp.wait_for_line(&format!("count: {}", last + 2)));
    assert_eq!(
        after.first().copied(),
        Some(last + 1),
        "the restored guest's counts: {after:?}"
    );
    assert_eq!(wisp.state(), "Running");
}

#[test]
fn wisp_run_restore_resumes_a_snapshot_directory() {
    let scratch = Scratch::new("snap-run");
    let dir = scratch.join("snap");
    std::fs::create_dir_all(&dir).unwrap();
    let last = snapshot_a_counting_guest(&scratch, &dir);
    let mut cmd = Command::new(WISP);
    cmd.arg("run").arg("--restore").arg(&dir);
    let (mut child, lines) = spawn_with_lines(cmd);
    let deadline = Instant::now() + GUARD;
    let mut seen = Vec::new();
    while !counts(&seen).contains(&(last + 2)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no count from the restored guest: {seen:#?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(counts(&seen).first().copied(), Some(last + 1), "{seen:#?}");
}

#[test]
fn a_block_write_after_restore_reaches_the_disk_file_with_two_vcpus() {
    let scratch = Scratch::new("snap-blk");
    let disk = scratch.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let drive = json!({"drive_id": "d0", "path_on_host": disk, "is_root_device": false,
                       "is_read_only": false});
    let wisp = Wisp::start(&scratch.join("first.sock"));
    // The guest drives the disk (DRIVER_OK, queues live), then waits for a restore before it
    // writes.
    wisp.boot("blk-restored", 2, &[drive]);
    wisp.wait_for_line("await-restore: waiting");
    wisp.pause();
    let (status, body) = wisp.snapshot(&scratch.join(""));
    assert_eq!(status, 204, "{body}");
    wisp.kill();
    let on_disk = std::fs::read(&disk).unwrap();
    assert!(!on_disk.windows(BLK_MARKER.len()).any(|w| w == BLK_MARKER));

    let wisp = Wisp::start(&scratch.join("second.sock"));
    let (status, body) = wisp.load(&scratch.join("vm.state"), &scratch.join("vm.mem"), true);
    assert_eq!(status, 204, "{body}");
    let seen = wisp.wait_for_line("blk: write");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("restored: generation=0x")),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|l| l == "blk: write ok"), "{seen:#?}");
    let on_disk = std::fs::read(&disk).unwrap();
    assert_eq!(&on_disk[512..512 + BLK_MARKER.len()], BLK_MARKER);
}

#[test]
fn vsock_connects_to_the_host_again_after_restore() {
    let scratch = Scratch::new("snap-vsock");
    let uds = scratch.join("v.sock");
    let wisp = Wisp::start(&scratch.join("first.sock"));
    let vsock = json!({"guest_cid": 3, "uds_path": uds});
    assert_eq!(wisp.put("/vsock", &vsock).0, 204);
    wisp.boot("await-restore vsock", 1, &[]);
    wisp.wait_for_line("await-restore: waiting");
    wisp.pause();
    let (status, body) = wisp.snapshot(&scratch.join(""));
    assert_eq!(status, 204, "{body}");
    wisp.kill();

    // The restored VM reopens its vsock socket at the saved path, and the guest's
    // connections to host port 1234 land on `<uds>_1234` again.
    let listener = UnixListener::bind(scratch.join("v.sock_1234")).unwrap();
    let host = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(GUARD)).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream).write_all(b"hello from the host\n").unwrap();
        line
    });
    let wisp = Wisp::start(&scratch.join("second.sock"));
    let (status, body) = wisp.load(&scratch.join("vm.state"), &scratch.join("vm.mem"), true);
    assert_eq!(status, 204, "{body}");
    let seen = wisp.wait_for_line("vsock: closed");
    assert_eq!(host.join().unwrap(), "hello from the unikernel\n");
    assert!(
        seen.iter().any(|l| l == "vsock: got hello from the host"),
        "{seen:#?}"
    );
}

#[test]
fn bad_snapshot_requests_are_refused_with_their_reason_and_change_nothing() {
    let scratch = Scratch::new("snap-bad");
    // A running VM cannot be snapshotted; a configured (here, running) VMM cannot load.
    let wisp = Wisp::start(&scratch.join("first.sock"));
    wisp.boot("count", 1, &[]);
    wisp.wait_for_line("count: 1");
    refused(wisp.snapshot(&scratch.join("")), "must be Paused");
    assert!(!scratch.join("vm.state").exists());
    assert_eq!(wisp.state(), "Running");
    wisp.pause();
    let (status, body) = wisp.snapshot(&scratch.join(""));
    assert_eq!(status, 204, "{body}");
    let (state, mem) = (scratch.join("vm.state"), scratch.join("vm.mem"));
    refused(wisp.load(&state, &mem, true), "already started");
    assert_eq!(wisp.state(), "Paused");
    wisp.kill();

    let fresh = Wisp::start(&scratch.join("second.sock"));
    let boot = json!({"kernel_image_path": unikernel(), "boot_args": "count"});
    assert_eq!(fresh.put("/boot-source", &boot).0, 204);
    refused(fresh.load(&state, &mem, true), "configured microVM");
    assert_eq!(fresh.state(), "Not started");
    drop(fresh);

    let wisp = Wisp::start(&scratch.join("third.sock"));
    let good = std::fs::read(&state).unwrap();
    let bad = |name: &str, bytes: &[u8]| {
        let path = scratch.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let truncated = bad("truncated.state", &good[..good.len() - 100]);
    refused(wisp.load(&truncated, &mem, true), "truncated");
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let corrupt = bad("corrupt.state", &flipped);
    refused(wisp.load(&corrupt, &mem, true), "corrupt");
    let mut other = good.clone();
    other[8..12].copy_from_slice(&99u32.to_le_bytes());
    let other = bad("other.state", &other);
    refused(wisp.load(&other, &mem, true), "format version 99");
    let not_a_snapshot = bad("config.json", b"{\"boot-source\": {}}");
    refused(
        wisp.load(&not_a_snapshot, &mem, true),
        "not a Wisp snapshot",
    );
    let short_mem = scratch.join("short.mem");
    std::fs::copy(&mem, &short_mem).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&short_mem)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    refused(wisp.load(&state, &short_mem, true), "holds 16777216 bytes");
    let uffd = json!({"snapshot_path": state,
                      "mem_backend": {"backend_type": "Uffd", "backend_path": mem}});
    refused(wisp.put("/snapshot/load", &uffd), "Uffd");
    let both = json!({"snapshot_path": state, "mem_file_path": mem,
                      "mem_backend": {"backend_type": "File", "backend_path": mem}});
    refused(wisp.put("/snapshot/load", &both), "not both");
    // Nothing changed: the VMM is still fresh, and the good snapshot loads.
    assert_eq!(wisp.state(), "Not started");
    let (status, body) = wisp.load(&state, &mem, true);
    assert_eq!(status, 204, "{body}");
    wisp.wait_for_line("count: ");
    assert_eq!(wisp.state(), "Running");
}

#[test]
fn a_restored_guest_is_snapshotted_again_and_restored_again() {
    let scratch = Scratch::new("snap-again");
    let (first, second) = (scratch.join("first"), scratch.join("second"));
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    snapshot_a_counting_guest(&scratch, &first);
    // The restored guest's memory is the first memory file mapped MAP_PRIVATE: the second
    // snapshot must hold the pages it never wrote (from the file) as well as those it did.
    let wisp = Wisp::start(&scratch.join("second.sock"));
    let (status, body) = wisp.load(&first.join("vm.state"), &first.join("vm.mem"), true);
    assert_eq!(status, 204, "{body}");
    let seen = counts(&wisp.wait_for_line("count: "));
    let at = seen.last().copied().unwrap();
    wisp.wait_for_line(&format!("count: {}", at + 2));
    wisp.pause();
    let last = counts(&wisp.drain(Duration::from_millis(300)))
        .last()
        .copied()
        .unwrap_or(at + 2);
    let (status, body) = wisp.snapshot(&second);
    assert_eq!(status, 204, "{body}");
    wisp.kill();
    std::fs::remove_file(first.join("vm.mem")).unwrap();

    let wisp = Wisp::start(&scratch.join("third.sock"));
    let (status, body) = wisp.load(&second.join("vm.state"), &second.join("vm.mem"), true);
    assert_eq!(status, 204, "{body}");
    let after = counts(&wisp.wait_for_line(&format!("count: {}", last + 2)));
    assert_eq!(after.first().copied(), Some(last + 1), "{after:?}");
}
