//! virtio-fs through wispd (docs/design.md §5): `wisp ctl create` of a VM with an `fs` share,
//! served by a real virtiofsd on this host. A share needs guest RAM a vhost-user backend can
//! map (a memfd), so it is served by a pooled shell when wispd runs with `--shell-mem-shared`,
//! else by a shell prepared for it with shared memory (a cold start, said so); plain creates keep
//! the anonymous pool. Jailed (`wispd --jail`), the socket is hard-linked into the shell's root
//! and the page names it by its jail path.
//!
//! The guest is the unikernel, which has no virtio-fs driver: what is checked is that the VM
//! starts (the vhost-user handshake and memory table happen before the guest runs; virtiofsd
//! logs the connection), that the VM's own API shows the share, and that the session ends with
//! the VM (virtiofsd serves one session and exits when it closes). Linux guests mount shares in
//! tests/linux_virtiofs.rs.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod wispd_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wisp_test_support::{curl, unikernel};
use wispd_common::{
    alive, api_socket_of, eventually, jailed_wispd_command, scratch_dir, wispd_command,
    write_config, Virtiofsd, Wispd,
};

/// Hang guard only, not a speed target.
const GUARD: Duration = Duration::from_secs(30);
const IDLE: &str = "idle: halting until the host stops this VM";
const CONNECTED: &str = "Client connected, servicing requests";
const DISCONNECTED: &str = "Client disconnected, shutting down";
/// The unprivileged ids jailed shells run as (no such user needs to exist).
const UID: u32 = 10133;
const GID: u32 = 10134;

/// wispd on a fresh scratch directory with `extra` flags, `pool` shells of 64 MiB prepared.
fn wispd(name: &str, pool: usize, extra: &[&str]) -> Wispd {
    let dir = scratch_dir(name);
    let socket = dir.join("wispd.sock");
    let mut cmd = wispd_command(&socket, pool, 64);
    cmd.args(extra);
    let w = Wispd {
        child: cmd.spawn().unwrap(),
        socket,
        dir,
    };
    w.wait_prepared(pool);
    w
}

/// An idle unikernel VM (32 MiB) booting `kernel`, with one share `share0` on `socket`.
fn share_config(dir: &Path, kernel: &Path, socket: &Path) -> PathBuf {
    let mut vm = wispd_common::unikernel_vm("idle");
    if let Some(boot) = &mut vm.boot_source {
        boot.kernel_image_path = kernel.to_path_buf();
    }
    vm.fs.push(wisp_api::Fs {
        fs_id: "share0".into(),
        tag: "share0".into(),
        socket: socket.to_path_buf(),
        num_queues: 1,
        queue_size: 1024,
    });
    write_config(dir, &vm)
}

/// The `pid=` field of `wisp ctl create`'s output: the shell (or its jailer).
fn pid_of(create_output: &str) -> u32 {
    create_output
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {create_output}"))
}

/// Whether process `pid` maps wisp's guest-RAM memfd (shared guest memory).
fn maps_guest_memfd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains("memfd:wisp-guest-ram")
}

/// Creates the share VM, checks it runs with the share in its API, destroys it, and checks
/// virtiofsd's session began and ended with it. Returns the create's output.
fn run_share_vm(w: &Wispd, vfs: &mut Virtiofsd, config: &Path, want_socket: &Path) -> String {
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(
        ok,
        "create failed: {out} {err}\nvirtiofsd: {}",
        vfs.log_text()
    );
    let vm = out.split_whitespace().next().unwrap();
    let booted = eventually(GUARD, || w.ctl(&["console", vm]).1.contains(IDLE));
    assert!(booted, "{:?}", w.ctl(&["console", vm]));
    // The device's handshake happened while the VM was configured, before the guest ran.
    assert!(vfs.log_text().contains(CONNECTED), "{}", vfs.log_text());
    assert!(!vfs.exited(), "virtiofsd ended with the VM still running");

    let (code, body) = curl(&api_socket_of(&out), "GET", "/vm/config", None);
    assert_eq!(code, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    let fs = &config["fs"][0];
    assert_eq!(fs["tag"], "share0", "{body}");
    assert_eq!(fs["socket"], want_socket.to_str().unwrap(), "{body}");

    let (ok, _, err) = w.ctl(&["destroy", vm]);
    assert!(ok, "{err}");
    assert!(
        eventually(GUARD, || vfs.exited()),
        "virtiofsd outlived its session: {}",
        vfs.log_text()
    );
    assert!(vfs.log_text().contains(DISCONNECTED), "{}", vfs.log_text());
    out
}

#[test]
fn a_share_on_an_anonymous_pool_gets_a_shared_memory_shell_and_the_pool_stays_anonymous() {
    let w = wispd("vfs-cold", 1, &[]);
    let pooled = w.shell_pids();
    assert_eq!(pooled.len(), 1, "{pooled:?}");
    let mut vfs = Virtiofsd::start(&w.dir);
    let config = share_config(&w.dir, &unikernel(), &vfs.socket);
    let socket = vfs.socket.clone();

    // The create must not take the anonymous pooled shell: it is served by one prepared for it.
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(
        ok,
        "create failed: {out} {err}\nvirtiofsd: {}",
        vfs.log_text()
    );
    assert!(out.contains("cold start"), "{out}");
    let shell = pid_of(&out);
    assert!(
        !pooled.contains(&shell),
        "the anonymous shell was used: {out}"
    );
    assert!(maps_guest_memfd(shell), "guest RAM is not the memfd");
    assert!(
        !maps_guest_memfd(pooled[0]),
        "the pooled shell is shared too"
    );
    let cmdline = std::fs::read_to_string(format!("/proc/{shell}/cmdline")).unwrap();
    assert!(cmdline.contains("--mem-shared"), "{cmdline:?}");
    let (ok, _, err) = w.ctl(&["destroy", "vm-1"]);
    assert!(ok, "{err}");
    assert!(eventually(GUARD, || vfs.exited()), "{}", vfs.log_text());
    assert!(vfs.log_text().contains(CONNECTED), "{}", vfs.log_text());
    assert!(eventually(GUARD, || !alive(shell)));

    // Again with a fresh virtiofsd, checking the VM's API; then a plain create still takes the
    // anonymous prepared shell, which the share never touched.
    drop(vfs);
    let mut vfs = Virtiofsd::start(&w.dir);
    assert_eq!(vfs.socket, socket);
    let out = run_share_vm(&w, &mut vfs, &config, &socket);
    assert!(out.contains("cold start"), "{out}");
    assert!(eventually(GUARD, || w.shell_pids() == pooled));
    let plain = write_config(&w.dir, &wispd_common::unikernel_vm("idle"));
    let (ok, out, err) = w.ctl(&["create", "--config", plain.to_str().unwrap()]);
    assert!(ok, "{out} {err}");
    assert!(!out.contains("cold start"), "{out}");
    assert_eq!(pid_of(&out), pooled[0]);
}

#[test]
fn with_shell_mem_shared_the_pool_serves_shares_and_plain_vms_warm() {
    let w = wispd("vfs-pool", 2, &["--shell-mem-shared"]);
    let pooled = w.shell_pids();
    assert_eq!(pooled.len(), 2, "{pooled:?}");
    for &pid in &pooled {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(cmdline.contains("--mem-shared"), "{cmdline:?}");
    }
    let mut vfs = Virtiofsd::start(&w.dir);
    let config = share_config(&w.dir, &unikernel(), &vfs.socket);
    let socket = vfs.socket.clone();
    let out = run_share_vm(&w, &mut vfs, &config, &socket);
    assert!(!out.contains("cold start"), "a prepared shell fits: {out}");
    assert!(pooled.contains(&pid_of(&out)), "{out} {pooled:?}");

    // A VM without shares runs on a shared-memory shell just as well.
    let plain = write_config(&w.dir, &wispd_common::unikernel_vm("idle"));
    let (ok, out, err) = w.ctl(&["create", "--config", plain.to_str().unwrap()]);
    assert!(ok, "{out} {err}");
    assert!(!out.contains("cold start"), "{out}");
    let shell = pid_of(&out);
    assert!(maps_guest_memfd(shell));
    let booted = eventually(GUARD, || w.ctl(&["console", "vm-2"]).1.contains(IDLE));
    assert!(booted, "{:?}", w.ctl(&["console", "vm-2"]));
}

#[test]
fn a_share_whose_backend_is_gone_fails_the_create_clearly_and_wispd_goes_on() {
    let w = wispd("vfs-gone", 1, &["--shell-mem-shared"]);
    let config = share_config(&w.dir, &unikernel(), &w.dir.join("nobody.sock"));
    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(err.contains("nobody.sock"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    // The pool is refilled and serves the next share.
    w.wait_prepared(1);
    let mut vfs = Virtiofsd::start(&w.dir);
    let config = share_config(&w.dir, &unikernel(), &vfs.socket);
    let socket = vfs.socket.clone();
    run_share_vm(&w, &mut vfs, &config, &socket);
}

#[test]
fn a_jailed_shell_reaches_virtiofsd_through_a_link_in_its_root() {
    jailed_share("vfs-jail", true);
}

#[test]
fn a_jailed_cold_shell_prepared_for_a_share_reaches_virtiofsd_too() {
    jailed_share("vfs-jail-cold", false);
}

/// A share created on a jailed wispd, its pool shared (`pooled`) or anonymous (a cold start).
fn jailed_share(name: &str, pooled: bool) {
    let dir = scratch_dir(name);
    let socket = dir.join("wispd.sock");
    let base = dir.join("jails");
    let mut cmd = jailed_wispd_command(&socket, 1, 64, (UID, GID), &base);
    if pooled {
        cmd.arg("--shell-mem-shared");
    }
    let w = Wispd {
        child: cmd.spawn().unwrap(),
        socket,
        dir,
    };
    w.wait_prepared(1);
    // The kernel and virtiofsd's socket on the jail base's filesystem: wispd links both in.
    let kernel = w.dir.join("unikernel.elf");
    std::fs::copy(unikernel(), &kernel).unwrap();
    let mut vfs = Virtiofsd::start(&w.dir);
    // What `virtiofsd --socket-group` does for a named group: the jail's gid may connect.
    std::os::unix::fs::chown(&vfs.socket, None, Some(GID)).unwrap();
    std::fs::set_permissions(&vfs.socket, std::fs::Permissions::from_mode(0o770)).unwrap();
    let config = share_config(&w.dir, &kernel, &vfs.socket);

    let (ok, out, err) = w.ctl(&["create", "--config", config.to_str().unwrap()]);
    assert!(
        ok,
        "create failed: {out} {err}\nvirtiofsd: {}",
        vfs.log_text()
    );
    assert_eq!(out.contains("cold start"), !pooled, "{out}");
    let api = api_socket_of(&out);
    let root = api.parent().unwrap().to_path_buf();
    assert!(root.starts_with(&base), "{api:?}");
    // The socket in the root is virtiofsd's own inode, and the page named its jail path.
    let linked = std::fs::metadata(root.join("fs-share0.sock")).unwrap();
    let host = std::fs::metadata(&vfs.socket).unwrap();
    assert!(linked.file_type().is_socket());
    assert_eq!((linked.dev(), linked.ino()), (host.dev(), host.ino()));
    let booted = eventually(GUARD, || w.ctl(&["console", "vm-1"]).1.contains(IDLE));
    assert!(booted, "{:?}", w.ctl(&["console", "vm-1"]));
    assert!(vfs.log_text().contains(CONNECTED), "{}", vfs.log_text());
    let (code, body) = curl(&api, "GET", "/vm/config", None);
    assert_eq!(code, 200, "{body}");
    let vm: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(vm["fs"][0]["socket"], "/fs-share0.sock", "{body}");

    // Destroyed: the session ends, and the jail (link included) is gone.
    let jail = root.parent().unwrap().to_path_buf();
    let (ok, _, err) = w.ctl(&["destroy", "vm-1"]);
    assert!(ok, "{err}");
    assert!(eventually(GUARD, || vfs.exited()), "{}", vfs.log_text());
    assert!(eventually(GUARD, || !jail.exists()), "{jail:?} left behind");
}

/// Not wispd: `wisp-jailer` with `wisp run --fs`, the socket given with `--bind`, as
/// docs/jailer.md ("virtio-fs shares") shows.
#[test]
fn wisp_jailer_gives_a_jailed_wisp_run_its_share_through_a_bind() {
    let dir = scratch_dir("vfs-jailer");
    let mut vfs = Virtiofsd::start(&dir);
    std::os::unix::fs::chown(&vfs.socket, None, Some(GID)).unwrap();
    std::fs::set_permissions(&vfs.socket, std::fs::Permissions::from_mode(0o770)).unwrap();
    let base = dir.join("jails");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wisp-jailer"));
    cmd.args(["--id", "vfs1", "--exec-file", env!("CARGO_BIN_EXE_wisp")])
        .args(["--uid", &UID.to_string(), "--gid", &GID.to_string()])
        .arg("--chroot-base-dir")
        .arg(&base)
        .args(["--bind", "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro"])
        .args(["--bind", "/lib64:/lib64:ro"])
        .args(["--bind", &format!("{}:/kernel:ro", unikernel().display())])
        .args(["--bind", &format!("{}:/fs.sock", vfs.socket.display())])
        .args(["--", "run", "--kernel", "/kernel", "--cmdline", ""])
        .args(["--fs", "tag=share0,socket=/fs.sock"]);
    let out = wisp_test_support::run_with_deadline(cmd, b"", GUARD);
    out.assert_success();
    assert!(out.stdout.contains("hello from wisp unikernel"), "{out:#?}");
    assert!(vfs.log_text().contains(CONNECTED), "{}", vfs.log_text());
    assert!(eventually(GUARD, || vfs.exited()), "{}", vfs.log_text());
    assert!(vfs.log_text().contains(DISCONNECTED), "{}", vfs.log_text());
    assert!(!base.join("wisp/vfs1").exists(), "the jail is left");
    let _ = std::fs::remove_dir_all(&dir);
}
