//! `wispd --jail` as a user drives it (docs/jailer.md, "Running wispd's shells jailed"): each
//! prepared shell is a `wisp-jailer` with a `wisp shell` inside its own jail; `wisp ctl create`
//! boots the unikernel there. The VMM runs with every thread seccomp-filtered, as the jailed
//! uid and gid, with no capabilities and no_new_privs, in a root holding only its files (the
//! kernel hard-linked in by wispd, or reached through a `--jail-bind`), and its jail is gone when
//! the VM is destroyed or wispd stops.
//!
//! The `wisp` under test is dynamically linked, so the jails get the host's libc directories
//! bound read-only (`--jail-bind`), as tests/jailer.rs does.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wisp_test_support::{curl, unikernel};
use wispd_common::{alive, api_socket_of, eventually, wispd_command, write_config, Wispd};

/// The unprivileged ids the shells run as (no such user needs to exist).
const UID: u32 = 10123;
const GID: u32 = 10124;
/// Hang guard only, not a speed target.
const GUARD: Duration = Duration::from_secs(30);
const IDLE: &str = "idle: halting until the host stops this VM";

/// The jail base inside the test's scratch directory.
fn base(w_dir: &Path) -> PathBuf {
    w_dir.join("jails")
}

/// `wispd --jail` with a pool of `pool` jailed shells and the given extra flags.
fn jailed_wispd(name: &str, pool: usize, extra: &[&str]) -> Wispd {
    jailed_wispd_in(wispd_common::scratch_dir(name), pool, extra)
}

/// The same in `dir`, as it is.
fn jailed_wispd_in(dir: PathBuf, pool: usize, extra: &[&str]) -> Wispd {
    let socket = dir.join("wispd.sock");
    let mut cmd = wispd_command(&socket, pool, 64);
    cmd.arg("--jail")
        .arg("--jailer")
        .arg(env!("CARGO_BIN_EXE_wisp-jailer"))
        .args([
            "--jail-uid",
            &UID.to_string(),
            "--jail-gid",
            &GID.to_string(),
        ])
        .arg("--chroot-base-dir")
        .arg(base(&dir))
        .args([
            "--jail-bind",
            "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro",
        ])
        .args(["--jail-bind", "/lib64:/lib64:ro"])
        .args(extra);
    let w = Wispd {
        child: cmd.spawn().unwrap(),
        socket,
        dir,
    };
    w.wait_prepared(pool);
    w
}

/// A unikernel VM config (32 MiB, one vCPU) booting `kernel` with `cmdline`.
fn config(dir: &Path, kernel: &Path, cmdline: &str) -> PathBuf {
    let mut vm = wispd_common::unikernel_vm(cmdline);
    if let Some(boot) = &mut vm.boot_source {
        boot.kernel_image_path = kernel.to_path_buf();
    }
    write_config(dir, &vm)
}

/// The `Name:` line of /proc/PID/status, without the name, whitespace collapsed.
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

/// (name, Seccomp) of every user thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let path = e.ok()?.path();
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        let field = |n: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(n))
                .map(|v| v.trim().to_string())
        };
        // KVM's worker threads run only kernel code (PF_KTHREAD | PF_USER_WORKER).
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
        Some((field("Name:")?, field("Seccomp:")?))
    })
    .collect()
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The jail directories under `base` (`<base>/wisp/shell-*`).
fn jails(base: &Path) -> BTreeSet<String> {
    std::fs::read_dir(base.join("wisp"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM to wispd, and its exit within the guard.
fn terminate(w: &mut Wispd) {
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(w.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    assert!(
        eventually(GUARD, || w.child.try_wait().unwrap().is_some()),
        "wispd did not exit on SIGTERM"
    );
}

#[test]
fn a_jailed_vm_boots_filtered_unprivileged_and_sees_only_its_files() {
    let mut w = jailed_wispd("jail-vm", 1, &[]);
    let base = base(&w.dir);
    // The kernel on the jail base's filesystem: wispd hard-links it into the shell's root.
    let kernel = w.dir.join("unikernel.elf");
    std::fs::copy(unikernel(), &kernel).unwrap();
    let config = config(&w.dir, &kernel, "idle");
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "create failed: {out} {err}");
    assert!(
        !out.contains("cold start"),
        "the prepared shell was used: {out}"
    );

    // The API socket wispd reports is the jail's, on the host.
    let api = api_socket_of(&out);
    let root = api.parent().unwrap().to_path_buf();
    let jail = root.parent().unwrap().to_path_buf();
    assert!(jail.starts_with(base.join("wisp")), "{api:?}");
    let (code, body) = curl(&api, "GET", "/", None);
    assert_eq!(code, 200, "{body}");

    // The guest runs: its console, read through wispd.
    let booted = eventually(GUARD, || w.ctl(&["console", "vm-1"]).1.contains(IDLE));
    assert!(booted, "{:?}", w.ctl(&["console", "vm-1"]));

    // The VMM (the jailer's child; its host pid in the jail directory).
    let vmm: u32 = std::fs::read_to_string(jail.join("wisp.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let filtered = eventually(GUARD, || {
        let t = threads(vmm);
        ["wisp", "wisp-api", "vcpu0"]
            .iter()
            .all(|n| t.iter().any(|(name, _)| name == n))
            && t.iter().all(|(_, mode)| mode == "2")
    });
    assert!(filtered, "every VMM thread filtered: {:?}", threads(vmm));
    assert_eq!(status_field(vmm, "Uid"), format!("{UID} {UID} {UID} {UID}"));
    assert_eq!(status_field(vmm, "Gid"), format!("{GID} {GID} {GID} {GID}"));
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(vmm, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(vmm, "NoNewPrivs"), "1");

    // Its root holds only its own files; the kernel is the host file, hard-linked.
    let vmm_root = PathBuf::from(format!("/proc/{vmm}/root"));
    let want: BTreeSet<String> = [
        "api.sock", "console", "dev", "kernel", "lib", "lib64", "wisp",
    ]
    .map(String::from)
    .into();
    assert_eq!(names(&vmm_root), want, "the jail root holds only its files");
    let linked = std::fs::metadata(vmm_root.join("kernel")).unwrap();
    let host = std::fs::metadata(&kernel).unwrap();
    assert_eq!((linked.dev(), linked.ino()), (host.dev(), host.ino()));
    let console = std::fs::metadata(root.join("console")).unwrap();
    assert_eq!((console.uid(), console.mode() & 0o777), (UID, 0o600));

    // wispd holds the jailer (its child), whose only child is the VMM.
    let jailer: u32 = out
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {out}"));
    assert!(w.shell_pids().contains(&jailer), "{out}");
    assert_eq!(wispd_common::children_of(jailer), vec![vmm]);

    // Destroyed: the jailer ends the shell and removes its jail.
    let (ok, _, err) = w.ctl(&["destroy", "vm-1"]);
    assert!(ok, "{err}");
    assert!(eventually(GUARD, || !jail.exists()), "{jail:?} left behind");
    assert!(eventually(GUARD, || !alive(vmm) && !alive(jailer)));
    assert!(!w.shell_pids().contains(&jailer));

    // SIGTERM: wispd ends its pooled shells through their jailers, which leave no jail.
    w.wait_prepared(1);
    assert_eq!(jails(&base).len(), 1, "{:?}", jails(&base));
    terminate(&mut w);
    assert_eq!(jails(&base), BTreeSet::new(), "jails left after SIGTERM");
}

#[test]
fn a_kernel_under_a_jail_bind_is_named_by_its_jail_path_and_cgroup_limits_apply() {
    let kernels = unikernel().parent().unwrap().display().to_string();
    let bind = format!("{kernels}:/kernels:ro");
    let extra = ["--jail-bind", &bind, "--jail-cgroup", "pids.max=64"];
    let mut w = jailed_wispd("jail-bind", 1, &extra);
    let config = config(&w.dir, &unikernel(), "idle");
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "create failed: {out} {err}");
    let booted = eventually(GUARD, || w.ctl(&["console", "vm-1"]).1.contains(IDLE));
    assert!(booted, "{:?}", w.ctl(&["console", "vm-1"]));
    let root = api_socket_of(&out).parent().unwrap().to_path_buf();
    // Nothing was linked in: the bind holds the kernel.
    assert!(!root.join("kernel").exists());
    assert!(names(&root).contains("kernels"), "{:?}", names(&root));

    // The shell's own cgroup, with the limit wispd passed on.
    let jail = root.parent().unwrap();
    let tag = jail.file_name().unwrap().to_string_lossy().into_owned();
    let vmm: u32 = std::fs::read_to_string(jail.join("wisp.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{vmm}/cgroup")).unwrap();
    let pids = cgroup
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.splitn(3, ':').collect();
            // v1 names the controller; on a v2-only host the single line is "0::PATH".
            (f[1].split(',').any(|c| c == "pids") || f[1].is_empty()).then(|| f[2].to_string())
        })
        .unwrap_or_else(|| panic!("{cgroup}"));
    assert!(pids.ends_with(&format!("wisp/{tag}")), "{cgroup}");
    let v1 = Path::new("/sys/fs/cgroup/pids").join(pids.trim_start_matches('/'));
    let v2 = Path::new("/sys/fs/cgroup").join(pids.trim_start_matches('/'));
    let dir = if v1.exists() { v1 } else { v2 };
    let max = std::fs::read_to_string(dir.join("pids.max")).unwrap();
    assert_eq!(max.trim(), "64");
    // SIGTERM: the jailers remove their cgroups with their jails.
    terminate(&mut w);
    assert!(!dir.exists(), "{dir:?} left behind");
}

#[test]
fn paths_a_jailed_vmm_would_create_are_refused_and_the_shell_is_not_reused() {
    let w = jailed_wispd("jail-refused", 1, &[]);
    let mut vm = wispd_common::unikernel_vm("idle");
    vm.vsock = Some(wisp_api::Vsock {
        guest_cid: 3,
        uds_path: w.dir.join("v.sock"),
        vsock_id: None,
    });
    let refused = write_config(&w.dir, &vm);
    let (ok, out, err) = w.ctl(&["create", "--config", refused.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("vsock (its uds_path) is not supported for jailed shells"),
        "{err}"
    );
    // The shell that was offered it is replaced, and a plain create still works.
    w.wait_prepared(1);
    let kernel = w.dir.join("unikernel.elf");
    std::fs::copy(unikernel(), &kernel).unwrap();
    let config = config(&w.dir, &kernel, "idle");
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(ok, "{out} {err}");
}

#[test]
fn jails_left_by_a_wispd_that_died_are_removed_at_start_and_live_ones_kept() {
    let dir = wispd_common::scratch_dir("jail-leftovers");
    let jails_dir = base(&dir).join("wisp");
    // A pid that no longer exists: a child already reaped (pids are not reused at once).
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let dead_jail = format!("shell-{dead}-3");
    // A live process's jail (this test's pid), and a jail that is not a wispd shell's.
    let live_jail = format!("shell-{}-1", std::process::id());
    for name in [dead_jail.as_str(), live_jail.as_str(), "vm1"] {
        std::fs::create_dir_all(jails_dir.join(name).join("root/dev")).unwrap();
    }
    let w = jailed_wispd_in(dir, 1, &[]);
    let left = jails(&base(&w.dir));
    assert!(
        !left.contains(&dead_jail),
        "a dead wispd's jail stays: {left:?}"
    );
    assert!(left.contains(&live_jail), "{left:?}");
    assert!(left.contains("vm1"), "{left:?}");
    // ...beside the jail of its own prepared shell.
    let own = format!("shell-{}-", w.pid());
    assert!(left.iter().any(|j| j.starts_with(&own)), "{left:?}");
}
