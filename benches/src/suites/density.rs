//! `density`: unikernel VMs started one after another and kept running (`--cmdline echo`: the
//! unikernel echoes serial input until it reads `q`, so holding its stdin open keeps it alive).
//! For each VM: process start → its first line, against the number already running; at
//! checkpoints (1, 2, 5, 10, 20, 50, …) the PSS of all VMM processes and the host's used
//! memory. Stops early, and says why, when memory, file descriptors or processes run out.

use super::micros;
use crate::launch::{Input, Launched};
use crate::machine::meminfo_kib;
use crate::peers::{describe, Peer, GUEST_LINE};
use crate::results::{CreatePoint, Density, MemoryPoint, SuiteOutcome};
use crate::setup::Setup;
use std::io::Write;
use std::time::Duration;

/// Stop before the host has less than this available (KiB): the machine is shared.
const MIN_AVAILABLE_KIB: u64 = 2 * 1024 * 1024;

pub fn run(setup: &Setup) -> SuiteOutcome {
    let target = setup.max_vms;
    let command = describe(&Peer::Wisp.command(setup, "echo"));
    raise_fd_limit();
    let baseline_used = host_used_kib();
    let mut vms: Vec<Launched> = Vec::new();
    let mut creates = Vec::new();
    let mut memory = Vec::new();
    let mut stopped_early = None;
    for index in 0..target {
        if let Some(available) = meminfo("MemAvailable") {
            if available < MIN_AVAILABLE_KIB {
                stopped_early = Some(format!(
                    "host MemAvailable fell to {} MiB with {index} VMs running",
                    available / 1024
                ));
                break;
            }
        }
        let mut launched =
            match Launched::spawn(Peer::Wisp.command(setup, "echo"), Input::Pipe, GUEST_LINE) {
                Ok(l) => l,
                Err(e) => {
                    stopped_early = Some(format!("cannot start VM {}: {e}", index + 1));
                    break;
                }
            };
        match launched.wait_first_line(setup.timeout) {
            Some(line) => {
                creates.push(CreatePoint {
                    running_before: index,
                    create_us: micros(line),
                });
                vms.push(launched);
            }
            None => {
                launched.kill();
                let why = launched
                    .finish(Duration::from_secs(5))
                    .map(|f| f.failure())
                    .unwrap_or_else(|e| e.to_string());
                stopped_early = Some(format!("VM {} did not boot: {why}", index + 1));
                break;
            }
        }
        let running = vms.len();
        if is_checkpoint(running) || running == target {
            let total_pss_kib = vms.iter().filter_map(|vm| pss_kib(vm.pid())).sum();
            let used = host_used_kib();
            let point = MemoryPoint {
                running,
                total_pss_kib,
                host_used_delta_kib: match (used, baseline_used) {
                    (Some(now), Some(before)) => now as i64 - before as i64,
                    _ => 0,
                },
            };
            eprintln!(
                "[density] {running}/{target} running: last create {:.2} ms, PSS {:.1} MiB total",
                creates
                    .last()
                    .map_or(f64::NAN, |c: &CreatePoint| c.create_us / 1e3),
                point.total_pss_kib as f64 / 1024.0
            );
            memory.push(point);
        }
    }
    // A checkpoint for where it stopped, if it stopped between two.
    if memory.last().map(|m| m.running) != Some(vms.len()) && !vms.is_empty() {
        memory.push(MemoryPoint {
            running: vms.len(),
            total_pss_kib: vms.iter().filter_map(|vm| pss_kib(vm.pid())).sum(),
            host_used_delta_kib: match (host_used_kib(), baseline_used) {
                (Some(now), Some(before)) => now as i64 - before as i64,
                _ => 0,
            },
        });
    }
    let mut notes = vec![
        "create time: process start → the guest's first line; PSS from /proc/PID/smaps_rollup \
         (guest pages the guest touched included)"
            .to_string(),
        "the echo guest polls the UART's line status while it waits, so every running VM keeps \
         a vCPU busy: create times here include CPU contention from the VMs already running"
            .to_string(),
    ];
    notes.push(stop_all(vms));
    SuiteOutcome::Density(Density {
        vmm: "wisp".to_string(),
        command,
        target_vms: target,
        stopped_early,
        creates,
        memory,
        notes,
    })
}

/// Sends each VM the byte that ends `echo`, then reaps them all.
fn stop_all(mut vms: Vec<Launched>) -> String {
    let total = vms.len();
    for vm in &mut vms {
        if let Some(stdin) = vm.stdin() {
            let _ = stdin.write_all(b"q");
        }
    }
    let mut clean = 0;
    for vm in vms {
        if let Ok(done) = vm.finish(Duration::from_secs(30)) {
            if done.exit_code == Some(0) && !done.timed_out {
                clean += 1;
            }
        }
    }
    format!("{clean} of {total} VMs exited cleanly after `q`")
}

/// 1, 2, 5, 10, 20, 50, 100, …
fn is_checkpoint(n: usize) -> bool {
    let mut decade = 1;
    while decade <= n {
        if n == decade || n == 2 * decade || n == 5 * decade {
            return true;
        }
        decade *= 10;
    }
    false
}

fn meminfo(field: &str) -> Option<u64> {
    meminfo_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, field)
}

fn host_used_kib() -> Option<u64> {
    Some(meminfo("MemTotal")?.saturating_sub(meminfo("MemAvailable")?))
}

/// `Pss:` of /proc/PID/smaps_rollup, KiB.
fn pss_kib(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    meminfo_kib(&text, "Pss")
}

/// Each VM holds three pipe ends here; lift the soft limit on open files to the hard one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit; raising the soft limit up to the hard one is allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        log::warn!(
            "cannot raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_follow_one_two_five() {
        let points: Vec<usize> = (1..=1000).filter(|n| is_checkpoint(*n)).collect();
        assert_eq!(points, [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
    }

    #[test]
    fn reads_our_own_pss() {
        let pss = pss_kib(std::process::id() as i32).unwrap();
        assert!(pss > 0);
    }
}
