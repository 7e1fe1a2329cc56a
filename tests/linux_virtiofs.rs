//! virtio-fs end to end on real KVM, inside the test host (tests/testhost): QEMU/TCG → Debian
//! kernel with kvm_amd (L1) → virtiofsd + `wisp run --fs …` → Tinyx Linux (L2) that mounts
//! the share with `mount -t virtiofs`.
//!
//! One L1 boot serves every test (as in linux_virtio.rs). L1 runs virtiofsd (the crates.io
//! build from scripts/install-deps.sh, copied with its libraries) in the test form
//! (`--sandbox none`) on /share, then:
//! - `fs-main`: L2 mounts the share, reads the file L1 wrote, writes one L1 then reads, lists
//!   a directory of 1000 files, mounts the share as the lower layer of an overlay with a tmpfs
//!   upper, and takes the figures (64 MiB read and `ls -lR` of 1000 files through virtio-fs
//!   and through a virtio-blk ext4 disk holding the same data);
//! - `fs-kill`: L1 kills virtiofsd while L2 runs; L2's file operations then fail with EIO,
//!   wisp keeps running (the guest still reboots cleanly) and says why on stderr.

mod testhost;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wisp_test_support::Scratch;

use testhost::{
    check_failed, initramfs_with_init, shared_host, value, CommandRun, L2Guest, TestHost,
    TestHostError,
};

const CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=k pci=off";
const L2_TIMEOUT_S: u32 = 300;
const TAG: &str = "share0";
const HOST_FILE_TEXT: &str = "written-by-l1";

/// L2's /init: the scenario comes from the kernel command line; facts are `WISP-L2 k=v`.
/// Times are /proc/uptime differences in centiseconds.
const L2_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin
busybox mount -t proc proc /proc
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mount -t sysfs sysfs /sys
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        wisp_fs=*) scenario=${arg#wisp_fs=} ;;
        wisp_marker=*) marker=${arg#wisp_marker=} ;;
    esac
done
cs() { read up _ < /proc/uptime; echo "${up%.*}${up#*.}"; }
mkdir -p /mnt /blk /ovl /merged
echo "WISP-L2 init scenario=$scenario"
if mount -t virtiofs share0 /mnt; then
    echo "mounted" > /mnt/mounted-$marker
    echo "WISP-L2 mount=ok"
else
    echo "WISP-L2 mount=failed"
fi
case "$scenario" in
    main)
        echo "WISP-L2 host-file=$(cat /mnt/from-host.txt)"
        echo "$marker" > /mnt/from-guest.txt && sync
        echo "WISP-L2 many=$(ls /mnt/many | wc -l)"
        mount -t tmpfs tmpfs /ovl && mkdir /ovl/upper /ovl/work
        if mount -t overlay overlay -o lowerdir=/mnt,upperdir=/ovl/upper,workdir=/ovl/work /merged; then
            echo "WISP-L2 overlay-read=$(cat /merged/from-host.txt)"
            echo upper > /merged/overlay-new.txt
            echo "WISP-L2 overlay-upper=$(cat /ovl/upper/overlay-new.txt)"
            [ -e /mnt/overlay-new.txt ] && echo "WISP-L2 overlay-leak=yes" || echo "WISP-L2 overlay-leak=no"
            umount /merged
        else
            echo "WISP-L2 overlay=failed"
        fi
        mount -t ext4 -o ro /dev/vda /blk || echo "WISP-L2 blk-mount=failed"
        for src in /mnt /blk; do
            echo 3 > /proc/sys/vm/drop_caches
            t0=$(cs); cat $src/big > /dev/null; t1=$(cs)
            echo 3 > /proc/sys/vm/drop_caches
            ls -lR $src/many > /dev/null; t2=$(cs)
            echo "WISP-L2 read-cs-${src#/}=$((t1 - t0))"
            echo "WISP-L2 lslr-cs-${src#/}=$((t2 - t1))"
        done
        echo "WISP-L2 big-size=$(wc -c < /mnt/big)"
        ;;
    kill)
        echo "ready" > /mnt/ready-$marker && sync
        i=0
        while [ $i -lt 120 ]; do
            if ! echo x 2> /tmp/err > /mnt/after-kill-$i; then
                echo "WISP-L2 after-kill=$(sed 's/.*: //; s/ /_/g' /tmp/err)"
                break
            fi
            i=$((i + 1)); sleep 1
        done
        ;;
esac
echo "WISP-L2 end"
reboot -f
"#;

fn marker() -> &'static str {
    static MARKER: OnceLock<String> = OnceLock::new();
    MARKER.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("wisp-fs-{}-{nanos}", std::process::id())
    })
}

/// 64 MiB of text (compresses in L1's initramfs, but every block is data, no hole).
fn big_file(dir: &Path) -> PathBuf {
    let path = dir.join("big");
    let line = b"wisp virtio-fs read figure: sixty-four mebibytes of the same line.\n";
    let mut data = Vec::with_capacity(64 << 20);
    while data.len() < 64 << 20 {
        data.extend_from_slice(line);
    }
    data.truncate(64 << 20);
    std::fs::write(&path, data).expect("write the big file");
    path
}

/// An ext4 image with `big` and `many/f1..f1000`, the same data the share gets.
fn blk_image(dir: &Path, big: &Path) -> PathBuf {
    let content = dir.join("blk-content");
    std::fs::create_dir_all(content.join("many")).expect("mkdir");
    std::fs::copy(big, content.join("big")).expect("copy big");
    for i in 1..=1000 {
        std::fs::write(content.join(format!("many/f{i}")), b"").expect("touch");
    }
    let image = dir.join("blk.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&image)
        .arg("96M")
        .output()
        .expect("run mkfs.ext4 (install e2fsprogs)");
    assert!(out.status.success(), "mkfs.ext4: {out:?}");
    image
}

fn wisp_run(name: &str, scenario: &str, extra: &str) -> String {
    format!(
        "run {name} {L2_TIMEOUT_S} wisp run --kernel /guest/vmlinux --initrd /guest/fs.cpio \
         --cmdline \"{CMDLINE} wisp_fs={scenario} wisp_marker={m}\" --mem 384 \
         --fs tag={TAG},socket=/tmp/vfs.sock {extra}\n",
        m = marker()
    )
}

fn script(virtiofsd: &Path) -> String {
    let vfsd = virtiofsd.display();
    let m = marker();
    let mut s = format!(
        "mkdir -p /share/many && cp /guest/big /share/big\n\
         i=1; while [ $i -le 1000 ]; do : > /share/many/f$i; i=$((i+1)); done\n\
         echo {HOST_FILE_TEXT} > /share/from-host.txt\n\
         start_vfsd() {{ rm -f /tmp/vfs.sock; {vfsd} --socket-path /tmp/vfs.sock --shared-dir /share \
         --cache auto --sandbox none > /tmp/vfsd.log 2>&1 & vfsd_pid=$!; \
         i=0; while [ ! -S /tmp/vfs.sock ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; }}\n\
         start_vfsd\n\
         t_start=$(cut -d' ' -f1 /proc/uptime)\n\
         ( while [ ! -e /share/mounted-{m} ]; do sleep 0.05; done; \
         echo \"mounted-at=$(cut -d' ' -f1 /proc/uptime) start=$t_start\" > /tmp/mount-time ) &\n"
    );
    s.push_str(&wisp_run(
        "fs-main",
        "main",
        "--disk path=/guest/blk.ext4,ro",
    ));
    s.push_str(&format!(
        "run fs-mount-time 10 cat /tmp/mount-time\n\
         run fs-host-sees 10 cat /share/from-guest.txt\n\
         kill $vfsd_pid; wait $vfsd_pid 2>/dev/null\n\
         start_vfsd\n\
         ( while [ ! -e /share/ready-{m} ]; do sleep 0.1; done; kill -9 $vfsd_pid ) &\n"
    ));
    s.push_str(&wisp_run("fs-kill", "kill", ""));
    s
}

fn boot() -> Result<TestHost, TestHostError> {
    let dir = Scratch::new("linux-virtiofs");
    let guest = L2Guest::tinyx()?;
    let initrd = initramfs_with_init("virtiofs", L2_INIT, &[])?;
    let big = big_file(&dir.0);
    let image = blk_image(&dir.0, &big);
    let vfsd = wisp_test_support::virtiofsd();
    TestHost::builder()
        .file(&guest.vmlinux, "/guest/vmlinux")
        .file(&initrd, "/guest/fs.cpio")
        .file(&big, "/guest/big")
        .file(&image, "/guest/blk.ext4")
        .host_program(&vfsd)
        .script(&script(&vfsd))
        // Two L2 boots and 128 MiB of reads under TCG take longer than the default guard.
        .timeout(Duration::from_secs(1200))
        .boot()
}

fn host() -> &'static TestHost {
    shared_host(boot)
}

fn expect_value(run: &CommandRun, key: &str, want: &str) -> Result<(), TestHostError> {
    let got = value(run, key)?;
    if got == want {
        Ok(())
    } else {
        Err(check_failed(run, format!("{key}={got}, expected {want}")))
    }
}

fn clean_run(name: &str) -> Result<&'static CommandRun, TestHostError> {
    let run = host().run(name)?;
    if run.timed_out() {
        return Err(check_failed(run, "wisp did not exit (L1 timeout)"));
    }
    if !run.stdout.contains("WISP-L2 end") || run.exit_code != Some(0) {
        return Err(check_failed(run, "the guest did not finish or wisp failed"));
    }
    Ok(run)
}

fn centis(run: &CommandRun, key: &str) -> Result<f64, TestHostError> {
    let text = value(run, key)?;
    text.parse::<f64>()
        .map_err(|_| check_failed(run, format!("{key}={text} is not a number")))
}

/// Linux mounts the share by tag, reads what L1 wrote, and L1 reads what it wrote.
#[test]
fn guest_mounts_the_share_reads_and_writes_host_files() -> Result<(), TestHostError> {
    let run = clean_run("fs-main")?;
    expect_value(run, "mount", "ok")?;
    expect_value(run, "host-file", HOST_FILE_TEXT)?;
    let sees = host().run("fs-host-sees")?;
    if sees.stdout.trim() != marker() {
        return Err(check_failed(sees, "L1 does not see the guest's file"));
    }
    Ok(())
}

/// A directory of 1000 files lists whole, and a 64 MiB file reads whole.
#[test]
fn guest_lists_a_thousand_files_and_reads_a_large_one() -> Result<(), TestHostError> {
    let run = clean_run("fs-main")?;
    expect_value(run, "many", "1000")?;
    expect_value(run, "big-size", &(64u32 << 20).to_string())?;
    // Figures for the closing note (ratios; absolute TCG times mean little).
    let (rf, rb) = (centis(run, "read-cs-mnt")?, centis(run, "read-cs-blk")?);
    let (lf, lb) = (centis(run, "lslr-cs-mnt")?, centis(run, "lslr-cs-blk")?);
    eprintln!(
        "figures: 64 MiB read virtio-fs {rf} cs vs virtio-blk {rb} cs (ratio {:.2}); \
         ls -lR 1000 files virtio-fs {lf} cs vs virtio-blk {lb} cs (ratio {:.2})",
        rf / rb.max(1.0),
        lf / lb.max(1.0)
    );
    let mount = host().run("fs-mount-time")?;
    eprintln!("figures: {}", mount.stdout.trim());
    Ok(())
}

/// The share is the lower layer of an overlay with a tmpfs upper: reads come from the share,
/// writes land in the upper and never reach the host.
#[test]
fn the_share_is_an_overlay_lower_layer() -> Result<(), TestHostError> {
    let run = clean_run("fs-main")?;
    expect_value(run, "overlay-read", HOST_FILE_TEXT)?;
    expect_value(run, "overlay-upper", "upper")?;
    expect_value(run, "overlay-leak", "no")?;
    Ok(())
}

/// virtiofsd killed mid-run: the guest's file operations fail with EIO, wisp keeps running
/// (the guest reboots cleanly afterwards) and its log says the backend is gone.
#[test]
fn a_killed_virtiofsd_gives_the_guest_io_errors_and_wisp_lives() -> Result<(), TestHostError> {
    let run = clean_run("fs-kill")?;
    expect_value(run, "mount", "ok")?;
    expect_value(run, "after-kill", "Input/output_error")?;
    if !run.stderr.contains("is gone") {
        return Err(check_failed(run, "wisp did not say why the device stopped"));
    }
    Ok(())
}
