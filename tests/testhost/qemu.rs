//! Running the L1 machine: QEMU in software emulation (TCG) with an AMD CPU that has SVM, so
//! that the L1 kernel's `kvm_amd` gets real hardware-virtualisation semantics to nest on.
//!
//! `-M pc` rather than `-M microvm`: the stock kernel hangs early on microvm. QEMU always runs
//! under a deadline and is killed when the handle is dropped, so a hung L1 cannot outlive the
//! test.

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Why QEMU could not be run.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot start {binary} (install qemu-system-x86): {source}")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("lost track of QEMU: {0}")]
    Wait(#[source] io::Error),
}

/// One L1 machine to run.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub mem_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

/// A console line and when it arrived, measured from QEMU's start.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    pub at: Duration,
    pub text: String,
}

/// What the L1 kernel prints when its CPUs stop making progress: RCU stall and soft-lockup
/// reports. Under QEMU's TCG emulation of nested SVM an L1 CPU sometimes never gets back from
/// running L2 (its own timer and IPIs do not make the emulated VMRUN exit; seen in roughly one
/// L1 boot in ten here, at any L2 scenario). A userspace VMM in L1 cannot cause that, so the
/// harness stops such a machine at once instead of waiting for the deadline.
const STALL_SIGNATURES: &[&str] = &[
    "rcu: INFO: rcu_preempt detected stalls",
    "rcu: INFO: rcu_sched detected stalls",
    "watchdog: BUG: soft lockup",
];

/// A console silent this long means a frozen L1 as well: the same emulator fault can stop
/// every L1 CPU before the kernel reports anything. A healthy L1 prints at least a line per
/// L2 run (`run-begin`, KVM's WRMSR note, `run-end`), seconds apart.
const SILENCE: Duration = Duration::from_secs(60);

/// Everything the L1 machine printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Console {
    pub lines: Vec<ConsoleLine>,
    /// QEMU's own stderr (TCG feature warnings, errors).
    pub stderr: String,
    /// QEMU's exit status, `None` when it was killed (deadline or stall).
    pub status: Option<ExitStatus>,
    pub elapsed: Duration,
    /// The L1 kernel reported stalled CPUs (see [`STALL_SIGNATURES`]) or the console stayed
    /// silent for [`SILENCE`], and QEMU was killed.
    pub stalled: bool,
}

/// Kills and reaps QEMU if it is still running when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Strips terminal escape sequences (SeaBIOS clears the screen) and carriage returns.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // ESC [ params final-byte, or ESC + one character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Boots the L1 machine and collects its console until QEMU exits or the deadline passes.
pub fn run(config: &QemuConfig) -> Result<Console, QemuError> {
    let binary =
        std::env::var("WISP_TESTHOST_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
    let mut cmd = Command::new(&binary);
    let accel = std::env::var("WISP_TESTHOST_ACCEL").unwrap_or_else(|_| "tcg,thread=multi".into());
    cmd.args(["-accel", &accel, "-cpu", "EPYC,+svm", "-M", "pc"])
        .args(["-nographic", "-no-reboot", "-net", "none"])
        .arg("-smp")
        .arg(config.cpus.to_string())
        .arg("-m")
        .arg(config.mem_mib.to_string())
        .arg("-kernel")
        .arg(&config.kernel)
        .arg("-initrd")
        .arg(&config.initrd)
        .arg("-append")
        .arg(&config.append)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = Running(cmd.spawn().map_err(|source| QemuError::Spawn {
        binary: binary.clone(),
        source,
    })?);
    let echo = std::env::var_os("WISP_TESTHOST_ECHO").is_some();

    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take();
    let reader = thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut stdout = BufReader::new(stdout);
        let mut raw = Vec::new();
        while matches!(stdout.read_until(b'\n', &mut raw), Ok(n) if n > 0) {
            let line = ConsoleLine {
                at: start.elapsed(),
                text: clean(&raw),
            };
            raw.clear();
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = child.0.stderr.take();
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });

    let deadline = start + config.timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    let mut stalled = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(SILENCE)) {
            Ok(line) => {
                if echo {
                    eprintln!("[L1 {:7.3}] {}", line.at.as_secs_f64(), line.text);
                }
                log::debug!("L1: {}", line.text);
                stalled = STALL_SIGNATURES.iter().any(|s| line.text.contains(s));
                lines.push(line);
                if stalled {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                } else {
                    log::warn!("L1 console silent for {SILENCE:?}");
                    stalled = true;
                }
                break;
            }
        }
    }
    let status = if timed_out || stalled {
        let _ = child.0.kill();
        None
    } else {
        Some(child.0.wait().map_err(QemuError::Wait)?)
    };
    let _ = child.0.wait();
    let elapsed = start.elapsed();
    // Both pipes are closed once QEMU is gone, so the readers finish.
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    drop(child);
    Ok(Console {
        lines,
        stderr,
        status,
        elapsed,
        stalled,
    })
}
