//! `warm`: creates through `wispd` from prepared shells (docs/design.md §5). `wispd --socket PATH
//! --pool N` keeps the shells; each create is `wisp ctl --socket PATH create --config vm.json`,
//! which prints the VM id and its times (request → first guest instruction, doorbell → first
//! instruction, request → boot timer with `--wait-boot`). Records those and the client's whole
//! round trip (process start → exit of `wisp ctl`). With `--jail`, two more daemons run beside it,
//! `wispd --no-seccomp` and `wispd --jail` (cold_jail.rs), their creates interleaved; with
//! `--mem-shared`, `wispd --shell-mem-shared` (guest RAM in memfds, as virtio-fs shares need).

use super::{cold_jail, metric, micros, run_failed};
use crate::launch::{Input, Launched};
use crate::peers::firecracker_config;
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::{help_mentions, Setup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Time for the pool to refill between creates, so each create finds a prepared shell.
const REFILL: Duration = Duration::from_millis(100);
/// The longest wait for every daemon's pool to be full before a create.
const REFILL_WAIT: Duration = Duration::from_secs(5);

pub fn run(setup: &Setup) -> SuiteOutcome {
    let Some(wispd) = setup.sibling("wispd") else {
        return SuiteOutcome::Skipped {
            reason: format!(
                "no wispd binary beside {} (the control plane, issue 7)",
                setup.wisp.display()
            ),
        };
    };
    if !help_mentions(&setup.wisp, &[], "ctl") {
        return SuiteOutcome::Skipped {
            reason: "`wisp ctl` does not exist yet (issue 7)".to_string(),
        };
    }
    let config = setup.out.join("warm-vm.json");
    if let Err(e) = std::fs::write(&config, firecracker_config(&setup.unikernel, "")) {
        return SuiteOutcome::Skipped {
            reason: format!("cannot write {}: {e}", config.display()),
        };
    }
    // The daemons compared: wispd as it is, and with --jail its isolation on and off.
    let mut variants: Vec<(&str, Vec<String>)> = vec![("wisp", Vec::new())];
    let mut notes = Vec::new();
    if setup.mem_shared {
        variants.push(("wisp-mem-shared", vec!["--shell-mem-shared".to_string()]));
        notes.push(
            "--mem-shared: wisp-mem-shared is `wispd --shell-mem-shared` (every prepared shell's \
             guest RAM a sealed memfd, as virtio-fs needs), the same VM config (no share); \
             creates interleaved with wisp's"
                .to_string(),
        );
    }
    if setup.jail {
        match cold_jail::jailer(setup) {
            Some(jailer) => {
                variants.push(("wisp-no-seccomp", vec!["--no-seccomp".to_string()]));
                variants.push((
                    "wisp-jail-seccomp",
                    cold_jail::wispd_jail_args(setup, &jailer),
                ));
                notes.push(format!(
                    "--jail: wisp-no-seccomp is `wispd --no-seccomp` (wispd and its shells \
                     unfiltered); wisp-jail-seccomp is `wispd --jail` (each shell a wisp-jailer, \
                     uid {}, the kernel's directory bound read-only so nothing is linked on the \
                     create path), filters on; creates interleaved across the daemons",
                    cold_jail::JAIL_UID
                ));
            }
            None => notes.push(format!(
                "--jail: no wisp-jailer beside {}: jailed runs left out",
                setup.wisp.display()
            )),
        }
    }
    let mut daemons = Vec::new();
    let mut records = Vec::new();
    for (name, extra) in &variants {
        let socket = setup.out.join(format!("wispd-{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut daemon = Command::new(&wispd);
        daemon
            .arg("--socket")
            .arg(&socket)
            .arg("--pool")
            .arg(setup.pool.to_string())
            .args(extra);
        let mut record = VmmRuns::new(
            name,
            format!(
                "{} --socket S --pool {}{}; {} ctl --socket S create --config {}",
                wispd.display(),
                setup.pool,
                extra.iter().map(|a| format!(" {a}")).collect::<String>(),
                setup.wisp.display(),
                config.display()
            ),
        );
        match Launched::spawn(daemon, Input::Null, b"\0") {
            Ok(d) => daemons.push(Some(d)),
            Err(e) => {
                record.failures.push(e.to_string());
                daemons.push(None);
            }
        }
        records.push((socket, record));
    }
    let deadline = Instant::now() + setup.timeout;
    for (socket, record) in &mut records {
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !socket.exists() {
            record
                .failures
                .push(format!("wispd never created {}", socket.display()));
        }
    }
    // Let the pools fill before the first create.
    std::thread::sleep(REFILL * setup.pool as u32);
    let sockets: Vec<PathBuf> = records.iter().map(|(s, _)| s.clone()).collect();
    for run in 1..=setup.runs {
        // Interleaved: A B A B …, so drift on the machine hits every daemon alike; and each
        // create waits until every pool is full again, so no daemon's refill (a jailed shell's
        // takes longest) lands on another's create.
        for (socket, record) in &mut records {
            if !socket.exists() {
                continue;
            }
            wait_for_pools(setup, &sockets);
            match create_once(setup, socket, &config) {
                Ok(sample) => {
                    eprintln!(
                        "[warm] create {run}/{} {}: reported {:.1} µs, round trip {:.2} ms",
                        setup.runs,
                        record.name,
                        sample.get("create_us").copied().unwrap_or(f64::NAN),
                        sample.get("ctl_round_trip_us").copied().unwrap_or(f64::NAN) / 1e3
                    );
                    record.runs.push(sample);
                }
                Err(why) => run_failed(
                    "warm",
                    record,
                    &format!("create {run}/{}", setup.runs),
                    &why,
                ),
            }
            std::thread::sleep(REFILL);
        }
    }
    for (daemon, (socket, record)) in daemons.into_iter().zip(&mut records) {
        let Some(daemon) = daemon else {
            continue;
        };
        // SAFETY: kill(2) has no memory effects; the daemon is our unreaped child.
        unsafe { libc::kill(daemon.pid(), libc::SIGTERM) };
        if let Ok(done) = daemon.finish(Duration::from_secs(10)) {
            if done.timed_out {
                record
                    .failures
                    .push("wispd did not exit on SIGTERM".to_string());
            }
        }
        let _ = std::fs::remove_file(socket);
    }
    let vmms = records.into_iter().map(|(_, r)| r).collect();
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "create_us",
                "create: request → guest's first instruction (wispd's report)",
                Unit::Microseconds,
            ),
            metric(
                "doorbell_us",
                "doorbell → guest's first instruction (wispd's report)",
                Unit::Microseconds,
            ),
            metric(
                "boot_timer_us",
                "request → guest's boot-timer write (wispd's report)",
                Unit::Microseconds,
            ),
            metric(
                "ctl_round_trip_us",
                "`wisp ctl create` process start → exit",
                Unit::Microseconds,
            ),
        ],
        vmms,
        notes: [
            format!(
                "pool of {} prepared shells, {} ms between creates, and each create waits \
                 (at most {} s) until every daemon's pool is full",
                setup.pool,
                REFILL.as_millis(),
                REFILL_WAIT.as_secs()
            ),
            "no peer: neither QEMU nor Firecracker has prepared shells (compare with `api`)"
                .to_string(),
        ]
        .into_iter()
        .chain(notes)
        .collect(),
    })
}

/// Waits (at most `REFILL_WAIT`) until every daemon has `setup.pool` prepared shells.
fn wait_for_pools(setup: &Setup, sockets: &[PathBuf]) {
    let deadline = Instant::now() + REFILL_WAIT;
    for socket in sockets {
        while Instant::now() < deadline && prepared(setup, socket) < Some(setup.pool) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// `wisp ctl status`'s prepared shells.
fn prepared(setup: &Setup, socket: &Path) -> Option<usize> {
    let out = Command::new(&setup.wisp)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("prepared="))?
        .parse()
        .ok()
}

fn create_once(
    setup: &Setup,
    socket: &Path,
    config: &Path,
) -> Result<BTreeMap<String, f64>, String> {
    let mut cmd = Command::new(&setup.wisp);
    cmd.arg("ctl")
        .arg("--socket")
        .arg(socket)
        .arg("create")
        .arg("--config")
        .arg(config)
        .arg("--wait-boot");
    let t0 = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run wisp ctl: {e}"))?;
    let round_trip = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wisp ctl create failed ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if stdout.contains("cold start") {
        // Not a create from a prepared shell: it does not belong in these numbers.
        return Err(format!("no prepared shell was free: {}", stdout.trim()));
    }
    let created = parse_created(&stdout);
    let create = created
        .create_us
        .ok_or_else(|| format!("no create-us in `wisp ctl create` output {stdout:?}"))?;
    let mut record = BTreeMap::from([
        ("create_us".to_string(), create),
        ("ctl_round_trip_us".to_string(), micros(round_trip)),
    ]);
    if let Some(us) = created.doorbell_us {
        record.insert("doorbell_us".to_string(), us);
    }
    if let Some(us) = created.boot_us {
        record.insert("boot_timer_us".to_string(), us);
    }
    Ok(record)
}

/// The times `wisp ctl create` prints (src/ctl.rs):
/// `ID pid=N create-us=X doorbell-us=Y boot-us=Z api=PATH`, `-` for a time not known.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Created {
    /// Request sent → the guest's first instruction.
    pub create_us: Option<f64>,
    /// Doorbell rung → the guest's first instruction.
    pub doorbell_us: Option<f64>,
    /// Request sent → the guest's boot-timer write (with `--wait-boot`).
    pub boot_us: Option<f64>,
}

pub fn parse_created(output: &str) -> Created {
    let mut created = Created::default();
    for token in output.split_whitespace() {
        let Some((key, value)) = token.split_once('=') else {
            continue;
        };
        let value = value.parse::<f64>().ok();
        match key {
            "create-us" => created.create_us = value,
            "doorbell-us" => created.doorbell_us = value,
            "boot-us" => created.boot_us = value,
            _ => {}
        }
    }
    created
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_times_wisp_ctl_prints() {
        let line =
            "vm-3 pid=4242 create-us=212.5 doorbell-us=80.1 boot-us=1200.0 api=/run/x.sock\n";
        assert_eq!(
            parse_created(line),
            Created {
                create_us: Some(212.5),
                doorbell_us: Some(80.1),
                boot_us: Some(1200.0),
            }
        );
        let unknown = parse_created("vm-4 pid=1 create-us=- doorbell-us=- boot-us=- api=-");
        assert_eq!(unknown, Created::default());
    }
}
