//! `cold`: a fresh VMM process per boot. Per run and VMM: process start → the guest's first
//! serial line (seen on the child's stdout pipe), → the boot-timer write (Wisp reports it on
//! stderr, µs since its own start), → process exit; and the process's peak RSS. With `--jail`,
//! Wisp jailed with its filters and Wisp without filters join the round (cold_jail.rs).

use super::{cold_jail, launch_record, metric, run_failed};
use crate::launch::{Input, Launched};
use crate::peers::{self, describe, Peer, GUEST_LINE};
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::Setup;
use std::path::PathBuf;
use std::process::Command;

/// What boots in a round: a peer, or (with `--jail`) Wisp with its isolation on or off.
enum Entrant {
    Peer(Peer),
    /// `wisp --no-seccomp`: neither jail nor filters.
    Unfiltered,
    /// `wisp-jailer … -- run`: jail and filters.
    Jailed(PathBuf),
}

impl Entrant {
    fn name(&self) -> &'static str {
        match self {
            Entrant::Peer(p) => p.name(),
            Entrant::Unfiltered => "wisp-no-seccomp",
            Entrant::Jailed(_) => "wisp-jail-seccomp",
        }
    }

    /// The command of boot `n` (a jail id must be new for each).
    fn command(&self, setup: &Setup, n: usize) -> Command {
        match self {
            Entrant::Peer(p) => p.command(setup, CMDLINE),
            Entrant::Unfiltered => cold_jail::unfiltered(setup, CMDLINE),
            Entrant::Jailed(jailer) => {
                let id = format!("cold-{}-{n}", std::process::id());
                cold_jail::jailed(setup, jailer, &id, CMDLINE)
            }
        }
    }
}

/// The unikernel's command line: empty, so it greets, signals the boot timer and resets.
const CMDLINE: &str = "";

pub fn run(setup: &Setup) -> SuiteOutcome {
    let (peers, mut notes) = match peers::peers(setup, CMDLINE) {
        Ok(found) => found,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: format!("cannot write the Firecracker config: {e}"),
            }
        }
    };
    notes.insert(
        0,
        format!(
            "guest: the Wisp unikernel ({}), cmdline \"\", {} MiB, 1 vCPU; one unrecorded \
             warm-up boot per VMM first",
            setup.unikernel.display(),
            peers::GUEST_MEM_MIB
        ),
    );
    notes.insert(
        1,
        "first line: process start → `hello from wisp unikernel` read from the VMM's stdout \
         pipe; boot timer: Wisp's own report (guest write to the boot timer, µs since the wisp \
         process started); exit: process start → reaped (the parent has the outcome); gone: \
         process start → the VMM's stdout closed (Wisp leaves the kernel's VM teardown to a \
         helper process that ends after its exit)"
            .to_string(),
    );
    let mut peers: Vec<Entrant> = peers.into_iter().map(Entrant::Peer).collect();
    if setup.jail {
        match cold_jail::jailer(setup) {
            Some(jailer) => {
                peers.push(Entrant::Unfiltered);
                peers.push(Entrant::Jailed(jailer));
                notes.push(format!(
                    "--jail: wisp-no-seccomp is `wisp --no-seccomp run`; wisp-jail-seccomp is \
                     `wisp-jailer` (uid {}, own root under {}, the kernel and the host's libc \
                     bound read-only, no cgroup limits) running `wisp run` with its filters; \
                     its exit includes the jailer removing the jail",
                    cold_jail::JAIL_UID,
                    cold_jail::jail_base(setup).display()
                ));
            }
            None => notes.push(format!(
                "--jail: no wisp-jailer beside {}: jailed runs left out",
                setup.wisp.display()
            )),
        }
    }
    let mut vmms: Vec<VmmRuns> = peers
        .iter()
        .map(|p| VmmRuns::new(p.name(), describe(&p.command(setup, 0))))
        .collect();
    for peer in &peers {
        // A failed warm-up is said by the runs that follow, if it was not a one-off.
        if let Err(why) = boot_once(setup, peer.command(setup, 0)) {
            log::info!("[cold] warm-up {}: {why}", peer.name());
        }
    }
    for run in 1..=setup.runs {
        // Interleaved: A B A B …, so drift on the machine hits every VMM alike.
        for (peer, record) in peers.iter().zip(vmms.iter_mut()) {
            match boot_once(setup, peer.command(setup, run)) {
                Ok(sample) => {
                    eprintln!(
                        "[cold] run {run}/{} {}: first line {:.2} ms, exit {:.2} ms",
                        setup.runs,
                        peer.name(),
                        sample.get("first_line_us").copied().unwrap_or(f64::NAN) / 1e3,
                        sample.get("exit_us").copied().unwrap_or(f64::NAN) / 1e3,
                    );
                    record.runs.push(sample);
                }
                Err(why) => run_failed("cold", record, &format!("run {run}/{}", setup.runs), &why),
            }
        }
    }
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "first_line_us",
                "process start → first serial line",
                Unit::Microseconds,
            ),
            metric(
                "boot_timer_us",
                "process start → boot-timer write (Wisp's report)",
                Unit::Microseconds,
            ),
            metric(
                "exit_us",
                "process start → exit status (the outcome, reaped)",
                Unit::Microseconds,
            ),
            metric(
                "gone_us",
                "process start → console closed (every VMM process gone)",
                Unit::Microseconds,
            ),
            metric(
                "max_rss_kib",
                "peak RSS of the VMM process",
                Unit::Kibibytes,
            ),
        ],
        vmms,
        notes,
    })
}

/// One boot, as a record of metrics, or why it does not count.
fn boot_once(
    setup: &Setup,
    command: Command,
) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let launched = Launched::spawn(command, Input::Null, GUEST_LINE).map_err(|e| e.to_string())?;
    let finished = launched.finish(setup.timeout).map_err(|e| e.to_string())?;
    if !finished.is_clean() {
        return Err(finished.failure());
    }
    Ok(launch_record(&finished))
}
