//! The VM configuration on the control page: written by `wispd`, read and validated by the
//! shell. Fixed-size fields with length words, no serialisation format. The page carries all of
//! `VmConfig`; a configuration it cannot hold is refused whole, naming the field, before
//! anything is written, and whatever a write accepts reads back equal.

use super::{ControlPage, ControlPageError};
use crate::config::{
    BootSource, Drive, Entropy, Fs, LogLevel, Logger, MachineConfig, Metrics, NetworkInterface,
    RateLimiter, TokenBucket, VmConfig, Vsock,
};
use crate::control_page::layout::*;
use crate::validate::parse_mac;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One device table entry, checked and ready to store.
struct Entry<'a> {
    kind: u32,
    flags: u32,
    cid: u32,
    mac: &'a [u8],
    id: &'a [u8],
    path: &'a [u8],
    /// Bucket slots (`DEV_OFF_REFILL`); their presence is in `flags`.
    buckets: [Slot; 4],
}

/// One bucket slot of a device's rate limiters, as stored.
#[derive(Clone, Copy, Default)]
struct Slot {
    refill: u32,
    size: u64,
    burst: u64,
}

/// The `DEV_FLAG_LIMITER/BUCKET/BURST` bits and bucket slots of up to two rate limiters.
fn limiter_slots(
    limiters: [Option<&RateLimiter>; 2],
) -> Result<(u32, [Slot; 4]), ControlPageError> {
    let mut flags = 0;
    let mut slots = [Slot::default(); 4];
    for (l, limiter) in limiters.into_iter().enumerate() {
        let Some(limiter) = limiter else { continue };
        flags |= DEV_FLAG_LIMITER[l];
        for (b, bucket) in [&limiter.bandwidth, &limiter.ops].into_iter().enumerate() {
            let Some(bucket) = bucket else { continue };
            let k = 2 * l + b;
            flags |= DEV_FLAG_BUCKET[k];
            slots[k] = Slot {
                refill: u32::try_from(bucket.refill_time).map_err(|_| {
                    ControlPageError::OutOfRange {
                        field: "refill_time",
                        value: bucket.refill_time,
                    }
                })?,
                size: bucket.size,
                burst: bucket.one_time_burst.unwrap_or(0),
            };
            if bucket.one_time_burst.is_some() {
                flags |= DEV_FLAG_BURST[k];
            }
        }
    }
    Ok((flags, slots))
}

/// The limiter flag bits a device kind may use.
fn limiter_flags_allowed(kind: u32) -> u32 {
    let one = DEV_FLAG_LIMITER[0]
        | DEV_FLAG_BUCKET[0]
        | DEV_FLAG_BUCKET[1]
        | DEV_FLAG_BURST[0]
        | DEV_FLAG_BURST[1];
    match kind {
        DEV_KIND_BLOCK | DEV_KIND_RNG => one,
        DEV_KIND_NET => {
            one | DEV_FLAG_LIMITER[1]
                | DEV_FLAG_BUCKET[2]
                | DEV_FLAG_BUCKET[3]
                | DEV_FLAG_BURST[2]
                | DEV_FLAG_BURST[3]
        }
        _ => 0,
    }
}

/// Everything `write_config` stores, each field already checked against its size.
struct Plan<'a> {
    flags: u32,
    mem_mib: u32,
    vcpus: u32,
    kernel: &'a [u8],
    initrd: &'a [u8],
    cmdline: &'a [u8],
    log_level: u32,
    log_path: &'a [u8],
    metrics_path: &'a [u8],
    devices: Vec<Entry<'a>>,
}

fn fit<'a>(what: &'static str, bytes: &'a [u8], max: usize) -> Result<&'a [u8], ControlPageError> {
    if bytes.len() > max {
        return Err(ControlPageError::TooLong {
            what,
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Puts an error in the context of one device; `device` names it, only if there is an error.
fn in_device(device: impl FnOnce() -> String) -> impl FnOnce(ControlPageError) -> ControlPageError {
    move |source| ControlPageError::Device {
        device: device(),
        source: Box::new(source),
    }
}

fn level_code(level: LogLevel) -> u32 {
    match level {
        LogLevel::Off => LOG_LEVEL_OFF,
        LogLevel::Error => LOG_LEVEL_ERROR,
        LogLevel::Warning => LOG_LEVEL_WARNING,
        LogLevel::Info => LOG_LEVEL_INFO,
        LogLevel::Debug => LOG_LEVEL_DEBUG,
        LogLevel::Trace => LOG_LEVEL_TRACE,
    }
}

fn level_from_code(code: u32) -> Option<LogLevel> {
    [
        LogLevel::Off,
        LogLevel::Error,
        LogLevel::Warning,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ]
    .into_iter()
    .find(|l| level_code(*l) == code)
}

/// The device table for `config`: drives, network interfaces, vsock, entropy, fs, in that
/// order.
fn device_entries(config: &VmConfig) -> Result<Vec<Entry<'_>>, ControlPageError> {
    let count = config.drives.len()
        + config.network_interfaces.len()
        + usize::from(config.vsock.is_some())
        + usize::from(config.entropy.is_some())
        + config.fs.len();
    if count > DEVICES_MAX {
        return Err(ControlPageError::TooManyDevices(count));
    }
    let mut entries = Vec::with_capacity(count);
    for d in &config.drives {
        let at = in_device(|| format!("drive `{}`", d.drive_id));
        let checked = (|| {
            let (limits, buckets) = limiter_slots([d.rate_limiter.as_ref(), None])?;
            Ok(Entry {
                kind: DEV_KIND_BLOCK,
                flags: if d.is_read_only {
                    DEV_FLAG_READ_ONLY
                } else {
                    0
                } | if d.is_root_device { DEV_FLAG_ROOT } else { 0 }
                    | limits,
                buckets,
                cid: 0,
                mac: &[],
                id: fit("drive_id", d.drive_id.as_bytes(), DEV_ID_MAX)?,
                path: fit("path_on_host", path_bytes(&d.path_on_host), DEV_PATH_MAX)?,
            })
        })();
        entries.push(checked.map_err(at)?);
    }
    for iface in &config.network_interfaces {
        let at = in_device(|| format!("network interface `{}`", iface.iface_id));
        let checked = (|| {
            let (limits, buckets) = limiter_slots([
                iface.rx_rate_limiter.as_ref(),
                iface.tx_rate_limiter.as_ref(),
            ])?;
            let mac = match &iface.guest_mac {
                // A MAC parses only as 17 ASCII bytes, so it always fills the field exactly.
                Some(text) if parse_mac(text).is_some() => text.as_bytes(),
                Some(text) => return Err(ControlPageError::BadMac(text.clone())),
                None => &[],
            };
            Ok(Entry {
                kind: DEV_KIND_NET,
                flags: if mac.is_empty() { 0 } else { DEV_FLAG_MAC } | limits,
                buckets,
                cid: 0,
                mac,
                id: fit("iface_id", iface.iface_id.as_bytes(), DEV_ID_MAX)?,
                path: fit(
                    "host_dev_name",
                    iface.host_dev_name.as_bytes(),
                    DEV_PATH_MAX,
                )?,
            })
        })();
        entries.push(checked.map_err(at)?);
    }
    if let Some(v) = &config.vsock {
        let path = fit("uds_path", path_bytes(&v.uds_path), DEV_PATH_MAX)
            .map_err(in_device(|| "vsock".to_string()))?;
        entries.push(Entry {
            kind: DEV_KIND_VSOCK,
            flags: 0,
            cid: v.guest_cid,
            mac: &[],
            id: &[],
            path,
            buckets: [Slot::default(); 4],
        });
    }
    if let Some(entropy) = &config.entropy {
        let (flags, buckets) = limiter_slots([entropy.rate_limiter.as_ref(), None])
            .map_err(in_device(|| "entropy".to_string()))?;
        entries.push(Entry {
            kind: DEV_KIND_RNG,
            flags,
            cid: 0,
            mac: &[],
            id: &[],
            path: &[],
            buckets,
        });
    }
    for fs in &config.fs {
        entries.push(fs_entry(fs).map_err(in_device(|| format!("fs `{}`", fs.fs_id)))?);
    }
    Ok(entries)
}

/// A virtio-fs entry: the tag in the MAC/refill slots, the queue shape in the kind word.
fn fs_entry(fs: &Fs) -> Result<Entry<'_>, ControlPageError> {
    let tag = fit("tag", fs.tag.as_bytes(), DEV_FS_TAG_MAX)?;
    if tag.is_empty() || tag.contains(&0) {
        return Err(ControlPageError::BadFsTag(fs.tag.clone()));
    }
    Ok(Entry {
        kind: DEV_KIND_FS,
        flags: 0,
        cid: u32::from(fs.num_queues) | (u32::from(fs.queue_size) << 16),
        mac: tag,
        id: fit("fs_id", fs.fs_id.as_bytes(), DEV_ID_MAX)?,
        path: fit("socket", path_bytes(&fs.socket), DEV_PATH_MAX)?,
        buckets: [Slot::default(); 4],
    })
}

fn plan(config: &VmConfig) -> Result<Plan<'_>, ControlPageError> {
    if let Some(field) = not_carried(config) {
        return Err(ControlPageError::NotCarried(field));
    }
    let mc = &config.machine_config;
    if mc.mem_size_mib == 0 || mc.mem_size_mib > MEM_MIB_MAX {
        return Err(ControlPageError::OutOfRange {
            field: "mem_size_mib",
            value: u64::from(mc.mem_size_mib),
        });
    }
    if mc.vcpu_count == 0 {
        return Err(ControlPageError::OutOfRange {
            field: "vcpu_count",
            value: 0,
        });
    }
    let mut flags =
        if mc.smt { CFG_SMT } else { 0 } | if mc.mem_shared { CFG_MEM_SHARED } else { 0 };
    let (mut kernel, mut initrd, mut cmdline): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    if let Some(boot) = &config.boot_source {
        flags |= CFG_BOOT_SOURCE;
        let k = path_bytes(&boot.kernel_image_path);
        kernel = fit("kernel_image_path", k, KERNEL_MAX)?;
        if let Some(p) = &boot.initrd_path {
            flags |= CFG_INITRD;
            initrd = fit("initrd_path", path_bytes(p), INITRD_MAX)?;
        }
        if let Some(args) = &boot.boot_args {
            flags |= CFG_BOOT_ARGS;
            cmdline = fit("boot_args", args.as_bytes(), CMDLINE_MAX)?;
        }
    }
    let (mut log_level, mut log_path): (u32, &[u8]) = (0, &[]);
    if let Some(logger) = &config.logger {
        flags |= CFG_LOGGER
            | if logger.show_level {
                CFG_LOG_SHOW_LEVEL
            } else {
                0
            }
            | if logger.show_log_origin {
                CFG_LOG_SHOW_ORIGIN
            } else {
                0
            };
        log_level = level_code(logger.level);
        log_path = fit("log_path", path_bytes(&logger.log_path), LOG_PATH_MAX)?;
    }
    let mut metrics_path: &[u8] = &[];
    if let Some(metrics) = &config.metrics {
        flags |= CFG_METRICS;
        metrics_path = fit(
            "metrics_path",
            path_bytes(&metrics.metrics_path),
            METRICS_PATH_MAX,
        )?;
    }
    Ok(Plan {
        flags,
        mem_mib: mc.mem_size_mib,
        vcpus: u32::from(mc.vcpu_count),
        kernel,
        initrd,
        cmdline,
        log_level,
        log_path,
        metrics_path,
        devices: device_entries(config)?,
    })
}

/// The first Firecracker-compatibility field (issue 19) set in `config` that the page has no
/// room for: refused by name rather than dropped.
fn not_carried(config: &VmConfig) -> Option<&'static str> {
    let mc = &config.machine_config;
    let checks = [
        ("balloon", config.balloon.is_some()),
        ("serial", config.serial.is_some()),
        ("machine-config.track_dirty_pages", mc.track_dirty_pages),
        ("machine-config.huge_pages", !mc.huge_pages.is_none()),
        (
            "drives partuuid/cache_type/io_engine",
            config
                .drives
                .iter()
                .any(|d| d.partuuid.is_some() || d.cache_type.is_some() || d.io_engine.is_some()),
        ),
        (
            "network-interfaces mtu",
            config.network_interfaces.iter().any(|i| i.mtu.is_some()),
        ),
        (
            "logger module",
            config.logger.as_ref().is_some_and(|l| l.module.is_some()),
        ),
        (
            "metrics emit_id/properties",
            config
                .metrics
                .as_ref()
                .is_some_and(|m| m.emit_id || m.properties.is_some()),
        ),
    ];
    checks
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(name, _)| name)
}

impl ControlPage {
    /// Writes `config` for a Create command. A configuration the page cannot hold is refused
    /// with an error naming the field, and then nothing on the page has changed.
    pub fn write_config(&self, config: &VmConfig) -> Result<(), ControlPageError> {
        let plan = plan(config)?;
        // Every field was checked above: from here on nothing can fail.
        let put = |off: usize, len_off: usize, bytes: &[u8]| {
            self.write_bytes(off, bytes);
            self.store32(len_off, bytes.len() as u32);
        };
        self.store32(OFF_CONFIG_FLAGS, plan.flags);
        self.store32(OFF_MEM_MIB, plan.mem_mib);
        self.store32(OFF_VCPUS, plan.vcpus);
        put(OFF_KERNEL, OFF_KERNEL_LEN, plan.kernel);
        put(OFF_INITRD, OFF_INITRD_LEN, plan.initrd);
        put(OFF_CMDLINE, OFF_CMDLINE_LEN, plan.cmdline);
        self.store32(OFF_LOG_LEVEL, plan.log_level);
        put(OFF_LOG_PATH, OFF_LOG_PATH_LEN, plan.log_path);
        put(OFF_METRICS_PATH, OFF_METRICS_PATH_LEN, plan.metrics_path);
        for (i, e) in plan.devices.iter().enumerate() {
            let base = OFF_DEVICES + i * DEVICE_ENTRY_SIZE;
            self.store32(base + DEV_OFF_KIND, e.kind);
            self.store32(base + DEV_OFF_FLAGS, e.flags);
            self.store32(base + DEV_OFF_CID, e.cid);
            if e.kind == DEV_KIND_FS {
                // The tag is read up to its first NUL: clear the whole slot first.
                self.write_bytes(base + DEV_OFF_FS_TAG, &[0; DEV_FS_TAG_MAX]);
            }
            self.write_bytes(base + DEV_OFF_MAC, e.mac);
            put(base + DEV_OFF_ID, base + DEV_OFF_ID_LEN, e.id);
            put(base + DEV_OFF_PATH, base + DEV_OFF_PATH_LEN, e.path);
            let limits = OFF_LIMITERS + i * LIMITER_ENTRY_SIZE;
            for (k, slot) in e.buckets.iter().enumerate() {
                // An fs entry's tag overlaps the refill words (fs has no rate limiters).
                if e.kind != DEV_KIND_FS {
                    self.store32(base + DEV_OFF_REFILL + 4 * k, slot.refill);
                }
                self.store64(limits + 16 * k, slot.size);
                self.store64(limits + 16 * k + 8, slot.burst);
            }
        }
        self.store32(OFF_DEVICE_COUNT, plan.devices.len() as u32);
        Ok(())
    }

    fn bounded(
        &self,
        field: &'static str,
        off: usize,
        lo: u64,
        hi: u64,
    ) -> Result<u32, ControlPageError> {
        let v = self.load32(off);
        if u64::from(v) < lo || u64::from(v) > hi {
            return Err(ControlPageError::OutOfRange {
                field,
                value: u64::from(v),
            });
        }
        Ok(v)
    }

    fn read_path(
        &self,
        field: &'static str,
        off: usize,
        max: usize,
        len_off: usize,
    ) -> Result<PathBuf, ControlPageError> {
        let bytes = self.read_field(field, off, max, len_off)?;
        Ok(PathBuf::from(OsString::from_vec(bytes)))
    }

    /// Reads and validates the configuration of a Create command.
    pub fn read_config(&self) -> Result<VmConfig, ControlPageError> {
        let flags = self.load32(OFF_CONFIG_FLAGS);
        let depends = [
            (CFG_INITRD | CFG_BOOT_ARGS, CFG_BOOT_SOURCE),
            (CFG_LOG_SHOW_LEVEL | CFG_LOG_SHOW_ORIGIN, CFG_LOGGER),
        ];
        let orphan = depends
            .iter()
            .any(|(child, parent)| flags & child != 0 && flags & parent == 0);
        if flags & !CFG_ALL != 0 || orphan {
            return Err(ControlPageError::OutOfRange {
                field: "config flags",
                value: u64::from(flags),
            });
        }
        let has = |bit: u32| flags & bit != 0;
        let mem_size_mib = self.bounded("memory", OFF_MEM_MIB, 1, u64::from(MEM_MIB_MAX))?;
        let vcpus = self.bounded("vcpus", OFF_VCPUS, 1, u64::from(VCPUS_MAX))?;
        let boot_source = if has(CFG_BOOT_SOURCE) {
            Some(BootSource {
                kernel_image_path: self.read_path(
                    "kernel path",
                    OFF_KERNEL,
                    KERNEL_MAX,
                    OFF_KERNEL_LEN,
                )?,
                initrd_path: match has(CFG_INITRD) {
                    true => Some(self.read_path(
                        "initrd path",
                        OFF_INITRD,
                        INITRD_MAX,
                        OFF_INITRD_LEN,
                    )?),
                    false => None,
                },
                boot_args: match has(CFG_BOOT_ARGS) {
                    true => Some(self.read_str(
                        "command line",
                        OFF_CMDLINE,
                        CMDLINE_MAX,
                        OFF_CMDLINE_LEN,
                    )?),
                    false => None,
                },
            })
        } else {
            None
        };
        let logger = if has(CFG_LOGGER) {
            let code = self.load32(OFF_LOG_LEVEL);
            let level = level_from_code(code).ok_or(ControlPageError::OutOfRange {
                field: "log level",
                value: u64::from(code),
            })?;
            Some(Logger {
                log_path: self.read_path(
                    "log path",
                    OFF_LOG_PATH,
                    LOG_PATH_MAX,
                    OFF_LOG_PATH_LEN,
                )?,
                level,
                show_level: has(CFG_LOG_SHOW_LEVEL),
                show_log_origin: has(CFG_LOG_SHOW_ORIGIN),
                ..Default::default()
            })
        } else {
            None
        };
        let metrics = if has(CFG_METRICS) {
            Some(Metrics {
                metrics_path: self.read_path(
                    "metrics path",
                    OFF_METRICS_PATH,
                    METRICS_PATH_MAX,
                    OFF_METRICS_PATH_LEN,
                )?,
                ..Default::default()
            })
        } else {
            None
        };
        let mut config = VmConfig {
            boot_source,
            machine_config: MachineConfig {
                vcpu_count: vcpus as u8,
                mem_size_mib,
                smt: has(CFG_SMT),
                mem_shared: has(CFG_MEM_SHARED),
                ..Default::default()
            },
            logger,
            metrics,
            ..Default::default()
        };
        let count = self.bounded("device count", OFF_DEVICE_COUNT, 0, DEVICES_MAX as u64)?;
        for i in 0..count as usize {
            self.read_device(i, &mut config)
                .map_err(in_device(|| format!("device table entry {i}")))?;
        }
        Ok(config)
    }

    /// Reads the rate limiters of device entry `i` (flags already checked against its kind).
    fn read_limiters(
        &self,
        i: usize,
        flags: u32,
    ) -> Result<[Option<RateLimiter>; 2], ControlPageError> {
        let base = OFF_DEVICES + i * DEVICE_ENTRY_SIZE;
        let limits = OFF_LIMITERS + i * LIMITER_ENTRY_SIZE;
        let mut out = [None, None];
        for (l, slot) in out.iter_mut().enumerate() {
            let mut buckets = [None, None];
            for (b, bucket) in buckets.iter_mut().enumerate() {
                let k = 2 * l + b;
                if flags & DEV_FLAG_BURST[k] != 0 && flags & DEV_FLAG_BUCKET[k] == 0
                    || flags & DEV_FLAG_BUCKET[k] != 0 && flags & DEV_FLAG_LIMITER[l] == 0
                {
                    return Err(ControlPageError::OutOfRange {
                        field: "device flags",
                        value: u64::from(flags),
                    });
                }
                if flags & DEV_FLAG_BUCKET[k] != 0 {
                    *bucket = Some(TokenBucket {
                        size: self.load64(limits + 16 * k),
                        one_time_burst: (flags & DEV_FLAG_BURST[k] != 0)
                            .then(|| self.load64(limits + 16 * k + 8)),
                        refill_time: u64::from(self.load32(base + DEV_OFF_REFILL + 4 * k)),
                    });
                }
            }
            if flags & DEV_FLAG_LIMITER[l] != 0 {
                let [bandwidth, ops] = buckets;
                *slot = Some(RateLimiter { bandwidth, ops });
            }
        }
        Ok(out)
    }

    /// Reads device table entry `i` into `config`.
    fn read_device(&self, i: usize, config: &mut VmConfig) -> Result<(), ControlPageError> {
        let base = OFF_DEVICES + i * DEVICE_ENTRY_SIZE;
        let kind = self.load32(base + DEV_OFF_KIND);
        let flags = self.load32(base + DEV_OFF_FLAGS);
        let allowed = limiter_flags_allowed(kind)
            | match kind {
                DEV_KIND_BLOCK => DEV_FLAG_READ_ONLY | DEV_FLAG_ROOT,
                DEV_KIND_NET => DEV_FLAG_MAC,
                DEV_KIND_VSOCK | DEV_KIND_RNG | DEV_KIND_FS => 0,
                other => {
                    return Err(ControlPageError::OutOfRange {
                        field: "device kind",
                        value: u64::from(other),
                    })
                }
            };
        if flags & !allowed != 0 {
            return Err(ControlPageError::OutOfRange {
                field: "device flags",
                value: u64::from(flags),
            });
        }
        let [limiter0, limiter1] = self.read_limiters(i, flags)?;
        let id = |field| self.read_str(field, base + DEV_OFF_ID, DEV_ID_MAX, base + DEV_OFF_ID_LEN);
        let path = |field| {
            self.read_path(
                field,
                base + DEV_OFF_PATH,
                DEV_PATH_MAX,
                base + DEV_OFF_PATH_LEN,
            )
        };
        match kind {
            DEV_KIND_BLOCK => config.drives.push(Drive {
                drive_id: id("drive id")?,
                path_on_host: path("drive path")?,
                is_root_device: flags & DEV_FLAG_ROOT != 0,
                is_read_only: flags & DEV_FLAG_READ_ONLY != 0,
                rate_limiter: limiter0,
                ..Default::default()
            }),
            DEV_KIND_NET => {
                let guest_mac = if flags & DEV_FLAG_MAC != 0 {
                    let bytes = self.read_bytes(base + DEV_OFF_MAC, DEV_MAC_LEN);
                    let text = String::from_utf8(bytes)
                        .map_err(|_| ControlPageError::NotUtf8("guest MAC"))?;
                    if parse_mac(&text).is_none() {
                        return Err(ControlPageError::BadMac(text));
                    }
                    Some(text)
                } else {
                    None
                };
                let host_dev_name = self.read_str(
                    "tap name",
                    base + DEV_OFF_PATH,
                    DEV_PATH_MAX,
                    base + DEV_OFF_PATH_LEN,
                )?;
                config.network_interfaces.push(NetworkInterface {
                    iface_id: id("interface id")?,
                    host_dev_name,
                    guest_mac,
                    rx_rate_limiter: limiter0,
                    tx_rate_limiter: limiter1,
                    ..Default::default()
                })
            }
            DEV_KIND_FS => {
                let raw = self.read_bytes(base + DEV_OFF_FS_TAG, DEV_FS_TAG_MAX);
                let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                if len == 0 || raw[len..].iter().any(|&b| b != 0) {
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    return Err(ControlPageError::BadFsTag(text));
                }
                let tag = String::from_utf8(raw[..len].to_vec())
                    .map_err(|_| ControlPageError::NotUtf8("fs tag"))?;
                let shape = self.load32(base + DEV_OFF_CID);
                config.fs.push(Fs {
                    fs_id: id("fs id")?,
                    tag,
                    socket: path("fs socket")?,
                    num_queues: (shape & 0xffff) as u16,
                    queue_size: (shape >> 16) as u16,
                })
            }
            DEV_KIND_VSOCK if config.vsock.is_some() => {
                return Err(ControlPageError::Duplicate("vsock"))
            }
            DEV_KIND_VSOCK => {
                config.vsock = Some(Vsock {
                    guest_cid: self.load32(base + DEV_OFF_CID),
                    uds_path: path("vsock path")?,
                    ..Default::default()
                })
            }
            _ if config.entropy.is_some() => return Err(ControlPageError::Duplicate("entropy")),
            _ => {
                config.entropy = Some(Entropy {
                    rate_limiter: limiter0,
                })
            }
        }
        Ok(())
    }
}
