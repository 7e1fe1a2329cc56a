//! `linux`: the Tinyx Linux guest under Wisp and Firecracker inside the real-KVM test host
//! (tests/testhost: QEMU TCG with `-cpu EPYC,+svm` → Debian's kernel with kvm_amd → static
//! `wisp`, and Firecracker with its shared libraries copied in as curl is → Tinyx), where this
//! machine's PVM KVM cannot boot Linux. One L1 boot runs every sample; each sample is a whole run
//! of each VMM on the Tinyx vmlinux (PVH) and on its bzImage, interleaved, each timed inside L1 by
//! `wisp-bench l1-time` (l1_timer.rs) from spawn to Tinyx's /init line and to the exit. These are
//! nested-TCG times: compare them with each other (ratios), not with anything outside.

#[allow(clippy::unwrap_used, clippy::undocumented_unsafe_blocks)]
#[path = "../../../tests/testhost/mod.rs"]
mod testhost;

use super::metric;
use crate::l1_timer;
use crate::peers::{FIRECRACKER_ARGS, GUEST_MEM_MIB};
use crate::results::{Comparison, SuiteOutcome, Unit, VmmRuns};
use crate::setup::Setup;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use testhost::{L2Guest, TestHost};
use wisp_tinyx::initramfs::INIT_MARKER;
use wisp_vmm::host_kvm::HostKvm;

/// The guest's command line (quiet: every console byte is a nested exit under TCG).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";
/// The Tinyx initramfs inside L1.
const INITRD: &str = "/guest/tinyx.cpio.gz";
/// The kernels compared: (metric suffix, path inside L1).
const KERNELS: [(&str, &str); 2] = [("vmlinux", "/guest/vmlinux"), ("bzimage", "/guest/bzImage")];

/// A static `wisp` to run beside the one under test, as "wisp-baseline" (before/after a
/// change, measured in the same L1 boot).
const BASELINE_ENV: &str = "WISP_BENCH_L1_BASELINE";
const BASELINE_IN_L1: &str = "/bin/wisp-baseline";

/// A VMM as the L1 script starts it.
enum L1Vmm {
    Wisp,
    Baseline,
    /// Its binary (copied into L1 at the same path).
    Firecracker(PathBuf),
}

impl L1Vmm {
    fn name(&self) -> &'static str {
        match self {
            L1Vmm::Wisp => "wisp",
            L1Vmm::Baseline => "wisp-baseline",
            L1Vmm::Firecracker(_) => "firecracker",
        }
    }

    /// The command for one kernel inside L1 (shell words, already quoted).
    fn command(&self, kind: &str, kernel: &str) -> String {
        match self {
            L1Vmm::Wisp | L1Vmm::Baseline => format!(
                "{} run --kernel {kernel} --initrd {INITRD} --mem {GUEST_MEM_MIB} \
                 --cmdline \"{CMDLINE}\" --boot-timer",
                if matches!(self, L1Vmm::Wisp) {
                    "wisp"
                } else {
                    BASELINE_IN_L1
                }
            ),
            L1Vmm::Firecracker(fc) => format!(
                "{} {} --no-api --config-file /guest/fc-{kind}.json",
                fc.display(),
                FIRECRACKER_ARGS.join(" ")
            ),
        }
    }
}

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
    let timer = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: format!("cannot find wisp-bench itself (the timer inside L1): {e}"),
            }
        }
    };
    let mut notes = Vec::new();
    let mut builder = TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&guest.bzimage, "/guest/bzImage")
        .file(&guest.tinyx_initramfs, INITRD)
        .host_program(&timer);
    let mut vmms = vec![L1Vmm::Wisp];
    if let Some(baseline) = std::env::var_os(BASELINE_ENV) {
        builder = builder.executable(PathBuf::from(&baseline), BASELINE_IN_L1);
        vmms.push(L1Vmm::Baseline);
        notes.push(format!(
            "wisp-baseline: {} (${BASELINE_ENV}), in the same L1 boot",
            Path::new(&baseline).display()
        ));
    }
    match firecracker_in_l1(setup, &mut builder) {
        Ok(Some(vmm)) => vmms.push(vmm),
        Ok(None) => notes.push(
            "Firecracker not compared: give --firecracker PATH or FIRECRACKER=PATH".to_string(),
        ),
        Err(e) => notes.push(format!("Firecracker not compared: {e}")),
    }
    let mut script = String::new();
    for i in 0..setup.runs {
        for (kind, kernel) in KERNELS {
            for vmm in &vmms {
                script.push_str(&format!(
                    "run {}-{kind}-{i} 180 {} {} \"{INIT_MARKER}\" {}\n",
                    vmm.name(),
                    timer.display(),
                    l1_timer::SUBCOMMAND,
                    vmm.command(kind, kernel)
                ));
            }
        }
    }
    eprintln!(
        "[linux] booting the test host (L1) for {} L2 boots…",
        KERNELS.len() * vmms.len() * setup.runs
    );
    let l1 = match builder.script(&script).boot() {
        Ok(h) => h,
        Err(e) => {
            return SuiteOutcome::Skipped {
                reason: format!("the test host did not boot: {e}"),
            }
        }
    };
    let mut records = Vec::new();
    for vmm in &vmms {
        let example = vmm.command("vmlinux", "/guest/vmlinux");
        let mut record = VmmRuns::new(vmm.name(), format!("{example} (inside L1; also bzImage)"));
        for i in 0..setup.runs {
            let mut sample = BTreeMap::new();
            for (kind, _) in KERNELS {
                let name = format!("{}-{kind}-{i}", vmm.name());
                match l1.run(&name) {
                    Ok(run) if run.exit_code == Some(0) => {
                        for (key, metric) in [("marker-us", "init"), ("exit-us", "exit")] {
                            if let Some(us) = run.value(key).and_then(|v| v.parse().ok()) {
                                sample.insert(format!("{metric}_{kind}_us"), us);
                            }
                        }
                    }
                    Ok(run) => record.failures.push(format!(
                        "{name}: exit {:?}: {}",
                        run.exit_code,
                        run.stderr.lines().last().unwrap_or("")
                    )),
                    Err(e) => record.failures.push(format!("{name}: {e}")),
                }
            }
            if !sample.is_empty() {
                record.runs.push(sample);
            }
        }
        records.push(record);
    }
    let (l1_init, l1_kvm) = l1.l1_times_s();
    notes.insert(
        0,
        format!(
            "L1: Debian kernel under QEMU TCG (-cpu EPYC,+svm), /init at {} s, /dev/kvm ready \
             at {} s of L1 uptime; {GUEST_MEM_MIB} MiB, 1 vCPU, `{CMDLINE}`",
            l1_init.map_or("?".into(), |s| format!("{s:.2}")),
            l1_kvm.map_or("?".into(), |s| format!("{s:.2}"))
        ),
    );
    let mut metrics = Vec::new();
    for (kind, _) in KERNELS {
        metrics.push(metric(
            &format!("init_{kind}_us"),
            &format!("{kind}: VMM spawn → Tinyx /init line (L2, nested TCG)"),
            Unit::Microseconds,
        ));
    }
    for (kind, _) in KERNELS {
        metrics.push(metric(
            &format!("exit_{kind}_us"),
            &format!("{kind}: VMM spawn → VMM exit after the guest's reset"),
            Unit::Microseconds,
        ));
    }
    SuiteOutcome::Comparison(Comparison {
        metrics,
        vmms: records,
        notes,
    })
}

/// Firecracker for L1: its binary and libraries go in with the builder, its config files (one
/// per kernel, the same guest as Wisp's) as files. `None` when no Firecracker was given.
fn firecracker_in_l1(
    setup: &Setup,
    builder: &mut testhost::TestHostBuilder,
) -> std::io::Result<Option<L1Vmm>> {
    let Some(fc) = setup.firecracker.clone() else {
        return Ok(None);
    };
    let mut b = builder.clone().host_program(&fc);
    for (kind, kernel) in KERNELS {
        let config = setup.out.join(format!("firecracker-l1-{kind}.json"));
        std::fs::write(&config, firecracker_l1_config(Path::new(kernel)))?;
        b = b.file(&config, &format!("/guest/fc-{kind}.json"));
    }
    *builder = b;
    Ok(Some(L1Vmm::Firecracker(fc)))
}

/// Firecracker's `--config-file` for a kernel inside L1: the Tinyx initramfs, the same command
/// line and machine as Wisp's run.
fn firecracker_l1_config(kernel: &Path) -> String {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": kernel,
            "initrd_path": INITRD,
            "boot_args": CMDLINE,
        },
        "drives": [],
        "machine-config": {
            "vcpu_count": 1,
            "mem_size_mib": GUEST_MEM_MIB,
        },
    })
    .to_string()
}
