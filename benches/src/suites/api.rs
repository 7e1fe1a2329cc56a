//! `api`: a VMM started with only its REST socket (`--api-sock`), then configured and started
//! over HTTP the Firecracker way: PUT /boot-source, PUT /machine-config, PUT /actions
//! InstanceStart. Measures process start → the socket accepting a connection, the three
//! requests, and first request → the guest's first line.

use super::{launch_record, metric, micros, run_failed};
use crate::http_unix;
use crate::launch::{Input, Launched};
use crate::peers::{describe, FIRECRACKER_ARGS, GUEST_LINE, GUEST_MEM_MIB};
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::{help_mentions, Setup};
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How often the socket is tried while the VMM starts.
const POLL: Duration = Duration::from_micros(100);
/// How long a VMM may take to exit once its guest has printed (the unikernel resets at once).
const EXIT_GRACE: Duration = Duration::from_secs(5);

struct ApiVmm {
    name: &'static str,
    binary: PathBuf,
    /// Flags before `--api-sock`.
    args: &'static [&'static str],
}

pub fn run(setup: &Setup) -> SuiteOutcome {
    if !help_mentions(&setup.wisp, &[], "--api-sock") {
        return SuiteOutcome::Skipped {
            reason: format!(
                "{} has no --api-sock flag yet (the REST API, issue 6)",
                setup.wisp.display()
            ),
        };
    }
    let mut vmms = vec![ApiVmm {
        name: "wisp",
        binary: setup.wisp.clone(),
        args: &[],
    }];
    let mut notes = vec![
        "socket ready: process start → the API socket accepts a connection (polled every 100 µs)"
            .to_string(),
        "configure: PUT /boot-source + PUT /machine-config + PUT /actions InstanceStart, one \
         connection each; start → first line: first request sent → the guest's first line"
            .to_string(),
    ];
    match &setup.firecracker {
        Some(fc) => vmms.push(ApiVmm {
            name: "firecracker",
            binary: fc.clone(),
            args: FIRECRACKER_ARGS,
        }),
        None => notes.push("Firecracker not compared: give --firecracker PATH".to_string()),
    }
    let mut records: Vec<VmmRuns> = vmms
        .iter()
        .map(|v| {
            let mut cmd = Command::new(&v.binary);
            cmd.args(v.args).arg("--api-sock").arg("SOCKET");
            VmmRuns::new(v.name, describe(&cmd))
        })
        .collect();
    for run in 1..=setup.runs {
        for (vmm, record) in vmms.iter().zip(records.iter_mut()) {
            let socket = setup.out.join(format!("api-{}.sock", vmm.name));
            match api_boot(setup, vmm, &socket) {
                Ok(sample) => {
                    eprintln!(
                        "[api] run {run}/{} {}: socket {:.2} ms, start → line {:.2} ms",
                        setup.runs,
                        vmm.name,
                        sample.get("socket_ready_us").copied().unwrap_or(f64::NAN) / 1e3,
                        sample.get("start_to_line_us").copied().unwrap_or(f64::NAN) / 1e3,
                    );
                    record.runs.push(sample);
                }
                Err(why) => run_failed("api", record, &format!("run {run}/{}", setup.runs), &why),
            }
            let _ = std::fs::remove_file(&socket);
        }
    }
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "socket_ready_us",
                "process start → API socket accepting",
                Unit::Microseconds,
            ),
            metric(
                "configure_us",
                "configure and start (3 PUTs)",
                Unit::Microseconds,
            ),
            metric(
                "start_to_line_us",
                "first PUT → guest's first line",
                Unit::Microseconds,
            ),
            metric(
                "first_line_us",
                "process start → guest's first line",
                Unit::Microseconds,
            ),
            metric("exit_us", "process start → exit", Unit::Microseconds),
            metric(
                "max_rss_kib",
                "peak RSS of the VMM process",
                Unit::Kibibytes,
            ),
        ],
        vmms: records,
        notes,
    })
}

fn api_boot(setup: &Setup, vmm: &ApiVmm, socket: &Path) -> Result<BTreeMap<String, f64>, String> {
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new(&vmm.binary);
    cmd.args(vmm.args).arg("--api-sock").arg(socket);
    let mut launched = Launched::spawn(cmd, Input::Null, GUEST_LINE).map_err(|e| e.to_string())?;
    let outcome = configure_and_start(setup, &mut launched, socket);
    if outcome.is_err() {
        launched.kill();
    }
    let finished = launched.finish(EXIT_GRACE).map_err(|e| e.to_string())?;
    let (socket_ready, configure, start_to_line) = outcome?;
    let mut record = launch_record(&finished);
    if finished.timed_out || finished.exit_code != Some(0) {
        // The guest got going; only the exit did not happen as it should. Keep the rest.
        record.remove("exit_us");
        record.remove("gone_us");
        log::warn!("{}: {}", vmm.name, finished.failure());
    }
    record.insert("socket_ready_us".into(), micros(socket_ready));
    record.insert("configure_us".into(), micros(configure));
    record.insert("start_to_line_us".into(), micros(start_to_line));
    Ok(record)
}

/// (socket ready, configure-and-start, first request → first line), all measured here.
fn configure_and_start(
    setup: &Setup,
    launched: &mut Launched,
    socket: &Path,
) -> Result<(Duration, Duration, Duration), String> {
    let deadline = launched.started() + setup.timeout;
    let socket_ready = loop {
        if UnixStream::connect(socket).is_ok() {
            break launched.started().elapsed();
        }
        if Instant::now() > deadline {
            return Err(format!("{} never accepted a connection", socket.display()));
        }
        std::thread::sleep(POLL);
    };
    let boot_source = serde_json::json!({
        "kernel_image_path": setup.unikernel,
        "boot_args": "",
    })
    .to_string();
    let machine = serde_json::json!({ "vcpu_count": 1, "mem_size_mib": GUEST_MEM_MIB }).to_string();
    let start = r#"{"action_type":"InstanceStart"}"#;
    let t0 = Instant::now();
    for (uri, body) in [
        ("/boot-source", boot_source.as_str()),
        ("/machine-config", machine.as_str()),
        ("/actions", start),
    ] {
        let r = http_unix::request(socket, "PUT", uri, Some(body), setup.timeout)
            .map_err(|e| e.to_string())?;
        if !r.is_success() {
            return Err(format!("PUT {uri} answered {}: {}", r.status, r.body));
        }
    }
    let configure = t0.elapsed();
    let line = launched
        .wait_first_line(setup.timeout)
        .ok_or_else(|| "the guest never printed its line".to_string())?;
    // wait_first_line measures from process start; re-base onto the first request.
    let line_at = launched.started() + line;
    Ok((
        socket_ready,
        configure,
        line_at.saturating_duration_since(t0),
    ))
}
