//! wispd's event loop: one thread and one epoll set holding the listener, every client
//! connection, each shell's ack eventfd and pidfd, and a signalfd for SIGTERM/SIGINT. Nothing
//! in it waits on anyone: a request that needs a shell posts its command, rings, and is answered
//! when the shell rings back, its process ends, or a deadline passes (deadlines are the epoll
//! timeout). No lock exists to be held. Clients are in clients.rs, shells in pool.rs, VMs in
//! vms.rs; starting shells and removing their files happen in the spawner process (helper.rs,
//! spawner.rs).

use crate::clients::Client;
use crate::helper::Helper;
use crate::pool::{Shell, Spawning};
use crate::shell_process::ShellShape;
use crate::vms::VmRecord;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use wisp_api::seqpacket::SeqpacketListener;
use wisp_api::wispd_protocol::MAX_MESSAGE;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot block SIGTERM and SIGINT: {0}")]
    Signals(#[source] std::io::Error),
    #[error("cannot set up the event loop: {0}")]
    Setup(#[source] std::io::Error),
    #[error("the event loop failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] wisp_seccomp::SeccompError),
}

pub struct Settings {
    pub pool: usize,
    pub shell_mem: u32,
    pub shell_vcpus: u8,
    /// Every pooled shell's guest RAM is a memfd (`--shell-mem-shared`).
    pub shell_mem_shared: bool,
}

impl Settings {
    /// What the pool's shells are prepared as.
    pub fn pool_shape(&self) -> ShellShape {
        ShellShape {
            mem_mib: self.shell_mem,
            vcpus: self.shell_vcpus,
            mem_shared: self.shell_mem_shared,
        }
    }
}

/// What an epoll event is about. Ids are never reused, so an event for a connection or a shell
/// that is already gone finds nothing and is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    Listener,
    Signals,
    Client(u64),
    ShellAck(u64),
    ShellExit(u64),
    /// The spawner started shells.
    Helper,
}

impl Token {
    const SHIFT: u32 = 56;
    const ID_MASK: u64 = (1 << Self::SHIFT) - 1;

    fn encode(self) -> u64 {
        let (kind, id) = match self {
            Token::Listener => (0, 0),
            Token::Signals => (1, 0),
            Token::Client(id) => (2, id),
            Token::ShellAck(id) => (3, id),
            Token::ShellExit(id) => (4, id),
            Token::Helper => (5, 0),
        };
        (kind << Self::SHIFT) | (id & Self::ID_MASK)
    }

    fn decode(v: u64) -> Option<Token> {
        let id = v & Self::ID_MASK;
        Some(match v >> Self::SHIFT {
            0 => Token::Listener,
            1 => Token::Signals,
            2 => Token::Client(id),
            3 => Token::ShellAck(id),
            4 => Token::ShellExit(id),
            5 => Token::Helper,
            _ => return None,
        })
    }
}

/// Something due at an instant. Entries are never removed early: when one comes due, its owner
/// is asked whether that is still its deadline (a client or shell keeps its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    Client(u64),
    Shell(u64),
    /// The pool may be refilled (a create's critical window or a failure back-off ended).
    Refill,
    /// Accepting may resume after the process ran out of fds.
    Listener,
}

pub struct Daemon {
    pub(crate) settings: Settings,
    epoll: Epoll,
    pub(crate) listener: SeqpacketListener,
    signals: OwnedFd,
    pub(crate) helper: Helper,
    pub(crate) clients: HashMap<u64, Client>,
    /// Shells the helper is starting.
    pub(crate) spawning: HashMap<u64, Spawning>,
    pub(crate) shells: HashMap<u64, Shell>,
    /// Prepared shells in the pool, oldest first.
    pub(crate) ready: VecDeque<u64>,
    /// Shells being prepared for the pool (no create waiting on them yet).
    pub(crate) preparing: VecDeque<u64>,
    /// Shells whose Create is posted, with when: the pool is not refilled meanwhile.
    pub(crate) creating: BTreeMap<u64, Instant>,
    pub(crate) vms: BTreeMap<u64, VmRecord>,
    /// VMs that ended by themselves, oldest first (their records are kept a while).
    pub(crate) ended: VecDeque<u64>,
    next_id: u64,
    pub(crate) next_vm: u64,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    pub(crate) refill_not_before: Option<Instant>,
    /// The refill timer already set.
    pub(crate) refill_wakeup: Option<Instant>,
    pub(crate) prepare_failures: u32,
    pub(crate) listener_paused: bool,
    stopping: bool,
    /// One receive buffer for every client.
    pub(crate) buf: Vec<u8>,
}

/// SIGTERM and SIGINT, to be read from a signalfd instead of interrupting anything. Call before
/// anything else so that no signal can arrive while the default action would still kill wispd
/// without cleaning up.
pub fn block_exit_signals() -> Result<libc::sigset_t, DaemonError> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset/sigaddset/pthread_sigmask write only `set` / the thread's mask.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(DaemonError::Signals(std::io::Error::from_raw_os_error(rc)));
    }
    Ok(set)
}

impl Daemon {
    /// The loop around `listener` (already bound), its signalfd reading `signals`, starting
    /// shells through `helper`.
    pub fn new(
        settings: Settings,
        listener: SeqpacketListener,
        signals: &libc::sigset_t,
        helper: Helper,
    ) -> Result<Daemon, DaemonError> {
        // SAFETY: signalfd reads one valid sigset_t; the result is checked.
        let fd = unsafe { libc::signalfd(-1, signals, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(DaemonError::Signals(std::io::Error::last_os_error()));
        }
        // SAFETY: signalfd returned a fresh fd that nothing else owns.
        let signals = unsafe { OwnedFd::from_raw_fd(fd) };
        listener.set_nonblocking().map_err(DaemonError::Setup)?;
        let daemon = Daemon {
            settings,
            epoll: Epoll::new().map_err(DaemonError::Setup)?,
            listener,
            signals,
            helper,
            clients: HashMap::new(),
            spawning: HashMap::new(),
            shells: HashMap::new(),
            ready: VecDeque::new(),
            preparing: VecDeque::new(),
            creating: BTreeMap::new(),
            vms: BTreeMap::new(),
            ended: VecDeque::new(),
            next_id: 0,
            next_vm: 1,
            timers: BinaryHeap::new(),
            refill_not_before: None,
            refill_wakeup: None,
            prepare_failures: 0,
            listener_paused: false,
            stopping: false,
            buf: vec![0; MAX_MESSAGE],
        };
        daemon
            .watch(daemon.listener.as_raw_fd(), Token::Listener, EventSet::IN)
            .map_err(DaemonError::Setup)?;
        daemon
            .watch(daemon.signals.as_raw_fd(), Token::Signals, EventSet::IN)
            .map_err(DaemonError::Setup)?;
        daemon
            .watch(daemon.helper.wake_fd(), Token::Helper, EventSet::IN)
            .map_err(DaemonError::Setup)?;
        Ok(daemon)
    }

    /// A fresh id for a client or a shell.
    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn watch(&self, fd: RawFd, token: Token, events: EventSet) -> std::io::Result<()> {
        let ev = EpollEvent::new(events, token.encode());
        self.epoll.ctl(ControlOperation::Add, fd, ev)
    }

    pub(crate) fn rewatch(&self, fd: RawFd, token: Token, events: EventSet) -> std::io::Result<()> {
        let ev = EpollEvent::new(events, token.encode());
        self.epoll.ctl(ControlOperation::Modify, fd, ev)
    }

    pub(crate) fn unwatch(&self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Calls back `timer` at `when` (see `Timer`).
    pub(crate) fn at(&mut self, when: Instant, timer: Timer) {
        self.timers.push(Reverse((when, timer)));
    }

    /// Serves until SIGTERM or SIGINT, then ends every shell.
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let mut events = vec![EpollEvent::default(); 64];
        self.refill();
        while !self.stopping {
            let timeout = self.timeout_ms();
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.shutdown();
                    return Err(DaemonError::Wait(e));
                }
            };
            for ev in &events[..n] {
                if let Some(token) = Token::decode(ev.data()) {
                    self.dispatch(token, ev.event_set());
                }
            }
            self.fire_timers();
            self.refill();
        }
        self.shutdown();
        Ok(())
    }

    fn dispatch(&mut self, token: Token, events: EventSet) {
        match token {
            Token::Listener => self.accept_clients(),
            Token::Signals => self.read_signals(),
            Token::Client(id) => self.client_event(id, events),
            Token::ShellAck(id) => self.shell_rang(id),
            Token::ShellExit(id) => self.shell_ended(id),
            Token::Helper => self.shells_started(),
        }
    }

    fn read_signals(&mut self) {
        // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`, which is that large.
        let n = unsafe {
            libc::read(
                self.signals.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n == size as isize {
            log::info!("wispd: signal {}: shutting down", info.ssi_signo);
            self.stopping = true;
        }
    }

    /// Milliseconds until the next timer (rounded up, so it is due when we wake), or -1.
    fn timeout_ms(&self) -> i32 {
        match self.timers.peek() {
            None => -1,
            Some(Reverse((at, _))) => {
                let left = at.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Client(id) => {
                    if self.clients.get(&id).is_some_and(|c| c.deadline == at) {
                        self.client_deadline(id);
                    }
                }
                Timer::Shell(id) => {
                    if self.shells.get(&id).is_some_and(|s| s.deadline == Some(at)) {
                        self.shell_deadline(id);
                    }
                }
                // `refill` runs after every turn of the loop.
                Timer::Refill => {}
                Timer::Listener => self.resume_listener(),
            }
        }
    }

    /// Ends every shell (SIGKILL through its pidfd, then reaped) and drops every client. The
    /// helper finishes removing files when the daemon is dropped.
    fn shutdown(&mut self) {
        for shell in self.shells.values() {
            shell.proc.kill();
        }
        // Dropping a shell reaps it and removes its files.
        self.shells.clear();
        self.clients.clear();
        self.spawning.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Listener,
            Token::Signals,
            Token::Client(7),
            Token::ShellAck(1 << 40),
            Token::ShellExit(3),
            Token::Helper,
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(9 << Token::SHIFT), None);
    }
}
