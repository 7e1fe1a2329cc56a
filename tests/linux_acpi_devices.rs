//! A full device room under Linux with ACPI, on real KVM inside the test host
//! (tests/testhost): `wisp run` with 18 virtio-blk disks and virtio-rng — 19 virtio-mmio
//! devices on GSIs 5..23 — boots Tinyx Linux (L2), which must find every device, read each
//! disk's own marker, read entropy, and take each device's interrupts on its own GSI.
//!
//! With ACPI on, the devices come from the DSDT (`LNRO0005`, vmm/src/x86_64/acpi.rs) and the
//! command line names none; Linux maps GSIs 16..23 only because the DSDT declares them. With
//! `acpi=off`, the same devices come from `virtio_mmio.device=` entries and the MP table.
//! The L2 guest runs tests/testhost/l2_acpi_devices_init.sh.

mod testhost;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use wisp_test_support::Scratch;

use testhost::{
    check_failed, initramfs_with_init, shared_host, value, CommandRun, L2Guest, TestHost,
    TestHostError,
};

/// See linux_guest.rs: `quiet`, `panic=-1`, `reboot=k` (reset through the i8042).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";

/// The guard for one `wisp run` inside L1; generous, TCG is slow.
const L2_TIMEOUT_S: u32 = 240;

const L2_INIT: &str = include_str!("testhost/l2_acpi_devices_init.sh");

/// Disks besides the rng: together they fill the device room (19 = IRQs 5..23).
const DISKS: usize = 18;
const DEVICES: usize = DISKS + 1;

/// Each disk image is its marker padded with zeros to 4 KiB (8 sectors).
const DISK_BYTES: usize = 4096;

/// The marker of disk `index`, unique to this test run.
fn disk_marker(index: usize) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    });
    format!("wisp-disk-{index:02}-{run}")
}

/// Linux's name of the `index`th virtio-blk disk: vda, vdb, ...
fn disk_name(index: usize) -> String {
    format!("vd{}", char::from(b'a' + index as u8))
}

fn build_disk_images(dir: &Path) -> Vec<PathBuf> {
    (0..DISKS)
        .map(|i| {
            let path = dir.join(format!("disk{i:02}.img"));
            let mut bytes = format!("{}\n", disk_marker(i)).into_bytes();
            bytes.resize(DISK_BYTES, 0);
            std::fs::write(&path, bytes).expect("write a disk image");
            path
        })
        .collect()
}

/// `wisp run` with every disk and the rng; `extra` goes on the guest command line.
fn wisp_run(name: &str, extra: &str) -> String {
    let disks: String = (0..DISKS)
        .map(|i| format!(" --disk path=/guest/disk{i:02}.img,ro"))
        .collect();
    format!(
        "run {name} {L2_TIMEOUT_S} wisp run --kernel /guest/vmlinux --initrd /guest/devices.cpio \
         --cmdline \"{CMDLINE} {extra}\" --mem 256{disks} --rng\n"
    )
}

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    let dir = Scratch::new("linux-acpi-devices");
    let guest = L2Guest::tinyx()?;
    let initrd = initramfs_with_init("acpi-devices", L2_INIT, &[])?;
    let mut builder = TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&initrd, "/guest/devices.cpio");
    for (i, image) in build_disk_images(&dir.0).iter().enumerate() {
        builder = builder.file(image, &format!("/guest/disk{i:02}.img"));
    }
    let script = wisp_run("acpi", "") + &wisp_run("acpi-off", "acpi=off");
    builder.script(&script).boot()
}

fn host() -> &'static TestHost {
    shared_host(boot_shared_host)
}

fn expect_value(run: &CommandRun, key: &str, want: &str) -> Result<(), TestHostError> {
    let got = value(run, key)?;
    if got == want {
        Ok(())
    } else {
        Err(check_failed(run, format!("{key}={got}, expected {want}")))
    }
}

/// The guest ran to its end and reset, wisp exited 0, and it saw every device: each disk
/// with its own marker, the rng giving bytes, no probe failing, and every device's interrupt
/// on its own GSI (5..23, in attach order) with at least one interrupt taken.
fn check_full_room(name: &str) -> Result<&'static CommandRun, TestHostError> {
    let run = host().run(name)?;
    if run.timed_out() || !run.stdout.contains("WISP-L2 end") || run.exit_code != Some(0) {
        return Err(check_failed(
            run,
            "the guest did not run its init to the end with wisp exiting 0",
        ));
    }
    expect_value(run, "virtio-devices", &DEVICES.to_string())?;
    expect_value(run, "probe-failures", "0")?;
    for i in 0..DISKS {
        expect_value(run, &disk_name(i), &disk_marker(i))?;
    }
    expect_value(run, "rng-current", "virtio_rng.0")?;
    expect_value(run, "rng-bytes", "32")?;
    for i in 0..DEVICES {
        let irq = value(run, &format!("irq-virtio{i}"))?;
        let gsi = 5 + i;
        let count = irq
            .strip_prefix(&format!("{gsi}-edge:"))
            .and_then(|n| n.parse::<u64>().ok());
        if !matches!(count, Some(n) if n > 0) {
            return Err(check_failed(
                run,
                format!(
                    "virtio{i}: interrupt {irq}, expected GSI {gsi}, edge, taken at least once"
                ),
            ));
        }
    }
    Ok(run)
}

/// With ACPI, the DSDT declares all 19 devices and the command line none: Linux's
/// virtio-mmio ACPI driver probes each once, GSIs 16..23 included.
#[test]
fn linux_with_acpi_uses_all_19_virtio_devices_from_the_dsdt() -> Result<(), TestHostError> {
    let run = check_full_room("acpi")?;
    expect_value(run, "acpi-virtio", &DEVICES.to_string())?;
    expect_value(run, "cmdline-virtio", "0")?;
    Ok(())
}

/// With `acpi=off` the devices come from the command line (and the MP table's 24 pins), and
/// the guest does not see the DSDT's.
#[test]
fn linux_with_acpi_off_uses_all_19_virtio_devices_from_the_cmdline() -> Result<(), TestHostError> {
    let run = check_full_room("acpi-off")?;
    expect_value(run, "acpi-virtio", "0")?;
    expect_value(run, "cmdline-virtio", &DEVICES.to_string())?;
    Ok(())
}
