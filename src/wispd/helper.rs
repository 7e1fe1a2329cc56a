//! wispd's end of the spawner (spawner.rs): the process forked at start-up that starts shells
//! and removes finished shells' files, so that neither the fork and exec (milliseconds on a
//! loaded host) nor an unlink waiting on the filesystem journal runs on the event loop, and so
//! that wispd itself can run under a seccomp filter that allows neither. Jobs go over a
//! SOCK_SEQPACKET socket pair (a spawn carries the shell's page and doorbells as descriptors);
//! the loop watches the socket for the spawner's replies.

use crate::shell_process::{
    ShellError, ShellFiles, ShellParts, ShellPlan, ShellProcess, ShellShape,
};
use crate::spawner::{self, JOB_REMOVE, JOB_SPAWN, REPLY_HEAD, REPLY_MAX};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// A shell the spawner started (or why it could not), for the loop's shell `id`.
pub struct Spawned {
    pub id: u64,
    pub result: Result<ShellProcess, ShellError>,
}

/// A shell asked of the spawner, not started yet.
struct Pending {
    parts: ShellParts,
    shape: ShellShape,
}

pub struct Helper {
    sock: UnixDatagram,
    plan: ShellPlan,
    pending: HashMap<u64, Pending>,
    /// The spawner closed its end (it died): nothing more can be started.
    gone: bool,
    pid: libc::pid_t,
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot create the spawner's socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot fork the spawner: {0}")]
    Fork(#[source] std::io::Error),
}

impl Helper {
    /// Forks the spawner. Call while wispd is single-threaded, before its filter goes on.
    pub fn start(plan: ShellPlan) -> Result<Helper, HelperError> {
        let mut pair = [-1 as RawFd; 2];
        let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        // SAFETY: socketpair writes two descriptors into `pair`.
        if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, pair.as_mut_ptr()) } < 0 {
            return Err(HelperError::Socket(std::io::Error::last_os_error()));
        }
        // SAFETY: two fresh descriptors owned by nobody else. A seqpacket socket takes the same
        // send/recv(msg) calls as a datagram one, which is all UnixDatagram makes.
        let (ours, theirs) = unsafe {
            (
                UnixDatagram::from_raw_fd(pair[0]),
                UnixDatagram::from_raw_fd(pair[1]),
            )
        };
        let wispd = std::process::id() as libc::pid_t;
        // SAFETY: wispd is single-threaded here (its caller's contract), so the child may run
        // ordinary code; it never returns from `serve`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(HelperError::Fork(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(ours);
            spawner::serve(theirs, plan, wispd);
        }
        drop(theirs);
        ours.set_nonblocking(true).map_err(HelperError::Socket)?;
        Ok(Helper {
            sock: ours,
            plan,
            pending: HashMap::new(),
            gone: false,
            pid,
        })
    }

    pub fn plan(&self) -> &ShellPlan {
        &self.plan
    }

    /// Asks for a shell for the loop's shell `id`.
    pub fn spawn(&mut self, id: u64, shape: ShellShape) -> Result<(), ShellError> {
        if self.gone {
            return Err(ShellError::SpawnerGone);
        }
        let parts = ShellParts::new()?;
        let job = spawner::encode_job(JOB_SPAWN, id, shape);
        self.sock
            .send_with_fds(&[&job[..]], &parts.fds())
            .map_err(|e| ShellError::Spawn(format!("cannot reach wispd's spawner: {e}")))?;
        self.pending.insert(id, Pending { parts, shape });
        Ok(())
    }

    /// Removes shell `id`'s files (`files`), soon, on the spawner; here if it is gone.
    pub fn remove(&self, id: u64, files: ShellFiles) {
        let none = ShellShape {
            mem_mib: 0,
            vcpus: 0,
            mem_shared: false,
        };
        let job = spawner::encode_job(JOB_REMOVE, id, none);
        if self.gone || self.sock.send(&job).is_err() {
            files.remove();
        }
    }

    /// Readable when the spawner replied (or died).
    pub fn wake_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// The shells started since the last call; marks the spawner gone at its end of file.
    pub fn finished(&mut self) -> Vec<Spawned> {
        let mut out = Vec::new();
        let mut buf = [0u8; REPLY_MAX];
        loop {
            let n = match self.sock.recv(&mut buf) {
                Ok(0) => {
                    self.spawner_died(&mut out);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.spawner_died(&mut out);
                    break;
                }
            };
            if n < REPLY_HEAD {
                continue;
            }
            let mut id = [0u8; 8];
            id.copy_from_slice(&buf[..8]);
            let id = u64::from_le_bytes(id);
            let mut pid = [0u8; 4];
            pid.copy_from_slice(&buf[8..12]);
            let pid = u32::from_le_bytes(pid);
            let error = String::from_utf8_lossy(&buf[REPLY_HEAD..n]).into_owned();
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let files = self.plan.files(id);
            let adopted = (pid != 0)
                .then(|| ShellProcess::adopt(p.parts, pid, files, p.shape))
                .transpose();
            let result = match (adopted, error.is_empty()) {
                (Ok(Some(proc)), true) => Ok(proc),
                (Ok(None), true) => Err(ShellError::Spawn("the spawner started nothing".into())),
                // A child that failed to exec is dropped here, which reaps it.
                (Ok(_), false) => Err(ShellError::Spawn(error)),
                (Err(e), _) => Err(e),
            };
            out.push(Spawned { id, result });
        }
        out
    }

    /// Whatever the spawner had not started never will be: those come back failed.
    fn spawner_died(&mut self, out: &mut Vec<Spawned>) {
        if !self.gone {
            log::error!("wispd: the spawner (pid {}) is gone", self.pid);
        }
        self.gone = true;
        for (id, _) in self.pending.drain() {
            let result = Err(ShellError::SpawnerGone);
            out.push(Spawned { id, result });
        }
    }
}

impl Drop for Helper {
    /// Shutting our end down ends the spawner once it has done the jobs already queued (so no
    /// file is left behind); it is wispd's child, reaped here.
    fn drop(&mut self) {
        // SAFETY: shutdown on our socket; no memory is shared.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_WR) };
        let mut status = 0;
        // SAFETY: waitpid on our own child, writing one int.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.gone = true;
        // Shells it started that the loop never took end here (dropping one kills and reaps it
        // and removes its files).
        drop(self.finished());
    }
}
