//! The REST API drives a Linux guest on real KVM, inside the test host (tests/testhost):
//! QEMU/TCG → Debian kernel with kvm_amd (L1) → `wisp --api-sock` → Tinyx Linux (L2).
//!
//! Inside L1, tests/testhost/l1_api.sh starts `wisp --api-sock` and drives it with the host's
//! own `curl --unix-socket` (copied into L1 with its libraries): PUT /boot-source, /drives,
//! /machine-config and /actions InstanceStart, a refused second InstanceStart, PATCH /drives
//! (a new backing file, which the guest then reads), PATCH /vm Paused/Resumed with GET / after
//! each, GET /vm/config, and finally SendCtrlAltDel. The guest
//! is Tinyx built with keyboard.config (i8042, atkbd, VT) and tests/testhost/l2_keyboard_init.sh,
//! which reports the keyboard the kernel found and then waits forever: only the injected
//! Ctrl-Alt-Del — scancodes on wisp's emulated i8042, IRQ 1 — makes the kernel restart, which
//! with `reboot=k` resets through the i8042 and ends wisp with status 0.
//!
//! The command line has no `i8042.*` options (Firecracker's guests use `i8042.noaux
//! i8042.nomux i8042.dumbkbd`): Linux probes the controller and the keyboard in full.

mod testhost;

use testhost::{
    check_failed, initramfs_with_init, keyboard_vmlinux, shared_host, CommandRun, TestHost,
    TestHostError,
};

/// As in linux_guest.rs, without any i8042 option.
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";

/// The guard for the whole scenario inside L1; generous, TCG is slow.
const SCENARIO_TIMEOUT_S: u32 = 300;

const L1_SCRIPT: &str = include_str!("testhost/l1_api.sh");
const L2_INIT: &str = include_str!("testhost/l2_keyboard_init.sh");

/// The client: the host's curl, run inside L1.
const CURL: &str = "/usr/bin/curl";

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    let vmlinux = keyboard_vmlinux()?;
    let initrd = initramfs_with_init("keyboard", L2_INIT, &[])?;
    // The scenario goes in as a file of its own (written by the script's here-document), so
    // `run` can give it a timeout like any command.
    TestHost::builder()
        .file(&vmlinux, "/guest/vmlinux-kbd")
        .file(&initrd, "/guest/keyboard.cpio")
        .host_program(CURL)
        .script(&format!(
            "cat > /tmp/api.sh <<'WISP_API_SCENARIO'\n{L1_SCRIPT}WISP_API_SCENARIO\n\
             run api {SCENARIO_TIMEOUT_S} sh /tmp/api.sh \"{CMDLINE}\"\n"
        ))
        .boot()
}

/// The shared L1 boot.
fn host() -> &'static TestHost {
    shared_host(boot_shared_host)
}

fn scenario() -> Result<&'static CommandRun, TestHostError> {
    host().run("api")
}

/// One request's result: `API step=NAME http=STATUS body=JSON`.
struct Step<'a> {
    status: &'a str,
    body: &'a str,
}

fn step<'a>(run: &'a CommandRun, name: &str) -> Result<Step<'a>, TestHostError> {
    let prefix = format!("API step={name} http=");
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .ok_or_else(|| check_failed(run, format!("no request {name:?} was made")))?;
    let (status, body) = line.split_once(" body=").unwrap_or((line, ""));
    Ok(Step { status, body })
}

/// The request `name` was answered with `status` (and a body containing `contains`).
fn expect_step(
    run: &CommandRun,
    name: &str,
    status: &str,
    contains: &str,
) -> Result<(), TestHostError> {
    let got = step(run, name)?;
    if got.status != status || !got.body.contains(contains) {
        return Err(check_failed(
            run,
            format!(
                "{name}: HTTP {} with body {:?}; expected {status} with {contains:?} in it",
                got.status, got.body
            ),
        ));
    }
    Ok(())
}

/// L1 uptime at an `API event NAME uptime=S` line.
fn event_uptime(run: &CommandRun, name: &str) -> Option<f64> {
    let prefix = format!("API event {name} ");
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix("uptime="))
        })
        .and_then(|v| v.parse().ok())
}

fn guest_ready(run: &CommandRun) -> Result<(), TestHostError> {
    if run.stdout.contains("API event guest-ready") {
        Ok(())
    } else {
        Err(check_failed(run, "the guest never printed `WISP-L2 ready`"))
    }
}

/// curl configures and starts a Linux guest; the second InstanceStart is refused with a
/// fault message; GET /vm/config returns what was configured.
#[test]
fn curl_configures_and_starts_a_linux_guest() -> Result<(), TestHostError> {
    let run = scenario()?;
    expect_step(run, "boot-source", "204", "")?;
    expect_step(run, "machine-config", "204", "")?;
    expect_step(run, "start", "204", "")?;
    expect_step(run, "start-again", "400", "fault_message")?;
    guest_ready(run)?;
    expect_step(run, "vm-config", "200", "/guest/vmlinux-kbd")?;
    expect_step(run, "vm-config", "200", "\"mem_size_mib\":128")?;
    Ok(())
}

/// PATCH /drives after boot swaps the disk's backing file: the guest, reading its disk with
/// O_DIRECT, sees the first image's bytes and then the second's.
#[test]
fn curl_swaps_the_backing_file_of_a_running_guests_disk() -> Result<(), TestHostError> {
    let run = scenario()?;
    expect_step(run, "drive", "204", "")?;
    guest_ready(run)?;
    if !run.stdout.contains("API event disk-A-seen") {
        return Err(check_failed(run, "the guest never read the first image"));
    }
    expect_step(run, "drive-swap", "204", "")?;
    if !run.stdout.contains("API event disk-B-seen") {
        return Err(check_failed(
            run,
            "the guest did not read the new backing file after PATCH /drives",
        ));
    }
    expect_step(run, "vm-config", "200", "/tmp/disk-B.img")?;
    Ok(())
}

/// PATCH /vm pauses and resumes the running Linux guest; GET / reports each state.
#[test]
fn curl_pauses_and_resumes_a_linux_guest() -> Result<(), TestHostError> {
    let run = scenario()?;
    guest_ready(run)?;
    expect_step(run, "pause", "204", "")?;
    expect_step(run, "state-paused", "200", "\"state\":\"Paused\"")?;
    expect_step(run, "resume", "204", "")?;
    expect_step(run, "state-resumed", "200", "\"state\":\"Running\"")?;
    Ok(())
}

/// SendCtrlAltDel reaches Linux through the emulated i8042 keyboard: the kernel restarts and
/// wisp ends cleanly.
#[test]
fn send_ctrl_alt_del_ends_a_linux_guest() -> Result<(), TestHostError> {
    let run = scenario()?;
    guest_ready(run)?;
    let keyboard = run.value("keyboard").unwrap_or("none");
    if !keyboard.contains("keyboard") {
        return Err(check_failed(
            run,
            format!("Linux registered no keyboard on wisp's i8042 (found {keyboard:?})"),
        ));
    }
    expect_step(run, "ctrl-alt-del", "204", "")?;
    if run.stdout.contains("API event wisp-still-running") {
        return Err(check_failed(
            run,
            "wisp still ran 60 s after SendCtrlAltDel",
        ));
    }
    if !run.stdout.contains("reboot: Restarting system") {
        return Err(check_failed(
            run,
            "the guest kernel did not restart on Ctrl-Alt-Del",
        ));
    }
    if !run.stdout.contains("API event wisp-exit rc=0 ") {
        return Err(check_failed(run, "wisp did not exit with status 0"));
    }
    if let (Some(sent), Some(exit)) = (
        event_uptime(run, "ctrl-alt-del-sent"),
        event_uptime(run, "wisp-exit"),
    ) {
        eprintln!(
            "SendCtrlAltDel → wisp exit: {:.2} s of L1 uptime (nested TCG)",
            exit - sent
        );
    }
    Ok(())
}
