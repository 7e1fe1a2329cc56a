//! One `wisp shell` child of wispd: the process, held by a pidfd so that neither a signal nor a
//! reap can ever reach a recycled pid, its control page and its two doorbells. Nothing here
//! waits on the shell except `Drop`, the last resort; the event loop watches `ack_fd` and
//! `pidfd` instead.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;
use wisp_api::control_page::{
    monotonic_ns, ControlCommand, ControlPage, ControlPageError, Timestamp,
};

/// The fd numbers a shell finds its page and doorbells at.
const SHELL_CONTROL_FD: RawFd = 3;
const SHELL_DOORBELL_FD: RawFd = 4;
const SHELL_ACK_FD: RawFd = 5;

/// How long `Drop` waits for a killed shell to be reaped (SIGKILL ends a process promptly
/// unless it is stuck in the kernel; then it stays a zombie rather than block wispd).
const REAP_ON_DROP: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Page(#[from] ControlPageError),
    #[error("cannot create a doorbell: {0}")]
    Doorbell(#[source] std::io::Error),
    #[error("cannot create the console file {}: {source}", path.display())]
    Console {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {}: {source}", wisp.display())]
    Spawn {
        wisp: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the shell (pid {pid}): pidfd_open: {source}")]
    Pidfd {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Duplicates `fd` above the fd numbers the child will use, close-on-exec.
fn dup_high(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid fd we hold; the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How a reaped shell ended, from waitid's siginfo.
fn describe_exit(info: &libc::siginfo_t) -> String {
    // SAFETY: waitid filled `info` for a child that changed state (SIGCHLD layout).
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => format!("exit status {status}"),
        _ => format!("signal {status}"),
    }
}

pub struct ShellProcess {
    pid: u32,
    pidfd: OwnedFd,
    reaped: bool,
    /// `Drop` removes the console and API socket unless `take_files` handed them on.
    owns_files: bool,
    pub page: ControlPage,
    doorbell: EventFd,
    ack: EventFd,
    pub mem_mib: u32,
    pub vcpus: u8,
    /// Created by wispd (0600) before the shell starts; removed with the shell.
    pub console: PathBuf,
    /// The VM's own REST API socket (bound by the shell); removed with the shell.
    pub api_socket: PathBuf,
}

impl ShellProcess {
    /// Starts a shell that prepares a VM of `mem_mib` MiB and `vcpus` vCPUs. Returns once the
    /// process exists; it reports Prepared on the page and rings `ack_fd` when it is ready.
    pub fn spawn(
        wisp: &Path,
        run_dir: &Path,
        mem_mib: u32,
        vcpus: u8,
    ) -> Result<ShellProcess, ShellError> {
        let page = ControlPage::create()?;
        // The shell blocks on its doorbell; wispd's end of the ack never blocks.
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
        // The guest's console is the guest's business: only wispd's user may read it. The shell
        // opens it with O_TRUNC, which keeps this mode. (A file of that name can only be left
        // over from an earlier wispd with the same pid.)
        let _ = std::fs::remove_file(&console);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&console)
            .map_err(|source| ShellError::Console {
                path: console.clone(),
                source,
            })?;
        let parent = std::process::id() as libc::pid_t;
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
        // umask, sigprocmask, prctl, getppid) on fds and memory valid in the child.
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
                // Files the shell makes (its API socket) are private too.
                libc::umask(0o077);
                // wispd blocks SIGTERM/SIGINT for its signalfd; the shell must not inherit that.
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                // Shells must not outlive wispd: the kernel kills them when it dies. If wispd
                // died before this line, no signal will come: give up now.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("wispd is gone"));
                }
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(source) => {
                let _ = std::fs::remove_file(&console);
                return Err(ShellError::Spawn {
                    wisp: wisp.to_path_buf(),
                    source,
                });
            }
        };
        drop(fds);
        let pid = child.id();
        // `Child` has no pipes here and never waits by itself; the pidfd owns the process now.
        drop(child);
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(source) => {
                // Nothing else reaps our children, so `pid` is still this unreaped child.
                // SAFETY: kill and waitpid on our own child's pid; `status` is a valid int.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    let mut status = 0;
                    libc::waitpid(pid as libc::pid_t, &mut status, 0);
                }
                let _ = std::fs::remove_file(&console);
                return Err(ShellError::Pidfd { pid, source });
            }
        };
        Ok(ShellProcess {
            pid,
            pidfd,
            reaped: false,
            owns_files: true,
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
        self.pid
    }

    /// Readable when the shell rang: state changed, a command was acknowledged, or a
    /// timestamp was stamped.
    pub fn ack_fd(&self) -> RawFd {
        self.ack.as_raw_fd()
    }

    /// Readable once the shell has exited.
    pub fn pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// Resets the ack doorbell after it rang.
    pub fn drain_ack(&self) {
        let _ = self.ack.read();
    }

    /// Posts `command` (its data already on the page), stamps t_command and rings the
    /// doorbell; returns the sequence number the shell will acknowledge.
    pub fn post(&self, command: ControlCommand) -> Result<u32, ShellError> {
        let seq = self.page.post_command(command);
        self.page.set_time(Timestamp::Command, monotonic_ns());
        self.doorbell.write(1).map_err(ShellError::Doorbell)?;
        Ok(seq)
    }

    /// SIGKILL through the pidfd: it can only ever reach this shell.
    pub fn kill(&self) {
        if self.reaped {
            return;
        }
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo; no memory is shared.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            log::debug!(
                "wispd: cannot kill shell {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Reaps the shell if it has exited (never blocks): how it ended, or `None` while it runs.
    pub fn try_reap(&mut self) -> Option<String> {
        if self.reaped {
            return None;
        }
        // SAFETY: siginfo_t is plain data; all-zero is valid (and si_pid 0 means "no change").
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our pidfd writes one siginfo_t, which `info` is.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        // SAFETY: waitid returned, so `info` holds a (possibly all-zero) SIGCHLD siginfo.
        if rc < 0 || unsafe { info.si_pid() } == 0 {
            return None;
        }
        self.reaped = true;
        Some(describe_exit(&info))
    }

    /// The console and API socket, for the caller to remove (`Drop` then leaves them).
    pub fn take_files(&mut self) -> Vec<PathBuf> {
        self.owns_files = false;
        vec![self.console.clone(), self.api_socket.clone()]
    }
}

impl Drop for ShellProcess {
    /// The shell ends with its handle: killed if still running, reaped (waiting at most
    /// `REAP_ON_DROP`), and its files removed (unless `take_files` took them).
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
            let deadline = Instant::now() + REAP_ON_DROP;
            while self.try_reap().is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    log::warn!("wispd: shell {} did not die after SIGKILL", self.pid);
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: self.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: polls one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 1000) as i32) };
            }
        }
        if self.owns_files {
            let _ = std::fs::remove_file(&self.console);
            let _ = std::fs::remove_file(&self.api_socket);
        }
    }
}

/// The last `max` bytes of the file at `path`, as text.
pub fn console_tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut s = Vec::new();
    f.take(max).read_to_end(&mut s)?;
    Ok(String::from_utf8_lossy(&s).into_owned())
}

/// A process-unique number for file names.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}
