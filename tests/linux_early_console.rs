//! The Linux boot path on this machine's own /dev/kvm. Under `kvm_pvm` (software PVM) an
//! unmodified kernel stops early (it hits instructions PVM cannot emulate, docs/design.md §7), so
//! this checks what can be checked here: `wisp run` loads the Tinyx kernel, enters it (PVH for
//! the vmlinux) and the kernel's early console prints `Linux version` over our serial port, and
//! when the kernel then dies wisp ends with a clear one-line error, not a hang or a panic. Full
//! Linux boots are tested on real KVM inside the test host (tests/linux_guest.rs).

use std::process::Command;
use std::time::Duration;
use wisp_test_support::{run_with_deadline, Outcome};

const EARLY: &str = "earlyprintk=serial,ttyS0,115200 console=ttyS0 reboot=k panic=-1";

fn boot_to_early_console(kernel: &std::path::Path) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wisp"));
    cmd.args(["run", "--mem", "256", "--cmdline", EARLY, "--kernel"])
        .arg(kernel);
    run_with_deadline(cmd, b"", Duration::from_secs(60))
}

#[test]
fn tinyx_vmlinux_prints_linux_version_over_our_serial_port() {
    let guest = wisp_tinyx::default_guest().expect("Tinyx guest (built on first use)");
    let out = boot_to_early_console(&guest.vmlinux);
    assert!(
        out.stdout.contains("Linux version 6."),
        "no early console output: {out:#?}"
    );
    // The kernel saw the memory map we gave it.
    assert!(out.stdout.contains("BIOS-e820"), "{out:#?}");
    // Wisp ends either way, never hangs: a kernel that runs to its panic (no root filesystem)
    // reboots (`panic=-1 reboot=k`) and wisp exits 0; one that PVM stops ends wisp with an error.
    assert!(
        out.status.is_some(),
        "wisp was still running at the deadline: {out:#?}"
    );
    if out.code() != Some(0) {
        // Where PVM stops the kernel, wisp says so in one line with the exit reason and RIP.
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{out:#?}");
        assert!(err.starts_with("wisp: guest failed: "), "{out:#?}");
        assert!(err.contains("RIP 0x"), "{out:#?}");
    }
}
