//! Guest resource limits end to end, through the real `wisp --api-sock` and curl, with the Wisp
//! unikernel as the guest: Firecracker `rate_limiter` objects accepted and enforced (the guest's
//! own TSC-timed rate and the host's wall clock agree with the bucket), a guest hogging its
//! disk cannot starve the API, and a guest doing bad MMIO accesses in a loop cannot flood the
//! host's log.
//!
//! Timing bounds here are generous guards against starvation or a limiter that does nothing,
//! not speed targets; the measured figures are printed (`--nocapture`) for the record.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use wisp_test_support::{curl, unikernel, Scratch, TempFile};

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
const MIB: u64 = 1 << 20;
/// Hang guards only.
const GUARD: Duration = Duration::from_secs(60);

/// A running `wisp --api-sock`: stdout lines with their arrival time, stderr kept whole.
struct Wisp {
    child: Child,
    sock: PathBuf,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Wisp {
    fn start(sock: &Path) -> Wisp {
        let mut child = Command::new(WISP)
            .arg("--api-sock")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let start = Instant::now();
        while UnixStream::connect(sock).is_err() {
            assert!(start.elapsed() < GUARD, "the API socket never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
        Wisp {
            child,
            sock: sock.to_path_buf(),
            lines,
            stderr,
        }
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        curl(&self.sock, method, path, body)
    }

    fn put(&self, path: &str, body: &Value) {
        let (status, answer) = self.curl("PUT", path, Some(&body.to_string()));
        assert_eq!(status, 204, "PUT {path} {body}: {answer}");
    }

    fn start_guest(&self, boot_args: &str) {
        let boot = json!({"kernel_image_path": unikernel(), "boot_args": boot_args});
        self.put("/boot-source", &boot);
        self.put(
            "/machine-config",
            &json!({"vcpu_count": 1, "mem_size_mib": 64}),
        );
        self.put("/actions", &json!({"action_type": "InstanceStart"}));
    }

    /// The next stdout line containing `want`, with its arrival time.
    fn wait_for(&self, want: &str) -> (Instant, String) {
        let deadline = Instant::now() + GUARD;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) if line.contains(want) => return (at, line),
                Ok((_, line)) => seen.push(line),
                Err(_) => panic!(
                    "guest never printed {want:?}; stdout was {seen:#?}; stderr was {}",
                    String::from_utf8_lossy(&self.stderr.lock().unwrap())
                ),
            }
        }
    }

    fn state(&self) -> String {
        let (status, body) = self.curl("GET", "/", None);
        assert_eq!(status, 200, "{body}");
        let info: Value = serde_json::from_str(&body).unwrap();
        info["state"].as_str().unwrap().to_owned()
    }

    /// FlushMetrics and the device counters of the line it appended.
    fn device_metrics(&self, metrics: &Path, device: &str) -> Value {
        self.put("/actions", &json!({"action_type": "FlushMetrics"}));
        let text = std::fs::read_to_string(metrics).unwrap();
        let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        line["devices"][device].clone()
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host TSC rate in kHz from /proc/cpuinfo (PVM guests read the host's TSC unscaled).
fn host_tsc_khz() -> u64 {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let mhz: f64 = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "cpu MHz").then(|| v.trim().parse().ok())?
        })
        .expect("/proc/cpuinfo has a cpu MHz line");
    (mhz * 1000.0) as u64
}

/// A `key=value` word of a guest line.
fn word(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// `GET path` over a fresh connection with `Connection: close`; the whole answer.
fn raw_get(sock: &Path, path: &str) -> String {
    use std::io::Write;
    let mut stream = UnixStream::connect(sock).unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A sparse disk image of `bytes`.
fn disk(name: &str, bytes: u64) -> TempFile {
    let f = TempFile::new(name, &[]);
    std::fs::File::options()
        .write(true)
        .open(&f.0)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    f
}

/// One blk-hog pass as the guest timed it (bytes per second by its TSC) and as the host saw
/// it (bytes over the time between two pass lines).
struct Pass {
    guest_rate: f64,
    host_rate: f64,
    iops_host: f64,
    /// Requests per second by the guest's TSC: free of the console's arrival jitter, which on
    /// a loaded host moves a pass's host-side timing by tens of percent.
    iops_guest: f64,
}

fn next_pass(wisp: &Wisp, after: Instant, tsc_hz: f64) -> (Instant, Pass) {
    let (at, line) = wisp.wait_for("blk-hog: pass=");
    let bytes = word(&line, "bytes") as f64;
    let requests = word(&line, "requests") as f64;
    let cycles = word(&line, "cycles") as f64;
    let secs = at.duration_since(after).as_secs_f64();
    let pass = Pass {
        guest_rate: bytes * tsc_hz / cycles,
        host_rate: bytes / secs,
        iops_host: requests / secs,
        iops_guest: requests * tsc_hz / cycles,
    };
    (at, pass)
}

/// A disk limited to 1 MiB/s (bandwidth bucket of 1 MiB refilled over 1000 ms, no burst) is
/// read at 1 MiB/s ± 10 %, measured in steady state (the second and third passes over a
/// 4 MiB disk: the first includes the bucket's initial full budget).
#[test]
fn a_disk_limited_to_one_mib_per_second_is_read_at_that_rate() {
    let scratch = Scratch::new("limits-bw");
    let image = disk("limits-bw.img", 4 * MIB);
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let drive = json!({
        "drive_id": "hog", "path_on_host": image.0, "is_root_device": false,
        "rate_limiter": {"bandwidth": {"size": MIB, "refill_time": 1000}},
    });
    wisp.put("/drives/hog", &drive);
    let khz = host_tsc_khz();
    wisp.start_guest(&format!("blk-hog tsc_khz={khz}"));
    let tsc_hz = khz as f64 * 1000.0;
    let (mut at, _) = wisp.wait_for("blk-hog: pass=1 ");
    for _ in 0..2 {
        let (next, pass) = next_pass(&wisp, at, tsc_hz);
        at = next;
        let (guest, host) = (pass.guest_rate / MIB as f64, pass.host_rate / MIB as f64);
        println!("1 MiB/s limit: guest measured {guest:.3} MiB/s, host {host:.3} MiB/s");
        assert!(
            (0.75..=1.25).contains(&host),
            "host-timed rate {host} MiB/s"
        );
        assert!(
            (0.9..=1.1).contains(&guest),
            "guest-timed rate {guest} MiB/s"
        );
    }
}

/// An ops limit (4 requests per second) holds the guest to 4 of its 1 MiB reads a second;
/// PATCH /drives raises it on the running VM (16 per second) and the guest speeds up.
#[test]
fn an_ops_limit_holds_and_patch_drives_changes_it_on_the_running_vm() {
    let scratch = Scratch::new("limits-ops");
    let image = disk("limits-ops.img", 8 * MIB);
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let drive = json!({
        "drive_id": "hog", "path_on_host": image.0,
        "rate_limiter": {"ops": {"size": 4, "refill_time": 1000}},
    });
    wisp.put("/drives/hog", &drive);
    let khz = host_tsc_khz();
    wisp.start_guest(&format!("blk-hog tsc_khz={khz}"));
    let tsc_hz = khz as f64 * 1000.0;
    let (at, _) = wisp.wait_for("blk-hog: pass=1 ");
    let (at, pass) = next_pass(&wisp, at, tsc_hz);
    println!(
        "4 ops/s limit: guest measured {:.2} requests/s, host {:.2}",
        pass.iops_guest, pass.iops_host
    );
    assert!(
        (3.6..=4.4).contains(&pass.iops_guest),
        "guest-timed {} iops",
        pass.iops_guest
    );
    assert!(
        (3.0..=5.0).contains(&pass.iops_host),
        "host-timed {} iops",
        pass.iops_host
    );

    let patch =
        json!({"drive_id": "hog", "rate_limiter": {"ops": {"size": 16, "refill_time": 1000}}});
    let (status, body) = wisp.curl("PATCH", "/drives/hog", Some(&patch.to_string()));
    assert_eq!(status, 204, "{body}");
    let (_, config) = wisp.curl("GET", "/vm/config", None);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["drives"][0]["rate_limiter"]["ops"]["size"], 16,
        "{config}"
    );
    // The pass under way when the PATCH landed mixes both limits, and the new bucket starts
    // full (16 tokens: two passes of 8): the fourth pass after it runs at the new rate.
    let mut at = at;
    for _ in 0..3 {
        at = next_pass(&wisp, at, tsc_hz).0;
    }
    let (_, pass) = next_pass(&wisp, at, tsc_hz);
    println!(
        "after PATCH to 16 ops/s: guest measured {:.2} requests/s, host {:.2}",
        pass.iops_guest, pass.iops_host
    );
    assert!(
        (14.4..=17.6).contains(&pass.iops_guest),
        "guest-timed {} iops",
        pass.iops_guest
    );
    assert!(
        (12.0..=20.0).contains(&pass.iops_host),
        "host-timed {} iops",
        pass.iops_host
    );
}

/// A guest reading its disk as fast as it can (1 MiB requests, four in flight, forever) does
/// not starve the API: `GET /` answers promptly throughout, and pause/resume work.
#[test]
fn a_guest_hogging_its_disk_does_not_starve_the_api() {
    let scratch = Scratch::new("limits-hog");
    let image = disk("limits-hog.img", 256 * MIB);
    let metrics = scratch.join("metrics.json");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    wisp.put("/metrics", &json!({"metrics_path": metrics}));
    wisp.put(
        "/drives/hog",
        &json!({"drive_id": "hog", "path_on_host": image.0}),
    );
    wisp.start_guest("blk-hog");
    wisp.wait_for("blk-hog: capacity=");
    let before = wisp.device_metrics(&metrics, "block:hog")["bytes_read"]
        .as_u64()
        .unwrap();
    assert_eq!(wisp.state(), "Running");
    // Timed with a raw HTTP client in this process: a curl per request would time mostly the
    // start of a process on a machine whose cores the guest keeps busy.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let answer = raw_get(&wisp.sock, "/");
        latencies.push(start.elapsed());
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"state\":\"Running\""), "{answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = wisp.device_metrics(&metrics, "block:hog")["bytes_read"]
        .as_u64()
        .unwrap();
    assert!(
        after - before >= 16 * MIB,
        "the guest was not hogging its disk: {} bytes read meanwhile",
        after - before
    );
    let max = latencies.iter().max().unwrap();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "GET / under a disk hog ({} MiB read meanwhile): mean {mean:?}, max {max:?} over {}",
        (after - before) / MIB,
        latencies.len()
    );
    assert!(*max < Duration::from_millis(500), "GET / took {max:?}");

    for (state, want) in [("Paused", "Paused"), ("Resumed", "Running")] {
        let start = Instant::now();
        let body = json!({ "state": state }).to_string();
        let (status, answer) = wisp.curl("PATCH", "/vm", Some(&body));
        let took = start.elapsed();
        assert_eq!(status, 204, "{answer}");
        println!("PATCH /vm {state} under a disk hog: {took:?}");
        assert!(
            took < Duration::from_secs(2),
            "PATCH /vm {state} took {took:?}"
        );
        assert_eq!(wisp.state(), want);
    }
}

/// A guest writing a read-only virtio register in a loop for 3 s: every write is a guest
/// error, counted, but wisp's log gets only a few lines a second; the rest are counted as
/// suppressed in the device's metrics.
#[test]
fn a_guest_flooding_bad_mmio_accesses_cannot_flood_the_log() {
    let scratch = Scratch::new("limits-flood");
    let metrics = scratch.join("metrics.json");
    let wisp = Wisp::start(&scratch.join("api.sock"));
    wisp.put("/metrics", &json!({"metrics_path": metrics}));
    wisp.put("/entropy", &json!({}));
    let start = Instant::now();
    wisp.start_guest("mmio-flood idle");
    let (end, line) = wisp.wait_for("mmio-flood: writes=");
    // The guest times its 3 s with a TSC rate it may only guess: use the host's clock.
    let seconds = end.duration_since(start).as_secs_f64().ceil() as usize;
    let writes = word(&line, "writes");
    wisp.wait_for("idle: halting");
    let rng = wisp.device_metrics(&metrics, "rng:rng");
    let errors = rng["errors"].as_u64().unwrap();
    let suppressed = rng["log_suppressed"].as_u64().unwrap();
    let stderr = String::from_utf8_lossy(&wisp.stderr.lock().unwrap()).into_owned();
    let logged = stderr.lines().filter(|l| l.contains("guest error")).count();
    println!(
        "mmio-flood: {writes} bad writes, {errors} errors counted, {logged} lines logged, \
         {suppressed} suppressed, stderr {} bytes",
        stderr.len()
    );
    assert!(writes >= 1000, "the flood was only {writes} writes");
    assert_eq!(errors, writes, "every bad write counts as an error");
    // 5 lines a second for the one call site, over every one-second window the flood touched.
    let bound = 5 * (seconds + 1);
    assert!(
        logged <= bound,
        "{logged} lines logged in {seconds} s:\n{stderr}"
    );
    assert!(logged >= 1, "the first bad write is logged:\n{stderr}");
    assert_eq!(suppressed + logged as u64, writes, "{stderr}");
    assert!(stderr.len() < 8192, "stderr grew to {} bytes", stderr.len());
}

/// Firecracker's rate_limiter objects on drives, network interfaces and the entropy device are
/// accepted and shown by GET /vm/config; a bucket without tokens, or an unknown field, is a
/// 400 naming the field.
#[test]
fn rate_limiter_objects_are_accepted_shown_and_checked() {
    let scratch = Scratch::new("limits-api");
    let image = disk("limits-api.img", MIB);
    let wisp = Wisp::start(&scratch.join("api.sock"));
    let limiter = json!({
        "bandwidth": {"size": 1048576, "one_time_burst": 4096, "refill_time": 1000},
        "ops": {"size": 100, "refill_time": 100},
    });
    wisp.put(
        "/drives/d0",
        &json!({"drive_id": "d0", "path_on_host": image.0, "rate_limiter": limiter}),
    );
    wisp.put(
        "/network-interfaces/eth0",
        &json!({"iface_id": "eth0", "host_dev_name": "tap0",
                "rx_rate_limiter": limiter, "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}),
    );
    wisp.put("/entropy", &json!({"rate_limiter": limiter}));
    let (status, config) = wisp.curl("GET", "/vm/config", None);
    assert_eq!(status, 200);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["drives"][0]["rate_limiter"], limiter, "{config}");
    assert_eq!(
        config["network-interfaces"][0]["rx_rate_limiter"], limiter,
        "{config}"
    );
    assert_eq!(
        config["network-interfaces"][0]["tx_rate_limiter"]["ops"]["size"], 1,
        "{config}"
    );
    assert_eq!(config["entropy"]["rate_limiter"], limiter, "{config}");

    let bad = [
        (
            "/drives/d0",
            json!({"drive_id": "d0", "path_on_host": image.0,
                   "rate_limiter": {"bandwidth": {"size": 0, "refill_time": 100}}}),
            "rate_limiter.bandwidth.size",
        ),
        (
            "/drives/d0",
            json!({"drive_id": "d0", "path_on_host": image.0,
                   "rate_limiter": {"ops": {"size": 10, "refill_time": 0}}}),
            "rate_limiter.ops.refill_time",
        ),
        (
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "tap0",
                   "tx_rate_limiter": {"ops": {"size": 0, "refill_time": 10}}}),
            "tx_rate_limiter.ops.size",
        ),
        (
            "/entropy",
            json!({"rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1, "burst": 5}}}),
            "unknown field `burst`",
        ),
        (
            "/drives/d0",
            json!({"drive_id": "d0", "path_on_host": image.0,
                   "rate_limiter": {"bandwith": {"size": 1, "refill_time": 1}}}),
            "unknown field `bandwith`",
        ),
    ];
    for (path, body, field) in bad {
        let (status, answer) = wisp.curl("PUT", path, Some(&body.to_string()));
        assert_eq!(status, 400, "PUT {path} {body}: {answer}");
        assert!(
            answer.contains(field),
            "PUT {path}: {answer} does not name {field}"
        );
    }
    // Nothing of the refused requests stuck.
    let (_, after) = wisp.curl("GET", "/vm/config", None);
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after, config);
}
