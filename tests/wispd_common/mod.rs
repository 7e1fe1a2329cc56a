//! A real `wispd` for the end-to-end tests (tests/wispd.rs, tests/wispd_lifecycle.rs): started
//! on a private socket, driven through its protocol or `wisp ctl`, and inspected from /proc
//! (its shells, fds and memfds).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use wisp_api::seqpacket::SeqpacketConn;
use wisp_api::wispd_protocol::{CtlRequest, CtlResponse, MAX_MESSAGE};
use wisp_api::{BootSource, MachineConfig, VmConfig};
pub use wisp_test_support::children_of;
use wisp_test_support::unikernel;

pub struct Wispd {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

/// The scratch directory of test `name` (emptied).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wisp-wispd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `wispd --socket SOCKET --pool POOL --shell-mem MEM --wisp WISP EXTRA...`, not yet started.
pub fn wispd_command(socket: &Path, pool: usize, shell_mem: u32) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wispd"));
    cmd.arg("--socket")
        .arg(socket)
        .args(["--pool", &pool.to_string()])
        .args(["--shell-mem", &shell_mem.to_string()])
        .arg("--wisp")
        .arg(env!("CARGO_BIN_EXE_wisp"));
    cmd
}

impl Wispd {
    pub fn start(name: &str, pool: usize, shell_mem: u32) -> Wispd {
        Self::start_in(None, name, pool, shell_mem)
    }

    /// wispd (and so its shells) inside the network namespace `netns`, if given.
    pub fn start_in(netns: Option<&str>, name: &str, pool: usize, shell_mem: u32) -> Wispd {
        let dir = scratch_dir(name);
        let socket = dir.join("wispd.sock");
        let cmd = wispd_command(&socket, pool, shell_mem);
        // `ip netns exec` enters the namespace and execs wispd: the child pid is wispd's.
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(cmd.get_program());
                c.args(cmd.get_args());
                c
            }
            None => cmd,
        };
        let child = cmd.spawn().unwrap();
        let w = Wispd { child, socket, dir };
        w.wait_prepared(pool);
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn request(&self, req: &CtlRequest) -> CtlResponse {
        let conn = SeqpacketConn::connect(&self.socket).unwrap();
        conn.send(&serde_json::to_vec(req).unwrap()).unwrap();
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = conn.recv(&mut buf).unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    }

    pub fn ctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_wisp"))
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn prepared(&self) -> usize {
        match self.request(&CtlRequest::Status {}) {
            CtlResponse::Status { prepared, .. } => prepared,
            other => panic!("status: {other:?}"),
        }
    }

    pub fn wait_prepared(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if SeqpacketConn::connect(&self.socket).is_ok() && self.prepared() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "wispd never had {n} prepared shells"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Direct children of wispd: its shells (wispd's spawner, also its child, is not one).
    pub fn shell_pids(&self) -> Vec<u32> {
        children_of(self.pid())
            .into_iter()
            .filter(|&pid| Some(pid) != self.spawner_pid())
            .collect()
    }

    /// wispd's spawner: the child running wispd's own binary.
    pub fn spawner_pid(&self) -> Option<u32> {
        let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let own = exe(self.pid())?;
        children_of(self.pid())
            .into_iter()
            .find(|&pid| exe(pid).as_ref() == Some(&own))
    }

    /// wispd's open fds, as their link targets.
    pub fn fds(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .collect()
    }

    pub fn memfds(&self) -> usize {
        self.fds().iter().filter(|t| t.contains("memfd:")).count()
    }

    /// Entries in wispd's run directory (consoles and VM API sockets).
    pub fn run_dir_entries(&self) -> usize {
        let run_dir = PathBuf::from(format!("{}.d", self.socket.display()));
        std::fs::read_dir(run_dir).map_or(0, |d| d.count())
    }
}

impl Drop for Wispd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The VM's own REST socket, from `wisp ctl create`'s `api=PATH` field.
pub fn api_socket_of(create_output: &str) -> std::path::PathBuf {
    let field = create_output
        .split("api=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next());
    field
        .unwrap_or_else(|| panic!("no api= in {create_output:?}"))
        .into()
}

/// A unikernel VM of 32 MiB running the commands in `cmdline` (empty: greet and reset).
pub fn unikernel_vm(cmdline: &str) -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: unikernel(),
            initrd_path: None,
            boot_args: Some(cmdline.into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 32,
            smt: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn unikernel_config(dir: &Path, cmdline: &str) -> PathBuf {
    write_config(dir, &unikernel_vm(cmdline))
}

pub fn write_config(dir: &Path, config: &VmConfig) -> PathBuf {
    let path = dir.join("vm.json");
    std::fs::write(&path, serde_json::to_vec(config).unwrap()).unwrap();
    path
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Waits (at most `within`) until `cond` holds; false if it never did.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `wispd --jail` on `socket`, the shells running as `uid`:`gid` in jails under `base`, with
/// the host's libc directories bound read-only (the `wisp` under test is dynamically linked).
pub fn jailed_wispd_command(
    socket: &Path,
    pool: usize,
    shell_mem: u32,
    (uid, gid): (u32, u32),
    base: &Path,
) -> Command {
    let mut cmd = wispd_command(socket, pool, shell_mem);
    cmd.arg("--jail")
        .arg("--jailer")
        .arg(env!("CARGO_BIN_EXE_wisp-jailer"))
        .args(["--jail-uid", &uid.to_string()])
        .args(["--jail-gid", &gid.to_string()])
        .arg("--chroot-base-dir")
        .arg(base)
        .args([
            "--jail-bind",
            "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro",
        ])
        .args(["--jail-bind", "/lib64:/lib64:ro"]);
    cmd
}

/// A real virtiofsd serving `<dir>/share` on `<dir>/vfs.sock` in the test form (no sandbox),
/// its log (debug level) in `<dir>/virtiofsd.log`; killed on drop.
pub struct Virtiofsd {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Virtiofsd {
    pub fn start(dir: &Path) -> Virtiofsd {
        let share = dir.join("share");
        std::fs::create_dir_all(&share).unwrap();
        let socket = dir.join("vfs.sock");
        let log = dir.join("virtiofsd.log");
        let child = Command::new(wisp_test_support::virtiofsd())
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(&share)
            .args(["--cache", "auto", "--sandbox", "none"])
            .args(["--log-level", "debug"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let v = Virtiofsd { child, socket, log };
        assert!(
            eventually(Duration::from_secs(20), || v.socket.exists()),
            "virtiofsd made no socket: {}",
            v.log_text()
        );
        v
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it has exited (it does when its one vhost-user session ends).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
