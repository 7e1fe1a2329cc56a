//! Host paths and sockets through the real `wisp` binary (docs/threat-model.md): a FIFO named
//! as kernel, initrd, drive, log, metrics or config file is one clear error and never blocks
//! the VMM; a symbolic link is refused and its target untouched; the API socket is 0600 even
//! under umask 000; `--vsock uds=` and `--api-sock` never take over a live socket or replace a
//! file, and wisp removes only the socket it created; guest memory is bounded by the host's
//! unless overcommit is allowed.

// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use wisp_test_support::{run_with_deadline, unikernel, Scratch};

fn wisp() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
}
use serde_json::{json, Value};
use std::io::Write;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hang guards only: a broken build must fail, not hang. No assertion is about speed.
const GUARD: Duration = Duration::from_secs(30);
/// A refusal must come back long before this; a PUT that blocks on a FIFO never would.
const PROMPT: Duration = Duration::from_secs(10);

/// A running `wisp ... --api-sock SOCK`, killed on drop.
struct Wisp {
    child: Child,
    sock: PathBuf,
}

impl Wisp {
    fn start(sock: &Path, extra: &[&str]) -> Wisp {
        let mut cmd = wisp();
        cmd.args(extra).arg("--api-sock").arg(sock);
        Wisp::spawn(cmd, sock)
    }

    fn spawn(mut cmd: Command, sock: &Path) -> Wisp {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while UnixStream::connect(sock).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("wisp exited ({status}) before its socket accepted");
            }
            assert!(start.elapsed() < GUARD, "the API socket never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
        Wisp {
            child,
            sock: sock.to_path_buf(),
        }
    }

    fn put(&self, path: &str, body: &Value) -> (u16, String) {
        curl(&self.sock, "PUT", path, Some(&body.to_string()))
    }

    /// `GET /` answers 200, and promptly: the VMM thread is not stuck.
    fn assert_answers(&self) {
        let start = Instant::now();
        let (status, body) = curl(&self.sock, "GET", "/", None);
        assert_eq!(status, 200, "{body}");
        assert!(start.elapsed() < PROMPT, "GET / took {:?}", start.elapsed());
    }
}

impl Drop for Wisp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(sock)
        .args(["-X", method, "-w", "\n%{http_code}"])
        .arg(format!("http://localhost{path}"));
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let out = cmd.output().expect("curl must be installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    let code = code
        .parse()
        .unwrap_or_else(|_| panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    (code, body.to_string())
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

fn assert_refused(answer: (u16, String), path: &Path, why: &str) {
    let (status, body) = answer;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&path.display().to_string()), "{body}");
    assert!(body.contains(why), "want {why:?}: {body}");
}

/// `wisp ARGS` that must fail: exit status 1 within the guard, one `wisp: error:` line naming
/// every `want`.
fn assert_one_error(args: &[&str], want: &[&str]) -> String {
    let mut cmd = wisp();
    cmd.args(args);
    let started = Instant::now();
    let out = run_with_deadline(cmd, b"", GUARD);
    assert_eq!(out.code(), Some(1), "{out:#?}");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line: {out:#?}");
    assert!(lines[0].starts_with("wisp: error:"), "{out:#?}");
    for w in want {
        assert!(lines[0].contains(w), "want {w:?}: {out:#?}");
    }
    lines[0].to_string()
}

fn host_mem_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024
}

#[test]
fn a_fifo_as_kernel_initrd_drive_log_or_metrics_is_refused_and_the_api_keeps_answering() {
    let scratch = Scratch::new("hostpaths-fifo");
    let fifo = scratch.0.join("fifo");
    mkfifo(&fifo);
    let wisp = Wisp::start(&scratch.0.join("api.sock"), &[]);
    let kernel = unikernel();
    let requests = [
        ("/boot-source", json!({"kernel_image_path": fifo})),
        (
            "/boot-source",
            json!({"kernel_image_path": kernel, "initrd_path": fifo}),
        ),
        (
            "/drives/rw",
            json!({"drive_id": "rw", "path_on_host": fifo, "is_root_device": false,
                   "is_read_only": false}),
        ),
        (
            "/drives/ro",
            json!({"drive_id": "ro", "path_on_host": fifo, "is_root_device": false,
                   "is_read_only": true}),
        ),
        ("/logger", json!({"log_path": fifo, "level": "Info"})),
        ("/metrics", json!({"metrics_path": fifo})),
    ];
    for (path, body) in &requests {
        let started = Instant::now();
        let answer = wisp.put(path, body);
        assert!(
            started.elapsed() < PROMPT,
            "PUT {path} took {:?}",
            started.elapsed()
        );
        assert_refused(answer, &fifo, "is a FIFO");
        wisp.assert_answers();
    }
    // Nothing was configured from them.
    let (status, config) = curl(&wisp.sock, "GET", "/vm/config", None);
    assert_eq!(status, 200);
    assert!(!config.contains("fifo"), "{config}");
}

#[test]
fn a_config_file_with_a_fifo_metrics_path_or_that_is_a_fifo_is_one_error_at_once() {
    let scratch = Scratch::new("hostpaths-config-fifo");
    let fifo = scratch.0.join("metrics.fifo");
    mkfifo(&fifo);
    let config = scratch.0.join("vm.json");
    let doc = json!({
        "boot-source": {"kernel_image_path": unikernel(), "boot_args": ""},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
        "metrics": {"metrics_path": fifo}
    });
    std::fs::write(&config, doc.to_string()).unwrap();
    let fifo_s = fifo.display().to_string();
    assert_one_error(
        &["--config-file", config.to_str().unwrap()],
        &["metrics", &fifo_s, "is a FIFO"],
    );

    let config_fifo = scratch.0.join("vm.fifo");
    mkfifo(&config_fifo);
    let config_s = config_fifo.display().to_string();
    assert_one_error(
        &["--config-file", &config_s],
        &["config file", &config_s, "is a FIFO"],
    );
}

#[test]
fn put_logger_through_a_symlink_is_refused_and_the_target_is_untouched() {
    let scratch = Scratch::new("hostpaths-symlink");
    let target = scratch.0.join("root-only");
    std::fs::write(&target, b"secret\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = scratch.0.join("wisp.log");
    symlink(&target, &link).unwrap();
    // A link earlier in the path is refused as well.
    let real_dir = scratch.0.join("real");
    std::fs::create_dir(&real_dir).unwrap();
    symlink(&real_dir, scratch.0.join("via")).unwrap();
    let via = scratch.0.join("via/wisp.log");

    let wisp = Wisp::start(&scratch.0.join("api.sock"), &[]);
    for path in [&link, &via] {
        let answer = wisp.put("/logger", &json!({"log_path": path, "level": "Trace"}));
        assert_refused(answer, path, "symbolic link");
        wisp.assert_answers();
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"secret\n");
    assert!(!real_dir.join("wisp.log").exists());
}

#[test]
fn the_api_socket_and_the_files_wisp_creates_are_owner_only_under_umask_000() {
    let scratch = Scratch::new("hostpaths-umask");
    let sock = scratch.0.join("api.sock");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 000; exec "$0" --api-sock "$1""#)
        .arg(env!("CARGO_BIN_EXE_wisp"))
        .arg(&sock);
    let wisp = Wisp::spawn(cmd, &sock);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "API socket mode");

    let log = scratch.0.join("wisp.log");
    let (status, body) = wisp.put("/logger", &json!({"log_path": log, "level": "Info"}));
    assert_eq!(status, 204, "{body}");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "log file mode");

    let metrics = scratch.0.join("metrics.json");
    let (status, body) = wisp.put("/metrics", &json!({"metrics_path": metrics}));
    assert_eq!(status, 204, "{body}");
    let (status, body) = wisp.put("/actions", &json!({"action_type": "FlushMetrics"}));
    assert_eq!(status, 204, "{body}");
    let mode = std::fs::metadata(&metrics).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "metrics file mode");
}

#[test]
fn api_sock_group_shares_the_socket_with_that_group_only() {
    let scratch = Scratch::new("hostpaths-group");
    let sock = scratch.0.join("api.sock");
    let _wisp = Wisp::start(&sock, &["--api-sock-group", "4242"]);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 4242);
}

#[test]
fn api_sock_over_a_regular_file_or_a_live_socket_is_refused() {
    let scratch = Scratch::new("hostpaths-apisock");
    let file = scratch.0.join("precious");
    std::fs::write(&file, b"keep me\n").unwrap();
    let file_s = file.display().to_string();
    assert_one_error(&["--api-sock", &file_s], &[&file_s, "not a socket"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me\n");

    let live = scratch.0.join("live.sock");
    let listener = UnixListener::bind(&live).unwrap();
    let live_s = live.display().to_string();
    assert_one_error(&["--api-sock", &live_s], &[&live_s, "in use"]);
    assert_listener_still_serves(&listener, &live);
}

/// wisp's probe (the connect that found the socket live) is queued first and closed without a
/// byte; after it, a new client's bytes reach the listener's owner.
fn assert_listener_still_serves(listener: &UnixListener, path: &Path) {
    use std::io::Read;
    let (mut probe, _) = listener.accept().unwrap();
    let mut rest = Vec::new();
    probe.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "wisp's probe sent {rest:?}");
    let mut client = UnixStream::connect(path).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"still mine").unwrap();
    let mut got = [0u8; 10];
    server.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still mine");
}

#[test]
fn vsock_uds_on_a_live_socket_or_a_file_is_refused_and_both_survive() {
    let scratch = Scratch::new("hostpaths-vsock-refuse");
    let kernel = unikernel();
    let kernel_s = kernel.to_str().unwrap();

    let live = scratch.0.join("taken.sock");
    let listener = UnixListener::bind(&live).unwrap();
    let live_s = live.display().to_string();
    let spec = format!("cid=3,uds={live_s}");
    assert_one_error(
        &[
            "run",
            "--kernel",
            kernel_s,
            "--cmdline",
            "",
            "--vsock",
            &spec,
        ],
        &[&live_s, "another process answers on it"],
    );
    assert_listener_still_serves(&listener, &live);

    let file = scratch.0.join("notes.txt");
    std::fs::write(&file, b"keep me\n").unwrap();
    let file_s = file.display().to_string();
    let spec = format!("cid=3,uds={file_s}");
    assert_one_error(
        &[
            "run",
            "--kernel",
            kernel_s,
            "--cmdline",
            "",
            "--vsock",
            &spec,
        ],
        &[&file_s, "not a socket"],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me\n");
}

/// A child process killed on drop, so a failed assertion leaves nothing running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `wisp run --cmdline echo --vsock ...`: the guest runs until it reads `q` on its console.
fn run_echo_guest_with_vsock(uds: &Path, meanwhile: impl FnOnce()) {
    let mut child = KillOnDrop(
        wisp()
            .args(["run", "--cmdline", "echo", "--kernel"])
            .arg(unikernel())
            .arg("--vsock")
            .arg(format!("cid=3,uds={}", uds.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Our probe connection below ends mid-handshake, which wisp logs; not of interest.
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The socket's mode is set between bind and listen: check it once the socket accepts,
    // which is the moment anyone else could reach it.
    let start = Instant::now();
    while UnixStream::connect(uds).is_err() {
        assert!(child.0.try_wait().unwrap().is_none(), "wisp ended early");
        assert!(start.elapsed() < GUARD, "the vsock socket never accepted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mode = std::fs::symlink_metadata(uds).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "vsock socket mode");
    meanwhile();
    child.0.stdin.take().unwrap().write_all(b"q").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < GUARD, "the echo guest did not end");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn after_a_run_wisp_removes_its_own_vsock_socket_and_nothing_else() {
    let scratch = Scratch::new("hostpaths-vsock-cleanup");
    let uds = scratch.0.join("v.sock");
    run_echo_guest_with_vsock(&uds, || {});
    assert!(
        std::fs::symlink_metadata(&uds).is_err(),
        "wisp leaves its socket behind"
    );

    run_echo_guest_with_vsock(&uds, || {
        std::fs::remove_file(&uds).unwrap();
        std::fs::write(&uds, b"someone else's file\n").unwrap();
    });
    assert_eq!(std::fs::read(&uds).unwrap(), b"someone else's file\n");
}

#[test]
fn a_guest_larger_than_the_host_is_refused_unless_overcommit_is_allowed() {
    let scratch = Scratch::new("hostpaths-mem");
    let host = host_mem_mib();
    let big = host + 1024;
    let mc = json!({"vcpu_count": 1, "mem_size_mib": big});

    let api = Wisp::start(&scratch.0.join("api.sock"), &[]);
    let (status, body) = api.put("/machine-config", &mc);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&big.to_string()), "{body}");
    assert!(body.contains(&format!("{host} MiB")), "{body}");
    assert!(body.contains("--allow-overcommit"), "{body}");
    drop(api);

    let big_s = big.to_string();
    let kernel = unikernel();
    assert_one_error(
        &["run", "--kernel", kernel.to_str().unwrap(), "--mem", &big_s],
        &[&big_s, &format!("{host} MiB")],
    );

    // With the opt-in the guest boots and sees all of it (MAP_NORESERVE: nothing is touched).
    let mut cmd = wisp();
    cmd.args([
        "run",
        "--allow-overcommit",
        "--cmdline",
        "mem",
        "--mem",
        &big_s,
    ])
    .arg("--kernel")
    .arg(&kernel);
    let out = run_with_deadline(cmd, b"", GUARD);
    out.assert_success();
    let want = format!("memory: {big} MiB");
    assert!(out.stdout.lines().any(|l| l.trim_end() == want), "{out:#?}");

    let api = Wisp::start(&scratch.0.join("api2.sock"), &["--allow-overcommit"]);
    let (status, body) = api.put("/machine-config", &mc);
    assert_eq!(status, 204, "{body}");
    let (_, config) = curl(&api.sock, "GET", "/machine-config", None);
    assert!(
        config.contains(&format!("\"mem_size_mib\":{big}")),
        "{config}"
    );
}

/// A loop device over an image file, detached on drop.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(image: &Path) -> LoopDevice {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .expect("losetup (util-linux)");
        assert!(out.status.success(), "losetup: {out:?}");
        LoopDevice(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_block_device_is_a_drive_with_its_real_capacity_and_a_character_device_is_not() {
    let scratch = Scratch::new("hostpaths-blockdev");
    let image = scratch.0.join("disk.img");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..16].copy_from_slice(&(0x10u8..0x20).collect::<Vec<_>>());
    std::fs::write(&image, &bytes).unwrap();
    let dev = LoopDevice::attach(&image);
    let kernel = unikernel();
    let mut cmd = wisp();
    cmd.args(["run", "--cmdline", "blk", "--kernel"])
        .arg(&kernel)
        .args(["--disk", &format!("path={},id=loopdisk", dev.0)]);
    let out = run_with_deadline(cmd, b"", GUARD);
    out.assert_success();
    for line in [
        "blk: capacity=2048 sectors",
        "blk: id=loopdisk",
        "blk: sector0=101112131415161718191a1b1c1d1e1f",
        "blk: write ok",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_end() == line),
            "missing {line:?}: {out:#?}"
        );
    }
    drop(dev);
    assert_eq!(
        &std::fs::read(&image).unwrap()[512..535],
        b"wisp-unikernel-was-here"
    );

    assert_one_error(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--disk",
            "path=/dev/null",
        ],
        &["/dev/null", "is a character device"],
    );
}
