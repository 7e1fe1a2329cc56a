//! Puts an interactive terminal in raw mode while a guest owns the console, so keystrokes reach
//! the guest unbuffered, and restores it whenever `wisp` exits. Ctrl-C still stops `wisp`
//! (ISIG stays on).
//!
//! The normal end restores the settings on drop. A signal that would end the process
//! (SIGINT from Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) is caught: the handler puts the saved
//! settings back and exits with the shell's status for that signal (128 + signal). The
//! handler runs on the VMM thread only, whose seccomp filter allows what it does (TCSETS,
//! exit_group): `TerminalClaim` blocks those signals before any other thread exists, so the
//! vCPU threads inherit the block, and `enable` unblocks them on the calling thread alone.

use std::os::fd::RawFd;
use std::sync::OnceLock;

/// The signals whose default action would end `wisp` with the terminal still raw.
const ENDING_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// What the signal handler restores: set once, before the handler is installed.
static SAVED: OnceLock<(RawFd, libc::termios)> = OnceLock::new();

/// A terminal on stdin, noted before the VM is built; the ending signals are blocked on this
/// thread (and so on every thread it spawns) until `enable` or drop.
pub struct TerminalClaim {
    fd: RawFd,
    saved: libc::termios,
    old_mask: libc::sigset_t,
}

/// Restores the terminal's settings when dropped.
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

fn ending_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in ENDING_SIGNALS {
        // SAFETY: `set` is initialised; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

impl TerminalClaim {
    /// `fd`'s settings if it is a terminal (`None` for pipes, files, /dev/null), with the
    /// ending signals blocked on the calling thread. Call before spawning any thread.
    pub fn new(fd: RawFd) -> Option<TerminalClaim> {
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it for a valid terminal fd.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let set = ending_signals();
        // SAFETY: sigset_t is plain data; pthread_sigmask fills the old mask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset_t pointers; only the calling thread's mask changes.
        if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) } != 0 {
            return None;
        }
        Some(TerminalClaim {
            fd,
            saved,
            old_mask,
        })
    }

    /// Raw mode, the restoring signal handlers, and the ending signals unblocked on this
    /// thread (one that arrived meanwhile is handled now). `None` if the terminal refuses
    /// raw mode; it is then left as it was.
    pub fn enable(self) -> Option<RawTerminal> {
        let (fd, saved) = (self.fd, self.saved);
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_iflag &= !(libc::ICRNL | libc::IXON);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: `raw` is a valid termios derived from the terminal's own settings.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        // The signals are still blocked: none can end the process between raw mode and
        // the handlers.
        let _ = SAVED.set((fd, saved));
        install_handlers();
        // `self` drops here and unblocks them.
        drop(self);
        Some(RawTerminal { fd, saved })
    }
}

impl Drop for TerminalClaim {
    fn drop(&mut self) {
        // SAFETY: restores this thread's mask saved in `new`; the old one is not wanted.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// Puts the saved settings back and ends the process as the shell reports a signal's end.
/// Only async-signal-safe calls: tcsetattr (an ioctl) and _exit.
extern "C" fn restore_and_exit(sig: libc::c_int) {
    if let Some((fd, saved)) = SAVED.get() {
        // SAFETY: restores settings read earlier from the same fd.
        unsafe { libc::tcsetattr(*fd, libc::TCSANOW, saved) };
    }
    // SAFETY: _exit ends the process at once, without running anything else.
    unsafe { libc::_exit(128 + sig) };
}

fn install_handlers() {
    for sig in ENDING_SIGNALS {
        // SAFETY: a zeroed sigaction is valid; the mask holds every ending signal, so one
        // handler never interrupts another.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = restore_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_mask = ending_signals();
        // SAFETY: a fully initialised sigaction; the old action is not wanted.
        if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } != 0 {
            log::warn!(
                "cannot catch signal {sig}: it would leave the terminal raw: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores settings previously read from the same fd.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}
