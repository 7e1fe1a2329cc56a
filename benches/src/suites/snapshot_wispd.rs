//! `snapshot-wispd`: Wisp's restores through `wispd` (docs/design.md §10). A unikernel VM from
//! the pool (`await-restore idle`, 128 MiB) is paused and snapshotted over its REST socket;
//! then `wisp ctl restore` puts the snapshot into a prepared shell, once per run (wispd's
//! report: its `PUT /snapshot/load` to the shell → 204, the guest resumed), and one
//! `wisp ctl clone --count N` (N = `--max-vms`, at most 100) restores it into N prepared
//! shells at once. No peer has prepared shells.

use super::{metric, micros, run_failed};
use crate::http_unix;
use crate::launch::{Input, Launched};
use crate::peers::{firecracker_config, GUEST_MEM_MIB};
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::{help_mentions, Setup};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Most clones in one request.
const MAX_CLONES: usize = 100;

/// `wisp ctl ARGS` on `socket`: its stdout, or why it failed.
fn ctl(setup: &Setup, socket: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(&setup.wisp)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run wisp ctl: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wisp ctl {} failed: {} {}",
            args.join(" "),
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(stdout)
}

/// The value of `key=` in `text`, as a number.
fn field(text: &str, key: &str) -> Option<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// Prepared shells wispd reports.
fn prepared(setup: &Setup, socket: &Path) -> usize {
    ctl(setup, socket, &["status"])
        .ok()
        .and_then(|s| field(&s, "prepared="))
        .map_or(0, |n| n as usize)
}

pub fn run(setup: &Setup) -> SuiteOutcome {
    let Some(wispd) = setup.sibling("wispd") else {
        return SuiteOutcome::Skipped {
            reason: format!("no wispd binary beside {}", setup.wisp.display()),
        };
    };
    if !help_mentions(&setup.wisp, &["ctl"], "clone") {
        return SuiteOutcome::Skipped {
            reason: "`wisp ctl clone` does not exist yet (issue 17)".to_string(),
        };
    }
    let clones = setup.max_vms.clamp(1, MAX_CLONES);
    let pool = setup.runs + clones + 1;
    let socket = setup.out.join("snapshot-wispd.sock");
    let _ = std::fs::remove_file(&socket);
    let mut daemon = Command::new(&wispd);
    daemon
        .arg("--socket")
        .arg(&socket)
        .args(["--pool", &pool.to_string()])
        .args(["--shell-mem", &GUEST_MEM_MIB.to_string()]);
    let mut record = VmmRuns::new(
        "wisp",
        format!(
            "{} --socket S --pool {pool} --shell-mem {GUEST_MEM_MIB}; {} ctl --socket S \
             restore|clone --snapshot DIR",
            wispd.display(),
            setup.wisp.display()
        ),
    );
    let daemon = match Launched::spawn(daemon, Input::Null, b"\0") {
        Ok(d) => d,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: e.to_string(),
            }
        }
    };
    let dir = setup.out.join("snapshot-wispd");
    let outcome = measure(setup, &socket, &dir, pool, clones, &mut record);
    if let Err(why) = outcome {
        run_failed("snapshot-wispd", &mut record, "setup", &why);
    }
    // SAFETY: kill(2) has no memory effects; the daemon is our unreaped child.
    unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
    let _ = daemon.finish(Duration::from_secs(20));
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_dir_all(&dir);
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "shell_restore_us",
                "restore into a prepared shell (wispd: load request → 204, resumed)",
                Unit::Microseconds,
            ),
            metric(
                "ctl_restore_us",
                "`wisp ctl restore` process start → exit",
                Unit::Microseconds,
            ),
            metric(
                "clone_total_us",
                &format!("{clones} clones in one request (wispd's total)"),
                Unit::Microseconds,
            ),
            metric(
                "clone_per_vm_us",
                "per clone (the total over the count: the loads run side by side)",
                Unit::Microseconds,
            ),
        ],
        vmms: vec![record],
        notes: vec![
            format!(
                "pool of {pool} prepared shells of {GUEST_MEM_MIB} MiB; the snapshot's guest \
                 runs `await-restore idle` (it prints its new generation, then halts)"
            ),
            "no peer: neither QEMU nor Firecracker restores into prepared shells".to_string(),
        ],
    })
}

fn measure(
    setup: &Setup,
    socket: &Path,
    dir: &Path,
    pool: usize,
    clones: usize,
    record: &mut VmmRuns,
) -> Result<(), String> {
    // Preparing this many shells takes a while on a small machine.
    let deadline = Instant::now() + setup.timeout * 10;
    while prepared(setup, socket) < pool {
        if Instant::now() > deadline {
            return Err(format!("wispd never had {pool} prepared shells"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let config = dir.join("vm.json");
    let text = firecracker_config(&setup.unikernel, "await-restore idle");
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let config = config.display().to_string();
    let created = ctl(setup, socket, &["create", "--config", &config])?;
    let api = created
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .ok_or_else(|| format!("no api= in {created:?}"))?
        .to_string();
    let api = Path::new(&api);
    // The guest reaches its wait well within this (it prints one line first).
    std::thread::sleep(Duration::from_millis(500));
    let call = |method: &str, uri: &str, body: &str| {
        let r = http_unix::request(api, method, uri, Some(body), setup.timeout)
            .map_err(|e| e.to_string())?;
        if r.is_success() {
            Ok(())
        } else {
            Err(format!("{method} {uri} answered {}: {}", r.status, r.body))
        }
    };
    call("PATCH", "/vm", r#"{"state":"Paused"}"#)?;
    let create = serde_json::json!({
        "snapshot_path": dir.join("vm.state"),
        "mem_file_path": dir.join("vm.mem"),
    });
    call("PUT", "/snapshot/create", &create.to_string())?;
    let snap = dir.display().to_string();
    for run in 1..=setup.runs {
        let label = format!("restore {run}/{}", setup.runs);
        let t0 = Instant::now();
        match ctl(setup, socket, &["restore", "--snapshot", &snap]) {
            Ok(out) => {
                let round_trip = t0.elapsed();
                let Some(each) = field(&out, "restore-us=") else {
                    run_failed(
                        "snapshot-wispd",
                        record,
                        &label,
                        &format!("no restore-us in {out:?}"),
                    );
                    continue;
                };
                eprintln!("[snapshot-wispd] {label}: {each:.1} µs");
                record.runs.push(BTreeMap::from([
                    ("shell_restore_us".to_string(), each),
                    ("ctl_restore_us".to_string(), micros(round_trip)),
                ]));
            }
            Err(why) => run_failed("snapshot-wispd", record, &label, &why),
        }
    }
    let count = clones.to_string();
    let out = ctl(
        setup,
        socket,
        &["clone", "--snapshot", &snap, "--count", &count],
    )?;
    let total = field(&out, "total-us=").ok_or_else(|| format!("no total-us in {out:?}"))?;
    let restored = field(&out, "restored=").unwrap_or(0.0);
    if restored as usize != clones {
        return Err(format!("{restored} of {clones} clones restored: {out}"));
    }
    let per_vm = total / restored;
    eprintln!(
        "[snapshot-wispd] {clones} clones: {:.2} ms total, {per_vm:.1} µs per clone",
        total / 1e3
    );
    record.runs.push(BTreeMap::from([
        ("clone_total_us".to_string(), total),
        ("clone_per_vm_us".to_string(), per_vm),
    ]));
    Ok(())
}
