//! A reference boot under QEMU (`-M microvm`, TCG): the boot oracle for the
//! minimiser and the end-to-end tests on machines without usable KVM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The kernel command line for a reference boot. `reboot=t` resets by triple
/// fault at once (there is no ACPI or keyboard controller to try first), and
/// QEMU's `-no-reboot` turns the reset into an exit.
pub const CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 reboot=t";

/// Errors running QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot start qemu-system-x86_64 (apt-get install qemu-system-x86): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot wait for qemu: {0}")]
    Wait(#[source] std::io::Error),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct QemuBoot {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
    pub memory_mib: u32,
    /// The boot is abandoned (and reported as not reaching the marker) after this.
    pub deadline: Duration,
    /// The line that ends the wait as a success.
    pub marker: String,
    /// An application health check: a host shell command run once a second after the marker
    /// until it succeeds (the boot then ends as passed) or the deadline. It gets
    /// `TINYX_GUEST=127.0.0.1:PORT`, where PORT is forwarded (QEMU user networking, guest
    /// 10.0.2.15 configured through `ip=`) to `guest_port`.
    pub check: Option<String>,
    pub guest_port: u16,
}

impl QemuBoot {
    pub fn new(kernel: &Path, initramfs: &Path, marker: &str) -> Self {
        Self {
            kernel: kernel.to_path_buf(),
            initramfs: initramfs.to_path_buf(),
            cmdline: CMDLINE.to_string(),
            memory_mib: 256,
            deadline: Duration::from_secs(300),
            marker: marker.to_string(),
            check: None,
            guest_port: 80,
        }
    }
}

/// The result of a boot.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// Console output up to the end of the boot.
    pub console: String,
    /// Time from spawning QEMU to the marker line, if it was seen.
    pub time_to_marker: Option<Duration>,
    /// Time from spawning QEMU to `Linux version` (the early console is up).
    pub time_to_banner: Option<Duration>,
    /// Whether QEMU exited on its own (the guest reset) before the deadline.
    pub exited: bool,
    /// Time from spawning QEMU to the first passing health check, if there was one.
    pub time_to_check: Option<Duration>,
}

impl BootOutcome {
    pub fn reached_marker(&self) -> bool {
        self.time_to_marker.is_some()
    }
}

/// Boots once and waits for the guest to reset (after the marker) or the deadline.
pub fn boot(spec: &QemuBoot) -> Result<BootOutcome, QemuError> {
    let start = Instant::now();
    let mut cmdline = spec.cmdline.clone();
    let mut net: Vec<String> = Vec::new();
    let mut host_port = 0;
    if spec.check.is_some() {
        host_port = free_port().map_err(QemuError::Spawn)?;
        cmdline.push_str(" ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off");
        net = vec![
            "-netdev".into(),
            format!(
                "user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-10.0.2.15:{}",
                spec.guest_port
            ),
            "-device".into(),
            "virtio-net-device,netdev=n0".into(),
        ];
    }
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            // No ACPI: QEMU's microvm ACPI is hardware-reduced, where Linux skips the PIT and,
            // under TCG without kvm-clock, has no clock to calibrate against (a divide error
            // in early boot). The oracle boots the kernel as the MP-table machine it was.
            "-M",
            "microvm,acpi=off",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .args(["-serial", "stdio", "-m"])
        .arg(spec.memory_mib.to_string())
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&spec.initramfs)
        .args(&net)
        .arg("-append")
        .arg(&cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(QemuError::Spawn)?;
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let pipes: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(
            child
                .stdout
                .take()
                .ok_or_else(|| QemuError::Spawn(std::io::ErrorKind::BrokenPipe.into()))?,
        ),
        Box::new(
            child
                .stderr
                .take()
                .ok_or_else(|| QemuError::Spawn(std::io::ErrorKind::BrokenPipe.into()))?,
        ),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|pipe| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((line, Instant::now())).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);

    let mut outcome = BootOutcome {
        console: String::new(),
        time_to_marker: None,
        time_to_banner: None,
        exited: false,
        time_to_check: None,
    };
    let deadline = start + spec.deadline;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(check) = &spec.check {
            if outcome.time_to_marker.is_some() {
                let passed = Command::new("sh")
                    .args(["-c", check])
                    .env("TINYX_GUEST", format!("127.0.0.1:{host_port}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if passed {
                    outcome.time_to_check = Some(start.elapsed());
                    break;
                }
            }
        }
        let wait = if spec.check.is_some() && outcome.time_to_marker.is_some() {
            (deadline - now).min(Duration::from_secs(1))
        } else {
            deadline - now
        };
        match rx.recv_timeout(wait) {
            Ok((line, at)) => {
                if outcome.time_to_banner.is_none() && line.contains("Linux version") {
                    outcome.time_to_banner = Some(at - start);
                }
                if outcome.time_to_marker.is_none() && line.contains(&spec.marker) {
                    outcome.time_to_marker = Some(at - start);
                }
                outcome.console.push_str(&line);
                outcome.console.push('\n');
            }
            // Both pipes closed: QEMU exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                outcome.exited = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if spec.check.is_none() {
                    break;
                }
            }
        }
    }
    finish(&mut child)?;
    for r in readers {
        let _ = r.join();
    }
    Ok(outcome)
}

/// A TCP port on 127.0.0.1 free at the time of asking.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn finish(child: &mut Child) -> Result<(), QemuError> {
    if child.try_wait().map_err(QemuError::Wait)?.is_none() {
        let _ = child.kill();
    }
    child.wait().map_err(QemuError::Wait)?;
    Ok(())
}
