//! wispd's own seccomp filter (docs/seccomp.md, "wispd"): every thread of a serving wispd is in
//! filter mode while its spawner (which must exec shells) is not, a forbidden syscall kills
//! wispd with SIGSYS (the debug-build test hook), and `--no-seccomp` leaves it and its shells
//! unfiltered. The
//! rest of wispd's suites (tests/wispd.rs, tests/wispd_lifecycle.rs, tests/wispd_jail.rs) run
//! with the filter on, which is the default.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use wispd_common::{unikernel_config, wispd_command, Wispd};

/// `Seccomp:` of every task of `pid`, by thread name.
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    dir.filter_map(|e| {
        let status = std::fs::read_to_string(e.ok()?.path().join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        Some((field("Name:")?, field("Seccomp:")?))
    })
    .collect()
}

#[test]
fn every_wispd_thread_is_filtered_and_only_the_spawner_is_not() {
    let w = Wispd::start("seccomp-threads", 1, 64);
    // Serve something first: the filter is on before the first client, and stays on.
    let config = unikernel_config(&w.dir, "idle");
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out} {err}");
    let modes = seccomp_modes(w.pid());
    assert!(!modes.is_empty());
    for (name, mode) in &modes {
        assert_eq!(mode, "2", "wispd thread {name}: {modes:?}");
    }
    let spawner = w.spawner_pid().expect("wispd has a spawner child");
    let spawner_modes = seccomp_modes(spawner);
    assert_eq!(spawner_modes.len(), 1, "{spawner_modes:?}");
    assert_eq!(spawner_modes[0].1, "0", "{spawner_modes:?}");
    // A shell started by the spawner carries only its own filters: it prepared and booted.
    let (ok, console, _) = w.ctl(&["console", "vm-1"]);
    assert!(
        ok && console.contains("hello from wisp unikernel"),
        "{console}"
    );
}

#[test]
fn without_seccomp_wispd_runs_unfiltered() {
    let dir = wispd_common::scratch_dir("seccomp-off");
    let socket = dir.join("wispd.sock");
    let mut cmd = wispd_command(&socket, 1, 64);
    cmd.arg("--no-seccomp");
    let w = Wispd {
        child: cmd.spawn().unwrap(),
        socket,
        dir,
    };
    w.wait_prepared(1);
    let modes = seccomp_modes(w.pid());
    assert!(modes.iter().all(|(_, m)| m == "0"), "{modes:?}");
    // ...and so are its shells (a prepared shell's vCPU and API threads are filtered otherwise).
    let shells = w.shell_pids();
    assert_eq!(shells.len(), 1);
    let modes = seccomp_modes(shells[0]);
    assert!(modes.iter().any(|(n, _)| n == "vcpu0"), "{modes:?}");
    assert!(modes.iter().all(|(_, m)| m == "0"), "{modes:?}");
}

/// Waits (bounded) for `child` to exit.
fn exit_of(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "wispd did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(debug_assertions)]
#[test]
fn a_forbidden_syscall_kills_wispd_with_sigsys_before_it_serves() {
    let dir = wispd_common::scratch_dir("seccomp-kill");
    let socket = dir.join("wispd.sock");
    let mut cmd = wispd_command(&socket, 1, 64);
    cmd.env("WISP_TEST_FORBIDDEN_SYSCALL", "wispd")
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let status = exit_of(&mut child);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?} {stderr}");
    assert!(stderr.contains("wispd thread: calling getppid"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same hook with `--no-seccomp` is a harmless getppid: the filter is what kills.
#[cfg(debug_assertions)]
#[test]
fn without_seccomp_the_forbidden_syscall_is_harmless_to_wispd() {
    let dir = wispd_common::scratch_dir("seccomp-hook-off");
    let socket = dir.join("wispd.sock");
    let mut cmd = wispd_command(&socket, 1, 64);
    cmd.arg("--no-seccomp")
        .env("WISP_TEST_FORBIDDEN_SYSCALL", "wispd");
    let w = Wispd {
        child: cmd.spawn().unwrap(),
        socket,
        dir,
    };
    w.wait_prepared(1);
    assert_eq!(w.prepared(), 1);
}
