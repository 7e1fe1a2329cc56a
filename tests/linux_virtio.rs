//! Linux drives wisp's virtio-mmio devices on real KVM, inside the test host (tests/testhost):
//! QEMU/TCG → Debian kernel with kvm_amd (L1) → `wisp run --disk/--net …` → Tinyx Linux (L2).
//!
//! All scenarios share one L1 boot, as in linux_guest.rs: the script below runs each step as a
//! named command and every test judges its own. The L2 guest runs
//! tests/testhost/l2_virtio_init.sh, which picks its scenario from the kernel command line and
//! prints `WISP-L2 key=value` facts.
//!
//! - Block: the test process builds an ext4 image holding a file; L2 mounts it from virtio-blk,
//!   prints the file and writes a new one with a marker unique to this test run; L1 then finds
//!   the marker in the image file, and a second L2 boot reads it back from a read-only disk.
//!   A third boots with an ext4 image as its root filesystem (`--disk …,root`) and writes there.
//! - Net: L1 creates a tap (tun module, busybox `tunctl`) with 10.0.2.1/24; L2 brings eth0 up
//!   on it as 10.0.2.15/24 and pings L1.
//! - Vsock: L2 connects to a listener of L1 on wisp's Unix socket and L1 connects to a listener
//!   of L2 (Firecracker's hybrid `CONNECT <port>` handshake); each exchanges a line both ways.
//!   Both ends run `vsock-probe` (tests/testhost/vsock_probe.rs, built here with rustc).

mod testhost;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use wisp_test_support::Scratch;

use testhost::{
    check_failed, initramfs_with_init, shared_host, static_busybox, value, CommandRun, HostFile,
    L2Guest, TestHost, TestHostError,
};

/// See linux_guest.rs: `quiet` (console bytes are nested exits under TCG), `panic=-1` and
/// `reboot=k` (reset through the i8042 rather than the ACPI reset register).
const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";

/// The guard for one `wisp run` inside L1; generous, TCG is slow.
const L2_TIMEOUT_S: u32 = 180;

const L2_INIT: &str = include_str!("testhost/l2_virtio_init.sh");

/// What the host writes into the image before L2 sees it.
const HOST_FILE_TEXT: &str = "written-by-the-test-host";

/// The serial the read-only boot gives its disk (`id=`), which Linux shows in sysfs.
const DISK_ID: &str = "wispdisk0";

/// The guest's MAC address on the tap.
const GUEST_MAC: &str = "02:00:00:00:00:02";

/// The guest's vsock CID; the host is CID 2 (VMADDR_CID_HOST).
const GUEST_CID: u32 = 3;

/// wisp's vsock Unix socket inside L1, and the ports of the two connections.
const VSOCK_UDS: &str = "/tmp/vsock.sock";
const HOST_PORT: u32 = 5000;
const GUEST_PORT: u32 = 6000;

/// A string that is in the image only if this run's guest wrote it.
fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("wisp-guest-wrote-{}-{nanos}", std::process::id())
    })
}

/// A 16 MiB ext4 image of the directory `content`, made with e2fsprogs' `mkfs.ext4 -d`.
fn mkfs_ext4(content: &Path, image: &Path) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(content)
        .arg(image)
        .arg("16M")
        .output()
        .expect("run mkfs.ext4 (install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4 failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A data disk holding `from-host.txt`.
fn build_disk_image(dir: &Path) -> PathBuf {
    let content = dir.join("disk-content");
    std::fs::create_dir_all(&content).expect("create the image content directory");
    std::fs::write(content.join("from-host.txt"), HOST_FILE_TEXT).expect("write from-host.txt");
    let image = dir.join("disk.ext4");
    mkfs_ext4(&content, &image);
    image
}

/// A root disk: static busybox with its applet links, the guest script as /init, and the
/// mount points (/dev must exist for the kernel's devtmpfs automount, which gives init its
/// /dev/console).
fn build_root_image(dir: &Path) -> Result<PathBuf, TestHostError> {
    let content = dir.join("root-content");
    for sub in ["bin", "dev", "proc", "sys", "mnt", "tmp"] {
        std::fs::create_dir_all(content.join(sub)).expect("create the root image directories");
    }
    let busybox = static_busybox()?;
    std::fs::copy(&busybox, content.join("bin/busybox")).expect("copy busybox");
    let applets = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("run busybox --list");
    for applet in String::from_utf8_lossy(&applets.stdout).split_whitespace() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", content.join("bin").join(applet))
                .expect("link a busybox applet");
        }
    }
    let init = content.join("init");
    std::fs::write(&init, L2_INIT).expect("write /init");
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("make /init executable");
    let image = dir.join("root.ext4");
    mkfs_ext4(&content, &image);
    Ok(image)
}

/// Builds tests/testhost/vsock_probe.rs as a static, stripped executable (`$RUSTC` or `rustc`;
/// std only, so no Cargo project is needed).
fn build_vsock_probe(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testhost/vsock_probe.rs");
    let out = dir.join("vsock-probe");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
        ])
        .args(["-C", "strip=symbols", "-C", "target-feature=+crt-static"])
        .args(["--target", "x86_64-unknown-linux-gnu", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run rustc");
    assert!(
        built.status.success(),
        "cannot build {}: {}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// `wisp run` of the virtio guest with the given scenario and device arguments.
fn wisp_run(name: &str, scenario: &str, devices: &str) -> String {
    format!(
        "run {name} {L2_TIMEOUT_S} wisp run --kernel /guest/vmlinux --initrd /guest/virtio.cpio \
         --cmdline \"{CMDLINE} wisp_virtio={scenario} wisp_marker={marker}\" --mem 256 \
         {devices}\n",
        marker = marker(),
    )
}

/// The L1 script: block write and its image check, block read-only, ext4 root and its image
/// check, then net, then vsock.
fn script() -> String {
    let mut script = String::new();
    script.push_str(&wisp_run(
        "block-write",
        "block-write",
        "--disk path=/guest/disk.ext4",
    ));
    // busybox grep on the raw image: the file's data block holds the marker.
    script.push_str(&format!(
        "run block-image 60 grep -c {} /guest/disk.ext4\n",
        marker()
    ));
    script.push_str(&wisp_run(
        "block-read",
        "block-read",
        &format!("--disk path=/guest/disk.ext4,ro,id={DISK_ID}"),
    ));
    // The disk as the root filesystem: no initrd; wisp appends `root=/dev/vda rw`.
    script.push_str(&format!(
        "run block-root {L2_TIMEOUT_S} wisp run --kernel /guest/vmlinux \
         --cmdline \"{CMDLINE} init=/init wisp_virtio=root wisp_marker={marker}\" --mem 256 \
         --disk path=/guest/root.ext4,root\n\
         run block-root-image 60 grep -c {marker} /guest/root.ext4\n",
        marker = marker(),
    ));
    script.push_str(
        "run net-tap 30 sh -c 'tunctl -t tap0 && ip addr add 10.0.2.1/24 dev tap0 && \
         ip link set tap0 up'\n",
    );
    script.push_str(&wisp_run(
        "net",
        "net",
        &format!("--net tap=tap0,mac={GUEST_MAC}"),
    ));
    // Vsock: the L1 listener for the guest's connection must be bound before L2 boots; the
    // host-initiated connection is retried until the guest listens (wisp closes the Unix
    // stream while nothing in the guest accepts the port).
    script.push_str(&format!(
        "vsock-probe uds-serve {VSOCK_UDS}_{HOST_PORT} > /tmp/vsock-serve.out 2>&1 &\n\
         serve_pid=$!\n\
         i=0; while [ ! -S {VSOCK_UDS}_{HOST_PORT} ] && [ $i -lt 100 ]; do \
         sleep 0.1; i=$((i+1)); done\n\
         ( i=0; while [ $i -lt 300 ]; do \
         vsock-probe uds-connect {VSOCK_UDS} {GUEST_PORT} from-host > /tmp/vsock-connect.out \
         2>&1 && break; i=$((i+1)); sleep 0.2; done ) &\n\
         connect_pid=$!\n"
    ));
    script.push_str(&wisp_run(
        "vsock",
        "vsock",
        &format!("--vsock cid={GUEST_CID},uds={VSOCK_UDS}"),
    ));
    script.push_str(
        "kill $serve_pid $connect_pid 2>/dev/null\n\
         run vsock-host-serve 10 cat /tmp/vsock-serve.out\n\
         run vsock-host-connect 10 cat /tmp/vsock-connect.out\n",
    );
    script
}

fn boot_shared_host() -> Result<TestHost, TestHostError> {
    // The images are copied into L1's initramfs: the directory goes when the boot is done.
    let dir = Scratch::new("linux-virtio");
    boot_with_images(&dir.0)
}

/// Builds the guest images in `dir` and boots L1 with them.
fn boot_with_images(dir: &Path) -> Result<TestHost, TestHostError> {
    let guest = L2Guest::tinyx()?;
    let probe = build_vsock_probe(dir);
    let probe_in_l2 = HostFile {
        src: probe.clone(),
        dst: "/bin/vsock-probe".to_owned(),
        perm: 0o755,
    };
    let initrd = initramfs_with_init("virtio", L2_INIT, &[probe_in_l2])?;
    // L1's root is its initramfs (tmpfs), so the image is a writable file there.
    let disk = build_disk_image(dir);
    let root = build_root_image(dir)?;
    TestHost::builder()
        .kernel_module("tun")
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&initrd, "/guest/virtio.cpio")
        .file(&disk, "/guest/disk.ext4")
        .file(&root, "/guest/root.ext4")
        .executable(&probe, "/bin/vsock-probe")
        .script(&script())
        .boot()
}

/// The shared L1 boot.
fn host() -> &'static TestHost {
    shared_host(boot_shared_host)
}

/// `key=` has exactly the value `want`.
fn expect_value(run: &CommandRun, key: &str, want: &str) -> Result<(), TestHostError> {
    let got = value(run, key)?;
    if got == want {
        Ok(())
    } else {
        Err(check_failed(run, format!("{key}={got}, expected {want}")))
    }
}

/// The guest ran its scenario to the end, reset, and `wisp` exited 0.
fn clean_run(name: &str) -> Result<&'static CommandRun, TestHostError> {
    let run = host().run(name)?;
    if run.timed_out() {
        return Err(check_failed(
            run,
            "wisp did not exit (killed by the L1 timeout)",
        ));
    }
    if !run.stdout.contains("WISP-L2 end") {
        return Err(check_failed(run, "the guest init did not finish"));
    }
    if run.exit_code != Some(0) {
        return Err(check_failed(
            run,
            "wisp exited non-zero after a clean guest reboot",
        ));
    }
    Ok(run)
}

/// Linux mounts an ext4 filesystem from a virtio-blk disk, reads the file the host put there,
/// and its write reaches the image file: L1 finds the marker in the image after wisp exits.
#[test]
fn guest_reads_and_writes_an_ext4_disk() -> Result<(), TestHostError> {
    let run = clean_run("block-write")?;
    expect_value(run, "host-file", HOST_FILE_TEXT)?;
    expect_value(run, "umount", "ok")?;
    let image = host().run("block-image")?;
    let count: u32 = image.stdout.trim().parse().unwrap_or(0);
    if image.exit_code != Some(0) || count == 0 {
        return Err(check_failed(
            image,
            format!(
                "the image file does not hold the guest's marker {}",
                marker()
            ),
        ));
    }
    Ok(())
}

/// A disk given with `ro` shows the earlier write, is read-only to Linux and refuses a raw
/// write; `id=` is the serial Linux reads with VIRTIO_BLK_T_GET_ID.
#[test]
fn guest_sees_read_only_disk_with_its_id() -> Result<(), TestHostError> {
    let run = clean_run("block-read")?;
    expect_value(run, "guest-file", marker())?;
    expect_value(run, "sysfs-ro", "1")?;
    expect_value(run, "raw-write", "refused")?;
    expect_value(run, "serial", DISK_ID)?;
    Ok(())
}

/// Linux boots with an ext4 virtio-blk disk as its root filesystem (`--disk …,root`), writes a
/// file there, and the write reaches the image file.
#[test]
fn guest_boots_from_an_ext4_root_disk_and_writes_to_it() -> Result<(), TestHostError> {
    let run = clean_run("block-root")?;
    expect_value(run, "root-fs", "ext4")?;
    expect_value(run, "root-mode", "rw")?;
    expect_value(run, "remount-ro", "ok")?;
    let image = host().run("block-root-image")?;
    let count: u32 = image.stdout.trim().parse().unwrap_or(0);
    if image.exit_code != Some(0) || count == 0 {
        return Err(check_failed(
            image,
            format!(
                "the root image does not hold the guest's marker {}",
                marker()
            ),
        ));
    }
    Ok(())
}

/// Linux brings up virtio-net on an L1 tap with the MAC from `--net` and pings L1 through it.
#[test]
fn guest_pings_the_host_over_a_tap() -> Result<(), TestHostError> {
    let tap = host().run("net-tap")?;
    if tap.exit_code != Some(0) {
        return Err(check_failed(tap, "L1 could not create and configure tap0"));
    }
    let run = clean_run("net")?;
    expect_value(run, "mac", GUEST_MAC)?;
    if !run.stdout.contains("3 packets received") {
        return Err(check_failed(run, "not all 3 pings were answered"));
    }
    expect_value(run, "ping-rc", "0")?;
    Ok(())
}

/// The guest connects to a listener of L1 (wisp's `<uds>_<port>`) and L1 connects to a
/// listener of the guest (`CONNECT <port>` on `<uds>`); each side gets the other's line and
/// the answer to its own.
#[test]
fn guest_and_host_exchange_data_over_vsock() -> Result<(), TestHostError> {
    let run = clean_run("vsock")?;
    // Guest-initiated: L1 got the guest's line, the guest got L1's answer.
    let serve = host().run("vsock-host-serve")?;
    expect_value(serve, "got", "from-guest")?;
    expect_value(run, "reply", "host-echo:from-guest")?;
    expect_value(run, "connect-rc", "0")?;
    // Host-initiated: the guest got L1's line (from the host CID), L1 got the guest's answer.
    let connect = host().run("vsock-host-connect")?;
    expect_value(connect, "handshake", "OK")?;
    expect_value(run, "got", "from-host")?;
    expect_value(run, "peer-cid", "2")?;
    expect_value(connect, "reply", "guest-echo:from-host")?;
    expect_value(run, "listen-rc", "0")?;
    Ok(())
}
