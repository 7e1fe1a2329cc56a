//! `wisp --api-sock PATH` and `wisp --config-file FILE`: the VMM driven by Firecracker-style
//! resources. Before boot the VMM thread serves the API from a plain blocking loop; after
//! InstanceStart the API becomes one more subscriber of the VM's event loop.

use crate::logger;
use crate::run::{dup_stream, EXIT_GUEST_FAILURE, EXIT_VMM_ERROR};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_sys_util::timerfd::TimerFd;
use wisp_api::metrics::append_json_line;
use wisp_api::{
    api_channel, spawn_api_server, ApiReceiver, ApiRequest, ApiServerHandle, HostLimits, VmConfig,
    VmResources, VmState, VmmAction, VmmActionError, VmmData,
};
use wisp_devices::virtio::{Block, DeviceMetrics, MmioTransport};
use wisp_vmm::virtio_devices::VirtioHandle;
use wisp_vmm::x86_64::mptable::MAX_CPUS;
use wisp_vmm::{MicroVm, MicroVmOptions, VmController};

type VmmResult = Result<VmmData, VmmActionError>;
/// Drives by id, for PATCH /drives after boot.
type DriveHandles = Vec<(String, Arc<Mutex<MmioTransport>>)>;
/// Per-device counters by "kind:id", for FlushMetrics.
type DeviceCounters = Vec<(String, Arc<DeviceMetrics>)>;

/// How often a running VM appends a metrics line on its own (Firecracker's period), besides
/// FlushMetrics and the last line at exit.
const METRICS_PERIOD: Duration = Duration::from_secs(60);

fn build_vm(start: Instant, config: &VmConfig) -> Result<MicroVm, String> {
    let stdout = dup_stream(std::io::stdout().as_fd())
        .map_err(|e| format!("cannot set up the console: {e}"))?;
    let opts = MicroVmOptions {
        start,
        console_out: Box::new(stdout),
        console_in: None,
        on_boot: None,
        on_first_entry: None,
    };
    let mut vm = MicroVm::build(config, opts).map_err(|e| e.to_string())?;
    vm.start().map_err(|e| e.to_string())?;
    Ok(vm)
}

/// Applies a logger change the store accepted.
fn after_apply(action: &VmmAction, result: &VmmResult) {
    if let (VmmAction::ConfigureLogger(cfg), Ok(_)) = (action, result) {
        if let Err(e) = logger::configure(cfg) {
            log::error!("cannot open the log file {}: {e}", cfg.log_path.display());
        }
    }
}

/// Serves the API until InstanceStart builds the VM.
fn serve_until_start(
    start: Instant,
    receiver: &ApiReceiver,
    resources: &mut VmResources,
) -> Option<MicroVm> {
    while let Some(ApiRequest { action, reply }) = receiver.recv() {
        let result = match resources.apply(&action, VmState::NotStarted) {
            Some(result) => result,
            None if action == VmmAction::StartMicroVm => {
                match build_vm(start, resources.vm_config()) {
                    Ok(vm) => {
                        reply.send(Ok(VmmData::Empty));
                        return Some(vm);
                    }
                    Err(e) => Err(VmmActionError::bad_request(format!(
                        "cannot start the microVM: {e}"
                    ))),
                }
            }
            None => Err(VmmActionError::not_allowed(
                "the microVM has not been started",
            )),
        };
        after_apply(&action, &result);
        reply.send(result);
    }
    None
}

/// The API while the VM runs.
pub struct RunningApi {
    receiver: ApiReceiver,
    resources: VmResources,
    state: VmState,
    controller: VmController,
    drives: DriveHandles,
    devices: DeviceCounters,
    server: Option<ApiServerHandle>,
    /// Fires every [`METRICS_PERIOD`] while a metrics path is configured.
    metrics_timer: Option<TimerFd>,
}

impl RunningApi {
    /// The API of a VM that has just started (`resources` describes it).
    pub fn new(
        vm: &MicroVm,
        receiver: ApiReceiver,
        resources: VmResources,
        server: Option<ApiServerHandle>,
    ) -> RunningApi {
        let (drives, devices) = handles(vm);
        RunningApi {
            receiver,
            resources,
            state: VmState::Running,
            controller: vm.controller(),
            drives,
            devices,
            server,
            metrics_timer: None,
        }
    }

    /// Appends a metrics line if a metrics path is configured (at exit; errors are logged:
    /// there is nobody left to answer).
    pub fn flush_metrics_if_configured(&self) {
        if self.resources.vm_config().metrics.is_some() {
            if let Err(e) = self.flush_metrics() {
                log::error!("cannot write metrics: {}", e.message);
            }
        }
    }

    /// Arms the periodic flush; `None` when no metrics path is configured or no timer can be
    /// made (FlushMetrics and the line at exit still work).
    fn periodic_metrics_timer(&self) -> Option<TimerFd> {
        self.resources.vm_config().metrics.as_ref()?;
        let mut timer = TimerFd::new()
            .map_err(|e| log::warn!("no periodic metrics: {e}"))
            .ok()?;
        timer
            .reset(METRICS_PERIOD, Some(METRICS_PERIOD))
            .map_err(|e| log::warn!("no periodic metrics: {e}"))
            .ok()?;
        Some(timer)
    }

    fn execute(&mut self, action: &VmmAction) -> VmmResult {
        match action {
            VmmAction::Pause => {
                self.controller
                    .pause()
                    .map_err(|e| VmmActionError::internal(e.to_string()))?;
                self.state = VmState::Paused;
                Ok(VmmData::Empty)
            }
            VmmAction::Resume => {
                self.controller.resume();
                self.state = VmState::Running;
                Ok(VmmData::Empty)
            }
            VmmAction::SendCtrlAltDel => {
                // Both ways a guest can hear it: the noxs page's sysctl word (the unikernel,
                // noxs-aware guests) and the keys on the i8042 keyboard (Linux, as in
                // Firecracker). Refused only when the keyboard cannot take the keys.
                self.controller
                    .sysctl()
                    .post(wisp_devices::noxs_page::Sysctl::PowerOff);
                self.controller
                    .send_ctrl_alt_del()
                    .map_err(|e| VmmActionError::bad_request(e.to_string()))?;
                Ok(VmmData::Empty)
            }
            VmmAction::FlushMetrics => self.flush_metrics(),
            VmmAction::UpdateBlockDevice(update) => {
                let transport = self
                    .drives
                    .iter()
                    .find(|(id, _)| *id == update.drive_id)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| {
                        VmmActionError::bad_request(format!("no drive {}", update.drive_id))
                    })?;
                let mut t = transport
                    .lock()
                    .map_err(|_| VmmActionError::internal("drive state is poisoned"))?;
                let block = t
                    .device_mut::<Block>()
                    .ok_or_else(|| VmmActionError::internal("drive is not a block device"))?;
                block
                    .update_backing(&update.path_on_host)
                    .map_err(|e| VmmActionError::bad_request(e.to_string()))?;
                self.resources.commit_drive_update(update);
                Ok(VmmData::Empty)
            }
            _ => Err(VmmActionError::internal(format!(
                "{action:?} reached the VMM unexpectedly"
            ))),
        }
    }

    fn flush_metrics(&self) -> VmmResult {
        let Some(metrics) = &self.resources.vm_config().metrics else {
            return Err(VmmActionError::bad_request("PUT /metrics first"));
        };
        let devices: serde_json::Map<String, serde_json::Value> = self
            .devices
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    serde_json::to_value(m.snapshot()).unwrap_or_default(),
                )
            })
            .collect();
        let line = serde_json::json!({
            "utc_timestamp_ms": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            "api": self.server.as_ref().map(|s| serde_json::to_value(s.metrics().snapshot()).unwrap_or_default()),
            "devices": devices,
        });
        append_json_line(&metrics.metrics_path, &line)
            .map(|()| VmmData::Empty)
            .map_err(|e| VmmActionError::internal(e.to_string()))
    }
}

impl MutEventSubscriber for RunningApi {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.receiver.wake_fd(), EventSet::IN)) {
            log::error!("cannot serve the API while running: {e}");
        }
        self.metrics_timer = self.periodic_metrics_timer();
        if let Some(timer) = &self.metrics_timer {
            if let Err(e) = ops.add(Events::new(timer, EventSet::IN)) {
                log::warn!("no periodic metrics: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if let Some(timer) = &mut self.metrics_timer {
            if events.fd() == timer.as_raw_fd() {
                if let Err(e) = timer.wait() {
                    log::warn!("metrics timer: {e}");
                }
                self.flush_metrics_if_configured();
                return;
            }
        }
        for ApiRequest { action, reply } in self.receiver.drain() {
            let result = match self.resources.apply(&action, self.state) {
                Some(result) => result,
                None => self.execute(&action),
            };
            after_apply(&action, &result);
            reply.send(result);
        }
    }
}

fn handles(vm: &MicroVm) -> (DriveHandles, DeviceCounters) {
    let list: &[VirtioHandle] = vm.virtio_devices();
    let drives = list
        .iter()
        .filter(|h| h.kind == "block")
        .map(|h| (h.id.clone(), h.transport.clone()))
        .collect();
    let metrics = list
        .iter()
        .filter_map(|h| {
            let t = h.transport.lock().ok()?;
            Some((format!("{}:{}", h.kind, h.id), t.metrics().clone()))
        })
        .collect();
    (drives, metrics)
}

pub fn run_api(start: Instant, api_sock: Option<&Path>, config_file: Option<&Path>) -> i32 {
    let limits = HostLimits {
        max_vcpus: MAX_CPUS,
    };
    let mut resources = match config_file {
        Some(path) => match VmConfig::from_file(path)
            .map_err(|e| e.to_string())
            .and_then(|c| VmResources::from_config(c, limits).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                report!("wisp: error: {e}");
                return EXIT_VMM_ERROR;
            }
        },
        None => VmResources::new(limits),
    };
    if let Some(logger) = &resources.vm_config().logger {
        if let Err(e) = logger::configure(logger) {
            report!(
                "wisp: error: cannot open {}: {e}",
                logger.log_path.display()
            );
            return EXIT_VMM_ERROR;
        }
    }
    let (sender, receiver) = match api_channel() {
        Ok(c) => c,
        Err(e) => {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let server = match api_sock {
        Some(path) => match spawn_api_server(path, sender) {
            Ok(s) => Some(s),
            Err(e) => {
                report!("wisp: error: {e}");
                return EXIT_VMM_ERROR;
            }
        },
        None => None,
    };
    let vm = if config_file.is_some() {
        match build_vm(start, resources.vm_config()) {
            Ok(vm) => Some(vm),
            Err(e) => {
                report!("wisp: error: {e}");
                return EXIT_VMM_ERROR;
            }
        }
    } else {
        serve_until_start(start, &receiver, &mut resources)
    };
    let Some(mut vm) = vm else {
        return 0;
    };
    let api = Arc::new(Mutex::new(RunningApi::new(
        &vm, receiver, resources, server,
    )));
    vm.add_subscriber(api.clone());
    let run = vm.run();
    if let Ok(api) = api.lock() {
        api.flush_metrics_if_configured();
    }
    match run {
        Ok(exit) if exit.is_clean() => 0,
        Ok(exit) => {
            report!("wisp: guest failed: {exit}");
            EXIT_GUEST_FAILURE
        }
        Err(e) => {
            report!("wisp: error: {e}");
            EXIT_VMM_ERROR
        }
    }
}
