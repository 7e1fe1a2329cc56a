//! The conformance table: every Firecracker-documented optional field of each resource Wisp
//! shares, sent to the real `wisp --api-sock` with curl; each is implemented or refused by name.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod firecracker_common;

use firecracker_common::{Wisp, MIB};
use serde_json::{json, Value};
use wisp_test_support::{unikernel, Scratch};

/// What the conformance table expects of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// 204 (or 200 for a GET): accepted and implemented.
    Implemented,
    /// 400 "<field> is not supported by Wisp: <reason>".
    Refused,
    /// `huge_pages` 2M: implemented, or refused naming the host's empty hugetlb pool.
    HugePool,
}

/// Every Firecracker-documented optional field of each shared resource, set to a value from
/// Firecracker's swagger (its examples and enums), sent to a real `wisp --api-sock` before
/// boot: each is accepted (204/200) or refused with 400 "not supported by Wisp" and a reason,
/// never "unknown field". Prints the conformance table.
#[test]
fn every_firecracker_optional_field_is_implemented_or_refused_by_name() {
    use Expect::{HugePool, Implemented, Refused};
    let scratch = Scratch::new("fc-conformance");
    let wisp = Wisp::start(&scratch.join("api.sock"), &[]);
    let kernel = unikernel();
    let disk = scratch.join("disk.img");
    std::fs::write(&disk, vec![0u8; MIB as usize]).unwrap();
    let disk2 = scratch.join("disk2.img");
    std::fs::write(&disk2, vec![0u8; MIB as usize]).unwrap();
    let p = |name: &str| scratch.join(name).to_str().unwrap().to_string();
    let bucket = json!({"size": 1048576, "one_time_burst": 0, "refill_time": 1000});
    let limiter = json!({"bandwidth": bucket, "ops": {"size": 100, "refill_time": 1000}});
    let mc = |field: &str, value: Value| {
        let mut body = json!({"vcpu_count": 1, "mem_size_mib": 128});
        body[field] = value;
        body
    };
    let drive = |field: &str, value: Value| {
        let mut body = json!({"drive_id": "rootfs", "path_on_host": disk, "is_root_device": true});
        body[field] = value;
        body
    };
    let iface = |field: &str, value: Value| {
        let mut body = json!({"iface_id": "eth0", "host_dev_name": "tap0"});
        body[field] = value;
        body
    };
    let logger = |field: &str, value: Value| {
        let mut body = json!({"log_path": p("fc.log")});
        body[field] = value;
        body
    };
    let balloon = |field: &str, value: Value| {
        let mut body = json!({"amount_mib": 0, "deflate_on_oom": false});
        body[field] = value;
        body
    };
    // (method, path, field, body, expectation)
    let cases: Vec<(&str, &str, &str, Value, Expect)> = vec![
        (
            "PUT",
            "/boot-source",
            "initrd_path",
            json!({"kernel_image_path": kernel, "initrd_path": kernel}),
            Implemented,
        ),
        (
            "PUT",
            "/boot-source",
            "boot_args",
            json!({"kernel_image_path": kernel, "boot_args": "console=ttyS0 reboot=k panic=1"}),
            Implemented,
        ),
        (
            "PUT",
            "/machine-config",
            "smt",
            mc("smt", json!(false)),
            Implemented,
        ),
        (
            "PUT",
            "/machine-config",
            "track_dirty_pages",
            mc("track_dirty_pages", json!(true)),
            Implemented,
        ),
        (
            "PUT",
            "/machine-config",
            "huge_pages=None",
            mc("huge_pages", json!("None")),
            Implemented,
        ),
        (
            "PUT",
            "/machine-config",
            "huge_pages=Transparent",
            mc("huge_pages", json!("Transparent")),
            Implemented,
        ),
        (
            "PUT",
            "/machine-config",
            "huge_pages=2M",
            mc("huge_pages", json!("2M")),
            HugePool,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=None",
            mc("cpu_template", json!("None")),
            Implemented,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=C3",
            mc("cpu_template", json!("C3")),
            Refused,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=T2",
            mc("cpu_template", json!("T2")),
            Refused,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=T2S",
            mc("cpu_template", json!("T2S")),
            Refused,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=T2CL",
            mc("cpu_template", json!("T2CL")),
            Refused,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=T2A",
            mc("cpu_template", json!("T2A")),
            Refused,
        ),
        (
            "PUT",
            "/machine-config",
            "cpu_template=V1N1",
            mc("cpu_template", json!("V1N1")),
            Refused,
        ),
        (
            "PATCH",
            "/machine-config",
            "track_dirty_pages",
            json!({"track_dirty_pages": false}),
            Implemented,
        ),
        (
            "PATCH",
            "/machine-config",
            "huge_pages",
            json!({"huge_pages": "None"}),
            Implemented,
        ),
        (
            "PATCH",
            "/machine-config",
            "smt",
            json!({"smt": false}),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "is_read_only",
            drive("is_read_only", json!(true)),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "partuuid",
            drive("partuuid", json!("0eaa91a0-01")),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "cache_type=Unsafe",
            drive("cache_type", json!("Unsafe")),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "cache_type=Writeback",
            drive("cache_type", json!("Writeback")),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "io_engine=Sync",
            drive("io_engine", json!("Sync")),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "io_engine=Async",
            drive("io_engine", json!("Async")),
            Refused,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "rate_limiter",
            drive("rate_limiter", limiter.clone()),
            Implemented,
        ),
        (
            "PUT",
            "/drives/rootfs",
            "socket",
            drive("socket", json!(p("vhost.sock"))),
            Refused,
        ),
        (
            "PATCH",
            "/drives/rootfs",
            "path_on_host",
            json!({"drive_id": "rootfs", "path_on_host": disk2}),
            Implemented,
        ),
        (
            "PATCH",
            "/drives/rootfs",
            "rate_limiter",
            json!({"drive_id": "rootfs", "rate_limiter": limiter}),
            Implemented,
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            "guest_mac",
            iface("guest_mac", json!("06:00:AC:10:00:02")),
            Implemented,
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            "mtu",
            iface("mtu", json!(1500)),
            Implemented,
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            "rx_rate_limiter",
            iface("rx_rate_limiter", limiter.clone()),
            Implemented,
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            "tx_rate_limiter",
            iface("tx_rate_limiter", limiter.clone()),
            Implemented,
        ),
        (
            "PATCH",
            "/network-interfaces/eth0",
            "rx_rate_limiter",
            json!({"iface_id": "eth0", "rx_rate_limiter": limiter}),
            Implemented,
        ),
        (
            "PATCH",
            "/network-interfaces/eth0",
            "tx_rate_limiter",
            json!({"iface_id": "eth0", "tx_rate_limiter": limiter}),
            Implemented,
        ),
        (
            "PUT",
            "/vsock",
            "vsock_id",
            json!({"guest_cid": 3, "uds_path": p("v.sock"), "vsock_id": "vsock0"}),
            Implemented,
        ),
        (
            "PUT",
            "/entropy",
            "rate_limiter",
            json!({"rate_limiter": limiter}),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "level=Error",
            logger("level", json!("Error")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "level=Warning",
            logger("level", json!("Warning")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "level=Info",
            logger("level", json!("Info")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "level=Debug",
            logger("level", json!("Debug")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "level=Trace",
            logger("level", json!("Trace")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "level=Off",
            logger("level", json!("Off")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "show_level",
            logger("show_level", json!(true)),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "show_log_origin",
            logger("show_log_origin", json!(true)),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "module",
            logger("module", json!("api_server::request")),
            Implemented,
        ),
        (
            "PUT",
            "/logger",
            "log_path (absent)",
            json!({"level": "Info", "show_level": true}),
            Implemented,
        ),
        (
            "PUT",
            "/metrics",
            "emit_id",
            json!({"metrics_path": p("m.json"), "emit_id": true}),
            Implemented,
        ),
        (
            "PUT",
            "/metrics",
            "properties",
            json!({"metrics_path": p("m.json"), "properties": {"az": "eu-1"}}),
            Implemented,
        ),
        (
            "PUT",
            "/balloon",
            "stats_polling_interval_s",
            balloon("stats_polling_interval_s", json!(1)),
            Implemented,
        ),
        (
            "PUT",
            "/balloon",
            "free_page_reporting",
            balloon("free_page_reporting", json!(true)),
            Implemented,
        ),
        (
            "PUT",
            "/balloon",
            "free_page_hinting",
            balloon("free_page_hinting", json!(true)),
            Refused,
        ),
        (
            "PATCH",
            "/balloon",
            "amount_mib",
            json!({"amount_mib": 16}),
            Implemented,
        ),
        (
            "PATCH",
            "/balloon/statistics",
            "stats_polling_interval_s",
            json!({"stats_polling_interval_s": 2}),
            Implemented,
        ),
        (
            "PUT",
            "/serial",
            "serial_out_path",
            json!({"serial_out_path": p("serial.log")}),
            Implemented,
        ),
        (
            "PUT",
            "/serial",
            "rate_limiter",
            json!({"rate_limiter": bucket}),
            Implemented,
        ),
        (
            "PUT",
            "/actions",
            "action_type=FlushMetrics",
            json!({"action_type": "FlushMetrics"}),
            Implemented,
        ),
        ("PUT", "/mmds", "(resource)", json!({"latest": {}}), Refused),
        (
            "PATCH",
            "/mmds",
            "(resource)",
            json!({"latest": {}}),
            Refused,
        ),
        ("GET", "/mmds", "(resource)", json!(null), Refused),
        (
            "PUT",
            "/mmds/config",
            "(resource)",
            json!({"network_interfaces": ["eth0"], "version": "V2"}),
            Refused,
        ),
        (
            "PUT",
            "/cpu-config",
            "(resource)",
            json!({"cpuid_modifiers": []}),
            Refused,
        ),
        (
            "PUT",
            "/pmem/pmem0",
            "(resource)",
            json!({"id": "pmem0", "path_on_host": disk}),
            Refused,
        ),
        (
            "PUT",
            "/hotplug/memory",
            "(resource)",
            json!({"total_size_mib": 1024}),
            Refused,
        ),
        (
            "PATCH",
            "/balloon/hinting/start",
            "(resource)",
            json!({"acknowledge_on_stop": true}),
            Refused,
        ),
        ("GET", "/balloon", "(read)", json!(null), Implemented),
        (
            "GET",
            "/balloon/statistics",
            "(read)",
            json!(null),
            Implemented,
        ),
        ("GET", "/vm/config", "(read)", json!(null), Implemented),
        ("GET", "/version", "(read)", json!(null), Implemented),
    ];
    let pool = huge_pages_free();
    println!("| resource | field | Wisp |");
    println!("|---|---|---|");
    for (method, path, field, body, expect) in cases {
        let body = (!body.is_null()).then_some(&body);
        let (status, answer) = wisp.call(method, path, body);
        let refused = status == 400 && answer.contains("is not supported by Wisp: ");
        let accepted = status == 204 || (method == "GET" && status == 200);
        let verdict = match expect {
            Implemented => accepted,
            Refused => refused,
            HugePool if pool >= 64 => accepted,
            HugePool => status == 400 && answer.contains("nr_hugepages"),
        };
        let pool_empty = expect == HugePool && !accepted;
        assert!(
            verdict,
            "{method} {path} field {field}: expected {expect:?}, got {status} {answer}"
        );
        assert!(
            !answer.contains("unknown field"),
            "{method} {path} {field}: {answer}"
        );
        let shown = if refused {
            let reason = answer
                .split("is not supported by Wisp: ")
                .nth(1)
                .unwrap_or("")
                .trim_end_matches("\"}");
            format!("refused on purpose: {reason}")
        } else if accepted {
            "implemented".to_string()
        } else if pool_empty {
            "implemented; refused here: this host has no free 2 MiB huge pages".to_string()
        } else {
            format!("refused: {answer}")
        };
        println!("| {method} {path} | {field} | {shown} |");
    }
    // Accepted fields are kept: what the VM would boot with, as GET /vm/config shows.
    let mut all = drive("partuuid", json!("0eaa91a0-01"));
    all["cache_type"] = json!("Unsafe");
    all["io_engine"] = json!("Sync");
    wisp.ok("PUT", "/drives/rootfs", &all);
    wisp.ok(
        "PUT",
        "/network-interfaces/eth0",
        &iface("mtu", json!(1500)),
    );
    let config = wisp.get("/vm/config");
    assert_eq!(config["drives"][0]["cache_type"], "Unsafe", "{config}");
    assert_eq!(config["drives"][0]["partuuid"], "0eaa91a0-01", "{config}");
    assert_eq!(config["network-interfaces"][0]["mtu"], 1500, "{config}");
    assert_eq!(config["vsock"]["vsock_id"], "vsock0", "{config}");
    assert_eq!(config["balloon"]["amount_mib"], 16, "{config}");
}

/// Free 2 MiB huge pages of this host.
fn huge_pages_free() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("HugePages_Free:"))
        .unwrap();
    line.trim_start_matches("HugePages_Free:")
        .trim()
        .parse()
        .unwrap()
}
