//! Snapshots of a Linux guest on real KVM, inside the test host (tests/testhost): QEMU/TCG →
//! Debian kernel with kvm_amd (L1) → `wisp --api-sock` → Tinyx Linux (L2).
//!
//! Inside L1, tests/testhost/l1_snapshot.sh boots Tinyx whose init (l2_snapshot_init.sh) is a
//! shell loop printing a tick and its uptime every second, pauses it, takes a Full snapshot,
//! kills `wisp`, waits, restores the snapshot in a new `wisp --api-sock` and reads the next
//! ticks: with 1 and with 2 vCPUs, the restored guest goes on from the tick after its last
//! one, its clock moves on, every vCPU is still online and its console still works.

mod testhost;

use testhost::{
    check_failed, initramfs_with_init, shared_host, value, CommandRun, L2Guest, TestHost,
    TestHostError,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";
/// The guard for each scenario inside L1: two Linux boots under TCG.
const SCENARIO_TIMEOUT_S: u32 = 600;
const L1_SCRIPT: &str = include_str!("testhost/l1_snapshot.sh");
const L2_INIT: &str = include_str!("testhost/l2_snapshot_init.sh");
const CURL: &str = "/usr/bin/curl";

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    let guest = L2Guest::tinyx()?;
    let initrd = initramfs_with_init("snapshot", L2_INIT, &[])?;
    TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&initrd, "/guest/snapshot.cpio")
        .host_program(CURL)
        .script(&format!(
            "cat > /tmp/snapshot.sh <<'WISP_SNAPSHOT_SCENARIO'\n{L1_SCRIPT}WISP_SNAPSHOT_SCENARIO\n\
             run snapshot-1 {SCENARIO_TIMEOUT_S} sh /tmp/snapshot.sh \"{CMDLINE}\" 1\n\
             run snapshot-2 {SCENARIO_TIMEOUT_S} sh /tmp/snapshot.sh \"{CMDLINE}\" 2\n"
        ))
        .boot()
}

fn host() -> &'static TestHost {
    shared_host(boot_shared_host)
}

fn number(run: &CommandRun, key: &str) -> Result<f64, TestHostError> {
    let text = value(run, key)?;
    text.parse()
        .map_err(|_| check_failed(run, format!("{key}={text} is not a number")))
}

fn expect_http(run: &CommandRun, step: &str, want: &str) -> Result<(), TestHostError> {
    let prefix = format!("SNAP step={step} http=");
    let got = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .ok_or_else(|| check_failed(run, format!("no request {step}")))?;
    if got.starts_with(want) {
        Ok(())
    } else {
        Err(check_failed(
            run,
            format!("{step} answered {got}, expected {want}"),
        ))
    }
}

fn snapshot_and_restore(vcpus: u32) -> Result<(), TestHostError> {
    let run = host().run(&format!("snapshot-{vcpus}"))?;
    for line in run.stdout.lines().filter(|l| l.starts_with("SNAP ")) {
        eprintln!("{vcpus} vCPUs: {line}");
    }
    for step in [
        "boot-source",
        "machine-config",
        "start",
        "pause",
        "create",
        "load",
    ] {
        expect_http(run, step, "204")?;
    }
    expect_http(run, "state", "200 body={\"id\"")?;
    if !run.stdout.contains("\"state\":\"Running\"") {
        return Err(check_failed(run, "the restored VM is not Running"));
    }
    let before_tick = number(run, "before-tick")?;
    let before_uptime = number(run, "before-uptime")?;
    let after_tick = number(run, "after-tick")?;
    let after_uptime = number(run, "after-uptime")?;
    let next_tick = number(run, "next-tick")?;
    let next_uptime = number(run, "next-uptime")?;
    // The first whole line after the restore is the next tick (or, if the pause cut the
    // last line before it in two, the one after that).
    if !(after_tick == before_tick + 1.0 || after_tick == before_tick + 2.0) {
        return Err(check_failed(
            run,
            format!("restored at tick {after_tick}, the last before was {before_tick}"),
        ));
    }
    if next_tick != after_tick + 1.0 {
        return Err(check_failed(
            run,
            "the restored guest's loop does not go on",
        ));
    }
    // The clock moves on: forward from before the snapshot, and between restored ticks.
    if !(after_uptime > before_uptime && next_uptime > after_uptime) {
        return Err(check_failed(
            run,
            format!("uptime {before_uptime} → {after_uptime} → {next_uptime}"),
        ));
    }
    let want = f64::from(vcpus);
    if number(run, "before-nproc")? != want || number(run, "after-cpus")? != want {
        return Err(check_failed(run, format!("not {vcpus} vCPUs online")));
    }
    Ok(())
}

#[test]
fn a_linux_guest_with_one_vcpu_is_snapshotted_and_restored() -> Result<(), TestHostError> {
    snapshot_and_restore(1)
}

#[test]
fn a_linux_guest_with_two_vcpus_is_snapshotted_and_restored() -> Result<(), TestHostError> {
    snapshot_and_restore(2)
}
