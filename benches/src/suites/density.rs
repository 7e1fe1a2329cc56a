//! `density`: unikernel VMs created one after another through `wispd` from prepared shells and
//! kept running (`--cmdline idle`: the unikernel halts with interrupts off, so an idle VM costs
//! no CPU). For each VM: request → the guest's first instruction (the shell's first-entry
//! stamp on its control page), against the number already running; at checkpoints (1, 2, 5,
//! 10, 20, 50, …) the PSS of all VM processes and the host's used memory. Stops early, and says
//! why, when memory, file descriptors or processes run out.

use crate::launch::{Input, Launched};
use crate::machine::meminfo_kib;
use crate::results::{CreatePoint, Density, MemoryPoint, SuiteOutcome};
use crate::setup::Setup;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use wisp_api::control_page::monotonic_ns;
use wisp_api::seqpacket::SeqpacketConn;
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse, MAX_MESSAGE};
use wisp_api::{BootSource, MachineConfig, VmConfig};

/// Stop before the host has less than this available (KiB): the machine is shared.
const MIN_AVAILABLE_KIB: u64 = 2 * 1024 * 1024;
/// Guest memory of each VM (lazily backed: the unikernel touches well under 1 MiB of it).
const VM_MEM_MIB: u32 = 16;

fn request(socket: &Path, req: &CtlRequest) -> Result<CtlResponse, String> {
    let conn = SeqpacketConn::connect(socket).map_err(|e| e.to_string())?;
    conn.send(&serde_json::to_vec(req).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = conn.recv(&mut buf).map_err(|e| e.to_string())?;
    serde_json::from_slice(&buf[..n]).map_err(|e| e.to_string())
}

/// Waits until wispd has at least `n` prepared shells (so creates measure the warm path).
fn wait_prepared(socket: &Path, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(CtlResponse::Status { prepared, .. }) = request(socket, &CtlRequest::Status {}) {
            if prepared >= n {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

pub fn run(setup: &Setup) -> SuiteOutcome {
    let Some(wispd) = setup.sibling("wispd") else {
        return SuiteOutcome::Skipped {
            reason: format!("no wispd binary beside {}", setup.wisp.display()),
        };
    };
    let target = setup.max_vms;
    let socket = setup.out.join("density-wispd.sock");
    let _ = std::fs::remove_file(&socket);
    raise_fd_limit();
    let mut cmd = Command::new(&wispd);
    cmd.arg("--socket")
        .arg(&socket)
        .args(["--pool", &setup.pool.to_string()])
        .args(["--shell-mem", &VM_MEM_MIB.to_string()])
        .arg("--wisp")
        .arg(&setup.wisp);
    let command = format!(
        "{} --socket S --pool {} --shell-mem {VM_MEM_MIB}; create {{unikernel, \"idle\", {VM_MEM_MIB} MiB}} × {target}",
        wispd.display(),
        setup.pool
    );
    let daemon = match Launched::spawn(cmd, Input::Null, b"\0") {
        Ok(d) => d,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: e.to_string(),
            }
        }
    };
    let config = VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: setup.unikernel.clone(),
            initrd_path: None,
            boot_args: Some("idle".into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 1,
            mem_size_mib: VM_MEM_MIB,
            smt: false,
            mem_shared: false,
        },
        ..Default::default()
    };
    let baseline_used = host_used_kib();
    let mut pids: Vec<i32> = Vec::new();
    let mut creates = Vec::new();
    let mut memory = Vec::new();
    let mut stopped_early = None;
    let mut cold = 0;
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
        if !wait_prepared(&socket, 1, setup.timeout) {
            stopped_early = Some(format!("wispd had no prepared shell for VM {}", index + 1));
            break;
        }
        let req = CtlRequest::Create {
            config: Box::new(config.clone()),
            sent_ns: monotonic_ns(),
            wait_boot: true,
        };
        match request(&socket, &req) {
            Ok(CtlResponse::Created { vm, times, cold: c }) => {
                cold += usize::from(c);
                match (
                    times.request_to_first_entry_us,
                    times.request_to_boot_timer_us,
                ) {
                    (Some(create_us), Some(_)) => {
                        creates.push(CreatePoint {
                            running_before: index,
                            create_us,
                        });
                        pids.push(vm.pid as i32);
                    }
                    _ => {
                        stopped_early = Some(format!("VM {} did not boot", index + 1));
                        break;
                    }
                }
            }
            Ok(other) => {
                stopped_early = Some(format!("create {} failed: {other:?}", index + 1));
                break;
            }
            Err(e) => {
                stopped_early = Some(format!("create {} failed: {e}", index + 1));
                break;
            }
        }
        let running = pids.len();
        if is_checkpoint(running) || running == target {
            let point = memory_point(&pids, baseline_used);
            eprintln!(
                "[density] {running}/{target} running: last create {:.3} ms, PSS {:.2} MiB per VM",
                creates
                    .last()
                    .map_or(f64::NAN, |c: &CreatePoint| c.create_us / 1e3),
                point.total_pss_kib as f64 / 1024.0 / running as f64
            );
            memory.push(point);
        }
    }
    if memory.last().map(|m| m.running) != Some(pids.len()) && !pids.is_empty() {
        memory.push(memory_point(&pids, baseline_used));
    }
    let notes = vec![
        "create time: request sent → the guest's first instruction (the shell's first-entry \
         stamp), each from a prepared shell (the suite waits for the pool to refill)"
            .to_string(),
        "PSS: /proc/PID/smaps_rollup of each VM's shell process, guest pages the guest touched \
         included; host used: MemTotal − MemAvailable against the start, which also counts KVM's \
         kernel memory per VM"
            .to_string(),
        format!("{cold} creates fell back to a cold start"),
    ];
    // Killing wispd ends every shell (PR_SET_PDEATHSIG).
    daemon.kill();
    let _ = daemon.finish(Duration::from_secs(10));
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

fn memory_point(pids: &[i32], baseline_used: Option<u64>) -> MemoryPoint {
    MemoryPoint {
        running: pids.len(),
        total_pss_kib: pids.iter().filter_map(|pid| pss_kib(*pid)).sum(),
        host_used_delta_kib: match (host_used_kib(), baseline_used) {
            (Some(now), Some(before)) => now as i64 - before as i64,
            _ => 0,
        },
    }
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
