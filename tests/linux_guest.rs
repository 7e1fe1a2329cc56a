//! End-to-end tests that boot real Linux guests under `wisp` on real KVM, inside the test host
//! (tests/testhost): QEMU/TCG → Debian kernel with kvm_amd (L1) → `wisp run` → Linux (L2).
//!
//! All L2 scenarios share one L1 boot (the first test to need it boots it; the others wait):
//! the script below runs each `wisp run` as a named command and every test judges its own.
//! The L2 guest is the probe initramfs (tests/testhost/l2_init.sh), which prints
//! `WISP-L2 key=value` facts and ends the VM as its command line asks.
//!
//! The VM's lifecycle comes from devices, not console text: power-off through the ACPI PM1
//! control register, panic through pvpanic, reset through the i8042. The lifecycle scenarios
//! run with `--log-level info`, so wisp names the exit it saw on stderr.

mod testhost;

use testhost::{check_failed, shared_host, value, CommandRun, L2Guest, TestHost, TestHostError};
use wisp_tinyx::initramfs::{DEFAULT_APP_MARKER, INIT_MARKER};

/// Guest command line: `quiet` because every console byte is a nested exit under TCG;
/// `panic=-1` so a panic resets at once instead of spinning; `reboot=k` so the reset goes
/// through the i8042 (not the ACPI reset register, Linux's default).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";

/// Memory for the scenarios that do not test memory sizes.
const DEFAULT_MEM_MIB: u32 = 256;

/// The guard for one `wisp run` inside L1 (L1 kills it after this); generous, TCG is slow.
const L2_TIMEOUT_S: u32 = 180;

/// Memory sizes the guest must see.
const MEM_SIZES_MIB: [u32; 3] = [64, 128, 1024];

/// One `wisp run` of the shared script.
struct Scenario {
    name: String,
    kernel: &'static str,
    initrd: &'static str,
    vcpus: u32,
    mem_mib: u32,
    extra_cmdline: &'static str,
    /// `wisp` options beyond the common ones.
    wisp_args: &'static str,
}

/// wisp says on stderr how the VM ended (`VmExit`'s text), at log level info.
const SAY_EXIT: &str = "--log-level info";

fn scenarios() -> Vec<Scenario> {
    let boot = |name: &str, kernel, vcpus| Scenario {
        name: name.to_owned(),
        kernel,
        initrd: "/guest/probe.cpio",
        vcpus,
        mem_mib: DEFAULT_MEM_MIB,
        extra_cmdline: "",
        wisp_args: "",
    };
    let mut all = vec![
        Scenario {
            initrd: "/guest/tinyx.cpio.gz",
            ..boot("tinyx-default", "/guest/vmlinux", 1)
        },
        boot("pvh-1cpu", "/guest/vmlinux", 1),
        // At info level wisp says how much of the kernel and initrd it mapped from the file.
        Scenario {
            wisp_args: SAY_EXIT,
            ..boot("pvh-2cpu", "/guest/vmlinux", 2)
        },
        boot("bzimage-1cpu", "/guest/bzImage", 1),
        Scenario {
            wisp_args: SAY_EXIT,
            ..boot("bzimage-2cpu", "/guest/bzImage", 2)
        },
        Scenario {
            extra_cmdline: "wisp_l2=poweroff",
            wisp_args: SAY_EXIT,
            ..boot("poweroff", "/guest/vmlinux", 1)
        },
        Scenario {
            extra_cmdline: "wisp_l2=banners",
            wisp_args: SAY_EXIT,
            ..boot("banners", "/guest/vmlinux", 1)
        },
        Scenario {
            extra_cmdline: "acpi=off wisp_l2=poweroff",
            wisp_args: "--legacy-console-lifecycle --log-level info",
            ..boot("legacy-poweroff", "/guest/vmlinux", 1)
        },
    ];
    all.extend(MEM_SIZES_MIB.map(|mem_mib| Scenario {
        mem_mib,
        ..boot(&format!("mem-{mem_mib}"), "/guest/vmlinux", 1)
    }));
    // Last: a guest panic under nested TCG has, rarely, frozen L1 itself; then only this
    // scenario's test fails.
    all.push(Scenario {
        extra_cmdline: "wisp_l2=exit",
        wisp_args: SAY_EXIT,
        ..boot("panic", "/guest/vmlinux", 1)
    });
    all
}

/// Samples wisp's `AnonHugePages` (smaps_rollup) and where it mapped the vmlinux (its maps)
/// every 0.2 s while it boots Tinyx, after printing L1's THP mode.
const THP_PROBE: &str = "run thp 180 sh -c 'cat /sys/kernel/mm/transparent_hugepage/enabled; \
    wisp run --kernel /guest/vmlinux --initrd /guest/tinyx.cpio.gz --mem 256 \
    --cmdline \"console=ttyS0 quiet panic=-1 reboot=k pci=off\" > /dev/null & p=$!; \
    while kill -0 $p 2>/dev/null; do grep AnonHugePages /proc/$p/smaps_rollup; \
    grep /guest/vmlinux /proc/$p/maps; sleep 0.2; done; wait $p'\n";

/// The L1 script: one `run` per scenario.
fn script() -> String {
    let mut script = String::from(THP_PROBE);
    for s in scenarios() {
        script.push_str(&format!(
            "run {name} {L2_TIMEOUT_S} wisp run {args} --kernel {kernel} --initrd {initrd} \
             --cmdline \"{CMDLINE} {extra}\" --vcpus {vcpus} --mem {mem} --boot-timer\n",
            name = s.name,
            args = s.wisp_args,
            kernel = s.kernel,
            initrd = s.initrd,
            extra = s.extra_cmdline,
            vcpus = s.vcpus,
            mem = s.mem_mib,
        ));
    }
    script
}

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    let guest = L2Guest::tinyx()?;
    TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&guest.bzimage, "/guest/bzImage")
        .file(&guest.tinyx_initramfs, "/guest/tinyx.cpio.gz")
        .file(&guest.probe_initramfs, "/guest/probe.cpio")
        .script(&script())
        .boot()
}

/// The shared L1 boot.
fn host() -> &'static TestHost {
    shared_host(boot_shared_host)
}

/// `wisp` booted the guest to its /init, which saw `vcpus` CPUs, reported the boot time and
/// rebooted, and `wisp` exited 0.
fn check_clean_boot(name: &str, vcpus: u32) -> Result<&'static CommandRun, TestHostError> {
    let run = host().run(name)?;
    if run.timed_out() {
        return Err(check_failed(
            run,
            "wisp did not exit (killed by the L1 timeout)",
        ));
    }
    if !run.stdout.contains("WISP-L2 init") {
        return Err(check_failed(run, "the guest never reached /init"));
    }
    let nproc = value(run, "nproc")?;
    if nproc != vcpus.to_string() {
        return Err(check_failed(
            run,
            format!("guest sees {nproc} CPUs, not {vcpus}"),
        ));
    }
    if !run.stdout.contains("WISP-L2 end mode=reboot") {
        return Err(check_failed(run, "the guest init did not finish"));
    }
    if run.exit_code != Some(0) {
        return Err(check_failed(
            run,
            "wisp exited non-zero after a clean guest reboot",
        ));
    }
    let boot_us: u64 = value(run, "boot-time-us")?
        .parse()
        .map_err(|_| check_failed(run, "boot-time-us is not a number"))?;
    if boot_us == 0 {
        return Err(check_failed(run, "boot-time-us is zero"));
    }
    eprintln!("{name}: boot-time-us={boot_us}");
    Ok(run)
}

/// The default Tinyx guest, unchanged: its init runs its app and resets the VM.
#[test]
fn boots_default_tinyx_guest() -> Result<(), TestHostError> {
    let run = host().run("tinyx-default")?;
    for marker in [INIT_MARKER, DEFAULT_APP_MARKER] {
        if !run.stdout.contains(marker) {
            return Err(check_failed(
                run,
                format!("no {marker:?} on the guest console"),
            ));
        }
    }
    if run.exit_code != Some(0) {
        return Err(check_failed(
            run,
            "wisp exited non-zero after the guest reset",
        ));
    }
    value(run, "boot-time-us")?;
    Ok(())
}

#[test]
fn boots_vmlinux_pvh_with_one_vcpu() -> Result<(), TestHostError> {
    check_clean_boot("pvh-1cpu", 1).map(drop)
}

#[test]
fn boots_vmlinux_pvh_with_two_vcpus() -> Result<(), TestHostError> {
    let run = check_clean_boot("pvh-2cpu", 2)?;
    // The vmlinux's segments are page-aligned in its file: mapped, not copied (loader/file_map.rs).
    check_mapped(run, "kernel /guest/vmlinux")?;
    check_mapped(run, "initrd /guest/probe.cpio")
}

/// wisp's info line `WHAT: N of M bytes mapped from the file` says N > 0.
fn check_mapped(run: &CommandRun, what: &str) -> Result<(), TestHostError> {
    let mapped = run
        .stderr
        .lines()
        .find_map(|l| {
            l.split_once(&format!("{what}: "))?
                .1
                .split_whitespace()
                .next()
        })
        .and_then(|n| n.parse::<u64>().ok());
    match mapped {
        Some(n) if n > 0 => Ok(()),
        _ => Err(check_failed(
            run,
            format!("no page of {what} was mapped from its file"),
        )),
    }
}

#[test]
fn boots_bzimage_with_one_vcpu() -> Result<(), TestHostError> {
    check_clean_boot("bzimage-1cpu", 1).map(drop)
}

#[test]
fn boots_bzimage_with_two_vcpus() -> Result<(), TestHostError> {
    // A bzImage's payload is not page-aligned in its file (copied); the initrd is mapped.
    let run = check_clean_boot("bzimage-2cpu", 2)?;
    check_mapped(run, "initrd /guest/probe.cpio")
}

/// KVM maps guest memory with 2 MiB pages only where the host-virtual and guest-physical
/// addresses agree modulo 2 MiB and the host has a huge page there: on L1's 6.1 kernel, which
/// does not align anonymous mappings itself, the vmlinux pages wisp mapped from the file sit at
/// host addresses congruent to their guest-physical ones (so guest RAM starts 2 MiB-aligned,
/// vmm/src/memory/align.rs), and the anonymous guest RAM holds transparent huge pages.
#[test]
fn guest_memory_is_2mib_aligned_and_backed_by_huge_pages() -> Result<(), TestHostError> {
    let run = host().run("thp")?;
    if run.exit_code != Some(0) {
        return Err(check_failed(run, "wisp did not boot Tinyx"));
    }
    let most_kib = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("AnonHugePages:"))
        .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .max();
    if most_kib.is_none_or(|kib| kib < 2048) {
        return Err(check_failed(
            run,
            "wisp's guest memory never held a transparent huge page",
        ));
    }
    let vmlinux = std::fs::read(&L2Guest::tinyx()?.vmlinux).unwrap();
    let mappings: Vec<(u64, u64)> = run
        .stdout
        .lines()
        .filter(|l| l.ends_with("/guest/vmlinux"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let start = u64::from_str_radix(f.next()?.split_once('-')?.0, 16).ok()?;
            let offset = u64::from_str_radix(f.nth(1)?, 16).ok()?;
            Some((start, offset))
        })
        .collect();
    if mappings.is_empty() {
        return Err(check_failed(
            run,
            "no vmlinux page was mapped from its file",
        ));
    }
    for (host, offset) in mappings {
        let Some(gpa) = guest_physical(&vmlinux, offset) else {
            return Err(check_failed(
                run,
                format!("file offset {offset:#x} is in no PT_LOAD segment"),
            ));
        };
        if (host - gpa) % (2 << 20) != 0 {
            return Err(check_failed(
                run,
                format!("vmlinux offset {offset:#x} (guest {gpa:#x}) is at host {host:#x}: guest RAM is not 2 MiB-aligned"),
            ));
        }
    }
    Ok(())
}

/// The guest-physical address an ELF-64 file offset loads at (its PT_LOAD segment's p_paddr).
fn guest_physical(elf: &[u8], offset: u64) -> Option<u64> {
    let u = |at: usize, len: usize| -> Option<u64> {
        let b = elf.get(at..at + len)?;
        Some(b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    let (phoff, phentsize, phnum) = (u(0x20, 8)?, u(0x36, 2)?, u(0x38, 2)?);
    (0..phnum).find_map(|i| {
        let ph = usize::try_from(phoff + i * phentsize).ok()?;
        let (kind, off, paddr, filesz) =
            (u(ph, 4)?, u(ph + 8, 8)?, u(ph + 0x18, 8)?, u(ph + 0x20, 8)?);
        (kind == 1 && off <= offset && offset < off + filesz).then(|| paddr + (offset - off))
    })
}

/// A kernel panic (init exits) reaches wisp through pvpanic: wisp exits 3 and says the guest
/// kernel panicked. Console banners are not watched here, so only the device can tell.
#[test]
fn guest_panic_ends_wisp_with_failure() -> Result<(), TestHostError> {
    let run = host().run("panic")?;
    if !run.stdout.contains("WISP-L2 end mode=exit") {
        return Err(check_failed(run, "the guest init never got to exit"));
    }
    if run.timed_out() {
        return Err(check_failed(
            run,
            "wisp did not exit after the guest panicked",
        ));
    }
    if run.exit_code != Some(3) {
        return Err(check_failed(
            run,
            "wisp must exit 3 (guest failure) when the guest panics",
        ));
    }
    if !run.stderr.contains("guest failed: guest kernel panicked") {
        return Err(check_failed(
            run,
            "wisp's message does not say the guest kernel panicked",
        ));
    }
    Ok(())
}

/// Linux's `poweroff -f` enters ACPI S5 through wisp's PM1 control register: wisp exits 0
/// and names the power-off (console banners are not watched).
#[test]
fn guest_poweroff_ends_wisp_cleanly() -> Result<(), TestHostError> {
    let run = host().run("poweroff")?;
    if !run.stdout.contains("WISP-L2 end mode=poweroff") {
        return Err(check_failed(run, "the guest init never got to poweroff"));
    }
    if run.timed_out() {
        return Err(check_failed(
            run,
            "wisp did not exit after the guest powered off",
        ));
    }
    if run.exit_code != Some(0) || !run.stderr.contains("guest powered off") {
        return Err(check_failed(
            run,
            "wisp must exit 0 and say \"guest powered off\" when the guest powers off",
        ));
    }
    Ok(())
}

/// A guest process that prints Linux's power-down line and panic banner to the console does
/// not decide the VM's fate: the guest keeps running (it says so afterwards), then reboots,
/// and wisp ends with a clean reset, not a panic.
#[test]
fn console_banners_from_a_guest_process_do_not_end_the_vm() -> Result<(), TestHostError> {
    let run = host().run("banners")?;
    if !run.stdout.contains("reboot: Power down") {
        return Err(check_failed(run, "the guest never printed the fake banner"));
    }
    if !run.stdout.contains("WISP-L2 alive-after-banners") {
        return Err(check_failed(
            run,
            "the VM ended on a guest process's console text",
        ));
    }
    if run.timed_out() {
        return Err(check_failed(run, "wisp did not exit after the reboot"));
    }
    if run.exit_code != Some(0) || !run.stderr.contains("guest reset") {
        return Err(check_failed(
            run,
            "wisp must exit 0 with \"guest reset\" (the banner is no panic)",
        ));
    }
    Ok(())
}

/// A legacy guest without ACPI (`acpi=off`) halts on `poweroff`; with
/// `--legacy-console-lifecycle` wisp still ends cleanly on Linux's console line.
#[test]
fn legacy_console_lifecycle_ends_an_acpi_off_guest() -> Result<(), TestHostError> {
    let run = host().run("legacy-poweroff")?;
    if !run.stdout.contains("WISP-L2 end mode=poweroff") {
        return Err(check_failed(run, "the guest init never got to poweroff"));
    }
    if run.timed_out() {
        return Err(check_failed(
            run,
            "wisp did not exit after the guest halted",
        ));
    }
    if run.exit_code != Some(0) || !run.stderr.contains("guest halted") {
        return Err(check_failed(
            run,
            "wisp must exit 0 with \"guest halted\" from the console watch",
        ));
    }
    Ok(())
}

/// The guest's view of its memory agrees with `--mem`: the firmware map (the kernel's
/// "Memory: AVAILABLE/TOTAL" line) covers the size less at most the legacy hole below 1 MiB,
/// and `free`'s total lies between what the kernel had available early in boot and that total.
fn check_memory(mem_mib: u32) -> Result<(), TestHostError> {
    let run = check_clean_boot(&format!("mem-{mem_mib}"), 1)?;
    let line = value(run, "dmesg-memory")?;
    let (available_kib, total_kib) = parse_memory_line(line)
        .ok_or_else(|| check_failed(run, format!("cannot parse {line:?}")))?;
    let size_kib = u64::from(mem_mib) * 1024;
    // The e820 map leaves out 640 KiB..1 MiB; allow a few MiB for VMM-reserved low pages.
    if total_kib > size_kib || total_kib + 4096 < size_kib {
        return Err(check_failed(
            run,
            format!("guest RAM is {total_kib} KiB, --mem asked for {size_kib} KiB"),
        ));
    }
    let free_mib: u64 = value(run, "free-total-mib")?
        .parse()
        .map_err(|_| check_failed(run, "free-total-mib is not a number"))?;
    if free_mib * 1024 > total_kib || (free_mib + 1) * 1024 < available_kib {
        return Err(check_failed(
            run,
            format!(
                "free says {free_mib} MiB, outside [{available_kib}, {total_kib}] KiB \
                 (kernel reservations)"
            ),
        ));
    }
    Ok(())
}

/// Parses "12345K/67890K" (from the kernel's "Memory: 12345K/67890K available" line).
fn parse_memory_line(line: &str) -> Option<(u64, u64)> {
    let (available, total) = line.split_once('/')?;
    let kib = |s: &str| s.trim_end_matches('K').parse::<u64>().ok();
    Some((kib(available)?, kib(total)?))
}

#[test]
fn boots_with_64_mib() -> Result<(), TestHostError> {
    check_memory(64)
}

#[test]
fn boots_with_128_mib() -> Result<(), TestHostError> {
    check_memory(128)
}

#[test]
fn boots_with_1024_mib() -> Result<(), TestHostError> {
    check_memory(1024)
}

/// The test host itself: L1 boots, loads KVM and runs a script (no VMM needed).
#[test]
fn test_host_boots_with_real_kvm() -> Result<(), TestHostError> {
    let host = TestHost::builder()
        .without_wisp()
        .script("run kvm 10 ls -l /dev/kvm\nscenario smoke PASS\n")
        .boot()?;
    host.expect_marker("### SCENARIO smoke PASS")?;
    let run = host.run("kvm")?;
    if run.exit_code != Some(0) || !run.stdout.contains("/dev/kvm") {
        return Err(check_failed(run, "/dev/kvm is listed"));
    }
    let (init_s, kvm_s) = host.l1_times_s();
    eprintln!(
        "L1 {}: /init at {init_s:?} s, /dev/kvm at {kvm_s:?} s of L1 uptime; /dev/kvm after \
         {:?} of wall time; QEMU ran {:?}",
        host.kernel.id,
        host.wall_time_to("### TESTHOST kvm-ready"),
        host.console.elapsed
    );
    Ok(())
}
