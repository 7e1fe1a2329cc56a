//! `wisp demo`: boots the demo microVM and shows its console and boot time.
//!
//! Which guest depends on the host's KVM: with hardware KVM it is the Tinyx Linux guest (built
//! from the distribution's kernel source on first use, then cached, by the `tinyx` program: the
//! VMM binary does not link the kernel builder); under `kvm_pvm`, which cannot finish booting an
//! unmodified Linux, it is the Wisp unikernel, built into this binary.

use crate::run::{run_vm, EXIT_VMM_ERROR};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;
use wisp_api::{BootSource, MachineConfig, VmConfig};
use wisp_vmm::host_kvm::HostKvm;

/// The unikernel, embedded so the demo needs nothing but this binary.
const UNIKERNEL: &[u8] = include_bytes!(env!("WISP_UNIKERNEL"));

fn demo_config(kernel: PathBuf, initrd: Option<PathBuf>, cmdline: &str) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: kernel,
            initrd_path: initrd,
            boot_args: Some(cmdline.into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 128,
            smt: false,
            mem_shared: false,
        },
        ..Default::default()
    }
}

/// The default Tinyx guest (vmlinux, initramfs), from `tinyx guest`: the `tinyx` beside this
/// executable, else the one on PATH. Its progress goes to our stderr.
fn tinyx_guest() -> Result<(PathBuf, PathBuf), String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tinyx")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("tinyx"));
    let out = Command::new(&program)
        .arg("guest")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} guest failed ({})",
            program.display(),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|p| PathBuf::from(p.trim())))
            .ok_or_else(|| format!("{} guest printed no {name} path", program.display()))
    };
    Ok((field("vmlinux ")?, field("initramfs ")?))
}

fn unikernel_file() -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("wisp-demo-unikernel-{}", std::process::id()));
    std::fs::write(&path, UNIKERNEL)?;
    Ok(path)
}

pub fn run_demo(start: Instant) -> i32 {
    let host = HostKvm::detect();
    match host {
        HostKvm::Absent => {
            report!("wisp: error: this host has no /dev/kvm: KVM is required");
            EXIT_VMM_ERROR
        }
        HostKvm::Hardware(_) | HostKvm::Unknown => {
            report!("wisp demo: {host}: booting the Tinyx Linux guest (2 vCPUs, 128 MiB)");
            report!("wisp demo: building or fetching the Tinyx guest from the cache…");
            let (vmlinux, initramfs) = match tinyx_guest() {
                Ok(g) => g,
                Err(e) => {
                    report!("wisp: error: cannot build the Tinyx guest: {e}");
                    return EXIT_VMM_ERROR;
                }
            };
            let config = demo_config(
                vmlinux,
                Some(initramfs),
                "console=ttyS0 reboot=k panic=-1 pci=off nomodule quiet",
            );
            run_vm(start, &config, true, false)
        }
        HostKvm::Pvm => {
            report!(
                "wisp demo: {host}: an unmodified Linux cannot finish booting here, so the demo \
                 boots the Wisp unikernel (2 vCPUs, 128 MiB)"
            );
            let path = match unikernel_file() {
                Ok(p) => p,
                Err(e) => {
                    report!("wisp: error: cannot write the demo unikernel: {e}");
                    return EXIT_VMM_ERROR;
                }
            };
            let code = run_vm(
                start,
                &demo_config(path.clone(), None, "smp mem"),
                true,
                false,
            );
            let _ = std::fs::remove_file(path);
            code
        }
    }
}
