//! `linux`: the Tinyx Linux guest under Wisp inside the real-KVM test host (tests/testhost:
//! QEMU TCG with `-cpu EPYC,+svm` → Debian's kernel with kvm_amd → static `wisp` → Tinyx),
//! where this machine's PVM KVM cannot boot Linux. One L1 boot runs every sample; each sample is
//! a whole `wisp run` of the Tinyx vmlinux (PVH) and of its bzImage, interleaved. These are
//! nested-TCG times: compare them with each other (ratios), not with anything outside.

#[allow(clippy::unwrap_used, clippy::undocumented_unsafe_blocks)]
#[path = "../../../tests/testhost/mod.rs"]
mod testhost;

use super::metric;
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::Setup;
use std::collections::BTreeMap;
use testhost::{L2Guest, TestHost};
use wisp_vmm::host_kvm::HostKvm;

/// The guest's command line (quiet: every console byte is a nested exit under TCG).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";

pub fn run(setup: &Setup) -> SuiteOutcome {
    let host = HostKvm::detect();
    if host.boots_linux() {
        return SuiteOutcome::Skipped {
            reason: format!(
                "/dev/kvm here is {host}: boot the Tinyx guest directly (`cold` with \
                 --unikernel pointing at a Linux kernel) instead of through the test host"
            ),
        };
    }
    let guest = match L2Guest::tinyx() {
        Ok(g) => g,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: format!("no Tinyx guest: {e}"),
            }
        }
    };
    let kinds = [
        ("vmlinux-pvh", "/guest/vmlinux"),
        ("bzimage", "/guest/bzImage"),
    ];
    let mut script = String::new();
    for i in 0..setup.runs {
        for (name, kernel) in kinds {
            script.push_str(&format!(
                "run {name}-{i} 180 wisp run --kernel {kernel} --initrd /guest/tinyx.cpio.gz \
                 --cmdline \"{CMDLINE}\" --boot-timer\n"
            ));
        }
    }
    eprintln!(
        "[linux] booting the test host (L1) for {} L2 boots…",
        2 * setup.runs
    );
    let l1 = match TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&guest.bzimage, "/guest/bzImage")
        .file(&guest.tinyx_initramfs, "/guest/tinyx.cpio.gz")
        .script(&script)
        .boot()
    {
        Ok(h) => h,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: format!("the test host did not boot: {e}"),
            }
        }
    };
    let mut vmms = Vec::new();
    for (name, kernel) in kinds {
        let mut record = VmmRuns::new(
            &format!("wisp ({name})"),
            format!("wisp run --kernel {kernel} --initrd tinyx.cpio.gz --boot-timer (inside L1)"),
        );
        for i in 0..setup.runs {
            match l1.run(&format!("{name}-{i}")) {
                Ok(run) if run.exit_code == Some(0) => {
                    let mut sample = BTreeMap::new();
                    if let Some(us) = run.value("boot-time-us").and_then(|v| v.parse().ok()) {
                        sample.insert("boot_timer_us".to_string(), us);
                    }
                    if let (Some(a), Some(b)) = (run.started_s, run.ended_s) {
                        sample.insert("run_us".to_string(), (b - a) * 1e6);
                    }
                    record.runs.push(sample);
                }
                Ok(run) => record
                    .failures
                    .push(format!("{name}-{i}: exit {:?}", run.exit_code)),
                Err(e) => record.failures.push(format!("{name}-{i}: {e}")),
            }
        }
        vmms.push(record);
    }
    let (l1_init, l1_kvm) = l1.l1_times_s();
    SuiteOutcome::Comparison(Comparison {
        metrics: vec![
            metric(
                "boot_timer_us",
                "wisp start → Tinyx /init writes the boot timer (L2, nested TCG)",
                Unit::Microseconds,
            ),
            metric(
                "run_us",
                "whole `wisp run` to the guest's reset, L1 uptime (10 ms resolution)",
                Unit::Microseconds,
            ),
        ],
        vmms,
        notes: vec![
            format!(
                "L1: Debian kernel under QEMU TCG (-cpu EPYC,+svm), /init at {} s, /dev/kvm ready \
                 at {} s of L1 uptime",
                l1_init.map_or("?".into(), |s| format!("{s:.2}")),
                l1_kvm.map_or("?".into(), |s| format!("{s:.2}"))
            ),
            "no peer runs inside L1 (it carries only busybox and a static wisp); the two rows \
             compare Wisp's two boot paths on the same kernel"
                .to_string(),
        ],
    })
}
