//! `wisp-jailer` running the real `wisp` on /dev/kvm with the Wisp unikernel: the jailed VMM
//! runs as the given uid and gid with no capabilities and no_new_privs, sees only its jail,
//! sits in its own cgroup with the given limits and resource limits, keeps only the
//! descriptors it is given, serves its API socket inside the jail, reaches a tap in a network
//! namespace, and the jail and cgroup are gone when it ends. Bad input gets one error line
//! and leaves nothing behind.
//!
//! The `wisp` under test is dynamically linked, so each jail also gets the host's libc
//! directories bound read-only (a static `wisp` needs no more than itself).

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wisp_test_support::{
    curl, run_with_deadline, spawn_with_lines, unikernel, NetNs, Outcome, Scratch,
};

const JAILER: &str = env!("CARGO_BIN_EXE_wisp-jailer");
const WISP: &str = env!("CARGO_BIN_EXE_wisp");

/// The unprivileged ids the VMs run as (no such user needs to exist).
const UID: u32 = 10123;
const GID: u32 = 10124;

/// Hang guard only, not a speed target.
const GUARD: Duration = Duration::from_secs(60);

const HELLO: &str = "hello from wisp unikernel";

/// A jailer command for VM `name` in `base`: the test's wisp, the unikernel bound at /kernel,
/// the host's libc (the test wisp is dynamic), then `extra` jailer flags and `wisp_args`.
fn jailer(base: &Scratch, id: &str, extra: &[&str], wisp_args: &[&str]) -> Command {
    let mut cmd = Command::new(JAILER);
    cmd.args(["--id", id, "--exec-file", WISP])
        .args(["--uid", &UID.to_string(), "--gid", &GID.to_string()])
        .arg("--chroot-base-dir")
        .arg(&base.0)
        .args(["--bind", "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro"])
        .args(["--bind", "/lib64:/lib64:ro"])
        .arg("--bind")
        .arg(format!("{}:/kernel:ro", unikernel().display()))
        .args(extra)
        .arg("--")
        .args(wisp_args);
    cmd
}

/// A unique VM id for this test and process.
fn vm_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// `<base>/wisp/<id>`: the jail directory.
fn jail_dir(base: &Scratch, id: &str) -> PathBuf {
    base.join("wisp").join(id)
}

/// A running jailer, its stdout lines arriving on a channel.
struct Jailed {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Jailed {
    fn spawn(cmd: Command) -> Jailed {
        let (child, lines) = spawn_with_lines(cmd);
        Jailed { child, lines }
    }

    fn wait_for_line(&mut self, want: &str) {
        let deadline = Instant::now() + GUARD;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(want) => return,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let status = self.child.try_wait();
                    panic!("never saw {want:?}; stdout {seen:#?}; jailer {status:?}")
                }
            }
        }
    }

    /// Sends SIGTERM (which the jailer forwards to the VM) and waits for the jailer.
    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0);
        self.wait()
    }

    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < GUARD, "the jailer did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Jailed {
    /// SIGTERM first, so that even a failed test's jailer removes its jail and cgroups.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The VM's host pid, from the pid file the jailer writes once the VMM runs.
fn vm_pid(jail: &Path) -> u32 {
    let file = jail.join("wisp.pid");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("no pid file {}: {e}", file.display()));
    text.trim().parse().unwrap()
}

/// The `Name:` line of /proc/PID/status, without the name.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {status}"));
    line[name.len() + 1..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// (name, `Seccomp:`) of every thread of `pid` that runs user code (KVM's worker threads,
/// `PF_KTHREAD | PF_USER_WORKER`, run only kernel code and are left out).
fn thread_seccomp(pid: u32) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let flags: u64 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(6)?
            .parse()
            .ok()?;
        if flags & (0x4000 | 0x0020_0000) != 0 {
            return None;
        }
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let field = |n: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(n))
                .map(|v| v.trim().to_string())
        };
        Some((field("Name:")?, field("Seccomp:")?))
    })
    .collect()
}

/// Where `pid`'s cgroup for `controller` is on the host, and whether that is a v2 one:
/// /proc/PID/cgroup gives the path inside the hierarchy, /proc/self/mounts the hierarchy.
fn cgroup_dir(pid: u32, controller: &str) -> (PathBuf, bool) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[2] == "cgroup" && f[3].split(',').any(|o| o == controller) {
            let path = cgroups
                .lines()
                .map(|l| l.splitn(3, ':').collect::<Vec<_>>())
                .find(|l| l[1].split(',').any(|c| c == controller))
                .unwrap()[2];
            return (Path::new(f[1]).join(path.trim_start_matches('/')), false);
        }
    }
    let v2 = mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f[2] == "cgroup2")
        .unwrap()[1]
        .to_string();
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    (Path::new(&v2).join(path.trim_start_matches('/')), true)
}

/// The names in a directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The (device, inode) of every descriptor `pid` holds.
fn open_files(pid: u32) -> Vec<(u32, (u64, u64))> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((fd, (meta.dev(), meta.ino())))
        })
        .collect()
}

#[test]
fn jailed_unikernel_runs_unprivileged_in_its_own_root_cgroup_and_limits() {
    let base = Scratch::new("jail-idle");
    let id = vm_id("idle");
    let kept = std::fs::File::create(base.join("kept")).unwrap();
    let leaked = std::fs::File::create(base.join("leaked")).unwrap();
    let (kept_fd, leaked_fd) = (
        std::os::fd::AsRawFd::as_raw_fd(&kept),
        std::os::fd::AsRawFd::as_raw_fd(&leaked),
    );
    let mut cmd = jailer(
        &base,
        &id,
        &[
            "--cgroup",
            "memory.max=536870912",
            "--cgroup",
            "pids.max=64",
            "--cgroup",
            "cpu.max=50000 100000",
            "--resource-limit",
            "no-file=256",
            "--resource-limit",
            "fsize=1048576",
            "--keep-fd",
            "7",
        ],
        &["run", "--kernel", "/kernel", "--cmdline", "idle"],
    );
    // SAFETY: dup2 is async-signal-safe; it gives the jailer the kept file as fd 7 and the
    // leaked one as fd 8, both without close-on-exec, as a careless caller would.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in [(kept_fd, 7), (leaked_fd, 8)] {
                if libc::dup2(from, to) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut vm = Jailed::spawn(cmd);
    vm.wait_for_line(HELLO);
    vm.wait_for_line("idle: halting");
    let jail = jail_dir(&base, &id);
    let pid = vm_pid(&jail);

    // Jailed and filtered: the VM has booted, so every thread is in seccomp filter mode.
    let threads = thread_seccomp(pid);
    assert!(
        threads.iter().any(|(n, _)| n == "vcpu0") && threads.iter().all(|(_, m)| m == "2"),
        "every thread of the jailed VMM filtered: {threads:?}"
    );
    assert_eq!(status_field(pid, "Uid"), format!("{UID} {UID} {UID} {UID}"));
    assert_eq!(status_field(pid, "Gid"), format!("{GID} {GID} {GID} {GID}"));
    assert_eq!(status_field(pid, "Groups"), "");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(pid, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");

    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let want: BTreeSet<String> = ["dev", "kernel", "lib", "lib64", "wisp"]
        .map(String::from)
        .into();
    assert_eq!(
        names(&root),
        want,
        "the jail root holds only the jail's files"
    );
    assert_eq!(
        names(&root.join("dev")),
        ["kvm", "net"].map(String::from).into()
    );
    let kvm = std::fs::metadata(root.join("dev/kvm")).unwrap();
    assert_eq!(
        (kvm.uid(), kvm.gid(), kvm.mode() & 0o777),
        (UID, GID, 0o600)
    );
    assert_eq!(kvm.rdev(), std::fs::metadata("/dev/kvm").unwrap().rdev());

    let (memory, v2) = cgroup_dir(pid, "memory");
    assert!(memory.ends_with(format!("wisp/{id}")), "{memory:?}");
    let memory_file = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limit = std::fs::read_to_string(memory.join(memory_file)).unwrap();
    assert_eq!(limit.trim(), "536870912");
    let (pids, _) = cgroup_dir(pid, "pids");
    assert!(pids.ends_with(format!("wisp/{id}")), "{pids:?}");
    assert_eq!(
        std::fs::read_to_string(pids.join("pids.max"))
            .unwrap()
            .trim(),
        "64"
    );

    let (cpu, v2) = cgroup_dir(pid, "cpu");
    assert!(cpu.ends_with(format!("wisp/{id}")), "{cpu:?}");
    let read = |file: &str| {
        std::fs::read_to_string(cpu.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if v2 {
        assert_eq!(read("cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")),
            ("50000".into(), "100000".into())
        );
    }

    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = |name: &str| {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("Max open files"), "256 256");
    assert_eq!(row("Max file size"), "1048576 1048576");

    let kept_id = (
        kept.metadata().unwrap().dev(),
        kept.metadata().unwrap().ino(),
    );
    let leaked_id = (
        leaked.metadata().unwrap().dev(),
        leaked.metadata().unwrap().ino(),
    );
    let fds = open_files(pid);
    assert!(
        fds.contains(&(7, kept_id)),
        "--keep-fd 7 is open in the VM: {fds:?}"
    );
    let supervisor = open_files(vm.child.id());
    assert!(
        supervisor
            .iter()
            .all(|(_, f)| *f != kept_id && *f != leaked_id),
        "the supervising jailer holds neither file: {supervisor:?}"
    );
    assert!(
        fds.iter().all(|(_, f)| *f != leaked_id),
        "an inherited fd leaked: {fds:?}"
    );

    // SIGTERM reaches the VM through the jailer, which then removes the jail and the cgroups
    // and exits with the VM's status: killed by SIGTERM, or 0 should wisp ever catch it and
    // stop cleanly.
    let status = vm.terminate();
    assert!(
        matches!(status.code(), Some(0) | Some(143)),
        "the jailer passes the VM's end on: {status:?}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the VM is still running"
    );
    assert!(!jail.exists(), "the jail {jail:?} is left behind");
    assert!(!memory.exists(), "the cgroup {memory:?} is left behind");
    assert!(!pids.exists(), "the cgroup {pids:?} is left behind");
    assert!(!cpu.exists(), "the cgroup {cpu:?} is left behind");
}

#[test]
fn jailed_unikernel_in_a_new_pid_namespace_boots_exits_and_leaves_nothing() {
    let base = Scratch::new("jail-pidns");
    let id = vm_id("pidns");
    let cmd = jailer(
        &base,
        &id,
        &["--new-pid-ns", "--cgroup", "pids.max=32"],
        &["run", "--kernel", "/kernel", "--cmdline", ""],
    );
    let out = run_with_deadline(cmd, b"", GUARD);
    out.assert_success();
    assert!(out.stdout.contains(HELLO), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");
    assert!(
        names(&base.join("wisp")).is_empty(),
        "the jail is left behind"
    );
}

#[test]
fn jailed_api_socket_answers_inside_the_jail_and_boots_from_a_jail_path() {
    let base = Scratch::new("jail-api");
    let id = vm_id("api");
    let mut vm = Jailed::spawn(jailer(&base, &id, &[], &["--api-sock", "/api.sock"]));
    let sock = jail_dir(&base, &id).join("root/api.sock");
    let start = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(
            vm.child.try_wait().unwrap().is_none(),
            "the jailer exited early"
        );
        assert!(start.elapsed() < GUARD, "{sock:?} never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, body) = curl(&sock, "GET", "/", None);
    assert_eq!(status, 200, "{body}");
    // The kernel path is the jail's: the VMM cannot name a host path.
    let boot = r#"{"kernel_image_path": "/kernel", "boot_args": ""}"#;
    assert_eq!(curl(&sock, "PUT", "/boot-source", Some(boot)).0, 204);
    let host_path = format!(r#"{{"kernel_image_path": "{}"}}"#, unikernel().display());
    let (status, _) = curl(&sock, "PUT", "/boot-source", Some(&host_path));
    assert_eq!(status, 400, "a host path outside the jail does not resolve");
    assert_eq!(curl(&sock, "PUT", "/boot-source", Some(boot)).0, 204);
    let (status, body) = curl(
        &sock,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
    );
    assert_eq!(status, 204, "{body}");
    vm.wait_for_line(HELLO);
    vm.wait();
    assert!(!jail_dir(&base, &id).exists(), "the jail is left behind");
}

#[test]
fn daemonized_jailer_returns_once_the_vm_runs_detached_and_leaves_the_jail_to_the_caller() {
    let base = Scratch::new("jail-daemon");
    let id = vm_id("daemon");
    let out = run_with_deadline(
        jailer(&base, &id, &["--daemonize"], &["--api-sock", "/api.sock"]),
        b"",
        GUARD,
    );
    out.assert_success();
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:#?}");
    let jail = jail_dir(&base, &id);
    let pid = vm_pid(&jail);
    let sock = jail.join("root/api.sock");
    let start = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(start.elapsed() < GUARD, "{sock:?} never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(curl(&sock, "GET", "/", None).0, 200);
    // Its own session, stdio on /dev/null: nothing ties it to the caller's terminal.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "the VM leads its own session: {stat}"
    );
    for fd in 0..=2 {
        let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(target, Path::new("/dev/null"), "fd {fd}");
    }
    // SAFETY: kill(2) on the VM this test started (its pid file names it).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(start.elapsed() < GUARD, "the VM survived SIGKILL");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(jail.exists(), "a daemonized jail is the caller's to remove");
}

#[test]
fn jailed_vm_in_a_network_namespace_arps_the_host_through_its_tap() {
    let ns = NetNs::new("jail");
    // A persistent tap opens without CAP_NET_ADMIN only for its owner: recreate it for the
    // jailed uid and gid, as a host would for a jailed VM.
    let ip = |args: &[&str]| {
        let st = Command::new("ip")
            .arg("-n")
            .arg(&ns.name)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["tuntap", "del", "dev", &ns.tap, "mode", "tap"]);
    let (uid, gid) = (UID.to_string(), GID.to_string());
    ip(&[
        "tuntap", "add", "dev", &ns.tap, "mode", "tap", "user", &uid, "group", &gid,
    ]);
    ip(&["addr", "add", "10.0.2.1/24", "dev", &ns.tap]);
    ip(&["link", "set", &ns.tap, "up"]);

    let base = Scratch::new("jail-net");
    let guest_mac = "52:54:00:aa:bb:02";
    let netns = format!("/var/run/netns/{}", ns.name);
    let net = format!("tap={},mac={guest_mac}", ns.tap);
    let cmd = jailer(
        &base,
        &vm_id("net"),
        &["--netns", &netns],
        &[
            "run",
            "--kernel",
            "/kernel",
            "--net",
            &net,
            "--cmdline",
            "net",
        ],
    );
    let out = run_with_deadline(cmd, b"", GUARD);
    out.assert_success();
    let has = |line: &str| out.stdout.lines().any(|l| l.trim_end() == line);
    assert!(has(&format!("net: mac={guest_mac}")), "{out:#?}");
    let want = format!("net: arp reply from {}", ns.host_mac());
    assert!(has(&want), "want {want:?}: {out:#?}");
}

/// Runs a jailer of `exec_file` (with the host's libc bound in when `libc`) that must fail:
/// exit code 1, one error line saying `why`, and no jail or cgroup left on the host.
fn assert_refused(name: &str, extra: &[&str], exec_file: &str, libc: bool, why: &str) {
    let base = Scratch::new(&format!("jail-bad-{name}"));
    let id = vm_id(name);
    let mut cmd = Command::new(JAILER);
    cmd.args(["--id", &id, "--exec-file", exec_file])
        .arg("--chroot-base-dir")
        .arg(&base.0)
        .args(extra);
    if libc {
        cmd.args(["--bind", "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro"])
            .args(["--bind", "/lib64:/lib64:ro"]);
    }
    if !extra.contains(&"--uid") {
        cmd.args(["--uid", &UID.to_string(), "--gid", &GID.to_string()]);
    }
    cmd.args(["--", "run", "--kernel", "/kernel"]);
    let out: Outcome = run_with_deadline(cmd, b"", GUARD);
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {out:#?}");
    assert!(lines[0].starts_with("wisp-jailer: error: "), "{out:#?}");
    assert!(lines[0].contains(why), "want {why:?} in {:?}", lines[0]);
    assert!(!jail_dir(&base, &id).exists(), "a jail is left behind");
    for hierarchy in [
        "/sys/fs/cgroup/pids/wisp",
        "/sys/fs/cgroup/unified/wisp",
        "/sys/fs/cgroup/wisp",
    ] {
        assert!(
            !Path::new(hierarchy).join(&id).exists(),
            "a cgroup is left in {hierarchy}"
        );
    }
}

#[test]
fn a_missing_exec_file_is_refused() {
    assert_refused(
        "noexec",
        &[],
        "/nonexistent/wisp",
        true,
        "the exec file /nonexistent/wisp is unusable",
    );
}

#[test]
fn uid_zero_is_refused() {
    assert_refused(
        "root",
        &["--uid", "0", "--gid", "100"],
        WISP,
        true,
        "--uid 0 and --gid 0 are refused",
    );
}

#[test]
fn an_unknown_cgroup_file_is_refused() {
    assert_refused(
        "cgkey",
        &["--cgroup", "cpuset.cpus=0"],
        WISP,
        true,
        "invalid --cgroup \"cpuset.cpus=0\"",
    );
}

#[test]
fn a_bind_that_climbs_out_of_the_jail_is_refused() {
    assert_refused(
        "bind",
        &["--bind", "/etc:../etc"],
        WISP,
        true,
        "invalid --bind",
    );
}

#[test]
fn a_dynamic_exec_file_without_its_loader_in_the_jail_is_refused() {
    assert_refused(
        "dynamic",
        &[],
        WISP,
        false,
        "is dynamically linked and the jail has no",
    );
}

#[test]
fn a_failure_inside_the_jail_removes_the_jail_and_the_cgroup() {
    // /dev/null opens but is no network namespace: setns fails in the child, after the jail
    // and the cgroup exist.
    assert_refused(
        "setns",
        &["--netns", "/dev/null", "--cgroup", "pids.max=8"],
        WISP,
        true,
        "cannot join the network namespace /dev/null",
    );
}
