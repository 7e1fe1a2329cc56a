//! The real-KVM test host: boots a stock Debian kernel (L1) in QEMU/TCG on an emulated AMD CPU
//! with SVM, loads `kvm_amd` there to get a real /dev/kvm, and runs a test script that starts
//! `wisp` on Linux guests (L2). This machine's own /dev/kvm (PVM) cannot boot Linux.
//!
//! ```ignore
//! let guest = L2Guest::tinyx()?;
//! let host = TestHost::builder()
//!     .file(&guest.vmlinux, "/guest/vmlinux")
//!     .file(&guest.tinyx_initramfs, "/guest/initrd")
//!     .script("run boot 120 wisp run --kernel /guest/vmlinux --initrd /guest/initrd\n")
//!     .boot()?;
//! let run = host.run("boot")?; // exit code, stdout (the guest console), stderr
//! host.expect_marker("### TESTHOST done")?;
//! ```
//!
//! One L1 boot serves many L2 scenarios: the script runs each with `run NAME TIMEOUT CMD…`
//! (l1_lib.sh) and the tests judge the collected [`CommandRun`]s. Errors carry the tail of the
//! L1 console or the failed run's output.
//!
//! Pieces: [`l1_kernel`] (Debian kernel + KVM modules, cached under `$WISP_CACHE/testhost`),
//! [`bzimage`] (vmlinux extraction), [`static_wisp`] (the static `wisp` build), [`initramfs`]
//! (L1 and probe images), [`l2_guest`] (Tinyx), [`qemu`] (the L1 machine), [`console`] (reading
//! the results). Environment: `WISP_CACHE`, `WISP_TESTHOST_TIMEOUT_S` (L1 deadline, default
//! 300), `WISP_TESTHOST_ECHO` (print the L1 console live), `WISP_TESTHOST_WISP` (use this static
//! `wisp` instead of building one), `WISP_TESTHOST_QEMU`, `WISP_TESTHOST_BUSYBOX`,
//! `WISP_TESTHOST_CPUS` (L1 CPUs, default 2), `WISP_TESTHOST_ACCEL` (QEMU `-accel`, default
//! `tcg,thread=multi`).
//!
//! QEMU's TCG emulation of nested SVM sometimes leaves an L1 CPU inside L2 for good (about one
//! L1 boot in ten here); the L1 kernel then reports RCU stalls and soft lockups, or the whole
//! machine falls silent. The harness kills such a machine as soon as the report appears or
//! after 60 s of silence and boots L1 again, at most [`L1_ATTEMPTS`] times, saying so on stderr
//! (qemu.rs).

// Each integration test crate that declares `mod testhost;` uses a different subset.
#![allow(dead_code)]

mod bzimage;
mod console;
mod host_command;
mod initramfs;
mod l1_kernel;
mod l2_guest;
mod qemu;
mod static_wisp;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub use console::CommandRun;
pub use initramfs::HostFile;
pub use l1_kernel::L1Kernel;
#[allow(unused_imports)]
pub use l2_guest::L2Guest;
// For tests that build their own guest images (linux_virtio.rs); unused by the others.
#[allow(unused_imports)]
pub use initramfs::static_busybox;
#[allow(unused_imports)]
pub use l2_guest::initramfs_with_init;
#[allow(unused_imports)]
pub use l2_guest::keyboard_vmlinux;
pub use qemu::Console;
pub use static_wisp::static_wisp;

use console::Transcript;
use initramfs::L1Image;
use qemu::QemuConfig;

/// How many console lines an error shows.
const TAIL_LINES: usize = 60;
/// L1 boots tried when the L1 kernel reports stalled CPUs (see qemu.rs).
const L1_ATTEMPTS: u32 = 3;
/// The hang guard for one L1 boot, unless the builder or `$WISP_TESTHOST_TIMEOUT_S` says
/// otherwise. It is not a performance threshold: TCG is slow and CI machines are shared.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a test host could not be booted or a check failed.
#[derive(thiserror::Error)]
pub enum TestHostError {
    #[error("cannot prepare the L1 kernel: {0}")]
    Kernel(#[from] l1_kernel::L1KernelError),
    #[error("{0}")]
    Wisp(#[from] static_wisp::StaticWispError),
    #[error("cannot build the L1 initramfs: {0}")]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error("cannot prepare the L2 guest: {0}")]
    Guest(#[from] l2_guest::L2GuestError),
    #[error("cannot run the L1 machine: {0}")]
    Qemu(#[from] qemu::QemuError),
    #[error("the L1 test host {problem}\n--- L1 console (tail) ---\n{tail}\n--- QEMU stderr (tail) ---\n{stderr}")]
    Boot {
        problem: String,
        tail: String,
        stderr: String,
    },
    #[error("marker {marker:?} not on the L1 console\n--- L1 console (tail) ---\n{tail}")]
    MarkerMissing { marker: String, tail: String },
    #[error("the test script ran no command named {name:?}\n--- L1 console (tail) ---\n{tail}")]
    NoRun { name: String, tail: String },
    #[error("{check}\n{run}")]
    Check { check: String, run: String },
}

// Tests that return `Result` print errors with `Debug`; the `Display` form is the readable one
// (multi-line console tails), so `Debug` shows it too.
impl fmt::Debug for TestHostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Configures one L1 boot.
#[derive(Debug, Clone)]
pub struct TestHostBuilder {
    files: Vec<HostFile>,
    programs: Vec<PathBuf>,
    script: String,
    modules: Vec<String>,
    with_wisp: bool,
    timeout: Duration,
    mem_mib: u32,
    cpus: u32,
}

impl TestHost {
    /// Starts configuring a test host: static `wisp` at /bin/wisp, an empty script.
    pub fn builder() -> TestHostBuilder {
        let timeout = std::env::var("WISP_TESTHOST_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        TestHostBuilder {
            files: Vec::new(),
            programs: Vec::new(),
            script: String::new(),
            modules: Vec::new(),
            with_wisp: true,
            timeout,
            mem_mib: 2048,
            cpus: std::env::var("WISP_TESTHOST_CPUS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
        }
    }
}

impl TestHostBuilder {
    /// Copies the host file `src` to `dst` inside L1 (read-only).
    pub fn file(mut self, src: impl Into<PathBuf>, dst: &str) -> Self {
        self.files.push(HostFile {
            src: src.into(),
            dst: dst.to_owned(),
            perm: 0o644,
        });
        self
    }

    /// Copies the host file `src` to `dst` inside L1 as an executable.
    pub fn executable(mut self, src: impl Into<PathBuf>, dst: &str) -> Self {
        self.files.push(HostFile {
            src: src.into(),
            dst: dst.to_owned(),
            perm: 0o755,
        });
        self
    }

    /// Copies the host's dynamically linked program `path` into L1 at the same path, with its
    /// dynamic loader and libraries (L1 has no libc of its own).
    pub fn host_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.programs.push(path.into());
        self
    }

    /// The shell script L1 runs once /dev/kvm exists (busybox sh, with the l1_lib.sh helpers
    /// `run` and `scenario`; the working directory is /testhost).
    pub fn script(mut self, script: &str) -> Self {
        self.script = script.to_owned();
        self
    }

    /// Also loads the L1 kernel's module `name` (e.g. `tun` for tap devices), with its
    /// dependencies, after the KVM modules.
    pub fn kernel_module(mut self, name: &str) -> Self {
        self.modules.push(name.to_owned());
        self
    }

    /// Leaves `wisp` out (for checks of the host itself, which need no VMM build).
    pub fn without_wisp(mut self) -> Self {
        self.with_wisp = false;
        self
    }

    /// The deadline for the whole L1 boot, after which QEMU is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the images, boots L1, runs the script and waits for L1 to power off.
    pub fn boot(self) -> Result<TestHost, TestHostError> {
        let kernel = L1Kernel::fetch()?;
        let mut extra_modules = Vec::new();
        for name in &self.modules {
            extra_modules.extend(kernel.extra_module(name)?);
        }
        let mut files = self.files;
        for program in &self.programs {
            files.extend(initramfs::host_program(program)?);
        }
        if self.with_wisp {
            files.push(HostFile {
                src: static_wisp()?,
                dst: "/bin/wisp".to_owned(),
                perm: 0o755,
            });
        }
        static BOOTS: AtomicUsize = AtomicUsize::new(0);
        let initrd = std::env::temp_dir().join(format!(
            "wisp-testhost-{}-{}.cpio",
            std::process::id(),
            BOOTS.fetch_add(1, Ordering::Relaxed)
        ));
        let image = L1Image {
            kernel: &kernel,
            extra_modules: &extra_modules,
            files: &files,
            script: &self.script,
        };
        let built = initramfs::build_l1(&image, &initrd);
        let console = built.map_err(TestHostError::from).and_then(|()| {
            let config = QemuConfig {
                kernel: kernel.vmlinux.clone(),
                initrd: initrd.clone(),
                // quiet: every console byte costs time under TCG; panic=-1 with -no-reboot
                // turns an L1 panic into a QEMU exit instead of a hang.
                append: "console=ttyS0 quiet panic=-1".to_owned(),
                mem_mib: self.mem_mib,
                cpus: self.cpus,
                timeout: self.timeout,
            };
            let mut console = qemu::run(&config)?;
            // An L1 whose CPUs stalled inside the emulated nested SVM (qemu.rs) is the
            // emulator's fault, not the VMM's: boot it once more, and say so.
            for attempt in 2..=L1_ATTEMPTS {
                if !console.stalled {
                    break;
                }
                // Straight to stderr, not `eprintln!`: the test harness captures that from
                // passing tests, and a retry should show in every log.
                let _ = writeln!(
                    std::io::stderr(),
                    "testhost: L1 stalled after {:?} (stall report or silent console: QEMU TCG \
                     nested SVM); booting L1 again (attempt {attempt} of {L1_ATTEMPTS})\n{}",
                    console.elapsed,
                    tail_of(&console.lines)
                );
                console = qemu::run(&config)?;
            }
            Ok(console)
        });
        let _ = std::fs::remove_file(&initrd);
        let console = console?;
        let transcript = console::parse(&console.lines);
        let host = TestHost {
            kernel,
            console,
            transcript,
        };
        host.check_boot()?;
        Ok(host)
    }
}

/// A finished L1 boot: its console, and what the script's commands did.
#[derive(Debug)]
pub struct TestHost {
    pub kernel: L1Kernel,
    pub console: Console,
    transcript: Transcript,
}

impl TestHost {
    fn check_boot(&self) -> Result<(), TestHostError> {
        let t = &self.transcript;
        let problem = if t.init_s.is_none() {
            "never reached its /init".to_owned()
        } else if t.kvm_missing || t.kvm_ready_s.is_none() {
            format!(
                "has no /dev/kvm (insmod failed for: {:?})",
                t.failed_modules
            )
        } else {
            // A script that did not finish (a hung L2 can freeze nested TCG, seen rarely) is
            // not a boot failure: the runs that completed are judged by their tests, and asking
            // for a missing run fails with the console tail.
            if !t.done {
                eprintln!(
                    "testhost: the L1 script did not finish ({}); judging the runs it completed",
                    match self.console.status {
                        None => self.killed_because(),
                        Some(status) => format!("QEMU {status}"),
                    }
                );
            }
            return Ok(());
        };
        let ending = match self.console.status {
            None => self.killed_because(),
            Some(status) => format!("QEMU {status} after {:?}", self.console.elapsed),
        };
        // TCG lists the CPU features it cannot emulate on every start: noise here.
        let stderr: String = self
            .console
            .stderr
            .lines()
            .filter(|l| !l.contains("TCG doesn't support requested feature"))
            .collect::<Vec<_>>()
            .join("\n");
        Err(TestHostError::Boot {
            problem: format!("{problem} ({ending})"),
            tail: self.console_tail(),
            stderr: host_command::tail(&stderr, 10),
        })
    }

    fn killed_because(&self) -> String {
        if self.console.stalled {
            format!(
                "QEMU killed after {:?}: L1 stalled (stall report or silent console) on every \
                 one of {L1_ATTEMPTS} boots",
                self.console.elapsed
            )
        } else {
            format!("QEMU killed at the {:?} deadline", self.console.elapsed)
        }
    }

    /// The last lines of the L1 console, with arrival times.
    pub fn console_tail(&self) -> String {
        tail_of(&self.console.lines)
    }

    /// The whole L1 console as text.
    pub fn console_text(&self) -> String {
        self.console
            .lines
            .iter()
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Succeeds when some console line contains `marker`.
    pub fn expect_marker(&self, marker: &str) -> Result<(), TestHostError> {
        if self.console.lines.iter().any(|l| l.text.contains(marker)) {
            Ok(())
        } else {
            Err(TestHostError::MarkerMissing {
                marker: marker.to_owned(),
                tail: self.console_tail(),
            })
        }
    }

    /// The command the script ran as `run NAME …`.
    pub fn run(&self, name: &str) -> Result<&CommandRun, TestHostError> {
        self.transcript
            .runs
            .get(name)
            .ok_or_else(|| TestHostError::NoRun {
                name: name.to_owned(),
                tail: self.console_tail(),
            })
    }

    /// L1 uptime (from its /proc/uptime) when /init started and when /dev/kvm appeared.
    pub fn l1_times_s(&self) -> (Option<f64>, Option<f64>) {
        (self.transcript.init_s, self.transcript.kvm_ready_s)
    }

    /// Host wall time from QEMU's start to the console line containing `marker`.
    pub fn wall_time_to(&self, marker: &str) -> Option<Duration> {
        self.console
            .lines
            .iter()
            .find(|l| l.text.contains(marker))
            .map(|l| l.at)
    }
}

/// The last [`TAIL_LINES`] lines of a console, with arrival times.
fn tail_of(lines: &[qemu::ConsoleLine]) -> String {
    lines[lines.len().saturating_sub(TAIL_LINES)..]
        .iter()
        .map(|l| format!("[{:8.3}] {}", l.at.as_secs_f64(), l.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one L1 boot the tests of this test binary share (each binary compiles this module
/// anew), made by `boot` on first use; a failure to boot fails every test with its message.
pub fn shared_host(boot: fn() -> Result<TestHost, TestHostError>) -> &'static TestHost {
    static HOST: OnceLock<Result<TestHost, String>> = OnceLock::new();
    match HOST.get_or_init(|| boot().map_err(|e| e.to_string())) {
        Ok(host) => host,
        Err(e) => panic!("{e}"),
    }
}

/// The value of the first `key=VALUE` word in a run's output, or a failed check naming the key.
pub fn value<'a>(run: &'a CommandRun, key: &str) -> Result<&'a str, TestHostError> {
    run.value(key)
        .ok_or_else(|| check_failed(run, format!("no {key}= in the output")))
}

/// A failed check on a command run, with the run's output in the message.
pub fn check_failed(run: &CommandRun, check: impl Into<String>) -> TestHostError {
    TestHostError::Check {
        check: check.into(),
        run: run.describe(),
    }
}
