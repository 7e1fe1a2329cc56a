//! Wisp as a drop-in for Firecracker's clients, end to end through the real `wisp` binary and
//! curl: Firecracker's command line (`--id`, `--level`, `--log-path`, `--no-api`, ...), and
//! the balloon, serial, metrics and drive fields working on the Wisp unikernel. The table of
//! every documented optional field is tests/firecracker_conformance.rs.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use wisp_test_support::{unikernel, Scratch};

mod firecracker_common;

use firecracker_common::{Wisp, GUARD, MIB, WISP};

/// `wisp --id vm1 --api-sock S --level Debug --log-path L`: `GET /` reports the id and every
/// log line in L carries it, at Debug.
#[test]
fn firecracker_command_line_names_the_instance_in_get_and_in_every_log_line() {
    let scratch = Scratch::new("fc-id");
    let log = scratch.join("wisp.log");
    let log_arg = log.to_str().unwrap();
    let wisp = Wisp::start(
        &scratch.join("api.sock"),
        &["--id", "vm1", "--level", "Debug", "--log-path", log_arg],
    );
    let info = wisp.get("/");
    assert_eq!(info["id"], "vm1", "{info}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("GetVmInfo")),
        "Debug lines are written: {text}"
    );
    for line in &lines {
        assert!(line.contains(" id=vm1"), "line without the id: {line}");
    }
}

/// Flags Wisp refuses on purpose say why and start nothing.
#[test]
fn refused_firecracker_flags_name_the_reason() {
    for args in [
        vec!["--seccomp-filter", "/nonexistent.bpf"],
        vec!["--mmds-size-limit", "1024"],
        vec!["--enable-pci"],
    ] {
        let out = Command::new(WISP)
            .args(&args)
            .args(["--api-sock", "/nonexistent/dir/s"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("is not supported by Wisp: "),
            "{args:?}: {err}"
        );
    }
}

/// Inflating the balloon by 64 MiB on the unikernel (which first touches 95 MiB of its RAM)
/// lowers the VMM's RSS by about that much; deflating gives the pages back to the guest;
/// statistics follow the balloon's size.
#[test]
fn balloon_inflate_returns_guest_memory_to_the_host_and_deflate_gives_it_back() {
    let scratch = Scratch::new("fc-balloon");
    let wisp = Wisp::start(&scratch.join("api.sock"), &[]);
    wisp.ok(
        "PUT",
        "/balloon",
        &json!({"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 1}),
    );
    wisp.start_unikernel("balloon", 128);
    wisp.wait_for("balloon: touched=");
    wisp.wait_for("balloon: actual=0 pages");
    let before = wisp.rss();
    wisp.ok("PATCH", "/balloon", &json!({"amount_mib": 64}));
    wisp.wait_for("balloon: actual=16384 pages");
    let after = wisp.rss();
    let freed = before.saturating_sub(after);
    println!(
        "balloon 64 MiB: VMM RSS {} MiB -> {} MiB ({} MiB returned)",
        before / MIB,
        after / MIB,
        freed / MIB
    );
    assert!(
        freed >= 60 * MIB,
        "inflating 64 MiB returned only {} KiB",
        freed / 1024
    );
    // The next statistics poll (every second) reports the guest's smaller free memory.
    let deadline = Instant::now() + GUARD;
    let stats = loop {
        let stats = wisp.get("/balloon/statistics");
        if stats["actual_mib"] == 64 && stats["free_memory"].as_u64() < Some(32 * MIB) {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "statistics never updated: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stats["target_mib"], 64, "{stats}");
    let total = stats["total_memory"].as_u64().unwrap();
    assert!((120 * MIB..=128 * MIB).contains(&total), "{stats}");
    wisp.ok("PATCH", "/balloon", &json!({"amount_mib": 0}));
    wisp.wait_for("balloon: actual=0 pages");
    let deadline = Instant::now() + GUARD;
    loop {
        let stats = wisp.get("/balloon/statistics");
        if stats["actual_pages"] == 0 && stats["free_memory"].as_u64() > Some(90 * MIB) {
            break;
        }
        assert!(Instant::now() < deadline, "deflate not reported: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(wisp.get("/balloon")["amount_mib"], 0);
}

/// A guest whose workload needs 80 of its 95 MiB: inflating by 64 MiB leaves it short. With
/// deflate_on_oom the guest takes pages back until it fits (the balloon ends below its
/// target); without, it must hold the balloon at the target.
#[test]
fn deflate_on_oom_lets_the_guest_take_balloon_pages_back_only_when_offered() {
    for offered in [true, false] {
        let scratch = Scratch::new(&format!("fc-oom-{offered}"));
        let wisp = Wisp::start(&scratch.join("api.sock"), &[]);
        wisp.ok(
            "PUT",
            "/balloon",
            &json!({"amount_mib": 0, "deflate_on_oom": offered, "stats_polling_interval_s": 1}),
        );
        wisp.start_unikernel("balloon balloon_need_mib=80", 128);
        wisp.wait_for("balloon: actual=0 pages");
        wisp.ok("PATCH", "/balloon", &json!({"amount_mib": 64}));
        if offered {
            let line = wisp.wait_for("balloon: oom: deflated=");
            let actual: u64 = line
                .rsplit("actual=")
                .next()
                .unwrap()
                .trim_end_matches(" pages")
                .parse()
                .unwrap();
            // A 95.6 MiB arena - 80 MiB needed: less than 16 MiB stays in the balloon.
            assert!(actual < 16 * 256, "{line}");
            let stats = wisp.get("/balloon/statistics");
            assert!(
                stats["actual_pages"].as_u64() < stats["target_pages"].as_u64(),
                "{stats}"
            );
        } else {
            wisp.wait_for("balloon: oom: no deflate_on_oom, holding");
            wisp.wait_for("balloon: actual=16384 pages");
        }
    }
}

/// PUT /serial sends the guest console to a file instead of stdout; with a token bucket the
/// output beyond it is dropped and counted on the metrics line, which also carries the id
/// (emit_id) and the operator's properties.
#[test]
fn serial_output_goes_to_its_file_through_its_rate_limiter_and_metrics_say_so() {
    let scratch = Scratch::new("fc-serial");
    let wisp = Wisp::start(&scratch.join("api.sock"), &["--id", "serial-vm"]);
    let serial = scratch.join("serial.log");
    let metrics = scratch.join("metrics.json");
    // 40 bytes and no refill within the test: the greeting (26 bytes) fits, later lines not.
    wisp.ok(
        "PUT",
        "/serial",
        &json!({"serial_out_path": serial, "rate_limiter": {"size": 40, "refill_time": 3600000}}),
    );
    wisp.ok(
        "PUT",
        "/metrics",
        &json!({"metrics_path": metrics, "emit_id": true, "properties": {"az": "eu-1"}}),
    );
    wisp.start_unikernel("mem mem mem idle", 64);
    let deadline = Instant::now() + GUARD;
    let line = loop {
        wisp.ok("PUT", "/actions", &json!({"action_type": "FlushMetrics"}));
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        let last: Value = serde_json::from_str(text.lines().last().unwrap_or("{}")).unwrap();
        if last["uart"]["rate_limiter_dropped_bytes"].as_u64() > Some(0) {
            break last;
        }
        assert!(Instant::now() < deadline, "no dropped bytes: {last}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(line["id"], "serial-vm", "{line}");
    assert_eq!(line["properties"]["az"], "eu-1", "{line}");
    let out = std::fs::read_to_string(&serial).unwrap();
    assert!(out.starts_with("hello from wisp unikernel\n"), "{out:?}");
    assert!(out.len() <= 40, "{out:?}");
    assert!(
        wisp.lines.try_recv().is_err(),
        "console output reached stdout"
    );
}

/// Drive fields reach the guest: `partuuid` on the root drive becomes `root=PARTUUID=…`, and
/// `cache_type` decides whether the disk offers FLUSH (`Writeback`) or not (`Unsafe`).
#[test]
fn partuuid_and_cache_type_reach_the_guest() {
    for (cache_type, flush_offered) in [("Unsafe", false), ("Writeback", true)] {
        let scratch = Scratch::new(&format!("fc-drive-{cache_type}"));
        let disk = scratch.join("disk.img");
        std::fs::write(&disk, vec![0u8; MIB as usize]).unwrap();
        let wisp = Wisp::start(&scratch.join("api.sock"), &[]);
        wisp.ok(
            "PUT",
            "/drives/rootfs",
            &json!({"drive_id": "rootfs", "path_on_host": disk, "is_root_device": true,
                    "partuuid": "0eaa91a0-01", "cache_type": cache_type}),
        );
        wisp.start_unikernel("cmdline blk", 64);
        let cmdline = wisp.wait_for("cmdline: ");
        assert!(
            cmdline.contains("root=PARTUUID=0eaa91a0-01 rw"),
            "{cmdline}"
        );
        assert!(!cmdline.contains("root=/dev/vda"), "{cmdline}");
        let mut flushed = false;
        loop {
            let line = wisp.wait_for("blk: ");
            flushed |= line.contains("blk: flush ok");
            if line.contains("blk: write ok") || line.contains("blk: error") {
                assert!(line.contains("write ok"), "{line}");
                break;
            }
        }
        assert_eq!(flushed, flush_offered, "cache_type {cache_type}");
    }
}

/// `--no-api --config-file F --boot-timer --metrics-path M --level Info`: the VM boots from the
/// file with no socket, the boot time is logged Firecracker's way and the metrics file gets a
/// line at exit.
#[test]
fn no_api_config_file_with_boot_timer_and_metrics_path() {
    let scratch = Scratch::new("fc-no-api");
    let config = scratch.join("vm.json");
    let metrics = scratch.join("metrics.json");
    let doc = json!({
        "boot-source": {"kernel_image_path": unikernel(), "boot_args": "mem"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    });
    std::fs::write(&config, doc.to_string()).unwrap();
    let out = Command::new(WISP)
        .args(["--no-api", "--boot-timer", "--level", "Info", "--id", "nb"])
        .arg("--config-file")
        .arg(&config)
        .arg("--metrics-path")
        .arg(&metrics)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("id=nb INFO] Guest-boot-time = "), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("memory: 64 MiB"));
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(line["utc_timestamp_ms"].as_u64().is_some(), "{line}");
}
