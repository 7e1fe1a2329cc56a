//! `VmConfig`: the one description of a microVM, shared by the CLI, the JSON config file, the
//! REST API and the noxs control page. Field names follow Firecracker's API so that existing
//! tooling and habits carry over.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default guest memory when none is given, in MiB.
pub const DEFAULT_MEM_SIZE_MIB: u32 = 128;
/// Default number of vCPUs.
pub const DEFAULT_VCPU_COUNT: u8 = 1;

/// The whole configuration of one microVM, as one JSON document (`--config-file`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<Drive>,
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<Entropy>,
    /// virtio-fs shares (`PUT /fs/{id}`, `--fs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<Fs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    // Firecracker-compatibility resources (issue 19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    /// `PUT /serial` (not part of Firecracker's full configuration document, kept here so the
    /// start sees it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
    /// Firecracker sections Wisp refuses on purpose: accepted by the parser so that the
    /// refusal names the reason ("not supported by Wisp") instead of "unknown field".
    #[serde(
        rename = "cpu-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_config: Option<serde_json::Value>,
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<serde_json::Value>,
    #[serde(
        rename = "memory-hotplug",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_hotplug: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmem: Option<serde_json::Value>,
}

/// Largest `--config-file` accepted. The API takes 50 KiB per request; a whole document
/// with every resource in it is far below this.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Errors of reading a `--config-file` document.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: wisp_hostfs::HostFsError,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl VmConfig {
    /// Reads and parses a `--config-file` document (syntax and field names only; pass the
    /// result to `VmResources::from_config` for the semantic checks). The file must be a
    /// regular file reached without symbolic links, at most `MAX_CONFIG_FILE_BYTES` long.
    pub fn from_file(path: &Path) -> Result<VmConfig, ConfigFileError> {
        let text = wisp_hostfs::read_bounded(path, MAX_CONFIG_FILE_BYTES).map_err(|source| {
            ConfigFileError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `PUT /boot-source`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// `PUT /machine-config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u32,
    #[serde(default)]
    pub smt: bool,
    /// KVM dirty-page logging on the memory slots (for diff snapshots).
    #[serde(default, skip_serializing_if = "is_false")]
    pub track_dirty_pages: bool,
    /// How guest memory is backed: 4 KiB pages, transparent huge pages, or hugetlbfs 2 MiB.
    #[serde(default, skip_serializing_if = "HugePages::is_none")]
    pub huge_pages: HugePages,
    /// Firecracker's (deprecated) static CPU template; only `"None"` is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Back guest RAM with a memfd (`MAP_SHARED`) that a vhost-user backend can map. Implied
    /// by any `fs` device; anonymous memory otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mem_shared: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: DEFAULT_VCPU_COUNT,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: false,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
            cpu_template: None,
            mem_shared: false,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn path_is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// `machine-config.huge_pages` (Firecracker's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4 KiB pages.
    #[default]
    None,
    /// Transparent huge pages: `madvise(MADV_HUGEPAGE)` on the guest memory.
    Transparent,
    /// Explicit 2 MiB pages from the host's hugetlb pool (`MAP_HUGETLB`).
    #[serde(rename = "2M")]
    Huge2M,
}

impl HugePages {
    /// True for the default (regular pages).
    pub fn is_none(&self) -> bool {
        *self == HugePages::None
    }
}

impl VmConfig {
    /// Whether guest RAM must be shared: asked for, or needed by a vhost-user device.
    pub fn needs_shared_memory(&self) -> bool {
        self.machine_config.mem_shared || !self.fs.is_empty()
    }
}

/// Default request queues of a virtio-fs device (virtiofsd serves one).
pub const DEFAULT_FS_NUM_QUEUES: u16 = 1;
/// Default size of each virtio-fs queue (Cloud Hypervisor's `--fs` default).
pub const DEFAULT_FS_QUEUE_SIZE: u16 = 1024;

fn default_fs_num_queues() -> u16 {
    DEFAULT_FS_NUM_QUEUES
}

fn default_fs_queue_size() -> u16 {
    DEFAULT_FS_QUEUE_SIZE
}

/// `PUT /fs/{id}`: a virtio-fs device whose requests a vhost-user backend (virtiofsd) serves
/// from its Unix socket. Names follow Cloud Hypervisor's `--fs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fs {
    pub fs_id: String,
    /// What the guest mounts: `mount -t virtiofs TAG /mnt` (1 to 36 bytes).
    pub tag: String,
    /// The backend's vhost-user socket (`virtiofsd --socket-path`).
    pub socket: PathBuf,
    /// Request queues (the high-priority queue comes on top).
    #[serde(default = "default_fs_num_queues")]
    pub num_queues: u16,
    /// Entries per queue: a power of two.
    #[serde(default = "default_fs_queue_size")]
    pub queue_size: u16,
}

/// `PUT /drives/{id}`: a virtio-blk device backed by a host file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    #[serde(default)]
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// With `is_root_device`: the kernel mounts `root=PARTUUID=<partuuid>` instead of
    /// `/dev/vda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// `Unsafe`: flush is not offered and a flush request is answered without syncing;
    /// `Writeback`: flush is offered and syncs the file. Absent: Wisp's default, `Writeback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// `Sync` (pread/pwrite on the event loop); `Async` (io_uring) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-block backend socket: refused (Wisp has no vhost-user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
}

/// `drives.cache_type` (Firecracker's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// `drives.io_engine` (Firecracker's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    Async,
}

/// `PUT /network-interfaces/{id}`: a virtio-net device backed by a tap device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// Limits frames to the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Limits frames from the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
    /// Offered to the guest with VIRTIO_NET_F_MTU (68..=65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

/// `PATCH /network-interfaces/{id}`: replace an interface's rate limiters (before or after
/// boot).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `PUT /vsock`: virtio-vsock with Firecracker's hybrid Unix-socket host side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u32,
    pub uds_path: PathBuf,
    /// Firecracker's deprecated device id: accepted and reported back, it names nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

/// `PUT /entropy`: virtio-rng fed from the host's getrandom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entropy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// Firecracker's `rate_limiter` object: a bandwidth bucket (tokens are bytes) and an ops bucket
/// (tokens are requests); a missing bucket means no limit of that kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// Firecracker's `TokenBucket`: `size` tokens, refilled over `refill_time` milliseconds, plus
/// an initial `one_time_burst` spent first and never refilled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

/// `PUT /logger`: where the VMM's log goes and how much of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// A regular file (created 0600 if missing); the VMM appends to it. FIFOs, devices and
    /// symbolic links are refused (docs/threat-model.md). Empty or absent (Firecracker makes
    /// it optional): the log stays where it is and only level, module and the rest change.
    #[serde(default, skip_serializing_if = "path_is_empty")]
    pub log_path: PathBuf,
    #[serde(default)]
    pub level: LogLevel,
    #[serde(default)]
    pub show_level: bool,
    #[serde(default)]
    pub show_log_origin: bool,
    /// Only log records whose module path starts with this (e.g. `wisp_http::server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Firecracker's level names (`PUT /logger` `level`); read in any letter case and with `Warn`
/// for `Warning`, as Firecracker reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum LogLevel {
    Off,
    Error,
    #[default]
    Warning,
    Info,
    Debug,
    Trace,
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(match name.to_ascii_lowercase().as_str() {
            "off" => LogLevel::Off,
            "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown log level `{name}`: use Off, Error, Warning, Info, Debug or Trace"
                )))
            }
        })
    }
}

impl LogLevel {
    /// The matching `log` crate filter, for `log::set_max_level`.
    pub fn level_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warning => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `PUT /metrics`: the regular file (created 0600 if missing) that receives one JSON line per
/// flush.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
    /// Put the instance id (`--id`) on every metrics line as `"id"`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub emit_id: bool,
    /// Operator key-value pairs copied onto every metrics line under `"properties"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<std::collections::BTreeMap<String, String>>,
}

/// `PATCH /machine-config`: only the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    pub mem_shared: Option<bool>,
}

impl MachineConfigUpdate {
    /// True when the PATCH names no field at all.
    pub fn is_empty(&self) -> bool {
        self.vcpu_count.is_none()
            && self.mem_size_mib.is_none()
            && self.smt.is_none()
            && self.track_dirty_pages.is_none()
            && self.huge_pages.is_none()
            && self.cpu_template.is_none()
            && self.mem_shared.is_none()
    }

    /// `base` with the given fields replaced.
    pub fn applied_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            huge_pages: self.huge_pages.unwrap_or(base.huge_pages),
            cpu_template: self
                .cpu_template
                .clone()
                .or_else(|| base.cpu_template.clone()),
            mem_shared: self.mem_shared.unwrap_or(base.mem_shared),
        }
    }
}

/// `PATCH /drives/{id}`: swap the backing file of an existing drive (after boot: a media
/// change) and/or replace its rate limiter; at least one of the two.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

// Firecracker-compatibility resources (issue 19), in their own file.
mod balloon_serial;
pub use balloon_serial::{Balloon, BalloonStats, BalloonStatsUpdate, BalloonUpdate, Serial};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_document_round_trips_with_firecracker_names() {
        let doc = r#"{
            "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
            "drives": [{"drive_id": "root", "path_on_host": "/d", "is_root_device": true}],
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            "vsock": {"guest_cid": 3, "uds_path": "/v.sock"},
            "entropy": {},
            "logger": {"log_path": "/l", "level": "Debug"},
            "metrics": {"metrics_path": "/m"}
        }"#;
        let cfg: VmConfig = serde_json::from_str(doc).unwrap();
        assert_eq!(cfg.machine_config.vcpu_count, 2);
        assert_eq!(cfg.logger.as_ref().unwrap().level, LogLevel::Debug);
        let back: VmConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn config_file_errors_name_the_file_and_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        std::fs::write(&path, "{\n  \"machine-config\": {\"vcpu_count\": 1}\n}").unwrap();
        let err = VmConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid config file {}", path.display())),
            "{err}"
        );
        assert!(
            err.contains("missing field `mem_size_mib` at line 2"),
            "{err}"
        );
        let err = VmConfig::from_file(&dir.path().join("none.json")).unwrap_err();
        assert!(matches!(err, ConfigFileError::Read { .. }));
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_CONFIG_FILE_BYTES as usize + 1]).unwrap();
        let err = VmConfig::from_file(&big).unwrap_err().to_string();
        assert!(err.contains("larger than the limit"), "{err}");
        std::fs::write(&path, r#"{"entropy": {}}"#).unwrap();
        assert!(VmConfig::from_file(&path).unwrap().entropy.is_some());
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err =
            serde_json::from_str::<MachineConfig>(r#"{"vcpu_count":1,"mem_size_mib":1,"x":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn machine_config_patch_changes_only_given_fields() {
        let patch = MachineConfigUpdate {
            mem_size_mib: Some(512),
            ..Default::default()
        };
        let out = patch.applied_to(&MachineConfig::default());
        assert_eq!(out.mem_size_mib, 512);
        assert_eq!(out.vcpu_count, DEFAULT_VCPU_COUNT);
        assert!(MachineConfigUpdate::default().is_empty());
    }

    #[test]
    fn log_levels_are_read_as_firecracker_reads_them() {
        for (text, level) in [
            ("\"info\"", LogLevel::Info),
            ("\"WARN\"", LogLevel::Warning),
            ("\"Warning\"", LogLevel::Warning),
            ("\"dEbUg\"", LogLevel::Debug),
        ] {
            assert_eq!(serde_json::from_str::<LogLevel>(text).unwrap(), level);
        }
        let err = serde_json::from_str::<LogLevel>("\"loud\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown log level `loud`"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&LogLevel::Warning).unwrap(),
            "\"Warning\""
        );
    }
}
