//! Diff snapshots and device state end to end with the unikernel on /dev/kvm: a Diff holds
//! only the pages written since its base and restores laid over it, and is refused when it
//! could not be exact; a balloon's state goes with its snapshot.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod snapshot_common;

use serde_json::{json, Value};
use snapshot_common::{counts, refused, Wisp, GUARD};
use std::path::Path;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, unikernel, Scratch};

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

/// A VM restored with `track_dirty_pages` has its memory file as the base: a Diff right away
/// is taken; once a virtio device has used guest memory (a block write, done by the VMM, so
/// not in KVM's log) a Diff is refused with its reason and writes nothing.
#[test]
fn a_diff_after_device_activity_is_refused() {
    let scratch = Scratch::new("snap-diff-dev");
    let disk = scratch.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let drive = json!({"drive_id": "d0", "path_on_host": disk, "is_root_device": false,
                       "is_read_only": false});
    let wisp = Wisp::start(&scratch.join("first.sock"));
    // Commands run in order: the guest counts on after its write, so it can be paused.
    wisp.boot("blk-restored count", 1, &[drive]);
    wisp.wait_for_line("await-restore: waiting");
    wisp.pause();
    let (status, body) = wisp.snapshot(&scratch.join(""));
    assert_eq!(status, 204, "{body}");
    wisp.kill();

    let wisp = Wisp::start(&scratch.join("second.sock"));
    let load = json!({
        "snapshot_path": scratch.join("vm.state"),
        "mem_backend": {"backend_type": "File", "backend_path": scratch.join("vm.mem")},
        "track_dirty_pages": true,
    });
    let (status, body) = wisp.put("/snapshot/load", &load);
    assert_eq!(status, 204, "{body}");
    let diff = |name: &str| {
        json!({
            "snapshot_type": "Diff",
            "snapshot_path": scratch.join(format!("{name}.state")),
            "mem_file_path": scratch.join(format!("{name}.mem")),
        })
    };
    let (status, body) = wisp.put("/snapshot/create", &diff("idle"));
    assert_eq!(status, 204, "{body}");
    let (status, body) = curl(&wisp.sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
    assert_eq!(status, 204, "{body}");
    let seen = wisp.wait_for_line("blk: write");
    assert!(seen.iter().any(|l| l == "blk: write ok"), "{seen:#?}");
    wisp.pause();
    refused(
        wisp.put("/snapshot/create", &diff("busy")),
        "virtio device used guest memory",
    );
    assert!(!scratch.join("busy.mem").exists());
    assert!(!scratch.join("busy.state").exists());
    // A Full snapshot is still taken, even over the memory file this VM runs from (a new
    // file: the mapped one is not truncated under the guest, which goes on counting).
    let (status, body) = wisp.snapshot(&scratch.join(""));
    assert_eq!(status, 204, "{body}");
    let (status, body) = curl(&wisp.sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#));
    assert_eq!(status, 204, "{body}");
    wisp.wait_for_line("count: at ");
    let counted = wisp.wait_for_line("count: ");
    assert!(!counts(&counted).is_empty(), "{counted:#?}");
}
