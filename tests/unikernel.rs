//! `wisp run` on real /dev/kvm with the Wisp unikernel: boot, console, boot timer, SMP, memory
//! map, clean and unclean exits, and every bad input with its one-line error.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
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

/// The unprivileged user the permission test runs wisp as (`nobody`).
const NOBODY: libc::uid_t = 65534;

/// Makes `cmd` run in a mount namespace of its own in which /dev/kvm is a root-only (0600)
/// copy of the host's device node, and, with `as_nobody`, as `nobody`. The host's own /dev/kvm
/// may well be world-accessible (it is on many CI hosts), so this is what makes "no
/// permission" true on every run. Needs root, like the namespace and tap tests.
fn with_root_only_kvm(cmd: &mut Command, scratch: &Scratch, as_nobody: bool) {
    let rdev = std::fs::metadata("/dev/kvm")
        .expect("/dev/kvm exists")
        .rdev();
    let c_path = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("a path without NUL");
    let dir = c_path(&scratch.0);
    let node = c_path(&scratch.join("kvm"));
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let setup = move || -> io::Result<()> {
        // SAFETY: plain system calls on NUL-terminated strings that live in this closure (or
        // are static); the child is single-threaded between fork and exec, and none of them
        // allocates.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing below may propagate back to the host's mounts.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            // A fresh tmpfs, so the node is not subject to a `nodev` on the scratch directory's
            // filesystem: the only thing keeping nobody out must be the node's mode.
            check(libc::mount(
                c"tmpfs".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            check(libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, rdev))?;
            check(libc::chmod(node.as_ptr(), 0o600))?;
            check(libc::mount(
                node.as_ptr(),
                c"/dev/kvm".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            if as_nobody {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(NOBODY))?;
                check(libc::setuid(NOBODY))?;
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes system calls (see inside); it touches no lock or
    // allocator state that fork could have left inconsistent.
    unsafe {
        cmd.pre_exec(setup);
    }
}

#[test]
fn no_permission_on_dev_kvm_is_one_clear_line() {
    let scratch = Scratch::new("kvm-0600");
    let run = |as_nobody| {
        let mut cmd = Command::new(WISP);
        cmd.args(["run", "--cmdline", "", "--kernel"])
            .arg(unikernel());
        with_root_only_kvm(&mut cmd, &scratch, as_nobody);
        run_with_deadline(cmd, b"", Duration::from_secs(20))
    };
    // The copied node is a working /dev/kvm: root boots the guest through it.
    let out = run(false);
    out.assert_success();
    assert!(out.stdout.contains("hello from wisp unikernel"), "{out:#?}");
    // nobody is refused by its mode, and the VMM says so.
    let out = run(true);
    assert_one_line_error(&out, "cannot open /dev/kvm: Permission denied");
}
