//! Snapshots end to end with the Wisp unikernel on /dev/kvm and the real `wisp` binary: a
//! guest is paused and snapshotted over the REST API, its process killed, and the snapshot
//! restored in a new process (`PUT /snapshot/load`, `wisp run --restore`), where the guest
//! goes on from where it stopped. Bad requests are refused with their reason and leave the
//! VMM as it was.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, spawn_with_lines, unikernel, Scratch};

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// Hang guards only; no assertion is about speed.
const GUARD: Duration = Duration::from_secs(60);
/// What `blk` writes at the start of sector 1 (guest/src/virtio/blk.rs).
const BLK_MARKER: &[u8] = b"wisp-unikernel-was-here";

/// A running `wisp --api-sock`, its stdout lines on a channel.
struct Wisp {
    child: Child,
    sock: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Wisp {
    fn start(sock: &Path) -> Wisp {
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

    fn put(&self, path: &str, body: &Value) -> (u16, String) {
        curl(&self.sock, "PUT", path, Some(&body.to_string()))
    }

    fn state(&self) -> String {
        let (status, body) = curl(&self.sock, "GET", "/", None);
        assert_eq!(status, 200, "{body}");
        let info: Value = serde_json::from_str(&body).unwrap();
        info["state"].as_str().unwrap().to_owned()
    }

    fn pause(&self) {
        let (status, body) = curl(&self.sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#));
        assert_eq!(status, 204, "{body}");
    }

    /// Boots the unikernel with `commands`, `vcpus` vCPUs, 32 MiB and `drives`.
    fn boot(&self, commands: &str, vcpus: u8, drives: &[Value]) {
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
    fn wait_for_line(&self, want: &str) -> Vec<String> {
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
    fn drain(&self, quiet: Duration) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            seen.push(line);
        }
        seen
    }

    fn snapshot(&self, dir: &Path) -> (u16, String) {
        self.put(
            "/snapshot/create",
            &json!({
                "snapshot_type": "Full",
                "snapshot_path": dir.join("vm.state"),
                "mem_file_path": dir.join("vm.mem"),
            }),
        )
    }

    fn load(&self, state: &Path, mem: &Path, resume: bool) -> (u16, String) {
        self.put(
            "/snapshot/load",
            &json!({
                "snapshot_path": state,
                "mem_backend": {"backend_type": "File", "backend_path": mem},
                "resume_vm": resume,
            }),
        )
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
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
fn counts(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.split_once(": "))
        .filter(|(word, _)| !word.is_empty() && "count".ends_with(word))
        .filter_map(|(_, n)| n.trim().parse().ok())
        .collect()
}

/// A `count` guest snapshotted into `dir`; returns the last count it printed.
fn snapshot_a_counting_guest(scratch: &Scratch, dir: &Path) -> u64 {
    let wisp = Wisp::start(&scratch.join("first.sock"));
    wisp.boot("count", 1, &[]);
    wisp.wait_for_line("count: 3");
    wisp.pause();
    let before = wisp.drain(Duration::from_millis(300));
    let (status, body) = wisp.snapshot(dir);
    assert_eq!(status, 204, "{body}");
    let last = counts(&before).last().copied().unwrap_or(3);
    wisp.kill();
    last
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

/// Asserts a refusal: status 400 and `want` in the message (the callers check the state).
fn refused((status, body): (u16, String), want: &str) {
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(want), "want {want:?} in {body}");
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

/// Bytes the file at `path` has on disk (holes take none).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Lays the data extents of the sparse file `diff` over `base` (SEEK_DATA/SEEK_HOLE): the
/// merge a user of Diff snapshots makes.
fn lay_over(diff: &Path, base: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let from = std::fs::File::open(diff).unwrap();
    let to = std::fs::OpenOptions::new().write(true).open(base).unwrap();
    let len = from.metadata().unwrap().len() as i64;
    let mut at = 0i64;
    while at < len {
        // SAFETY: lseek on an fd this function owns; it only moves the file offset.
        let data = unsafe { libc::lseek(from.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data past `at`.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        let mut bytes = vec![0u8; (hole - data) as usize];
        from.read_exact_at(&mut bytes, data as u64).unwrap();
        to.write_all_at(&bytes, data as u64).unwrap();
        at = hole;
    }
}

#[test]
fn a_diff_snapshot_holds_only_what_changed_and_restores_over_its_base() {
    let scratch = Scratch::new("snap-diff");
    let (base, diff) = (scratch.join("base"), scratch.join("diff"));
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&diff).unwrap();
    let diff_body = json!({
        "snapshot_type": "Diff",
        "snapshot_path": diff.join("vm.state"),
        "mem_file_path": diff.join("vm.mem"),
    });

    // Without dirty page tracking a Diff is refused.
    let plain = Wisp::start(&scratch.join("plain.sock"));
    plain.boot("count", 1, &[]);
    plain.wait_for_line("count: 1");
    plain.pause();
    refused(
        plain.put("/snapshot/create", &diff_body),
        "track_dirty_pages",
    );
    assert!(!diff.join("vm.mem").exists());
    plain.kill();

    let wisp = Wisp::start(&scratch.join("first.sock"));
    let boot = json!({"kernel_image_path": unikernel(), "boot_args": "count"});
    assert_eq!(wisp.put("/boot-source", &boot).0, 204);
    let mc = json!({"vcpu_count": 1, "mem_size_mib": 32, "track_dirty_pages": true});
    assert_eq!(wisp.put("/machine-config", &mc).0, 204);
    let start = json!({"action_type": "InstanceStart"});
    assert_eq!(wisp.put("/actions", &start).0, 204);
    let at_line = wisp.wait_for_line("count: at ");
    let counter = at_line.last().unwrap().rsplit("0x").next().unwrap();
    let counter = usize::from_str_radix(counter.trim(), 16).unwrap();
    wisp.wait_for_line("count: 2");
    wisp.pause();
    // No base yet: a Diff would miss everything written before the first snapshot.
    refused(
        wisp.put("/snapshot/create", &diff_body),
        "take a Full snapshot",
    );
    let (status, body) = wisp.snapshot(&base);
    assert_eq!(status, 204, "{body}");
    let resumed = json!({"state": "Resumed"});
    let (status, body) = curl(&wisp.sock, "PATCH", "/vm", Some(&resumed.to_string()));
    assert_eq!(status, 204, "{body}");
    let seen = counts(&wisp.wait_for_line("count: "));
    let at = seen.last().copied().unwrap();
    wisp.wait_for_line(&format!("count: {}", at + 3));
    wisp.pause();
    let last = counts(&wisp.drain(Duration::from_millis(300)))
        .last()
        .copied()
        .unwrap_or(at + 3);
    let (status, body) = wisp.put("/snapshot/create", &diff_body);
    assert_eq!(status, 204, "{body}");
    wisp.kill();

    // The diff is the guest's size but holds only the few pages written since the base.
    let (base_mem, diff_mem) = (base.join("vm.mem"), diff.join("vm.mem"));
    assert_eq!(std::fs::metadata(&diff_mem).unwrap().len(), 32 << 20);
    let (base_bytes, diff_bytes) = (allocated(&base_mem), allocated(&diff_mem));
    eprintln!("base memory file {base_bytes} bytes on disk, diff {diff_bytes}");
    assert!(
        diff_bytes > 0 && diff_bytes * 2 < base_bytes,
        "diff {diff_bytes} bytes on disk, base {base_bytes}"
    );
    // The counter's page is in it, with a count past the base's.
    let word = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        u64::from_le_bytes(bytes[counter..counter + 8].try_into().unwrap())
    };
    assert!(
        word(&diff_mem) >> 12 >= last,
        "{} < {last}",
        word(&diff_mem) >> 12
    );
    assert!(word(&base_mem) >> 12 < last);

    // Laid over (a copy of) the base, it restores the guest as it was at the diff.
    let merged = scratch.join("merged.mem");
    std::fs::copy(&base_mem, &merged).unwrap();
    lay_over(&diff_mem, &merged);
    let wisp = Wisp::start(&scratch.join("second.sock"));
    let (status, body) = wisp.load(&diff.join("vm.state"), &merged, true);
    assert_eq!(status, 204, "{body}");
    let after = counts(&wisp.wait_for_line(&format!("count: {}", last + 2)));
    assert_eq!(after.first().copied(), Some(last + 1), "{after:?}");
}

/// A balloon's state goes with the snapshot: the restored VM reports the target and size it
/// had, its guest follows a new target, and the statistics timer runs again (the buffer the
/// device held is handed back, so fresh numbers arrive).
#[test]
fn a_balloon_keeps_its_target_size_and_statistics_across_a_restore() {
    let scratch = Scratch::new("snap-balloon");
    let wisp = Wisp::start(&scratch.join("first.sock"));
    let balloon = json!({"amount_mib": 8, "deflate_on_oom": false, "stats_polling_interval_s": 1});
    assert_eq!(wisp.put("/balloon", &balloon).0, 204);
    let boot = json!({"kernel_image_path": unikernel(), "boot_args": "balloon"});
    assert_eq!(wisp.put("/boot-source", &boot).0, 204);
    let mc = json!({"vcpu_count": 1, "mem_size_mib": 64});
    assert_eq!(wisp.put("/machine-config", &mc).0, 204);
    let start = json!({"action_type": "InstanceStart"});
    assert_eq!(wisp.put("/actions", &start).0, 204);
    wisp.wait_for_line("balloon: actual=2048 pages");
    let patch = |w: &Wisp, mib: u32| {
        let body = json!({"amount_mib": mib}).to_string();
        let (status, body) = curl(&w.sock, "PATCH", "/balloon", Some(&body));
        assert_eq!(status, 204, "{body}");
    };
    let stats = |w: &Wisp| -> Value {
        let (status, body) = curl(&w.sock, "GET", "/balloon/statistics", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    // Statistics at 8 MiB, then after the inflate to 16 (the guest's free memory less).
    let deadline = Instant::now() + GUARD;
    let free_at_8 = loop {
        let now = stats(&wisp);
        if let (Some(free), true) = (now["free_memory"].as_u64(), now["actual_mib"] == 8) {
            break free;
        }
        assert!(Instant::now() < deadline, "{now}");
        std::thread::sleep(Duration::from_millis(50));
    };
    patch(&wisp, 16);
    wisp.wait_for_line("balloon: actual=4096 pages");
    let free_at_16 = loop {
        let now = stats(&wisp);
        if let Some(free) = now["free_memory"].as_u64() {
            if now["actual_mib"] == 16 && free < free_at_8 {
                break free;
            }
        }
        assert!(Instant::now() < deadline, "{now}");
        std::thread::sleep(Duration::from_millis(50));
    };
    wisp.pause();
    let (status, body) = wisp.snapshot(&scratch.join(""));
    assert_eq!(status, 204, "{body}");
    wisp.kill();

    let wisp = Wisp::start(&scratch.join("second.sock"));
    let (status, body) = wisp.load(&scratch.join("vm.state"), &scratch.join("vm.mem"), true);
    assert_eq!(status, 204, "{body}");
    let restored = stats(&wisp);
    assert_eq!(restored["target_mib"], 16, "{restored}");
    assert_eq!(restored["actual_mib"], 16, "{restored}");
    assert_eq!(
        restored["free_memory"].as_u64(),
        Some(free_at_16),
        "{restored}"
    );
    let (status, body) = curl(&wisp.sock, "GET", "/balloon", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"amount_mib\":16"), "{body}");
    // The restored guest deflates to a new target and the next statistics poll says so.
    patch(&wisp, 4);
    wisp.wait_for_line("balloon: actual=1024 pages");
    let deadline = Instant::now() + GUARD;
    loop {
        let now = stats(&wisp);
        if now["free_memory"].as_u64() > Some(free_at_16 + (8 << 20)) {
            assert_eq!(now["actual_mib"], 4, "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "statistics never moved: {now}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
