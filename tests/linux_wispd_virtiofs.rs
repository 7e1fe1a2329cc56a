//! virtio-fs through wispd, end to end on real KVM inside the test host (tests/testhost): QEMU
//! TCG → Debian kernel with kvm_amd (L1) → virtiofsd + `wispd --shell-mem-shared` + `wisp ctl
//! create` → Tinyx Linux (L2) in a prepared shell, mounting the share with `mount -t virtiofs`.
//!
//! L1 runs virtiofsd in the test form (`--sandbox none`) on /share and wispd with one prepared
//! shell whose guest RAM is a memfd; `wisp ctl create` hands it a configuration with an `fs`
//! share. L2 mounts the share, reads the file L1 wrote, writes one L1 then reads, and reboots;
//! the VM ends, the vhost-user session with it, and virtiofsd exits.

// The shared wispd helpers unwrap: a failure there is the test failing.
#![allow(clippy::unwrap_used)]

mod testhost;
mod wispd_common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wisp_api::{BootSource, Fs, MachineConfig, VmConfig};
use wisp_test_support::Scratch;

use testhost::{
    check_failed, initramfs_with_init, shared_host, value, CommandRun, L2Guest, TestHost,
    TestHostError,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";
const TAG: &str = "share0";
const HOST_FILE_TEXT: &str = "written-by-l1";
const MEM_MIB: u32 = 256;

/// L2's /init: facts are `WISP-L2 k=v` lines on the console (read through `wisp ctl console`).
const L2_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mount -t sysfs sysfs /sys
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        wisp_marker=*) marker=${arg#wisp_marker=} ;;
    esac
done
mkdir -p /mnt
if mount -t virtiofs share0 /mnt; then
    echo "WISP-L2 mount=ok"
    echo "WISP-L2 host-file=$(cat /mnt/from-host.txt)"
    echo "$marker" > /mnt/from-guest.txt && sync
    umount /mnt
else
    echo "WISP-L2 mount=failed"
fi
echo "WISP-L2 end"
reboot -f
"#;

fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("wispd-fs-{}-{nanos}", std::process::id())
    })
}

/// The create's configuration, as L1 sees the paths.
fn vm_config(marker: &str) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: "/guest/vmlinux".into(),
            initrd_path: Some("/guest/fs.cpio".into()),
            boot_args: Some(format!("{CMDLINE} wisp_marker={marker}")),
        }),
        machine_config: MachineConfig {
            vcpu_count: 1,
            mem_size_mib: MEM_MIB,
            smt: false,
            ..Default::default()
        },
        fs: vec![Fs {
            fs_id: "share0".into(),
            tag: TAG.into(),
            socket: "/tmp/vfs.sock".into(),
            num_queues: 1,
            queue_size: 1024,
        }],
        ..Default::default()
    }
}

/// L1's script: virtiofsd, wispd, the create, then (heartbeats from `run`) until virtiofsd has
/// ended with the VM's session.
fn script(wispd: &str, virtiofsd: &str) -> String {
    let ctl = "/bin/wisp ctl --socket /tmp/wispd.sock";
    let ended = "[ ! -e /proc/$vfsd_pid ] || grep -q ') Z' /proc/$vfsd_pid/stat";
    format!(
        "mkdir -p /share && echo {HOST_FILE_TEXT} > /share/from-host.txt\n\
         {virtiofsd} --socket-path /tmp/vfs.sock --shared-dir /share --cache auto \
         --sandbox none > /tmp/vfsd.log 2>&1 & vfsd_pid=$!\n\
         i=0; while [ ! -S /tmp/vfs.sock ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n\
         {wispd} --socket /tmp/wispd.sock --pool 1 --shell-mem {MEM_MIB} --shell-mem-shared \
         --wisp /bin/wisp > /tmp/wispd.log 2>&1 & wispd_pid=$!\n\
         run wispd-ready 60 sh -c 'until {ctl} status | grep -q prepared=1; do sleep 0.2; done'\n\
         run wispd-create 60 {ctl} create --config /guest/vm.json\n\
         run wispd-session 600 sh -c \"until {ended}; do sleep 0.5; done\"\n\
         run wispd-console 10 {ctl} console vm-1\n\
         run wispd-host-sees 10 cat /share/from-guest.txt\n\
         run wispd-vfsd-log 10 cat /tmp/vfsd.log\n\
         kill $wispd_pid; wait $wispd_pid\n\
         run wispd-log 10 cat /tmp/wispd.log\n"
    )
}

fn boot() -> Result<TestHost, TestHostError> {
    let dir = Scratch::new("linux-wispd-virtiofs");
    let guest = L2Guest::tinyx()?;
    let initrd = initramfs_with_init("wispd-virtiofs", L2_INIT, &[])?;
    let config = wispd_common::write_config(&dir.0, &vm_config(marker()));
    let wispd = PathBuf::from(env!("CARGO_BIN_EXE_wispd"));
    let vfsd = wisp_test_support::virtiofsd();
    TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&initrd, "/guest/fs.cpio")
        .file(&config, "/guest/vm.json")
        .host_program(&wispd)
        .host_program(&vfsd)
        .script(&script(
            &wispd.display().to_string(),
            &vfsd.display().to_string(),
        ))
        .timeout(Duration::from_secs(900))
        .boot()
}

fn host() -> &'static TestHost {
    shared_host(boot)
}

fn expect_value(run: &CommandRun, key: &str, want: &str) -> Result<(), TestHostError> {
    let got = value(run, key)?;
    if got == want {
        Ok(())
    } else {
        Err(check_failed(run, format!("{key}={got}, expected {want}")))
    }
}

/// A prepared shared-memory shell runs a Linux guest that mounts the share, reads L1's file
/// and writes one L1 reads; virtiofsd's session starts with the VM and ends with it.
#[test]
fn a_prepared_shared_shell_runs_linux_on_a_virtiofs_share() -> Result<(), TestHostError> {
    let create = host().run("wispd-create")?;
    if create.exit_code != Some(0) || create.stdout.contains("cold start") {
        return Err(check_failed(create, "the create failed or was not warm"));
    }
    eprintln!("wisp ctl create in L1: {}", create.stdout.trim());
    let session = host().run("wispd-session")?;
    if session.timed_out() {
        return Err(check_failed(session, "virtiofsd did not end with the VM"));
    }
    let console = host().run("wispd-console")?;
    expect_value(console, "mount", "ok")?;
    expect_value(console, "host-file", HOST_FILE_TEXT)?;
    if !console.stdout.contains("WISP-L2 end") {
        return Err(check_failed(console, "the guest did not finish"));
    }
    let sees = host().run("wispd-host-sees")?;
    if sees.stdout.trim() != marker() {
        return Err(check_failed(sees, "L1 does not see the guest's file"));
    }
    let log = host().run("wispd-vfsd-log")?;
    if !log.stdout.contains("Client connected") || !log.stdout.contains("Client disconnected") {
        return Err(check_failed(
            log,
            "no vhost-user session in virtiofsd's log",
        ));
    }
    Ok(())
}
