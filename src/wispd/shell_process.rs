//! One `wisp shell` child of wispd: the process, its control page and its two doorbells.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;
use wisp_api::control_page::{
    monotonic_ns, ControlCommand, ControlPage, ControlPageError, ShellState, Timestamp,
};

/// The fd numbers a shell finds its page and doorbells at.
const SHELL_CONTROL_FD: RawFd = 3;
const SHELL_DOORBELL_FD: RawFd = 4;
const SHELL_ACK_FD: RawFd = 5;

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Page(#[from] ControlPageError),
    #[error("cannot create a doorbell: {0}")]
    Doorbell(#[source] std::io::Error),
    #[error("cannot start {}: {source}", wisp.display())]
    Spawn {
        wisp: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the shell (pid {pid}) did not answer within {timeout:?}")]
    Timeout { pid: u32, timeout: Duration },
    #[error("the shell (pid {pid}) failed: {message}")]
    Failed { pid: u32, message: String },
}

/// Duplicates `fd` above the fd numbers the child will use, close-on-exec.
fn dup_high(fd: RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid fd we hold; the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(new) })
}

pub struct ShellProcess {
    pub child: Child,
    pub page: ControlPage,
    doorbell: EventFd,
    ack: EventFd,
    pub mem_mib: u32,
    pub vcpus: u8,
    pub console: PathBuf,
    /// The VM's own REST API socket.
    pub api_socket: PathBuf,
}

impl ShellProcess {
    /// Starts a shell that prepares a VM of `mem_mib` MiB and `vcpus` vCPUs.
    pub fn spawn(
        wisp: &Path,
        run_dir: &Path,
        mem_mib: u32,
        vcpus: u8,
    ) -> Result<ShellProcess, ShellError> {
        let page = ControlPage::create()?;
        let doorbell = EventFd::new(libc::EFD_CLOEXEC).map_err(ShellError::Doorbell)?;
        let ack =
            EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK).map_err(ShellError::Doorbell)?;
        let fds = [
            dup_high(page.file().as_raw_fd()).map_err(ShellError::Doorbell)?,
            dup_high(doorbell.as_raw_fd()).map_err(ShellError::Doorbell)?,
            dup_high(ack.as_raw_fd()).map_err(ShellError::Doorbell)?,
        ];
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let tag = unique();
        let console = run_dir.join(format!("shell-{tag}.console"));
        let api_socket = run_dir.join(format!("shell-{tag}.sock"));
        let mut cmd = Command::new(wisp);
        cmd.arg("shell")
            .args(["--control", &SHELL_CONTROL_FD.to_string()])
            .args(["--doorbell", &SHELL_DOORBELL_FD.to_string()])
            .args(["--ack", &SHELL_ACK_FD.to_string()])
            .args(["--mem", &mem_mib.to_string(), "--vcpus", &vcpus.to_string()])
            .arg("--console")
            .arg(&console)
            .arg("--api-sock")
            .arg(&api_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec this only calls async-signal-safe functions (dup2,
        // prctl, getppid) on fds that are valid in the child.
        unsafe {
            cmd.pre_exec(move || {
                for (src, dst) in
                    raw.iter()
                        .zip([SHELL_CONTROL_FD, SHELL_DOORBELL_FD, SHELL_ACK_FD])
                {
                    if libc::dup2(*src, dst) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Shells must not outlive wispd: the kernel kills them when it dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| ShellError::Spawn {
            wisp: wisp.to_path_buf(),
            source,
        })?;
        drop(fds);
        Ok(ShellProcess {
            child,
            page,
            doorbell,
            ack,
            mem_mib,
            vcpus,
            console,
            api_socket,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the ack doorbell (or the deadline).
    fn wait_ack(&self, deadline: Instant) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.ack.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: polls one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n > 0 {
            let _ = self.ack.read();
        }
        n > 0
    }

    /// Waits until the shell has prepared its VM.
    pub fn wait_prepared(&mut self, timeout: Duration) -> Result<(), ShellError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.page.state() {
                Some(ShellState::Prepared) => return Ok(()),
                Some(ShellState::Failed) => {
                    return Err(ShellError::Failed {
                        pid: self.pid(),
                        message: self.page.error(),
                    })
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ShellError::Timeout {
                    pid: self.pid(),
                    timeout,
                });
            }
            // An error means wispd's reaper already collected it: it died just the same.
            match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(ShellError::Failed {
                        pid: self.pid(),
                        message: format!("exited ({status}) while preparing"),
                    })
                }
                Err(_) => {
                    return Err(ShellError::Failed {
                        pid: self.pid(),
                        message: "exited while preparing".into(),
                    })
                }
            }
            self.wait_ack(deadline.min(Instant::now() + Duration::from_millis(50)));
        }
    }

    /// Posts `command` and waits for its acknowledgement.
    pub fn command(&self, command: ControlCommand, timeout: Duration) -> Result<(), ShellError> {
        let seq = self.page.post_command(command);
        self.page.set_time(Timestamp::Command, monotonic_ns());
        self.doorbell.write(1).map_err(ShellError::Doorbell)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(result) = self.page.acknowledged(seq) {
                return if result == 0 {
                    Ok(())
                } else {
                    Err(ShellError::Failed {
                        pid: self.pid(),
                        message: self.page.error(),
                    })
                };
            }
            if Instant::now() >= deadline {
                return Err(ShellError::Timeout {
                    pid: self.pid(),
                    timeout,
                });
            }
            self.wait_ack(deadline.min(Instant::now() + Duration::from_millis(20)));
        }
    }

    /// Ends the shell for good and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.console);
        let _ = std::fs::remove_file(&self.api_socket);
    }
}

/// A process-unique number for file names.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}
