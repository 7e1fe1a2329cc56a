//! The control page between two mappings of one memfd, as `wispd` and a shell see it: the
//! configuration round trip, what a write refuses, what a read refuses on a hostile page, and
//! the seals.

use super::*;
use crate::config::{
    BootSource, Drive, Entropy, LogLevel, Logger, MachineConfig, Metrics, NetworkInterface,
    RateLimiter, TokenBucket, VmConfig, Vsock,
};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

fn shell_view(page: &ControlPage) -> Result<ControlPage, ControlPageError> {
    let fd: OwnedFd = page.file().try_clone().unwrap().into();
    ControlPage::open(fd)
}

fn drive(i: usize) -> Drive {
    Drive {
        drive_id: format!("d{i}"),
        path_on_host: format!("/img/d{i}.ext4").into(),
        is_root_device: false,
        is_read_only: i.is_multiple_of(2),
        rate_limiter: None,
        ..Default::default()
    }
}

pub(super) fn sample() -> VmConfig {
    VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: "/boot/vmlinux".into(),
            initrd_path: Some("/boot/initrd".into()),
            boot_args: Some("console=ttyS0 quiet".into()),
        }),
        machine_config: MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: true,
            ..Default::default()
        },
        drives: vec![Drive {
            drive_id: "root".into(),
            path_on_host: "/img/root.ext4".into(),
            is_root_device: true,
            is_read_only: true,
            rate_limiter: None,
            ..Default::default()
        }],
        network_interfaces: vec![NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: "tap0".into(),
            guest_mac: Some("06:00:AC:10:00:02".into()),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
            ..Default::default()
        }],
        vsock: Some(Vsock {
            guest_cid: 3,
            uds_path: "/run/v.sock".into(),
            ..Default::default()
        }),
        entropy: Some(Entropy::default()),
        fs: Vec::new(),
        logger: Some(Logger {
            log_path: "/run/wisp.log".into(),
            level: LogLevel::Debug,
            show_level: true,
            show_log_origin: false,
            ..Default::default()
        }),
        metrics: Some(Metrics {
            metrics_path: "/run/wisp.metrics".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A configuration that fills every field to its limit: 17 drives, a network interface and
/// vsock and entropy (19 devices), every path `PATH_MAX` bytes, every id 64.
fn full() -> VmConfig {
    let long = |c: char, n: usize| format!("/{}", c.to_string().repeat(n - 1));
    let mut c = sample();
    c.machine_config = MachineConfig {
        vcpu_count: 255,
        mem_size_mib: MEM_MIB_MAX,
        smt: false,
        ..Default::default()
    };
    let boot = c.boot_source.as_mut().unwrap();
    boot.kernel_image_path = long('k', KERNEL_MAX).into();
    boot.initrd_path = Some(long('i', INITRD_MAX).into());
    boot.boot_args = Some("a".repeat(CMDLINE_MAX));
    c.logger.as_mut().unwrap().log_path = long('l', LOG_PATH_MAX).into();
    c.metrics.as_mut().unwrap().metrics_path = long('m', METRICS_PATH_MAX).into();
    c.drives = (0..DEVICES_MAX - 3)
        .map(|i| Drive {
            drive_id: format!("{i:0>64}"),
            path_on_host: long('p', DEV_PATH_MAX).into(),
            ..drive(i)
        })
        .collect();
    c.vsock.as_mut().unwrap().uds_path = long('v', DEV_PATH_MAX).into();
    c
}

#[test]
fn configuration_round_trips_between_the_two_sides() {
    let wispd = ControlPage::create().unwrap();
    let shell = shell_view(&wispd).unwrap();
    wispd.write_config(&sample()).unwrap();
    wispd.set_request_id("req-42 from wisp ctl").unwrap();
    let seq = wispd.post_command(ControlCommand::Create);
    assert_eq!(
        shell.pending_command(),
        Some((seq, Some(ControlCommand::Create)))
    );
    assert_eq!(shell.read_config().unwrap(), sample());
    assert_eq!(shell.request_id(), "req-42 from wisp ctl");
    shell.set_time(Timestamp::FirstEntry, 42);
    shell.set_state(ShellState::Running);
    shell.acknowledge(seq, 0);
    assert_eq!(wispd.acknowledged(seq), Some(0));
    assert_eq!(shell.pending_command(), None);
    assert_eq!(wispd.state(), Some(ShellState::Running));
    assert_eq!(wispd.time(Timestamp::FirstEntry), 42);
}

#[test]
fn a_full_configuration_fits_and_a_smaller_one_then_replaces_it() {
    let wispd = ControlPage::create().unwrap();
    let shell = shell_view(&wispd).unwrap();
    let full = full();
    assert_eq!(
        full.drives.len() + full.network_interfaces.len() + 2,
        DEVICES_MAX
    );
    wispd.write_config(&full).unwrap();
    assert_eq!(shell.read_config().unwrap(), full);
    // Nothing of the bigger configuration shows through a smaller one written after it.
    let small = VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: "/k".into(),
            initrd_path: None,
            boot_args: None,
        }),
        ..Default::default()
    };
    wispd.write_config(&small).unwrap();
    assert_eq!(shell.read_config().unwrap(), small);
    wispd.write_config(&VmConfig::default()).unwrap();
    assert_eq!(shell.read_config().unwrap(), VmConfig::default());
}

/// Writes `config`, expecting a refusal whose message contains every one of `words`, and checks
/// that the page still holds the configuration written before.
fn refused(config: &VmConfig, words: &[&str]) {
    let page = ControlPage::create().unwrap();
    page.write_config(&sample()).unwrap();
    let err = page.write_config(config).unwrap_err().to_string();
    for w in words {
        assert!(err.contains(w), "`{err}` does not mention `{w}`");
    }
    assert_eq!(page.read_config().unwrap(), sample(), "after: {err}");
}

#[test]
fn every_unrepresentable_configuration_is_refused_naming_the_field() {
    let mut c = sample();
    c.drives.extend((1..DEVICES_MAX - 2).map(drive));
    refused(&c, &["20 virtio devices", "at most 19"]);

    let over = |n: usize| PathBuf::from("/".repeat(n + 1));
    let mut c = sample();
    c.boot_source.as_mut().unwrap().kernel_image_path = over(KERNEL_MAX);
    refused(&c, &["kernel_image_path", "4097 bytes", "at most 4096"]);
    let mut c = sample();
    c.boot_source.as_mut().unwrap().initrd_path = Some(over(INITRD_MAX));
    refused(&c, &["initrd_path"]);
    let mut c = sample();
    c.boot_source.as_mut().unwrap().boot_args = Some("x".repeat(CMDLINE_MAX + 1));
    refused(&c, &["boot_args", "at most 2048"]);
    let mut c = sample();
    c.logger.as_mut().unwrap().log_path = over(LOG_PATH_MAX);
    refused(&c, &["log_path"]);
    let mut c = sample();
    c.metrics.as_mut().unwrap().metrics_path = over(METRICS_PATH_MAX);
    refused(&c, &["metrics_path"]);

    let mut c = sample();
    c.drives.push(drive(7));
    c.drives[1].path_on_host = over(DEV_PATH_MAX);
    refused(&c, &["drive `d7`", "path_on_host"]);
    let mut c = sample();
    c.drives[0].drive_id = "r".repeat(DEV_ID_MAX + 1);
    refused(&c, &["drive_id", "65 bytes"]);
    let mut c = sample();
    c.network_interfaces[0].iface_id = "e".repeat(DEV_ID_MAX + 1);
    refused(&c, &["iface_id"]);
    let mut c = sample();
    c.network_interfaces[0].host_dev_name = "t".repeat(DEV_PATH_MAX + 1);
    refused(&c, &["network interface `eth0`", "host_dev_name"]);
    let mut c = sample();
    c.network_interfaces[0].guest_mac = Some("06:00:ac:10:00".into());
    refused(
        &c,
        &["network interface `eth0`", "guest MAC `06:00:ac:10:00`"],
    );
    let mut c = sample();
    c.vsock.as_mut().unwrap().uds_path = over(DEV_PATH_MAX);
    refused(&c, &["vsock", "uds_path"]);

    let mut c = sample();
    c.machine_config.mem_size_mib = 0;
    refused(&c, &["mem_size_mib"]);
    c.machine_config.mem_size_mib = MEM_MIB_MAX + 1;
    refused(&c, &["mem_size_mib"]);
    let mut c = sample();
    c.machine_config.vcpu_count = 0;
    refused(&c, &["vcpu_count"]);
}

#[test]
fn a_page_with_a_wrong_magic_is_refused() {
    let page = ControlPage::create().unwrap();
    page.store64(OFF_MAGIC, 0xdead_beef);
    assert!(matches!(
        shell_view(&page),
        Err(ControlPageError::BadMagic(0xdead_beef))
    ));
    page.store64(OFF_MAGIC, MAGIC);
    page.store32(OFF_VERSION, 1);
    assert!(matches!(
        shell_view(&page),
        Err(ControlPageError::BadVersion(1))
    ));
}

/// Writes `sample()`, lets `corrupt` change the page as a hostile peer would, and expects the
/// read to fail with a message containing `word`.
fn hostile(corrupt: impl FnOnce(&ControlPage), word: &str) {
    let page = ControlPage::create().unwrap();
    page.write_config(&sample()).unwrap();
    corrupt(&page);
    let err = page.read_config().unwrap_err().to_string();
    assert!(err.contains(word), "`{err}` does not mention `{word}`");
}

#[test]
fn a_hostile_page_is_an_error_never_a_read_past_a_field() {
    let dev = |i: usize, off: usize| OFF_DEVICES + i * DEVICE_ENTRY_SIZE + off;
    hostile(|p| p.store32(OFF_KERNEL_LEN, 10_000), "kernel path");
    hostile(|p| p.store32(OFF_KERNEL_LEN, u32::MAX), "kernel path");
    hostile(|p| p.store32(OFF_INITRD_LEN, 4097), "initrd path");
    hostile(|p| p.store32(OFF_CMDLINE_LEN, 2049), "command line");
    hostile(|p| p.store32(OFF_LOG_PATH_LEN, 5000), "log path");
    hostile(|p| p.store32(OFF_METRICS_PATH_LEN, 5000), "metrics path");
    hostile(|p| p.store32(OFF_VCPUS, 0), "vcpus");
    hostile(|p| p.store32(OFF_VCPUS, 256), "vcpus");
    hostile(|p| p.store32(OFF_MEM_MIB, 0), "memory");
    hostile(|p| p.store32(OFF_DEVICE_COUNT, 20), "device count");
    hostile(|p| p.store32(OFF_CONFIG_FLAGS, 1 << 31), "config flags");
    hostile(|p| p.store32(OFF_CONFIG_FLAGS, CFG_INITRD), "config flags");
    hostile(
        |p| p.store32(OFF_CONFIG_FLAGS, CFG_LOG_SHOW_LEVEL),
        "config flags",
    );
    hostile(|p| p.store32(OFF_LOG_LEVEL, 6), "log level");
    hostile(|p| p.write_bytes(OFF_CMDLINE, &[0xff, 0xfe]), "UTF-8");
    hostile(
        |p| p.store32(dev(0, DEV_OFF_KIND), 77),
        "entry 0: control page field device kind",
    );
    hostile(
        |p| p.store32(dev(0, DEV_OFF_FLAGS), DEV_FLAG_MAC),
        "device flags",
    );
    hostile(
        |p| p.store32(dev(0, DEV_OFF_ID_LEN), 65),
        "entry 0: control page field drive id",
    );
    hostile(|p| p.store32(dev(1, DEV_OFF_PATH_LEN), 4097), "tap name");
    hostile(
        |p| p.write_bytes(dev(1, DEV_OFF_MAC), b"zz"),
        "entry 1: guest MAC",
    );
    hostile(|p| p.write_bytes(dev(1, DEV_OFF_MAC), &[0xff]), "guest MAC");
    // A second vsock where the entropy device was.
    hostile(
        |p| p.store32(dev(3, DEV_OFF_KIND), DEV_KIND_VSOCK),
        "more than one vsock",
    );
    hostile(
        |p| p.store32(dev(2, DEV_OFF_KIND), DEV_KIND_RNG),
        "more than one entropy",
    );
    // Rate-limiter bits: a burst without its bucket, a bucket without its limiter, a tx
    // limiter on a drive (entry 0) or on the entropy device (entry 3).
    hostile(
        |p| {
            p.store32(
                dev(1, DEV_OFF_FLAGS),
                DEV_FLAG_LIMITER[0] | DEV_FLAG_BURST[1],
            )
        },
        "entry 1: control page field device flags",
    );
    hostile(
        |p| p.store32(dev(1, DEV_OFF_FLAGS), DEV_FLAG_BUCKET[2]),
        "device flags",
    );
    hostile(
        |p| p.store32(dev(0, DEV_OFF_FLAGS), DEV_FLAG_LIMITER[1]),
        "entry 0: control page field device flags",
    );
    hostile(
        |p| p.store32(dev(3, DEV_OFF_FLAGS), DEV_FLAG_LIMITER[1]),
        "entry 3: control page field device flags",
    );
}

#[test]
fn rate_limiters_travel_on_the_page_and_too_long_a_refill_is_refused() {
    let bucket = |size, burst, refill_time| TokenBucket {
        size,
        one_time_burst: burst,
        refill_time,
    };
    let mut c = sample();
    c.drives[0].rate_limiter = Some(RateLimiter {
        bandwidth: Some(bucket(1 << 20, None, 1000)),
        ops: None,
    });
    c.network_interfaces[0].tx_rate_limiter = Some(RateLimiter {
        bandwidth: None,
        ops: Some(bucket(u64::MAX, Some(0), u64::from(u32::MAX))),
    });
    c.entropy = Some(Entropy {
        rate_limiter: Some(RateLimiter::default()),
    });
    let wispd = ControlPage::create().unwrap();
    wispd.write_config(&c).unwrap();
    assert_eq!(shell_view(&wispd).unwrap().read_config().unwrap(), c);
    c.drives[0].rate_limiter = Some(RateLimiter {
        bandwidth: None,
        ops: Some(bucket(1, None, u64::from(u32::MAX) + 1)),
    });
    refused(&c, &["drive `root`", "refill_time"]);
}

#[test]
fn the_memfd_is_sealed_so_no_side_can_resize_it() {
    let page = ControlPage::create().unwrap();
    let shell = shell_view(&page).unwrap();
    for len in [0, 4096, REGION_SIZE as u64 - 1, REGION_SIZE as u64 + 4096] {
        let err = shell.file().set_len(len).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EPERM),
            "set_len({len}): {err}"
        );
    }
    assert_eq!(page.file().metadata().unwrap().len(), REGION_SIZE as u64);
    // SAFETY: fcntl on an fd the page owns; F_ADD_SEALS takes an int.
    let unseal = unsafe { libc::fcntl(page.file().as_raw_fd(), libc::F_ADD_SEALS, 0) };
    assert_eq!(unseal, -1, "the seals are sealed too");
}

/// A memfd of `len` bytes with the page's magic and version, sealed with `seals`.
fn memfd(len: u64, seals: libc::c_int) -> OwnedFd {
    // SAFETY: a valid C string and plain flags.
    let fd = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: a fresh fd that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(len).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_at(&MAGIC.to_le_bytes(), 0).unwrap();
    file.write_at(&VERSION.to_le_bytes(), OFF_VERSION as u64)
        .unwrap();
    // SAFETY: fcntl on our fd with an int argument.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }, 0);
    file.into()
}

#[test]
fn a_shell_refuses_an_unsealed_or_wrongly_sized_page() {
    let all = REQUIRED_SEALS;
    assert!(ControlPage::open(memfd(REGION_SIZE as u64, all)).is_ok());
    let err = ControlPage::open(memfd(REGION_SIZE as u64, 0))
        .err()
        .unwrap();
    assert!(matches!(err, ControlPageError::NotSealed(0)), "{err}");
    let only_grow = libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    let err = ControlPage::open(memfd(REGION_SIZE as u64, only_grow))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not sealed against resizing"),
        "{err}"
    );
    let err = ControlPage::open(memfd(4096, all)).err().unwrap();
    assert!(matches!(err, ControlPageError::BadSize(4096)), "{err}");
    // Not a memfd at all: a plain file cannot carry seals.
    let plain = tempfile::tempfile().unwrap();
    plain.set_len(REGION_SIZE as u64).unwrap();
    let err = ControlPage::open(plain.into()).err().unwrap();
    assert!(matches!(err, ControlPageError::NotSealed(_)), "{err}");
}

#[test]
fn request_ids_are_printable_ascii_within_their_field() {
    let wispd = ControlPage::create().unwrap();
    let shell = shell_view(&wispd).unwrap();
    assert_eq!(shell.request_id(), "");
    let longest = "r".repeat(REQUEST_ID_MAX);
    wispd.set_request_id(&longest).unwrap();
    assert_eq!(shell.request_id(), longest);
    let err = wispd
        .set_request_id(&"r".repeat(REQUEST_ID_MAX + 1))
        .unwrap_err();
    assert!(err.to_string().contains("request id"), "{err}");
    for bad in ["tab\there", "new\nline", "caf\u{e9}"] {
        let err = wispd.set_request_id(bad).unwrap_err();
        assert!(matches!(err, ControlPageError::BadRequestId(_)), "{err}");
    }
    // Refusals changed nothing.
    assert_eq!(shell.request_id(), longest);
    // A hostile peer's id never reaches a log line.
    wispd.write_bytes(OFF_REQUEST_ID, b"\x1b[2J");
    assert_eq!(shell.request_id(), "");
    wispd.store32(OFF_REQUEST_ID_LEN, 1000);
    assert_eq!(shell.request_id(), "");
    wispd.set_request_id("").unwrap();
    assert_eq!(shell.request_id(), "");
}

#[test]
fn firecracker_fields_the_page_cannot_hold_are_refused_by_name() {
    let page = ControlPage::create().unwrap();
    let mut c = sample();
    c.balloon = Some(crate::config::Balloon::default());
    let err = page.write_config(&c).unwrap_err().to_string();
    assert!(err.starts_with("balloon cannot be carried"), "{err}");
    let mut c = sample();
    c.network_interfaces[0].mtu = Some(1500);
    let err = page.write_config(&c).unwrap_err().to_string();
    assert!(err.contains("mtu"), "{err}");
}

#[test]
fn virtio_fs_shares_and_shared_memory_travel_on_the_page() {
    let wispd = ControlPage::create().unwrap();
    let shell = shell_view(&wispd).unwrap();
    let mut c = sample();
    c.machine_config.mem_shared = true;
    c.drives.clear();
    c.fs = vec![
        crate::config::Fs {
            fs_id: "rootfs".into(),
            tag: "t".repeat(DEV_FS_TAG_MAX),
            socket: "/run/virtiofsd.sock".into(),
            num_queues: 1,
            queue_size: 1024,
        },
        crate::config::Fs {
            fs_id: "vol".into(),
            tag: "v".into(),
            socket: "/run/v2.sock".into(),
            num_queues: 4,
            queue_size: 32768,
        },
    ];
    wispd.write_config(&c).unwrap();
    assert_eq!(shell.read_config().unwrap(), c);
    // A tag the config space cannot carry is refused, naming the device, page unchanged.
    let mut bad = c.clone();
    bad.fs[1].tag = "x".repeat(DEV_FS_TAG_MAX + 1);
    let err = wispd.write_config(&bad).unwrap_err().to_string();
    assert!(err.contains("fs `vol`") && err.contains("tag"), "{err}");
    assert_eq!(shell.read_config().unwrap(), c);
}
