//! Property tests of the configuration on the page: every valid `VmConfig` reads back equal,
//! and any configuration at all either reads back equal or is refused leaving the page as it
//! was. Nothing is ever dropped silently.

use super::tests::sample;
use super::*;
use crate::config::{
    BootSource, Drive, Entropy, Fs, LogLevel, Logger, MachineConfig, Metrics, NetworkInterface,
    RateLimiter, TokenBucket, VmConfig, Vsock,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Limits of the generated configurations: `slack` extra bytes or devices past what the page
/// holds (0: only representable configurations).
#[derive(Clone, Copy)]
struct Limits {
    slack: usize,
}

/// Any bytes (paths need not be UTF-8), mostly short, sometimes at the edge of `max`.
fn path(max: usize, lim: Limits) -> impl Strategy<Value = PathBuf> {
    let hi = max + lim.slack;
    prop_oneof![
        4 => vec(any::<u8>(), 1..48),
        1 => vec(any::<u8>(), max - 4..=hi),
    ]
    .prop_map(|b| PathBuf::from(OsString::from_vec(b)))
}

/// A UTF-8 string of at most `max` bytes (plus slack), mostly short.
fn text(max: usize, lim: Limits) -> impl Strategy<Value = String> {
    let hi = max + lim.slack;
    prop_oneof![
        // Up to 24 characters of up to 4 bytes each: cut to the byte limit (at a character
        // boundary) so that a short field still gets only strings it can hold.
        4 => "\\PC{0,24}"
            .prop_map(move |s: String| {
                let mut end = s.len().min(hi);
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s[..end].to_string()
            })
            .boxed(),
        1 => vec(proptest::char::range(' ', '~'), max - 4..=hi)
            .prop_map(|c| c.into_iter().collect::<String>())
            .boxed(),
    ]
}

fn mac() -> impl Strategy<Value = String> {
    (any::<[u8; 6]>(), any::<bool>()).prop_map(|(m, upper)| {
        let s = m.map(|b| format!("{b:02x}")).join(":");
        if upper {
            s.to_uppercase()
        } else {
            s
        }
    })
}

fn level() -> impl Strategy<Value = LogLevel> {
    prop_oneof![
        Just(LogLevel::Off),
        Just(LogLevel::Error),
        Just(LogLevel::Warning),
        Just(LogLevel::Info),
        Just(LogLevel::Debug),
        Just(LogLevel::Trace),
    ]
}

/// A bucket; `refill_time` sometimes past what the page's u32 holds when there is slack.
fn bucket(lim: Limits) -> impl Strategy<Value = TokenBucket> {
    let refill_max = if lim.slack > 0 {
        u64::from(u32::MAX) + 2
    } else {
        u64::from(u32::MAX)
    };
    (any::<u64>(), option::of(any::<u64>()), 0..=refill_max).prop_map(
        |(size, one_time_burst, refill_time)| TokenBucket {
            size,
            one_time_burst,
            refill_time,
        },
    )
}

fn limiter(lim: Limits) -> impl Strategy<Value = Option<RateLimiter>> {
    option::of(
        (option::of(bucket(lim)), option::of(bucket(lim)))
            .prop_map(|(bandwidth, ops)| RateLimiter { bandwidth, ops }),
    )
}

fn drive(lim: Limits) -> impl Strategy<Value = Drive> {
    (
        text(DEV_ID_MAX, lim),
        path(DEV_PATH_MAX, lim),
        any::<bool>(),
        any::<bool>(),
        limiter(lim),
    )
        .prop_map(
            |(drive_id, path_on_host, is_root_device, is_read_only, rate_limiter)| Drive {
                drive_id,
                path_on_host,
                is_root_device,
                is_read_only,
                rate_limiter,
                ..Default::default()
            },
        )
}

fn iface(lim: Limits) -> impl Strategy<Value = NetworkInterface> {
    (
        text(DEV_ID_MAX, lim),
        text(DEV_PATH_MAX, lim),
        option::of(mac()),
        limiter(lim),
        limiter(lim),
    )
        .prop_map(
            |(iface_id, host_dev_name, guest_mac, rx_rate_limiter, tx_rate_limiter)| {
                NetworkInterface {
                    iface_id,
                    host_dev_name,
                    guest_mac,
                    rx_rate_limiter,
                    tx_rate_limiter,
                    ..Default::default()
                }
            },
        )
}

fn fs(lim: Limits) -> impl Strategy<Value = Fs> {
    (
        text(DEV_ID_MAX, lim),
        proptest::string::string_regex(&format!(
            "[a-zA-Z0-9._-]{{1,{}}}",
            DEV_FS_TAG_MAX + lim.slack
        ))
        .expect("a valid regex"),
        path(DEV_PATH_MAX, lim),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(fs_id, tag, socket, num_queues, queue_size)| Fs {
            fs_id,
            tag,
            socket,
            num_queues,
            queue_size,
        })
}

fn config(lim: Limits) -> impl Strategy<Value = VmConfig> {
    let boot = option::of(
        (
            path(KERNEL_MAX, lim),
            option::of(path(INITRD_MAX, lim)),
            option::of(text(CMDLINE_MAX, lim)),
        )
            .prop_map(|(kernel_image_path, initrd_path, boot_args)| BootSource {
                kernel_image_path,
                initrd_path,
                boot_args,
            }),
    );
    let machine = (1..=u8::MAX, 1..=MEM_MIB_MAX, any::<bool>(), any::<bool>()).prop_map(
        |(v, m, smt, mem_shared)| MachineConfig {
            vcpu_count: v,
            mem_size_mib: m,
            smt,
            mem_shared,
            ..Default::default()
        },
    );
    let logger = option::of((
        path(LOG_PATH_MAX, lim),
        level(),
        any::<bool>(),
        any::<bool>(),
    ))
    .prop_map(|l| {
        l.map(|(log_path, level, show_level, show_log_origin)| Logger {
            log_path,
            level,
            show_level,
            show_log_origin,
            ..Default::default()
        })
    });
    let metrics = option::of(path(METRICS_PATH_MAX, lim)).prop_map(|p| {
        p.map(|metrics_path| Metrics {
            metrics_path,
            ..Default::default()
        })
    });
    let vsock = option::of((any::<u32>(), path(DEV_PATH_MAX, lim))).prop_map(|v| {
        v.map(|(guest_cid, uds_path)| Vsock {
            guest_cid,
            uds_path,
            ..Default::default()
        })
    });
    let entropy = option::of(limiter(lim).prop_map(|rate_limiter| Entropy { rate_limiter }));
    // Up to DEVICES_MAX (+ slack) devices in all, split between the kinds.
    let max = DEVICES_MAX + lim.slack;
    let devices = (vsock, entropy).prop_flat_map(move |(vsock, entropy)| {
        let fixed = usize::from(vsock.is_some()) + usize::from(entropy.is_some());
        (0..=max - fixed).prop_flat_map(move |n| {
            (
                vec(drive(lim), 0..=n),
                Just(n),
                Just(vsock.clone()),
                Just(entropy.clone()),
            )
                .prop_flat_map(move |(drives, n, vsock, entropy)| {
                    let left = n - drives.len();
                    (
                        Just(drives),
                        vec(iface(lim), 0..=left),
                        Just(left),
                        Just(vsock),
                        Just(entropy),
                    )
                })
                .prop_flat_map(move |(drives, ifaces, left, vsock, entropy)| {
                    let room = (left - ifaces.len()).min(3);
                    (
                        Just(drives),
                        Just(ifaces),
                        Just(vsock),
                        Just(entropy),
                        vec(fs(lim), 0..=room),
                    )
                })
        })
    });
    (boot, machine, logger, metrics, devices).prop_map(
        |(boot_source, machine_config, logger, metrics, (drives, ifaces, vsock, entropy, fs))| {
            VmConfig {
                boot_source,
                machine_config,
                drives,
                network_interfaces: ifaces,
                vsock,
                entropy,
                fs,
                logger,
                metrics,
                ..Default::default()
            }
        },
    )
}

fn pair() -> (ControlPage, ControlPage) {
    let wispd = ControlPage::create().unwrap();
    let fd: OwnedFd = wispd.file().try_clone().unwrap().into();
    let shell = ControlPage::open(fd).unwrap();
    (wispd, shell)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_valid_config_round_trips(c in config(Limits { slack: 0 })) {
        let (wispd, shell) = pair();
        wispd.write_config(&c).unwrap();
        prop_assert_eq!(shell.read_config().unwrap(), c);
    }

    #[test]
    fn any_config_round_trips_or_is_refused_changing_nothing(c in config(Limits { slack: 3 })) {
        let (wispd, shell) = pair();
        wispd.write_config(&sample()).unwrap();
        match wispd.write_config(&c) {
            Ok(()) => prop_assert_eq!(shell.read_config().unwrap(), c),
            Err(_) => prop_assert_eq!(shell.read_config().unwrap(), sample()),
        }
    }
}
