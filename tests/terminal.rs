//! `wisp run` on a real terminal: a pseudo-terminal (openpty) whose slave side is wisp's
//! stdin and controlling terminal. While the guest runs, the terminal is raw (no line
//! editing, no echo: keystrokes go to the guest); whenever wisp exits — the guest powers off,
//! Ctrl-C typed on the terminal, SIGTERM, SIGHUP, or a start that fails — the terminal's
//! settings are exactly what they were before.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{unikernel, TempFile};

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
/// The unikernel's lines the tests wait for.
const IDLE: &str = "idle: halting until the host stops this VM";
const HELLO: &str = "hello from wisp unikernel";
/// Hang guard only.
const GUARD: Duration = Duration::from_secs(30);

struct Pty {
    master: File,
    slave: OwnedFd,
}

fn openpty() -> Pty {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: both out-pointers are valid; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    Pty { master, slave }
}

/// The terminal's settings, as comparable fields.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Settings {
    iflag: libc::tcflag_t,
    oflag: libc::tcflag_t,
    cflag: libc::tcflag_t,
    lflag: libc::tcflag_t,
    cc: [libc::cc_t; libc::NCCS],
}

fn settings(fd: &OwnedFd) -> Settings {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid terminal fd and a writable termios.
    let rc = unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) };
    assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
    Settings {
        iflag: t.c_iflag,
        oflag: t.c_oflag,
        cflag: t.c_cflag,
        lflag: t.c_lflag,
        cc: t.c_cc,
    }
}

/// Gives the terminal settings of a user's shell that are not the pty defaults, so a
/// "restore" to anything but the saved settings shows: VMIN 3 and no IEXTEN.
fn make_distinct(fd: &OwnedFd) -> Settings {
    // SAFETY: as in `settings`.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid terminal fd and a writable termios.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_cc[libc::VMIN] = 3;
    t.c_lflag &= !libc::IEXTEN;
    // SAFETY: a valid termios from the same terminal.
    let rc = unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) };
    assert_eq!(rc, 0);
    settings(fd)
}

fn is_raw(s: &Settings) -> bool {
    s.lflag & (libc::ICANON | libc::ECHO) == 0
}

/// `wisp run ARGS` in its own session with the pty's slave as stdin and controlling
/// terminal (so the terminal's Ctrl-C reaches it); stdout lines come over a channel.
fn spawn_on_pty(pty: &Pty, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let slave = pty.slave.try_clone().unwrap();
    let mut cmd = Command::new(WISP);
    cmd.arg("run")
        .args(args)
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid and ioctl.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

fn wait_line(lines: &mpsc::Receiver<String>, want: &str) {
    let end = Instant::now() + GUARD;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(want) => return,
            Ok(_) => {}
            Err(e) => panic!("no {want:?} from the guest: {e}"),
        }
    }
}

/// Waits until the terminal is raw: wisp has handed it to the guest.
fn wait_raw(fd: &OwnedFd) -> Settings {
    let end = Instant::now() + GUARD;
    loop {
        let s = settings(fd);
        if is_raw(&s) {
            return s;
        }
        assert!(Instant::now() < end, "the terminal never went raw: {s:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let end = Instant::now() + GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= end {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("wisp did not exit within {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
    }
    text
}

/// An idle guest on the pty, raw terminal checked; returns the running wisp. Two vCPUs: a
/// signal must be handled on the VMM thread, not on a vCPU thread (whose seccomp filter
/// would kill wisp with SIGSYS for the terminal ioctl).
fn idle_guest(pty: &Pty) -> Child {
    let kernel = unikernel();
    let args = [
        "--vcpus",
        "2",
        "--cmdline",
        "idle",
        "--kernel",
        path(&kernel),
    ];
    let (child, lines) = spawn_on_pty(pty, &args);
    wait_line(&lines, IDLE);
    wait_raw(&pty.slave);
    child
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// wisp is told to end by `signal` (sent by `send`) and must leave the terminal as it was,
/// exiting with the shell's status for that signal (128 + signal).
fn signal_restores_the_terminal(signal: libc::c_int, send: impl FnOnce(&Pty, &Child)) {
    let pty = openpty();
    let before = make_distinct(&pty.slave);
    let mut wisp = idle_guest(&pty);
    send(&pty, &wisp);
    let status = wait_exit(&mut wisp);
    let err = stderr_of(&mut wisp);
    assert_eq!(
        settings(&pty.slave),
        before,
        "terminal not restored; stderr: {err}"
    );
    assert_eq!(
        (status.code(), status.signal()),
        (Some(128 + signal), None),
        "{err}"
    );
}

fn kill(child: &Child, signal: libc::c_int) {
    // SAFETY: kill takes plain numbers; the child is ours and not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn guest_power_off_restores_the_terminal() {
    let pty = openpty();
    let before = make_distinct(&pty.slave);
    let kernel = unikernel();
    // `echo` echoes console input until a `q`; then the unikernel powers off (i8042 reset).
    let (mut wisp, lines) = spawn_on_pty(&pty, &["--cmdline", "echo", "--kernel", path(&kernel)]);
    wait_line(&lines, HELLO);
    let raw = wait_raw(&pty.slave);
    assert_eq!(
        raw.iflag & libc::ICRNL,
        0,
        "CR is passed to the guest as is"
    );
    (&pty.master).write_all(b"typed-by-the-user q").unwrap();
    wait_line(&lines, "typed-by-the-user");
    let status = wait_exit(&mut wisp);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut wisp));
    assert_eq!(settings(&pty.slave), before);
}

/// Ctrl-C typed on the terminal: the line discipline sends SIGINT to wisp (ISIG stays on in
/// raw mode).
#[test]
fn ctrl_c_on_the_terminal_restores_it() {
    signal_restores_the_terminal(libc::SIGINT, |pty, _| {
        (&pty.master).write_all(&[0x03]).unwrap();
    });
}

#[test]
fn sigterm_restores_the_terminal() {
    signal_restores_the_terminal(libc::SIGTERM, |_, wisp| kill(wisp, libc::SIGTERM));
}

#[test]
fn sighup_restores_the_terminal() {
    signal_restores_the_terminal(libc::SIGHUP, |_, wisp| kill(wisp, libc::SIGHUP));
}

#[test]
fn a_start_failure_leaves_the_terminal_as_it_was() {
    let pty = openpty();
    let before = make_distinct(&pty.slave);
    let bad = TempFile::new("wisp-terminal-bad-kernel", b"not a kernel image at all");
    let (mut wisp, _lines) = spawn_on_pty(&pty, &["--kernel", path(&bad.0)]);
    let status = wait_exit(&mut wisp);
    let err = stderr_of(&mut wisp);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("wisp: error"), "{err}");
    assert_eq!(settings(&pty.slave), before);
}
