//! Launching one VMM process and timing what it does, from the moment before `spawn`:
//! the guest's first serial line on the child's stdout, the `boot-time-us=N` line Wisp prints
//! on stderr, and the process exit (reaped with `wait4`, whose rusage gives the peak RSS).
//!
//! A watchdog kills a child that outlives its deadline. It can only ever signal our own,
//! not-yet-reaped child: exit is first observed with `waitid(WNOWAIT)`, which leaves the
//! zombie in place, the watchdog is disarmed, and only then is the child reaped.

use std::io::{self, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The line Wisp's VMM prints on stderr when the guest writes the boot timer.
const BOOT_TIME_PREFIX: &str = "boot-time-us=";
/// How much of each stream is kept for error messages.
const KEEP_BYTES: usize = 16 * 1024;
/// Reader threads do little; a small stack keeps a thousand of them cheap (density suite).
const READER_STACK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a reader thread for {program}: {source}")]
    Thread {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for {program} (pid {pid}): {source}")]
    Wait {
        program: String,
        pid: i32,
        #[source]
        source: io::Error,
    },
}

/// What the child's stdin is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Null,
    /// A pipe we hold, so the guest can be talked to (and kept alive) later.
    Pipe,
}

/// A running VMM process being timed.
pub struct Launched {
    program: String,
    pid: i32,
    started: Instant,
    stdin: Option<ChildStdin>,
    first_line: Receiver<Instant>,
    first_line_at: Option<Instant>,
    stdout: Option<JoinHandle<(Vec<u8>, Instant)>>,
    stderr: Option<JoinHandle<StderrSeen>>,
}

#[derive(Default)]
struct StderrSeen {
    text: Vec<u8>,
    boot_time_us: Option<u64>,
}

/// The outcome of one launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Process start → the marker line on stdout, if it came.
    pub first_line: Option<Duration>,
    /// The boot time Wisp reported (µs since its own process start), if it printed one.
    pub boot_timer_us: Option<u64>,
    /// Process start → reaped: when the parent has the exit status (the outcome).
    pub exit: Duration,
    /// Process start → the child's stdout closed: every process holding it (the VMM and
    /// anything it left to finish its teardown) is gone.
    pub gone: Duration,
    /// `Some(code)` for a normal exit, `None` when killed by a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Whether the watchdog had to kill it.
    pub timed_out: bool,
    pub max_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// A run counts when the guest got to its line and the VMM exited cleanly on its reset.
    pub fn is_clean(&self) -> bool {
        self.first_line.is_some() && self.exit_code == Some(0) && !self.timed_out
    }

    /// Why a run does not count, with the ends of its output.
    pub fn failure(&self) -> String {
        let how = match (self.timed_out, self.exit_code, self.signal) {
            (true, _, _) => "timed out and was killed".to_string(),
            (_, Some(code), _) => format!("exited with status {code}"),
            (_, None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended in an unknown way".to_string(),
        };
        let seen = if self.first_line.is_some() {
            "after the guest's line"
        } else {
            "without the guest's line"
        };
        format!(
            "{how} {seen}; stdout: {:?}; stderr: {:?}",
            tail(&self.stdout, 200),
            tail(&self.stderr, 400)
        )
    }
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim()
}

impl Launched {
    /// Starts `command` with stdout and stderr piped; `marker` is the guest's first line.
    pub fn spawn(
        mut command: Command,
        input: Input,
        marker: &'static [u8],
    ) -> Result<Launched, LaunchError> {
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .stdin(match input {
                Input::Null => Stdio::null(),
                Input::Pipe => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child: Child = command.spawn().map_err(|source| LaunchError::Spawn {
            program: program.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        let (tx, first_line) = mpsc::channel();
        let thread_err = |source| LaunchError::Thread {
            program: program.clone(),
            source,
        };
        // The pipes exist: Stdio::piped() was set above.
        let stdout = child.stdout.take().map(|mut out| {
            thread::Builder::new()
                .stack_size(READER_STACK)
                .spawn(move || watch_stdout(&mut out, marker, &tx))
        });
        let stderr = child.stderr.take().map(|mut err| {
            thread::Builder::new()
                .stack_size(READER_STACK)
                .spawn(move || watch_stderr(&mut err))
        });
        let stdout = stdout.transpose().map_err(thread_err)?;
        let stderr = stderr.transpose().map_err(thread_err)?;
        Ok(Launched {
            program,
            pid,
            started,
            stdin: child.stdin.take(),
            first_line,
            first_line_at: None,
            stdout,
            stderr,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// The child's stdin, when launched with [`Input::Pipe`].
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.stdin.as_mut()
    }

    /// Waits up to `timeout` for the guest's line; returns process start → line.
    pub fn wait_first_line(&mut self, timeout: Duration) -> Option<Duration> {
        if self.first_line_at.is_none() {
            match self.first_line.recv_timeout(timeout) {
                Ok(at) => self.first_line_at = Some(at),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        self.first_line_at.map(|at| at - self.started)
    }

    /// Waits for the process to exit (killing it after `timeout` from now) and reaps it.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished, LaunchError> {
        // Closing stdin first: a guest waiting for input sees EOF instead of a hang.
        drop(self.stdin.take());
        let watchdog = Watchdog::arm(self.pid, timeout);
        let exited = wait_exited(self.pid);
        let exit_at = Instant::now();
        let timed_out = watchdog.disarm();
        let reaped = exited.and_then(|()| reap(self.pid));
        let (status, rusage) = reaped.map_err(|source| LaunchError::Wait {
            program: self.program.clone(),
            pid: self.pid,
            source,
        })?;
        // The streams end when the child (and anything it left holding them) is gone.
        let (stdout, closed_at) = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_else(|| (Vec::new(), Instant::now()));
        let seen = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let first_line = self
            .first_line_at
            .or_else(|| self.first_line.try_recv().ok())
            .map(|at| at - self.started);
        Ok(Finished {
            first_line,
            boot_timer_us: seen.boot_time_us,
            exit: exit_at - self.started,
            gone: closed_at.max(exit_at) - self.started,
            exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            timed_out,
            // ru_maxrss is in KiB on Linux (getrusage(2)).
            max_rss_kib: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&seen.text).into_owned(),
        })
    }

    /// Sends SIGKILL (the child is not yet reaped, so the pid is still ours).
    pub fn kill(&self) {
        // SAFETY: kill(2) has no memory effects; `pid` is our unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

/// Reads stdout, reports the instant `marker` has fully arrived, keeps the first bytes; returns
/// them with the instant the stream ended.
fn watch_stdout(
    out: &mut impl Read,
    marker: &[u8],
    tx: &mpsc::Sender<Instant>,
) -> (Vec<u8>, Instant) {
    let mut kept = Vec::new();
    let mut seen = false;
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let now = Instant::now();
                let before = kept.len();
                kept.extend_from_slice(&buf[..n]);
                if !seen {
                    // Search only where a new match could end: the marker may straddle reads.
                    let from = before.saturating_sub(marker.len());
                    if kept[from..].windows(marker.len()).any(|w| w == marker) {
                        seen = true;
                        let _ = tx.send(now);
                    }
                }
                if seen && kept.len() > KEEP_BYTES {
                    kept.truncate(KEEP_BYTES);
                } else if !seen && kept.len() > 4 * KEEP_BYTES {
                    // A chatty child without the marker: keep the tail, where a match may start.
                    kept.drain(..kept.len() - KEEP_BYTES);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, Instant::now())
}

fn watch_stderr(err: &mut impl Read) -> StderrSeen {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match err.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if text.len() < KEEP_BYTES => text.extend_from_slice(&buf[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let boot_time_us = String::from_utf8_lossy(&text)
        .lines()
        .find_map(parse_boot_time);
    StderrSeen { text, boot_time_us }
}

/// `boot-time-us=N` → N.
pub fn parse_boot_time(line: &str) -> Option<u64> {
    line.trim().strip_prefix(BOOT_TIME_PREFIX)?.parse().ok()
}

/// Blocks until `pid` has exited, without reaping it.
fn wait_exited(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reaps an exited `pid`: its wait status and resource usage.
fn reap(pid: i32) -> io::Result<(i32, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in; all-zero is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `usage` are valid and writable for the duration of the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok((status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Kills a child that runs past its deadline.
struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct WatchState {
    exited: bool,
    fired: bool,
}

impl Watchdog {
    fn arm(pid: i32, timeout: Duration) -> Watchdog {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = thread::Builder::new()
            .stack_size(READER_STACK)
            .spawn(move || {
                let (lock, cvar) = &*shared;
                let Ok(guard) = lock.lock() else { return };
                let Ok((mut guard, _)) = cvar.wait_timeout_while(guard, timeout, |s| !s.exited)
                else {
                    return;
                };
                if !guard.exited {
                    // Under the lock and before `exited`: the child is not reaped yet.
                    // SAFETY: kill(2) has no memory effects; `pid` is our unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    guard.fired = true;
                }
            })
            .ok();
        if thread.is_none() {
            log::warn!("cannot start a watchdog thread for pid {pid}; waiting without a deadline");
        }
        Watchdog { state, thread }
    }

    /// Marks the child as exited (it must not be reaped yet); returns whether it was killed.
    fn disarm(mut self) -> bool {
        let (lock, cvar) = &*self.state;
        let fired = match lock.lock() {
            Ok(mut s) => {
                s.exited = true;
                s.fired
            }
            Err(_) => false,
        };
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_boot_time_line() {
        assert_eq!(parse_boot_time("boot-time-us=42920"), Some(42920));
        assert_eq!(parse_boot_time("boot-time-us=x"), None);
        assert_eq!(parse_boot_time("wisp: error"), None);
    }

    #[test]
    fn times_a_real_process_and_sees_its_line() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "printf 'boot '; sleep 0.05; echo 'hello marker'; echo boot-time-us=7 >&2",
        ]);
        let mut run = Launched::spawn(cmd, Input::Null, b"hello marker").unwrap();
        let line = run.wait_first_line(Duration::from_secs(10)).unwrap();
        let done = run.finish(Duration::from_secs(10)).unwrap();
        assert!(done.is_clean(), "{}", done.failure());
        assert_eq!(done.first_line, Some(line));
        assert!(line >= Duration::from_millis(50));
        assert!(done.exit >= line);
        assert_eq!(done.boot_timer_us, Some(7));
        assert!(done.max_rss_kib > 0);
        assert!(done.stdout.contains("boot hello marker"));
    }

    #[test]
    fn watchdog_kills_a_hung_process() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let run = Launched::spawn(cmd, Input::Null, b"never").unwrap();
        let done = run.finish(Duration::from_millis(100)).unwrap();
        assert!(done.timed_out);
        assert_eq!(done.signal, Some(libc::SIGKILL));
        assert!(!done.is_clean());
        assert!(done.failure().contains("timed out"));
    }

    #[test]
    fn failing_process_is_not_clean() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let done = Launched::spawn(cmd, Input::Null, b"x")
            .unwrap()
            .finish(Duration::from_secs(10))
            .unwrap();
        assert_eq!(done.exit_code, Some(3));
        assert!(done.failure().contains("status 3") && done.failure().contains("oops"));
    }

    #[test]
    fn piped_stdin_reaches_the_child() {
        use std::io::Write;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo ready; read x; echo got-$x"]);
        let mut run = Launched::spawn(cmd, Input::Pipe, b"ready").unwrap();
        assert!(run.wait_first_line(Duration::from_secs(10)).is_some());
        run.stdin().unwrap().write_all(b"q\n").unwrap();
        let done = run.finish(Duration::from_secs(10)).unwrap();
        assert!(done.stdout.contains("got-q"), "{}", done.stdout);
    }
}
