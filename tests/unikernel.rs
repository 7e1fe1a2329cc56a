//! `wisp run` on real /dev/kvm with the Wisp unikernel: boot, console, boot timer, SMP, memory
//! map, clean and unclean exits, and every bad input with its one-line error.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use wisp_test_support::{run_with_deadline, unikernel, Outcome, Scratch, TempFile};

/// The binary under test.
const WISP: &str = env!("CARGO_BIN_EXE_wisp");

/// `wisp run --kernel KERNEL ARGS...` with a 20 s deadline.
fn wisp_run(kernel: &Path, args: &[&str]) -> Outcome {
    wisp_test_support::wisp_run(WISP, kernel, args)
}

#[test]
fn unikernel_boots_prints_its_line_and_exits_cleanly() {
    let out = wisp_run(&unikernel(), &["--cmdline", ""]);
    out.assert_success();
    assert!(out.stdout.contains("hello from wisp unikernel"), "{out:#?}");
    assert!(
        out.stderr.is_empty(),
        "the VMM is quiet by default: {out:#?}"
    );
}

#[test]
fn boot_timer_flag_reports_the_guests_boot_time() {
    let out = wisp_run(&unikernel(), &["--boot-timer", "--cmdline", ""]);
    out.assert_success();
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("boot-time-us="))
        .unwrap_or_else(|| panic!("no boot time in {out:#?}"));
    let us: u64 = line["boot-time-us=".len()..].parse().expect("a number");
    assert!(us > 0);
}

#[test]
fn two_vcpus_are_both_online_in_the_guest() {
    let out = wisp_run(&unikernel(), &["--vcpus", "2", "--cmdline", "smp"]);
    out.assert_success();
    assert!(out.stdout.contains("cpus online: 2"), "{out:#?}");
}

#[test]
fn four_vcpus_are_all_online_in_the_guest() {
    let out = wisp_run(&unikernel(), &["--vcpus", "4", "--cmdline", "smp"]);
    out.assert_success();
    assert!(out.stdout.contains("cpus online: 4"), "{out:#?}");
}

#[test]
fn guest_sees_the_memory_size_it_was_given() {
    for mib in [32u32, 256] {
        let out = wisp_run(
            &unikernel(),
            &["--mem", &mib.to_string(), "--cmdline", "mem"],
        );
        out.assert_success();
        // The e820 map keeps the EBDA and legacy ROM hole (<1 MiB) out of RAM.
        let want = format!("memory: {} MiB", mib - 1);
        let want_exact = format!("memory: {mib} MiB");
        assert!(
            out.stdout.contains(&want) || out.stdout.contains(&want_exact),
            "{mib} MiB guest: {out:#?}"
        );
    }
}

#[test]
fn host_input_reaches_the_guest_console() {
    let mut cmd = Command::new(WISP);
    cmd.args(["run", "--cmdline", "echo", "--kernel"])
        .arg(unikernel());
    let out = run_with_deadline(cmd, b"ping-from-host\nq", Duration::from_secs(20));
    out.assert_success();
    assert!(out.stdout.contains("ping-from-host"), "{out:#?}");
}

#[test]
fn triple_fault_ends_wisp_with_the_exit_reason_and_rip() {
    let out = wisp_run(&unikernel(), &["--cmdline", "triple-fault"]);
    assert_eq!(out.code(), Some(3), "{out:#?}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "one line: {out:#?}");
    assert!(
        line.contains("triple fault") && line.contains("RIP 0x"),
        "{out:#?}"
    );
}

/// Asserts a one-line error on stderr that mentions `needle`, exit status 1, no panic.
fn assert_one_line_error(out: &Outcome, needle: &str) {
    assert_eq!(out.code(), Some(1), "{out:#?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "exactly one line: {out:#?}");
    assert!(
        err.starts_with("wisp: error: ") && err.contains(needle),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("panicked"), "{out:#?}");
}

#[test]
fn missing_kernel_is_one_line_naming_the_file() {
    let out = wisp_run(std::path::Path::new("/nonexistent/vmlinux"), &[]);
    assert_one_line_error(&out, "/nonexistent/vmlinux");
}

#[test]
fn unreadable_kernel_is_one_line_naming_the_file() {
    let dir = Scratch::new("kernel-is-a-dir");
    let out = wisp_run(&dir.0, &[]);
    assert_one_line_error(&out, &dir.0.display().to_string());
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    let f = TempFile::new("not-a-kernel", b"#!/bin/sh\necho hello\n");
    let out = wisp_run(&f.0, &[]);
    assert_one_line_error(&out, "is not an ELF vmlinux or a bzImage");
}

/// A minimal ELF64 whose one loadable segment needs 64 MiB of guest memory.
fn big_elf() -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = &mut elf[64..];
    ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[16..24].copy_from_slice(&0x10_0000u64.to_le_bytes()); // vaddr
    ph[24..32].copy_from_slice(&0x10_0000u64.to_le_bytes()); // paddr
    ph[32..40].copy_from_slice(&120u64.to_le_bytes()); // filesz
    ph[40..48].copy_from_slice(&(64u64 << 20).to_le_bytes()); // memsz
    elf
}

#[test]
fn memory_too_small_for_the_image_is_refused() {
    let f = TempFile::new("big-elf", &big_elf());
    let out = wisp_run(&f.0, &["--mem", "16"]);
    assert_one_line_error(&out, "too small for kernel image");
}

#[test]
fn memory_below_the_minimum_is_refused() {
    let out = wisp_run(&unikernel(), &["--mem", "1"]);
    assert_one_line_error(&out, "too small");
}

#[test]
fn zero_vcpus_is_refused() {
    let out = wisp_run(&unikernel(), &["--vcpus", "0"]);
    assert_one_line_error(&out, "vcpu_count");
}

#[test]
fn no_permission_on_dev_kvm_is_one_clear_line() {
    // An unprivileged user cannot open /dev/kvm (root-only here): the VMM must say so.
    let meta = std::fs::metadata("/dev/kvm").expect("/dev/kvm exists");
    use std::os::unix::fs::PermissionsExt;
    if meta.permissions().mode() & 0o006 != 0 {
        eprintln!("skipping: /dev/kvm is world-accessible on this host");
        return;
    }
    let mut cmd = Command::new(WISP);
    cmd.args(["run", "--kernel"])
        .arg(unikernel())
        .uid(65534)
        .gid(65534);
    let out = run_with_deadline(cmd, b"", Duration::from_secs(20));
    assert_one_line_error(&out, "/dev/kvm");
}
