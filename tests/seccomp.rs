//! Seccomp through the real binaries (docs/seccomp.md): every thread of a running `wisp run`,
//! `wisp --api-sock` and a wispd shell is in seccomp filter mode (`Seccomp: 2` in
//! /proc/PID/task/*/status); a thread that makes a syscall outside its filter kills the whole
//! process with SIGSYS; `--no-seccomp` runs unfiltered.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{
    children_of, curl, run_with_deadline, spawn_with_lines, unikernel, Outcome, Scratch,
};

/// The binaries under test.
const WISP: &str = env!("CARGO_BIN_EXE_wisp");
const WISPD: &str = env!("CARGO_BIN_EXE_wispd");
/// The unikernel's line once it has booted and waits to be stopped (its `idle` command).
const IDLE: &str = "idle: halting until the host stops this VM";
/// Hang guards only: nothing here is about speed.
const GUARD: Duration = Duration::from_secs(30);
/// `Seccomp:` in /proc/PID/status: 0 none, 2 filter mode.
const FILTERED: &str = "2";
const UNFILTERED: &str = "0";

/// One thread of a process: its name and its seccomp mode.
#[derive(Debug)]
struct Task {
    name: String,
    seccomp: String,
}

/// `PF_USER_WORKER | PF_KTHREAD` (include/linux/sched.h): KVM's worker threads (e.g.
/// `kvm-nx-lpage-recovery`) are listed among the process's tasks but run only kernel code, and
/// whether they inherit a filter depends on which thread the kernel version creates them from.
const KERNEL_WORKER_FLAGS: u64 = 0x0000_4000 | 0x0020_0000;

/// Whether the task at `dir` runs user code (the `flags` field of its stat).
fn runs_user_code(dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
        return false;
    };
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let flags: u64 = after_comm
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    flags & KERNEL_WORKER_FLAGS == 0
}

/// Every thread of `pid` that runs user code, as /proc shows it now.
fn tasks(pid: u32) -> Vec<Task> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|t| Some(t.ok()?.path()))
        .filter(|path| runs_user_code(path))
        .filter_map(|path| std::fs::read_to_string(path.join("status")).ok())
        .map(|status| {
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            Task {
                name: field("Name:"),
                seccomp: field("Seccomp:"),
            }
        })
        .collect()
}

/// Waits until `pid` has a thread of each of `names` and every thread is in `mode`; panics
/// with the threads it saw if that does not happen within the guard.
fn wait_for_threads(pid: u32, names: &[&str], mode: &str) -> Vec<Task> {
    let deadline = Instant::now() + GUARD;
    loop {
        let now = tasks(pid);
        let all_there = names.iter().all(|n| now.iter().any(|t| t.name == *n));
        if all_there && now.iter().all(|t| t.seccomp == mode) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid}: want threads {names:?} all with Seccomp {mode}, have {now:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The seccomp mode of `pid`'s thread called `name`.
fn mode_of(pid: u32, name: &str) -> String {
    let all = tasks(pid);
    all.iter()
        .find(|t| t.name == name)
        .map(|t| t.seccomp.clone())
        .unwrap_or_else(|| panic!("pid {pid} has no thread {name}: {all:?}"))
}

/// A running `wisp`, its stdout lines arriving on a channel; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn spawn(cmd: Command) -> Running {
        let (child, lines) = spawn_with_lines(cmd);
        Running { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the guest's `line` on the console.
    fn wait_line(&self, line: &str) {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim_end() == line => return,
                Ok(_) => {}
                Err(e) => panic!("no {line:?} from the guest: {e}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wisp [--no-seccomp] run` of the idle unikernel with two vCPUs and a device.
fn idle_run(no_seccomp: bool) -> Running {
    let mut cmd = Command::new(WISP);
    if no_seccomp {
        cmd.arg("--no-seccomp");
    }
    cmd.args([
        "run",
        "--vcpus",
        "2",
        "--rng",
        "--cmdline",
        "rng idle",
        "--kernel",
    ])
    .arg(unikernel());
    Running::spawn(cmd)
}

#[test]
fn every_thread_of_a_running_wisp_run_is_filtered() {
    let wisp = idle_run(false);
    wisp.wait_line(IDLE);
    wait_for_threads(wisp.pid(), &["wisp", "vcpu0", "vcpu1"], FILTERED);
}

#[test]
fn no_seccomp_runs_every_thread_unfiltered() {
    let wisp = idle_run(true);
    wisp.wait_line(IDLE);
    wait_for_threads(wisp.pid(), &["wisp", "vcpu0", "vcpu1"], UNFILTERED);
}

fn wait_for_socket(wisp: &mut Running, sock: &Path) {
    let deadline = Instant::now() + GUARD;
    while UnixStream::connect(sock).is_err() {
        if let Some(status) = wisp.child.try_wait().unwrap() {
            panic!("wisp --api-sock exited ({status}) before its socket accepted");
        }
        assert!(Instant::now() < deadline, "the API socket never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The API thread is filtered from its start; the VMM thread from InstanceStart on (it builds
/// the VM first), and then every thread is.
#[test]
fn every_thread_of_wisp_api_sock_is_filtered_once_the_vm_runs() {
    let scratch = Scratch::new("seccomp-api");
    let sock = scratch.join("api.sock");
    let mut cmd = Command::new(WISP);
    cmd.arg("--api-sock").arg(&sock);
    let mut wisp = Running::spawn(cmd);
    wait_for_socket(&mut wisp, &sock);
    // An answer means the API thread is past its filter (the socket accepts into its backlog
    // as soon as it is bound, before the thread runs).
    assert_eq!(curl(&sock, "GET", "/", None).0, 200);
    assert_eq!(mode_of(wisp.pid(), "wisp-api"), FILTERED);
    assert_eq!(mode_of(wisp.pid(), "wisp"), UNFILTERED);

    let boot = serde_json::json!({
        "kernel_image_path": unikernel(),
        "boot_args": "rng idle",
    })
    .to_string();
    let machine = r#"{"vcpu_count": 2, "mem_size_mib": 64}"#;
    let (disk_a, disk_b) = (scratch.join("a.img"), scratch.join("b.img"));
    for disk in [&disk_a, &disk_b] {
        std::fs::write(disk, vec![0u8; 1 << 20]).unwrap();
    }
    let drive = serde_json::json!({
        "drive_id": "d", "path_on_host": disk_a, "is_root_device": false, "is_read_only": false,
    })
    .to_string();
    let metrics = serde_json::json!({"metrics_path": scratch.join("metrics.json")}).to_string();
    for (path, body) in [
        ("/boot-source", boot.as_str()),
        ("/machine-config", machine),
        ("/entropy", "{}"),
        ("/drives/d", drive.as_str()),
        ("/metrics", metrics.as_str()),
        ("/actions", r#"{"action_type": "InstanceStart"}"#),
    ] {
        let (status, answer) = curl(&sock, "PUT", path, Some(body));
        assert_eq!(status, 204, "PUT {path}: {answer}");
    }
    wisp.wait_line(IDLE);
    wait_for_threads(
        wisp.pid(),
        &["wisp", "wisp-api", "vcpu0", "vcpu1"],
        FILTERED,
    );
    // The filtered VMM thread still serves the API: pause, resume, a drive's new backing
    // file (opened, type-checked and sized on the VMM thread), a metrics line.
    for state in ["Paused", "Resumed"] {
        let body = format!(r#"{{"state": "{state}"}}"#);
        assert_eq!(curl(&sock, "PATCH", "/vm", Some(&body)).0, 204, "{state}");
    }
    let swap = serde_json::json!({"drive_id": "d", "path_on_host": disk_b}).to_string();
    let (status, answer) = curl(&sock, "PATCH", "/drives/d", Some(&swap));
    assert_eq!(status, 204, "PATCH /drives: {answer}");
    let flush = r#"{"action_type": "FlushMetrics"}"#;
    let (status, answer) = curl(&sock, "PUT", "/actions", Some(flush));
    assert_eq!(status, 204, "FlushMetrics: {answer}");
    let (status, _) = curl(&sock, "GET", "/", None);
    assert_eq!(status, 200);
    assert_eq!(wisp.child.try_wait().unwrap(), None, "wisp died");
}

/// A prepared shell has its vCPU and API threads filtered while it waits; once wispd creates
/// a VM in it, every thread is.
#[test]
fn every_thread_of_a_wispd_shell_is_filtered_once_it_hosts_a_vm() {
    let scratch = Scratch::new("seccomp-wispd");
    let socket = scratch.join("wispd.sock");
    let mut wispd = Command::new(WISPD)
        .arg("--socket")
        .arg(&socket)
        .args(["--pool", "1", "--shell-mem", "64"])
        .arg("--wisp")
        .arg(WISP)
        .spawn()
        .unwrap();
    let wispd_pid = wispd.id();
    let result = std::panic::catch_unwind(|| {
        // Prepared: the threads that will meet input are filtered already; the VMM thread
        // is not until it has built the guest.
        let deadline = Instant::now() + GUARD;
        let shell = loop {
            let prepared = children_of(wispd_pid).into_iter().find(|&pid| {
                let now = tasks(pid);
                ["vcpu0", "wisp-api"]
                    .iter()
                    .all(|n| now.iter().any(|t| t.name == *n && t.seccomp == FILTERED))
            });
            if let Some(pid) = prepared {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "no prepared shell with filtered vCPU and API threads: {:?}",
                children_of(wispd_pid)
                    .into_iter()
                    .map(tasks)
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(mode_of(shell, "wisp"), UNFILTERED);

        let config = write_config(&scratch.join("vm.json"));
        let out = Command::new(WISP)
            .args(["ctl", "--socket"])
            .arg(&socket)
            .args(["create", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "create failed: {out:?}");
        let pid: u32 = stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no pid= in {stdout:?}"));
        assert_eq!(pid, shell, "the create used the prepared shell");
        wait_for_threads(pid, &["wisp", "wisp-api", "vcpu0"], FILTERED);
    });
    let _ = wispd.kill();
    let _ = wispd.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn write_config(path: &Path) -> PathBuf {
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": unikernel(), "boot_args": "idle"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    });
    std::fs::write(path, config.to_string()).unwrap();
    path.to_path_buf()
}

/// `wisp` with the test hook asking `thread` to break its filter.
#[cfg(debug_assertions)]
fn forbidden_in(thread: &str, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(WISP);
    cmd.env("WISP_TEST_FORBIDDEN_SYSCALL", thread).args(args);
    run_with_deadline(cmd, b"", GUARD)
}

#[cfg(debug_assertions)]
fn assert_killed_by_sigsys(out: &Outcome, thread: &str) {
    let status = out.status.unwrap_or_else(|| panic!("{out:#?}"));
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("{thread} thread: calling getppid")),
        "{out:#?}"
    );
}

#[cfg(debug_assertions)]
fn run_args(kernel: &Path) -> Vec<String> {
    ["run", "--cmdline", "noxs", "--kernel"]
        .iter()
        .map(|s| s.to_string())
        .chain([kernel.display().to_string()])
        .collect()
}

#[cfg(debug_assertions)]
#[test]
fn a_forbidden_syscall_on_a_vcpu_thread_kills_wisp_with_sigsys() {
    let args = run_args(&unikernel());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_killed_by_sigsys(&forbidden_in("vcpu", &args), "vcpu");
}

#[cfg(debug_assertions)]
#[test]
fn a_forbidden_syscall_on_the_vmm_thread_kills_wisp_with_sigsys() {
    let args = run_args(&unikernel());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_killed_by_sigsys(&forbidden_in("vmm", &args), "vmm");
}

#[cfg(debug_assertions)]
#[test]
fn a_forbidden_syscall_on_the_api_thread_kills_wisp_with_sigsys() {
    let scratch = Scratch::new("seccomp-api-kill");
    let sock = scratch.join("api.sock");
    let sock = sock.display().to_string();
    assert_killed_by_sigsys(&forbidden_in("api", &["--api-sock", &sock]), "api");
}

/// The same request without filters is a harmless getppid: the filter is what kills.
#[cfg(debug_assertions)]
#[test]
fn without_seccomp_the_forbidden_syscall_is_harmless() {
    let mut args = vec!["--no-seccomp".to_string()];
    args.extend(run_args(&unikernel()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = forbidden_in("vcpu", &args);
    out.assert_success();
    assert!(
        out.stderr.contains("vcpu thread: calling getppid"),
        "{out:#?}"
    );
}
