//! Wisp as a drop-in for Firecracker's clients, end to end through the real `wisp` binary and
//! curl: Firecracker's command line (`--id`, `--level`, `--log-path`), every documented
//! optional field of the shared resources (the conformance table), and the balloon, serial
//! and metrics resources working on the Wisp unikernel.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{curl, spawn_with_lines, unikernel, Scratch};

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// Hang guards only; no assertion is about speed.
const GUARD: Duration = Duration::from_secs(60);
const MIB: u64 = 1 << 20;

/// A running `wisp --api-sock`, its stdout lines (the guest console) on a channel.
struct Wisp {
    child: Child,
    sock: PathBuf,
    lines: mpsc::Receiver<String>,
}

impl Wisp {
    fn start(sock: &Path, extra: &[&str]) -> Wisp {
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

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let text = body.map(Value::to_string);
        curl(&self.sock, method, path, text.as_deref())
    }

    fn ok(&self, method: &str, path: &str, body: &Value) {
        let (status, answer) = self.call(method, path, Some(body));
        assert_eq!(status, 204, "{method} {path} {body}: {answer}");
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn start_unikernel(&self, boot_args: &str, mem_mib: u32) {
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
    fn wait_for(&self, want: &str) -> String {
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
    fn rss(&self) -> u64 {
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
