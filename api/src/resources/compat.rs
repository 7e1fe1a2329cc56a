//! The Firecracker-compatibility part of the store (issue 19): the fields and resources Wisp
//! took over from Firecracker's API so that its clients carry over. Each documented field is
//! either accepted (and implemented by the VMM) or refused here with a 400 that says
//! "not supported by Wisp" and why; never "unknown field".

use super::VmResources;
use crate::action::{VmState, VmmAction, VmmActionError, VmmData};
use crate::config::{
    Balloon, BalloonStats, Drive, HugePages, IoEngine, Logger, MachineConfig, Metrics,
    NetworkInterface, NetworkInterfaceUpdate, Serial, VmConfig, Vsock,
};
use crate::validate::{check_append_target, validate_rate_limiter};

/// Longest `partuuid` (a GPT UUID is 36 characters; MBR-style ones are shorter).
const MAX_PARTUUID_LEN: usize = 36;
/// Longest logger `module` filter.
const MAX_MODULE_LEN: usize = 128;
/// Most metrics `properties`, and the longest key or value.
const MAX_PROPERTIES: usize = 32;
const MAX_PROPERTY_LEN: usize = 256;
/// Guest pages are 4 KiB for the balloon (virtio 1.2 §5.5.6: page frame numbers of 4096).
const BALLOON_PAGES_PER_MIB: u32 = 256;

/// The 400 for a Firecracker field or resource Wisp refuses on purpose.
pub fn not_supported(what: &str, reason: &str) -> VmmActionError {
    VmmActionError::bad_request(format!("{what} is not supported by Wisp: {reason}"))
}

/// Firecracker sections of a whole configuration document Wisp refuses on purpose.
pub(super) fn check_config_sections(
    config: &VmConfig,
) -> Result<(), (&'static str, VmmActionError)> {
    let refused = [
        (
            "cpu-config",
            config.cpu_config.is_some(),
            "custom CPU templates (Wisp passes the host's CPUID through, filtered)",
        ),
        (
            "mmds-config",
            config.mmds_config.is_some(),
            "the microVM metadata service (MMDS) is out of scope for now",
        ),
        (
            "memory-hotplug",
            config.memory_hotplug.is_some(),
            "virtio-mem memory hotplug is not implemented",
        ),
        (
            "pmem",
            config.pmem.is_some(),
            "virtio-pmem devices are not implemented",
        ),
    ];
    for (section, present, reason) in refused {
        if present {
            return Err((section, not_supported(section, reason)));
        }
    }
    Ok(())
}

/// `machine-config` fields beyond vCPUs, memory and SMT.
pub(super) fn check_machine_compat(mc: &MachineConfig) -> Result<(), VmmActionError> {
    match mc.cpu_template.as_deref() {
        None | Some("None") => {}
        Some(other) => {
            return Err(not_supported(
                &format!("cpu_template `{other}`"),
                "static CPU templates (only \"None\"; Wisp passes the host's CPUID through)",
            ))
        }
    }
    if mc.huge_pages == HugePages::Huge2M {
        if !mc.mem_size_mib.is_multiple_of(2) {
            return Err(VmmActionError::bad_request(format!(
                "mem_size_mib {} must be a multiple of 2 with huge_pages 2M",
                mc.mem_size_mib
            )));
        }
        let wanted = u64::from(mc.mem_size_mib / 2);
        match host_free_huge_pages() {
            Some(free) if free >= wanted => {}
            Some(free) => {
                return Err(VmmActionError::bad_request(format!(
                    "huge_pages 2M needs {wanted} free 2 MiB huge pages on this host, it has \
                     {free} (raise /proc/sys/vm/nr_hugepages)"
                )))
            }
            None => {
                return Err(VmmActionError::bad_request(
                    "huge_pages 2M: this host reports no hugetlb pool (/proc/meminfo has no \
                     HugePages_Free)",
                ))
            }
        }
    }
    Ok(())
}

/// Free 2 MiB huge pages of the host (`HugePages_Free` in /proc/meminfo, when the default
/// huge page size is 2 MiB).
fn host_free_huge_pages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    if field("Hugepagesize:")? != 2048 {
        return Some(0);
    }
    field("HugePages_Free:")
}

/// `drives` fields beyond id, path, root and read-only.
pub(super) fn check_drive_compat(drive: &Drive) -> Result<(), VmmActionError> {
    if drive.socket.is_some() {
        return Err(not_supported(
            "drive socket",
            "vhost-user-block backends are not implemented",
        ));
    }
    if drive.io_engine == Some(IoEngine::Async) {
        return Err(not_supported(
            "io_engine Async",
            "io_uring is not implemented; use \"Sync\"",
        ));
    }
    if let Some(uuid) = &drive.partuuid {
        let ok = |c: char| c.is_ascii_hexdigit() || c == '-';
        if uuid.is_empty() || uuid.len() > MAX_PARTUUID_LEN || !uuid.chars().all(ok) {
            return Err(VmmActionError::bad_request(format!(
                "partuuid `{uuid}` is invalid: use up to {MAX_PARTUUID_LEN} hex digits and `-`"
            )));
        }
    }
    Ok(())
}

/// `network-interfaces` fields beyond id, tap, MAC and limiters.
pub(super) fn check_net_compat(iface: &NetworkInterface) -> Result<(), VmmActionError> {
    match iface.mtu {
        Some(mtu) if mtu < 68 => Err(VmmActionError::bad_request(format!(
            "mtu {mtu} is out of range: it must be between 68 and 65535"
        ))),
        _ => Ok(()),
    }
}

/// `vsock.vsock_id` (deprecated by Firecracker): only checked for sanity.
pub(super) fn check_vsock_compat(vsock: &Vsock) -> Result<(), VmmActionError> {
    match &vsock.vsock_id {
        Some(id) => crate::validate::validate_id("vsock_id", id),
        None => Ok(()),
    }
}

/// `logger.module` (also `--module`).
pub fn check_logger_compat(logger: &Logger) -> Result<(), VmmActionError> {
    let Some(module) = &logger.module else {
        return Ok(());
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    if module.is_empty() || module.len() > MAX_MODULE_LEN || !module.chars().all(ok) {
        return Err(VmmActionError::bad_request(format!(
            "logger module `{module}` is invalid: use a Rust module path such as \
             wisp_http::server (letters, digits, `_`, `::`)"
        )));
    }
    Ok(())
}

/// `metrics.properties`.
pub(super) fn check_metrics_compat(metrics: &Metrics) -> Result<(), VmmActionError> {
    let Some(props) = &metrics.properties else {
        return Ok(());
    };
    if props.len() > MAX_PROPERTIES
        || props
            .iter()
            .any(|(k, v)| k.len() > MAX_PROPERTY_LEN || v.len() > MAX_PROPERTY_LEN)
    {
        return Err(VmmActionError::bad_request(format!(
            "metrics properties: at most {MAX_PROPERTIES} pairs of at most {MAX_PROPERTY_LEN} \
             bytes each"
        )));
    }
    Ok(())
}

impl VmResources {
    /// The instance id (`--id`), for metrics lines with `emit_id`.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Handles the compatibility actions; `None` for any other action.
    pub(super) fn apply_compat(
        &mut self,
        action: &VmmAction,
        state: VmState,
    ) -> Option<Option<Result<VmmData, VmmActionError>>> {
        use VmmAction as A;
        let pre_boot = state == VmState::NotStarted;
        let answer = match action {
            A::GetBalloon => Some(match &self.config.balloon {
                Some(b) => Ok(VmmData::Balloon(b.clone())),
                None => Err(no_balloon()),
            }),
            A::SetBalloon(_) | A::SetSerial(_) if !pre_boot => {
                Some(Err(VmmActionError::not_allowed(format!(
                    "{} is not allowed after the microVM started",
                    if matches!(action, A::SetBalloon(_)) {
                        "configuring the balloon"
                    } else {
                        "configuring the serial console"
                    }
                ))))
            }
            A::SetBalloon(balloon) => Some(self.set_balloon(balloon).map(|()| VmmData::Empty)),
            A::SetSerial(serial) => Some(self.set_serial(serial).map(|()| VmmData::Empty)),
            A::UpdateBalloon(update) => {
                let Some(current) = &self.config.balloon else {
                    return Some(Some(Err(no_balloon())));
                };
                if let Err(e) = self.check_balloon_size(update.amount_mib) {
                    return Some(Some(Err(e)));
                }
                if state.has_ended() {
                    return Some(Some(Err(ended())));
                }
                if pre_boot {
                    let mut b = current.clone();
                    b.amount_mib = update.amount_mib;
                    self.config.balloon = Some(b);
                    Some(Ok(VmmData::Empty))
                } else {
                    None
                }
            }
            A::UpdateBalloonStats(update) => {
                let Some(current) = &self.config.balloon else {
                    return Some(Some(Err(no_balloon())));
                };
                let was_on = current.stats_polling_interval_s != 0;
                let is_on = update.stats_polling_interval_s != 0;
                if state.has_ended() {
                    Some(Err(ended()))
                } else if pre_boot {
                    let mut b = current.clone();
                    b.stats_polling_interval_s = update.stats_polling_interval_s;
                    self.config.balloon = Some(b);
                    Some(Ok(VmmData::Empty))
                } else if was_on != is_on {
                    Some(Err(VmmActionError::bad_request(
                        "balloon statistics cannot be turned on or off after boot (only the \
                         interval can change)",
                    )))
                } else {
                    None
                }
            }
            A::GetBalloonStats => match &self.config.balloon {
                None => Some(Err(no_balloon())),
                Some(b) if b.stats_polling_interval_s == 0 => {
                    Some(Err(VmmActionError::bad_request(
                        "balloon statistics are not enabled (stats_polling_interval_s is 0)",
                    )))
                }
                Some(b) if pre_boot => Some(Ok(VmmData::BalloonStats(BalloonStats {
                    target_pages: b.amount_mib * BALLOON_PAGES_PER_MIB,
                    target_mib: b.amount_mib,
                    ..BalloonStats::default()
                }))),
                Some(_) if state.has_ended() => Some(Err(ended())),
                Some(_) => None,
            },
            A::UpdateNetworkInterface(update) => self.update_net(update, state),
            _ => return None,
        };
        Some(answer)
    }

    /// Records a new balloon target or stats interval once the VMM applied it.
    pub fn commit_balloon(&mut self, amount_mib: Option<u32>, stats_interval_s: Option<u16>) {
        if let Some(b) = self.config.balloon.as_mut() {
            if let Some(a) = amount_mib {
                b.amount_mib = a;
            }
            if let Some(s) = stats_interval_s {
                b.stats_polling_interval_s = s;
            }
        }
    }

    /// Records an interface's new limiters once the VMM applied them.
    pub fn commit_net_update(&mut self, update: &NetworkInterfaceUpdate) {
        let ifaces = &mut self.config.network_interfaces;
        if let Some(i) = ifaces.iter_mut().find(|i| i.iface_id == update.iface_id) {
            if let Some(l) = &update.rx_rate_limiter {
                i.rx_rate_limiter = Some(l.clone());
            }
            if let Some(l) = &update.tx_rate_limiter {
                i.tx_rate_limiter = Some(l.clone());
            }
        }
    }

    fn update_net(
        &mut self,
        update: &NetworkInterfaceUpdate,
        state: VmState,
    ) -> Option<Result<VmmData, VmmActionError>> {
        if state.has_ended() {
            return Some(Err(ended()));
        }
        if !self
            .config
            .network_interfaces
            .iter()
            .any(|i| i.iface_id == update.iface_id)
        {
            return Some(Err(VmmActionError::bad_request(format!(
                "no network interface with id `{}`",
                update.iface_id
            ))));
        }
        for (field, limiter) in [
            ("rx_rate_limiter", &update.rx_rate_limiter),
            ("tx_rate_limiter", &update.tx_rate_limiter),
        ] {
            if let Some(l) = limiter {
                if let Err(e) = validate_rate_limiter(field, l) {
                    return Some(Err(e));
                }
            }
        }
        if state == VmState::NotStarted {
            self.commit_net_update(update);
            return Some(Ok(VmmData::Empty));
        }
        None
    }

    pub(super) fn set_balloon(&mut self, balloon: &Balloon) -> Result<(), VmmActionError> {
        if balloon.free_page_hinting {
            return Err(not_supported(
                "free_page_hinting",
                "free page hinting is not implemented; free_page_reporting is",
            ));
        }
        self.check_balloon_size(balloon.amount_mib)?;
        if self.config.machine_config.huge_pages == HugePages::Huge2M {
            return Err(balloon_on_hugetlb());
        }
        self.check_device_room(self.config.balloon.is_none(), "a balloon")?;
        self.config.balloon = Some(balloon.clone());
        Ok(())
    }

    fn check_balloon_size(&self, amount_mib: u32) -> Result<(), VmmActionError> {
        let mem = self.config.machine_config.mem_size_mib;
        if amount_mib > mem {
            return Err(VmmActionError::bad_request(format!(
                "balloon amount_mib {amount_mib} is more than the guest's memory ({mem} MiB)"
            )));
        }
        Ok(())
    }

    pub(super) fn set_serial(&mut self, serial: &Serial) -> Result<(), VmmActionError> {
        if let Some(path) = &serial.serial_out_path {
            check_append_target("serial_out_path", path)?;
        }
        if let Some(bucket) = &serial.rate_limiter {
            let limiter = crate::config::RateLimiter {
                bandwidth: Some(*bucket),
                ops: None,
            };
            validate_rate_limiter("serial rate_limiter", &limiter)?;
        }
        self.config.serial = Some(serial.clone());
        Ok(())
    }
}

/// A balloon page is 4 KiB; memory from 2 MiB hugetlb pages cannot give back less than 2 MiB.
pub(super) fn balloon_on_hugetlb() -> VmmActionError {
    not_supported(
        "a balloon with huge_pages 2M",
        "its 4 KiB pages cannot be returned from 2 MiB hugetlb pages",
    )
}

fn no_balloon() -> VmmActionError {
    VmmActionError::bad_request("no balloon device is configured (PUT /balloon first)")
}

fn ended() -> VmmActionError {
    VmmActionError::not_allowed("the microVM has ended")
}
