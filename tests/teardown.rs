//! `wisp run` exits with the guest's outcome before the kernel has torn its VM down: a helper
//! process that shares its fd table finishes the teardown (vmm/src/vm/teardown.rs) and closes
//! the console last. These tests check the order and that nothing is left behind, with the real
//! unikernel on /dev/kvm. Deadlines are hang guards, not speed targets.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::unikernel;

const WISP: &str = env!("CARGO_BIN_EXE_wisp");
const GUARD: Duration = Duration::from_secs(30);

/// Runs the unikernel to its reset; returns (exit code, console text, exit instant, console
/// closed instant).
fn run_unikernel() -> (Option<i32>, String, Instant, Instant) {
    let mut child = Command::new(WISP)
        .args(["run", "--kernel"])
        .arg(unikernel())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        let _ = tx.send((text, Instant::now()));
    });
    let status = child.wait().unwrap();
    let exited = Instant::now();
    let (text, closed) = rx
        .recv_timeout(GUARD)
        .expect("the console never closed after wisp exited: a teardown helper hangs");
    (status.code(), text, exited, closed)
}

#[test]
fn wisp_run_exits_with_the_outcome_and_the_console_closes_after() {
    let (code, text, exited, closed) = run_unikernel();
    assert_eq!(code, Some(0), "console: {text}");
    assert!(text.contains("hello from wisp unikernel"), "{text}");
    // The helper holds the console until the VM is gone: never before wisp's own exit.
    assert!(closed >= exited || exited - closed < Duration::from_millis(5));
}

#[test]
fn many_runs_leave_no_process_behind() {
    for _ in 0..5 {
        let (code, _, _, _) = run_unikernel();
        assert_eq!(code, Some(0));
    }
    // Once its console closed, a helper is at most a zombie being reaped by init; none may
    // still be alive (sleeping) holding a VM.
    let deadline = Instant::now() + GUARD;
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                (exe == std::path::Path::new(WISP) && state != 'Z')
                    .then(|| format!("{pid} {state}"))
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wisp processes still alive after their runs: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
