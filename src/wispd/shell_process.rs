//! One `wisp shell` child of wispd: the process, held by a pidfd so that neither a signal nor a
//! reap can ever reach a recycled pid, its control page and its two doorbells. Nothing here
//! waits on the shell except `Drop`, the last resort; the event loop watches `ack_fd` and
//! `pidfd` instead. The process itself is started by the spawner (spawner.rs) from a
//! [`ShellPlan`]: `wisp shell` directly, or `wisp-jailer … -- shell …` with `--jail`.

use crate::jail::JailSettings;
use std::cell::Cell;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;
use wisp_api::control_page::{
    monotonic_ns, ControlCommand, ControlPage, ControlPageError, Timestamp,
};

/// The fd numbers a shell finds its page, doorbell and ack doorbell at.
pub const SHELL_FDS: [RawFd; 3] = [3, 4, 5];

/// How long `Drop` waits for a killed shell to be reaped (SIGKILL ends a process promptly
/// unless it is stuck in the kernel; then it stays a zombie rather than block wispd).
const REAP_ON_DROP: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Page(#[from] ControlPageError),
    #[error("cannot create a doorbell: {0}")]
    Doorbell(#[source] std::io::Error),
    #[error("{0}")]
    Spawn(String),
    #[error("wispd's spawner is gone")]
    SpawnerGone,
    #[error("cannot watch the shell (pid {pid}): pidfd_open: {source}")]
    Pidfd {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// How shells are started: fixed when wispd starts, known to the spawner and to wispd.
#[derive(Clone, Debug)]
pub struct ShellPlan {
    pub wisp: PathBuf,
    pub run_dir: PathBuf,
    pub jail: Option<JailSettings>,
    /// wispd's pid, part of every shell's tag so that tags stay unique across restarts.
    pub wispd_pid: u32,
    /// `wispd --no-seccomp`: the shells run without their filters too (debugging only).
    pub no_seccomp: bool,
}

/// What a shell is prepared as: its size, and whether guest RAM is a sealed memfd that a
/// vhost-user backend (virtiofsd) can map (`wisp shell --mem-shared`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShellShape {
    pub mem_mib: u32,
    pub vcpus: u8,
    pub mem_shared: bool,
}

impl ShellShape {
    /// Whether a VM of `mem_mib` and `vcpus`, needing shared memory or not, fits this shell. A
    /// shared-memory shell serves any VM (memfd memory is ordinary RAM to a guest); an
    /// anonymous one only VMs without vhost-user devices or `mem_shared`.
    pub fn fits(&self, mem_mib: u32, vcpus: u8, needs_shared: bool) -> bool {
        mem_mib <= self.mem_mib && vcpus <= self.vcpus && (self.mem_shared || !needs_shared)
    }
}

/// Where one shell's files are, on the host.
#[derive(Clone, Debug)]
pub struct ShellFiles {
    /// The guest console (0600).
    pub console: PathBuf,
    /// The VM's own REST API socket.
    pub api_socket: PathBuf,
    /// Jailed: `<base>/<wisp's name>/shell-<tag>` (the jailer removes it when the shell ends).
    pub jail_dir: Option<PathBuf>,
}

impl ShellFiles {
    /// The jail root, if jailed: files a create names are linked in here.
    pub fn root(&self) -> Option<PathBuf> {
        self.jail_dir.as_ref().map(|d| d.join("root"))
    }

    /// Unjailed: creates the console file (0600) before the shell starts, so it is private from
    /// its first byte. (A file of that name can only be left over from an earlier wispd with the
    /// same pid.) Jailed, the shell creates it inside its own root, 0600 too.
    pub fn create_console(&self) -> Result<(), String> {
        if self.jail_dir.is_some() {
            return Ok(());
        }
        let _ = std::fs::remove_file(&self.console);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.console)
            .map(drop)
            .map_err(|e| {
                format!(
                    "cannot create the console file {}: {e}",
                    self.console.display()
                )
            })
    }

    /// Removes what is left of the shell's files. Jailed, that is the jail directory, which
    /// the jailer removes itself unless it was killed.
    pub fn remove(&self) {
        match &self.jail_dir {
            Some(dir) => {
                if dir.exists() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            None => {
                let _ = std::fs::remove_file(&self.console);
                let _ = std::fs::remove_file(&self.api_socket);
            }
        }
    }
}

impl ShellPlan {
    fn tag(&self, id: u64) -> String {
        format!("shell-{}-{id}", self.wispd_pid)
    }

    /// The program the spawner executes: `wisp`, or the jailer.
    pub fn program(&self) -> &Path {
        match &self.jail {
            Some(j) => &j.jailer,
            None => &self.wisp,
        }
    }

    pub fn files(&self, id: u64) -> ShellFiles {
        let tag = self.tag(id);
        match &self.jail {
            Some(j) => {
                let dir = j.jail_dir(&self.wisp, &tag);
                let root = dir.join("root");
                ShellFiles {
                    console: root.join("console"),
                    api_socket: root.join("api.sock"),
                    jail_dir: Some(dir),
                }
            }
            None => ShellFiles {
                console: self.run_dir.join(format!("{tag}.console")),
                api_socket: self.run_dir.join(format!("{tag}.sock")),
                jail_dir: None,
            },
        }
    }

    /// The arguments of shell `id`'s program (`program()` is argv[0]).
    pub fn command(&self, id: u64, shape: ShellShape) -> (PathBuf, Vec<OsString>) {
        let files = self.files(id);
        let (console, api): (OsString, OsString) = match &self.jail {
            Some(_) => ("/console".into(), "/api.sock".into()),
            None => (files.console.into(), files.api_socket.into()),
        };
        let mut shell: Vec<OsString> = vec!["shell".into()];
        if self.no_seccomp {
            shell.push("--no-seccomp".into());
        }
        for (flag, fd) in ["--control", "--doorbell", "--ack"].iter().zip(SHELL_FDS) {
            shell.push((*flag).into());
            shell.push(fd.to_string().into());
        }
        for a in [
            "--mem".to_string(),
            shape.mem_mib.to_string(),
            "--vcpus".to_string(),
            shape.vcpus.to_string(),
        ] {
            shell.push(a.into());
        }
        if shape.mem_shared {
            shell.push("--mem-shared".into());
        }
        shell.extend(["--console".into(), console, "--api-sock".into(), api]);
        let args = match &self.jail {
            Some(j) => {
                let mut args = j.jailer_args(&self.wisp, &self.tag(id), &SHELL_FDS);
                args.push("--".into());
                args.extend(shell);
                args
            }
            None => shell,
        };
        (self.program().to_path_buf(), args)
    }
}

/// What wispd makes for a shell before it is started: its page and doorbells.
pub struct ShellParts {
    pub page: ControlPage,
    doorbell: EventFd,
    ack: EventFd,
}

impl ShellParts {
    pub fn new() -> Result<ShellParts, ShellError> {
        let page = ControlPage::create()?;
        // The shell blocks on its doorbell; wispd's end of the ack never blocks.
        let doorbell = EventFd::new(libc::EFD_CLOEXEC).map_err(ShellError::Doorbell)?;
        let ack =
            EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK).map_err(ShellError::Doorbell)?;
        Ok(ShellParts {
            page,
            doorbell,
            ack,
        })
    }

    /// The descriptors the shell gets as fds 3, 4 and 5.
    pub fn fds(&self) -> [RawFd; 3] {
        [
            self.page.file().as_raw_fd(),
            self.doorbell.as_raw_fd(),
            self.ack.as_raw_fd(),
        ]
    }
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
    /// `Drop` removes the shell's files unless `take_files` handed them on.
    owns_files: bool,
    pub page: ControlPage,
    doorbell: EventFd,
    ack: EventFd,
    pub mem_mib: u32,
    pub vcpus: u8,
    /// Guest RAM is a memfd: VMs with virtio-fs shares fit (see `ShellShape::fits`).
    pub mem_shared: bool,
    pub files: ShellFiles,
    /// The console, opened read-only once it exists: read through this descriptor, the text
    /// outlives the file (a jailer removes its jail, console included, as the shell ends).
    console: Option<File>,
    /// Jailed: the process is the jailer, and `kill` asks it to end the shell first.
    jailed: bool,
    /// SIGTERM already sent to the jailer: the next `kill` is SIGKILL.
    termed: Cell<bool>,
    /// SIGKILL sent.
    killed: Cell<bool>,
}

impl ShellProcess {
    /// Takes over the shell the spawner started as `pid` (wispd's child, by `CLONE_PARENT`).
    pub fn adopt(
        parts: ShellParts,
        pid: u32,
        files: ShellFiles,
        shape: ShellShape,
    ) -> Result<ShellProcess, ShellError> {
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
                files.remove();
                return Err(ShellError::Pidfd { pid, source });
            }
        };
        let jailed = files.jail_dir.is_some();
        let mut shell = ShellProcess {
            pid,
            pidfd,
            reaped: false,
            owns_files: true,
            page: parts.page,
            doorbell: parts.doorbell,
            ack: parts.ack,
            mem_mib: shape.mem_mib,
            vcpus: shape.vcpus,
            mem_shared: shape.mem_shared,
            files,
            console: None,
            jailed,
            termed: Cell::new(false),
            killed: Cell::new(false),
        };
        if !jailed {
            shell.open_console();
        }
        Ok(shell)
    }

    /// Opens the console for reading if it is not open yet. It must be a regular file: a jailed
    /// shell owns the directory and could have put a FIFO or a link there instead.
    pub fn open_console(&mut self) {
        if self.console.is_some() {
            return;
        }
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.files.console)
            .and_then(|f| {
                if f.metadata()?.is_file() {
                    Ok(f)
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            });
        match opened {
            Ok(f) => self.console = Some(f),
            Err(e) => log::debug!(
                "wispd: shell {}: console {}: {e}",
                self.pid,
                self.files.console.display()
            ),
        }
    }

    /// The last `max` bytes of the console, as text.
    pub fn console_tail(&self, max: u64) -> std::io::Result<String> {
        match &self.console {
            Some(f) => console_tail(f, max),
            None => Err(std::io::Error::other("the console is not open")),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn shape(&self) -> ShellShape {
        ShellShape {
            mem_mib: self.mem_mib,
            vcpus: self.vcpus,
            mem_shared: self.mem_shared,
        }
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

    /// Ends the shell through its pidfd, which can only ever reach this process: SIGKILL, or
    /// for a jailed shell first SIGTERM to the jailer, which forwards it to the shell, waits for
    /// it and removes the jail and the cgroup (a SIGKILLed jailer cannot: its shell then dies of
    /// the jailer's parent-death signal and the spawner removes the jail directory).
    pub fn kill(&self) {
        if self.reaped {
            return;
        }
        let signal = if self.jailed && !self.termed.replace(true) {
            libc::SIGTERM
        } else {
            self.killed.set(true);
            libc::SIGKILL
        };
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo; no memory is shared.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            log::debug!(
                "wispd: cannot signal shell {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Whether `kill` has sent SIGKILL (a jailed shell's first `kill` is a SIGTERM).
    pub fn killed_hard(&self) -> bool {
        self.killed.get()
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

    /// The shell's files, for the caller to remove (`Drop` then leaves them).
    pub fn take_files(&mut self) -> ShellFiles {
        self.owns_files = false;
        self.files.clone()
    }
}

impl Drop for ShellProcess {
    /// The shell ends with its handle: killed if still running, reaped (waiting at most
    /// `REAP_ON_DROP`), and its files removed (unless `take_files` took them).
    fn drop(&mut self) {
        if !self.reaped {
            // A jailer already asked to end (shutdown) gets its time before the SIGKILL.
            if !(self.jailed && self.termed.get()) {
                self.kill();
            }
            let start = Instant::now();
            // A jailer gets SIGTERM first (so it removes its jail); SIGKILL after this long.
            let mut escalate = self.jailed.then(|| start + REAP_ON_DROP / 4);
            let deadline = start + REAP_ON_DROP;
            while self.try_reap().is_none() {
                let now = Instant::now();
                if escalate.is_some_and(|at| now >= at) {
                    escalate = None;
                    self.kill();
                }
                let left = deadline.saturating_duration_since(now);
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
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 100) as i32) };
            }
        }
        if self.owns_files {
            self.files.remove();
        }
    }
}

/// The last `max` bytes of `file`, as text.
fn console_tail(file: &File, max: u64) -> std::io::Result<String> {
    let len = file.metadata()?.len();
    let from = len.saturating_sub(max);
    let mut buf = vec![0u8; (len - from) as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], from + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_fit_only_shared_shells_and_shared_shells_fit_anything() {
        let shape = |mem_shared| ShellShape {
            mem_mib: 128,
            vcpus: 2,
            mem_shared,
        };
        assert!(shape(false).fits(128, 2, false));
        assert!(!shape(false).fits(64, 1, true));
        assert!(shape(true).fits(64, 1, true));
        assert!(shape(true).fits(64, 1, false));
        assert!(!shape(true).fits(256, 1, true));
        assert!(!shape(true).fits(64, 3, false));
    }

    #[test]
    fn a_shared_shell_is_started_with_mem_shared() {
        let plan = ShellPlan {
            wisp: "/bin/wisp".into(),
            run_dir: "/run/w".into(),
            jail: None,
            wispd_pid: 7,
            no_seccomp: false,
        };
        for mem_shared in [false, true] {
            let shape = ShellShape {
                mem_mib: 64,
                vcpus: 1,
                mem_shared,
            };
            let (_, args) = plan.command(1, shape);
            assert_eq!(args.iter().any(|a| a == "--mem-shared"), mem_shared);
        }
    }
}
