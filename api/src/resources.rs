//! `VmResources`: the pre-boot configuration store and all of its validation. Every front end
//! (REST API, `--config-file`, control page) goes through it, so a rule is written once.
//! Semantics follow Firecracker: resources are configured before `InstanceStart`, a `PUT` with
//! an existing id replaces that resource, and configuration is frozen once the guest runs.

use crate::action::{
    InstanceInfo, VersionInfo, VmState, VmmAction, VmmActionError, VmmData, APP_NAME, VMM_VERSION,
};
use crate::config::{
    BootSource, Drive, DriveUpdate, Fs, Logger, MachineConfig, Metrics, NetworkInterface, VmConfig,
    Vsock,
};
use crate::validate::{
    canonical_or_given, check_append_target, check_backend_socket, check_file_opens,
    check_host_file, check_socket_target, validate_boot_args, validate_fs_tag, validate_id,
    validate_mac, validate_rate_limiter, validate_tap_name, MAX_FS_QUEUES,
};
use wisp_hostfs::FileKind;

mod compat;
pub use compat::{check_logger_compat as check_logger_module, not_supported};

pub use wisp_abi::memory_map::MAX_VIRTIO_DEVICES;

/// Firecracker's ceiling on vCPUs, used when the host reports no lower one.
pub const DEFAULT_MAX_VCPUS: u8 = 32;
/// Id reported by `GET /` unless the VMM sets one.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";

/// Limits of this host that the configuration must respect; the VMM fills them from KVM
/// (`KVM_CAP_MAX_VCPUS`) and /proc/meminfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLimits {
    pub max_vcpus: u8,
    /// The most guest memory one VM may have, in MiB: the host's MemTotal. Guest memory is
    /// mapped `MAP_NORESERVE`, so a larger guest would be accepted and then fail (or wake the
    /// OOM killer) only once it touches its pages.
    pub max_mem_mib: u64,
    /// Lifts `max_mem_mib` (`--allow-overcommit`): for hosts that overcommit on purpose.
    pub allow_overcommit: bool,
}

impl Default for HostLimits {
    /// Firecracker's vCPU ceiling, this host's memory, no overcommit.
    fn default() -> Self {
        HostLimits {
            max_vcpus: DEFAULT_MAX_VCPUS,
            max_mem_mib: host_mem_mib().unwrap_or(u64::MAX),
            allow_overcommit: false,
        }
    }
}

impl HostLimits {
    /// The default limits with a vCPU ceiling of `max_vcpus`.
    pub fn with_max_vcpus(max_vcpus: u8) -> Self {
        HostLimits {
            max_vcpus,
            ..HostLimits::default()
        }
    }
}

/// This host's memory in MiB (MemTotal of /proc/meminfo); `None` when it cannot be read.
/// Read once per process: the fuzz targets build limits per input.
pub fn host_mem_mib() -> Option<u64> {
    static MEM_MIB: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *MEM_MIB.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line
            .trim_start_matches("MemTotal:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024)
    })
}

/// Errors of building a store from a whole configuration document.
#[derive(Debug, thiserror::Error)]
pub enum ResourcesError {
    #[error("invalid configuration, section `{section}`: {source}")]
    InvalidSection {
        section: &'static str,
        #[source]
        source: VmmActionError,
    },
}

/// The configuration of one microVM as it is being built, plus the id it answers to.
#[derive(Clone, Debug)]
pub struct VmResources {
    config: VmConfig,
    limits: HostLimits,
    instance_id: String,
}

impl VmResources {
    /// An empty store (default machine config, no boot source yet).
    pub fn new(limits: HostLimits) -> Self {
        VmResources {
            config: VmConfig::default(),
            limits,
            instance_id: DEFAULT_INSTANCE_ID.to_string(),
        }
    }

    /// Sets the id `GET /` reports.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Builds a store from one `--config-file` document, with the same validation as the API.
    /// Unlike repeated `PUT`s, a document that names the same drive or interface id twice is
    /// rejected: there is no "later replaces earlier" in a single document.
    pub fn from_config(config: VmConfig, limits: HostLimits) -> Result<Self, ResourcesError> {
        let mut res = VmResources::new(limits);
        let wrap = |section| move |source| ResourcesError::InvalidSection { section, source };
        compat::check_config_sections(&config)
            .map_err(|(section, source)| ResourcesError::InvalidSection { section, source })?;
        res.set_machine_config(&config.machine_config)
            .map_err(wrap("machine-config"))?;
        if let Some(boot) = &config.boot_source {
            res.set_boot_source(boot).map_err(wrap("boot-source"))?;
        }
        for drive in &config.drives {
            if res
                .config
                .drives
                .iter()
                .any(|d| d.drive_id == drive.drive_id)
            {
                let msg = format!("drive id `{}` appears twice", drive.drive_id);
                return Err(wrap("drives")(VmmActionError::bad_request(msg)));
            }
            res.insert_drive(drive).map_err(wrap("drives"))?;
        }
        for iface in &config.network_interfaces {
            let ifaces = &res.config.network_interfaces;
            if ifaces.iter().any(|i| i.iface_id == iface.iface_id) {
                let msg = format!("network interface id `{}` appears twice", iface.iface_id);
                return Err(wrap("network-interfaces")(VmmActionError::bad_request(msg)));
            }
            res.insert_net(iface).map_err(wrap("network-interfaces"))?;
        }
        if let Some(vsock) = &config.vsock {
            res.set_vsock(vsock).map_err(wrap("vsock"))?;
        }
        if let Some(entropy) = &config.entropy {
            res.check_device_room(true, "entropy")
                .map_err(wrap("entropy"))?;
            check_limiter("rate_limiter", &entropy.rate_limiter).map_err(wrap("entropy"))?;
        }
        res.config.entropy = config.entropy.clone();
        for fs in &config.fs {
            if res.config.fs.iter().any(|f| f.fs_id == fs.fs_id) {
                let msg = format!("fs id `{}` appears twice", fs.fs_id);
                return Err(wrap("fs")(VmmActionError::bad_request(msg)));
            }
            res.insert_fs(fs).map_err(wrap("fs"))?;
        }
        if let Some(logger) = &config.logger {
            res.set_logger(logger).map_err(wrap("logger"))?;
        }
        if let Some(metrics) = &config.metrics {
            res.set_metrics(metrics).map_err(wrap("metrics"))?;
        }
        if let Some(balloon) = &config.balloon {
            res.set_balloon(balloon).map_err(wrap("balloon"))?;
        }
        if let Some(serial) = &config.serial {
            res.set_serial(serial).map_err(wrap("serial"))?;
        }
        Ok(res)
    }

    /// The configuration as validated so far; the VMM boots from it on `StartMicroVm`.
    pub fn vm_config(&self) -> &VmConfig {
        &self.config
    }

    /// The limits this store validates against.
    pub fn limits(&self) -> HostLimits {
        self.limits
    }

    /// Handles `action` if the store can: every read and every configuration change. Returns
    /// `None` for work only the VMM can do (start, pause, resume, Ctrl-Alt-Del, flushing metrics,
    /// swapping a drive's file after boot) once the store has checked that the state allows it.
    pub fn apply(
        &mut self,
        action: &VmmAction,
        state: VmState,
    ) -> Option<Result<VmmData, VmmActionError>> {
        use VmmAction as A;
        if let Some(answer) = self.apply_compat(action, state) {
            return answer;
        }
        let configured = |r: Result<(), VmmActionError>| Some(r.map(|()| VmmData::Empty));
        match action {
            A::GetVmInfo => Some(Ok(VmmData::InstanceInfo(InstanceInfo {
                id: self.instance_id.clone(),
                state,
                vmm_version: VMM_VERSION.to_string(),
                app_name: APP_NAME.to_string(),
            }))),
            A::GetVmConfig => Some(Ok(VmmData::VmConfig(Box::new(self.config.clone())))),
            A::GetVersion => Some(Ok(VmmData::Version(VersionInfo {
                wisp_version: VMM_VERSION.to_string(),
            }))),
            A::GetMachineConfig => Some(Ok(VmmData::MachineConfig(
                self.config.machine_config.clone(),
            ))),
            A::UpdateBlockDevice(update) => self.update_drive(update, state),
            // The controller checks and carries out snapshots itself.
            A::CreateSnapshot(_) | A::LoadSnapshot(_) => None,
            A::StartMicroVm => match state {
                VmState::NotStarted if self.config.boot_source.is_none() => {
                    Some(Err(VmmActionError::bad_request(
                        "cannot start the microVM: no boot source is configured \
                         (PUT /boot-source first)",
                    )))
                }
                VmState::NotStarted => None,
                _ => Some(Err(VmmActionError::not_allowed(
                    "cannot start the microVM: it has already been started",
                ))),
            },
            A::SendCtrlAltDel => match state {
                VmState::Running => None,
                other => Some(Err(VmmActionError::not_allowed(format!(
                    "SendCtrlAltDel needs a running microVM; its state is {other:?}"
                )))),
            },
            A::FlushMetrics if self.config.metrics.is_none() => Some(Err(
                VmmActionError::bad_request("cannot flush metrics: PUT /metrics first"),
            )),
            A::FlushMetrics => None,
            A::StopMicroVm => match state {
                VmState::Running | VmState::Paused => None,
                other => Some(Err(VmmActionError::not_allowed(format!(
                    "cannot stop the microVM in state {other:?}"
                )))),
            },
            A::Pause | A::Resume => match state {
                VmState::Running | VmState::Paused => None,
                other => Some(Err(VmmActionError::not_allowed(format!(
                    "cannot pause or resume the microVM in state {other:?}"
                )))),
            },
            _ if state != VmState::NotStarted => Some(Err(VmmActionError::not_allowed(format!(
                "{} is not allowed after the microVM started",
                config_change_name(action)
            )))),
            A::ConfigureAll(config) => {
                match VmResources::from_config(config.as_ref().clone(), self.limits) {
                    Ok(whole) => {
                        self.config = whole.config;
                        Some(Ok(VmmData::Empty))
                    }
                    Err(e) => Some(Err(VmmActionError::bad_request(e.to_string()))),
                }
            }
            A::ConfigureBootSource(boot) => configured(self.set_boot_source(boot)),
            A::PutMachineConfig(mc) => configured(self.set_machine_config(mc)),
            A::PatchMachineConfig(patch) if patch.is_empty() => Some(Err(
                VmmActionError::bad_request("PATCH /machine-config names no field to change"),
            )),
            A::PatchMachineConfig(patch) => {
                let merged = patch.applied_to(&self.config.machine_config);
                configured(self.set_machine_config(&merged))
            }
            A::InsertBlockDevice(drive) => configured(self.insert_drive(drive)),
            A::InsertNetworkDevice(iface) => configured(self.insert_net(iface)),
            A::SetVsock(vsock) => configured(self.set_vsock(vsock)),
            A::SetEntropy(entropy) => {
                if let Err(e) = self.check_device_room(self.config.entropy.is_none(), "entropy") {
                    return Some(Err(e));
                }
                if let Err(e) = check_limiter("rate_limiter", &entropy.rate_limiter) {
                    return Some(Err(e));
                }
                self.config.entropy = Some(entropy.clone());
                Some(Ok(VmmData::Empty))
            }
            A::InsertFs(fs) => configured(self.insert_fs(fs)),
            A::ConfigureLogger(logger) => configured(self.set_logger(logger)),
            A::ConfigureMetrics(metrics) => configured(self.set_metrics(metrics)),
            // Answered by `apply_compat` above.
            A::UpdateNetworkInterface(_)
            | A::SetBalloon(_)
            | A::UpdateBalloon(_)
            | A::GetBalloon
            | A::GetBalloonStats
            | A::UpdateBalloonStats(_)
            | A::SetSerial(_) => None,
        }
    }

    /// Records a drive's new backing file once the VMM has swapped it after boot, so that
    /// `GET /vm/config` tells the truth.
    pub fn commit_drive_update(&mut self, update: &DriveUpdate) {
        if let Some(d) = self
            .config
            .drives
            .iter_mut()
            .find(|d| d.drive_id == update.drive_id)
        {
            if let Some(path) = &update.path_on_host {
                d.path_on_host = path.clone();
            }
            if let Some(limiter) = &update.rate_limiter {
                d.rate_limiter = Some(limiter.clone());
            }
        }
    }

    fn set_boot_source(&mut self, boot: &BootSource) -> Result<(), VmmActionError> {
        check_file_opens("kernel image", &boot.kernel_image_path, false)?;
        if let Some(initrd) = &boot.initrd_path {
            check_file_opens("initrd", initrd, false)?;
        }
        if let Some(args) = &boot.boot_args {
            validate_boot_args(args)?;
        }
        self.config.boot_source = Some(boot.clone());
        Ok(())
    }

    fn set_machine_config(&mut self, mc: &MachineConfig) -> Result<(), VmmActionError> {
        let max = self.limits.max_vcpus;
        if mc.vcpu_count == 0 || mc.vcpu_count > max {
            return Err(VmmActionError::bad_request(format!(
                "vcpu_count {} is out of range: it must be between 1 and {max} on this host",
                mc.vcpu_count
            )));
        }
        // With SMT two hyperthreads share a core, so a guest topology needs pairs (as in
        // Firecracker): one vCPU, or an even count.
        if mc.smt && mc.vcpu_count > 1 && mc.vcpu_count % 2 == 1 {
            return Err(VmmActionError::bad_request(format!(
                "vcpu_count {} is invalid with smt: it must be 1 or even",
                mc.vcpu_count
            )));
        }
        compat::check_machine_compat(mc)?;
        if mc.huge_pages == crate::config::HugePages::Huge2M && self.config.balloon.is_some() {
            return Err(compat::balloon_on_hugetlb());
        }
        if mc.mem_size_mib == 0 {
            return Err(VmmActionError::bad_request(
                "mem_size_mib must be greater than 0",
            ));
        }
        let host = self.limits.max_mem_mib;
        if u64::from(mc.mem_size_mib) > host && !self.limits.allow_overcommit {
            return Err(VmmActionError::bad_request(format!(
                "mem_size_mib {} is more than this host's memory ({host} MiB); \
                 start wisp with --allow-overcommit to allow it",
                mc.mem_size_mib
            )));
        }
        self.config.machine_config = mc.clone();
        Ok(())
    }

    /// Every virtio device takes one MMIO slot and one IRQ (5..=23): at most
    /// `MAX_VIRTIO_DEVICES` of all kinds together, on every front end.
    fn check_device_room(&self, adds_one: bool, what: &str) -> Result<(), VmmActionError> {
        let c = &self.config;
        let count = c.drives.len()
            + c.network_interfaces.len()
            + usize::from(c.vsock.is_some())
            + usize::from(c.entropy.is_some())
            + usize::from(c.balloon.is_some())
            + c.fs.len();
        if adds_one && count >= MAX_VIRTIO_DEVICES {
            return Err(VmmActionError::bad_request(format!(
                "cannot add {what}: the microVM already has {count} virtio devices, the most \
                 it can have (one IRQ each)"
            )));
        }
        Ok(())
    }

    fn insert_drive(&mut self, drive: &Drive) -> Result<(), VmmActionError> {
        validate_id("drive_id", &drive.drive_id)?;
        compat::check_drive_compat(drive)?;
        check_limiter("rate_limiter", &drive.rate_limiter)?;
        let new = !self
            .config
            .drives
            .iter()
            .any(|d| d.drive_id == drive.drive_id);
        self.check_device_room(new, &format!("drive `{}`", drive.drive_id))?;
        check_host_file(
            &format!("backing file of drive `{}`", drive.drive_id),
            &drive.path_on_host,
            FileKind::RegularOrBlockDevice,
            !drive.is_read_only,
        )?;
        let others = || {
            self.config
                .drives
                .iter()
                .filter(|d| d.drive_id != drive.drive_id)
        };
        if drive.is_root_device {
            if let Some(root) = others().find(|d| d.is_root_device) {
                return Err(VmmActionError::bad_request(format!(
                    "drive `{}` cannot be a root device: drive `{}` already is",
                    drive.drive_id, root.drive_id
                )));
            }
        }
        let path = canonical_or_given(&drive.path_on_host);
        if let Some(twin) = others().find(|d| canonical_or_given(&d.path_on_host) == path) {
            return Err(VmmActionError::bad_request(format!(
                "drive `{}` uses {}, which drive `{}` already uses",
                drive.drive_id,
                drive.path_on_host.display(),
                twin.drive_id
            )));
        }
        let drives = &mut self.config.drives;
        match drives.iter().position(|d| d.drive_id == drive.drive_id) {
            Some(i) => drives[i] = drive.clone(),
            None => drives.push(drive.clone()),
        }
        // The root device goes first so that the guest sees it as /dev/vda (Firecracker does
        // the same).
        if let Some(i) = drives.iter().position(|d| d.is_root_device) {
            let root = drives.remove(i);
            drives.insert(0, root);
        }
        Ok(())
    }

    fn update_drive(
        &mut self,
        update: &DriveUpdate,
        state: VmState,
    ) -> Option<Result<VmmData, VmmActionError>> {
        if state == VmState::Halted {
            return Some(Err(VmmActionError::not_allowed(
                "cannot update a drive: the microVM has ended",
            )));
        }
        let Some(drive) = self
            .config
            .drives
            .iter()
            .find(|d| d.drive_id == update.drive_id)
        else {
            return Some(Err(VmmActionError::bad_request(format!(
                "no drive with id `{}`",
                update.drive_id
            ))));
        };
        if update.path_on_host.is_none() && update.rate_limiter.is_none() {
            return Some(Err(VmmActionError::bad_request(
                "PATCH /drives names no field to change (path_on_host, rate_limiter)",
            )));
        }
        if let Err(e) = check_limiter("rate_limiter", &update.rate_limiter) {
            return Some(Err(e));
        }
        let mut replaced = drive.clone();
        if let Some(path) = &update.path_on_host {
            replaced.path_on_host = path.clone();
        }
        if let Some(limiter) = &update.rate_limiter {
            replaced.rate_limiter = Some(limiter.clone());
        }
        if state == VmState::NotStarted {
            return Some(self.insert_drive(&replaced).map(|()| VmmData::Empty));
        }
        if let Some(path) = &update.path_on_host {
            let what = format!("new backing file of drive `{}`", update.drive_id);
            let kind = FileKind::RegularOrBlockDevice;
            if let Err(e) = check_host_file(&what, path, kind, !replaced.is_read_only) {
                return Some(Err(e));
            }
        }
        None
    }

    fn insert_net(&mut self, iface: &NetworkInterface) -> Result<(), VmmActionError> {
        validate_id("iface_id", &iface.iface_id)?;
        compat::check_net_compat(iface)?;
        check_limiter("rx_rate_limiter", &iface.rx_rate_limiter)?;
        check_limiter("tx_rate_limiter", &iface.tx_rate_limiter)?;
        let ifaces = &self.config.network_interfaces;
        let new = !ifaces.iter().any(|i| i.iface_id == iface.iface_id);
        self.check_device_room(new, &format!("network interface `{}`", iface.iface_id))?;
        validate_tap_name(&iface.host_dev_name)?;
        if let Some(mac) = &iface.guest_mac {
            validate_mac(mac)?;
        }
        for other in self
            .config
            .network_interfaces
            .iter()
            .filter(|i| i.iface_id != iface.iface_id)
        {
            if other.host_dev_name == iface.host_dev_name {
                return Err(VmmActionError::bad_request(format!(
                    "host device {} is already used by interface `{}`",
                    iface.host_dev_name, other.iface_id
                )));
            }
            let same_mac = match (&other.guest_mac, &iface.guest_mac) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            };
            if same_mac {
                return Err(VmmActionError::bad_request(format!(
                    "guest MAC {} is already used by interface `{}`",
                    iface.guest_mac.as_deref().unwrap_or_default(),
                    other.iface_id
                )));
            }
        }
        let ifaces = &mut self.config.network_interfaces;
        match ifaces.iter().position(|i| i.iface_id == iface.iface_id) {
            Some(i) => ifaces[i] = iface.clone(),
            None => ifaces.push(iface.clone()),
        }
        Ok(())
    }

    fn set_vsock(&mut self, vsock: &Vsock) -> Result<(), VmmActionError> {
        self.check_device_room(self.config.vsock.is_none(), "vsock")?;
        compat::check_vsock_compat(vsock)?;
        // virtio 1.2 §5.10.4: CIDs 0 and 1 are reserved, 2 is the host, 0xffffffff reserved.
        if vsock.guest_cid < 3 || vsock.guest_cid == u32::MAX {
            return Err(VmmActionError::bad_request(format!(
                "guest_cid {} is reserved: use a value from 3 to 4294967294",
                vsock.guest_cid
            )));
        }
        check_socket_target("vsock uds_path", &vsock.uds_path)?;
        self.config.vsock = Some(vsock.clone());
        Ok(())
    }

    /// A virtio-fs share: a valid id, a tag the config space can carry and no other device
    /// uses, sane queues, and a socket that is there (virtiofsd listens before the VMM starts).
    fn insert_fs(&mut self, fs: &Fs) -> Result<(), VmmActionError> {
        validate_id("fs_id", &fs.fs_id)?;
        validate_fs_tag(&fs.tag)?;
        if fs.num_queues == 0 || fs.num_queues > MAX_FS_QUEUES {
            return Err(VmmActionError::bad_request(format!(
                "fs `{}`: num_queues {} must be between 1 and {MAX_FS_QUEUES}",
                fs.fs_id, fs.num_queues
            )));
        }
        if fs.queue_size < 2 || !fs.queue_size.is_power_of_two() {
            return Err(VmmActionError::bad_request(format!(
                "fs `{}`: queue_size {} must be a power of two between 2 and 32768",
                fs.fs_id, fs.queue_size
            )));
        }
        let new = !self.config.fs.iter().any(|f| f.fs_id == fs.fs_id);
        self.check_device_room(new, &format!("fs `{}`", fs.fs_id))?;
        if let Some(twin) = self
            .config
            .fs
            .iter()
            .find(|f| f.fs_id != fs.fs_id && f.tag == fs.tag)
        {
            return Err(VmmActionError::bad_request(format!(
                "fs `{}`: tag `{}` is already used by fs `{}` (the guest mounts by tag)",
                fs.fs_id, fs.tag, twin.fs_id
            )));
        }
        check_backend_socket(&format!("socket of fs `{}`", fs.fs_id), &fs.socket)?;
        let list = &mut self.config.fs;
        match list.iter().position(|f| f.fs_id == fs.fs_id) {
            Some(i) => list[i] = fs.clone(),
            None => list.push(fs.clone()),
        }
        Ok(())
    }

    fn set_logger(&mut self, logger: &Logger) -> Result<(), VmmActionError> {
        compat::check_logger_compat(logger)?;
        if !logger.log_path.as_os_str().is_empty() {
            check_append_target("log_path", &logger.log_path)?;
        }
        self.config.logger = Some(logger.clone());
        Ok(())
    }

    fn set_metrics(&mut self, metrics: &Metrics) -> Result<(), VmmActionError> {
        compat::check_metrics_compat(metrics)?;
        check_append_target("metrics_path", &metrics.metrics_path)?;
        self.config.metrics = Some(metrics.clone());
        Ok(())
    }
}

/// What a configuration action does, for "… is not allowed after the microVM started".
fn config_change_name(action: &VmmAction) -> &'static str {
    match action {
        VmmAction::ConfigureBootSource(_) => "configuring the boot source",
        VmmAction::PutMachineConfig(_) | VmmAction::PatchMachineConfig(_) => {
            "changing the machine configuration"
        }
        VmmAction::InsertBlockDevice(_) => "adding a drive",
        VmmAction::InsertNetworkDevice(_) => "adding a network interface",
        VmmAction::SetVsock(_) => "configuring vsock",
        VmmAction::SetEntropy(_) => "configuring the entropy device",
        VmmAction::InsertFs(_) => "adding a virtio-fs device",
        VmmAction::ConfigureLogger(_) => "configuring the logger",
        VmmAction::ConfigureMetrics(_) => "configuring metrics",
        VmmAction::ConfigureAll(_) => "configuring the microVM",
        VmmAction::SetBalloon(_) => "configuring the balloon",
        VmmAction::SetSerial(_) => "configuring the serial console",
        _ => "this action",
    }
}

fn check_limiter(
    field: &str,
    limiter: &Option<crate::config::RateLimiter>,
) -> Result<(), VmmActionError> {
    limiter
        .as_ref()
        .map_or(Ok(()), |l| validate_rate_limiter(field, l))
}
