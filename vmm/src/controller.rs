//! The one VM controller every front end feeds (docs/design.md §2).
//!
//! `wisp run`, `--config-file`, the REST API and a prepared shell's control page only
//! translate their input into `VmmAction`s; the `Controller` owns the validated configuration
//! (`VmResources`), the state machine (NotStarted → Running ⇄ Paused → Halted/Failed) and the
//! running `MicroVm`, and answers each action with a typed result. Nothing else keeps a copy
//! of the state: listeners (the control page's STATE word) are told of every change.
//! Configuration is validated once, by `VmResources`, before anything touches KVM.
//!
//! It lives on the VMM thread inside `VmmLoop`, which serves its devices and hands it the
//! subscribers and exits it produces.

use crate::controller_compat as compat;
use crate::exit::VmExit;
use crate::microvm::{MicroVm, MicroVmError, MicroVmOptions, Subscriber};
use crate::prepared::PreparedVm;
use crate::virtio_devices::VirtioHandle;
use std::sync::{Arc, Mutex};
use wisp_api::metrics::append_json_line;
use wisp_api::snapshot::{SnapshotCreateParams, SnapshotLoadParams};
use wisp_api::{
    DriveUpdate, Logger, VmResources, VmState, VmmAction, VmmActionError, VmmData, VmmResult,
};
use wisp_devices::noxs_page::Sysctl;
use wisp_devices::virtio::{Block, DeviceMetrics, MmioTransport};

/// Told of every state change, on the VMM thread (e.g. the control page's STATE word).
pub type StateListener = Box<dyn FnMut(VmState) + Send>;
/// Applies a logger configuration the store accepted (the binary owns the logger).
pub type LoggerHook = Box<dyn FnMut(&Logger) -> Result<(), String> + Send>;
/// The REST server's own counters, for metrics lines.
pub type ApiMetricsHook = Box<dyn Fn() -> serde_json::Value + Send>;

/// What the host side provides besides the configuration.
#[derive(Default)]
pub struct ControllerHooks {
    pub configure_logger: Option<LoggerHook>,
    pub api_metrics: Option<ApiMetricsHook>,
}

/// How the VMM ended its work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The VM ran and ended so.
    Exited(VmExit),
    /// The VM could not start (the controller was told to give up: `wisp run`, a shell).
    StartFailed(String),
    /// Every front end went away before a VM was started.
    NothingToRun,
}

/// The controller of one microVM.
pub struct Controller {
    pub(crate) resources: VmResources,
    state: VmState,
    /// A prepared shell to configure the guest into; cold starts build their own.
    pub(crate) shell: Option<PreparedVm>,
    /// Console and boot hooks, consumed by the start.
    pub(crate) options: Option<MicroVmOptions>,
    pub(crate) vm: Option<MicroVm>,
    hooks: ControllerHooks,
    listeners: Vec<StateListener>,
    pub(crate) new_subscribers: Vec<Subscriber>,
    outcome: Option<Outcome>,
    /// The request that started the VM; metrics lines written on no request carry it.
    pub(crate) start_request: Option<String>,
    pub(crate) metrics_timer_wanted: bool,
    /// Console bytes dropped by `PUT /serial`'s rate limiter.
    serial_dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl Controller {
    /// A controller for a VM described by `resources`, to be built when it starts.
    pub fn new(resources: VmResources, options: MicroVmOptions, hooks: ControllerHooks) -> Self {
        Controller {
            resources,
            state: VmState::NotStarted,
            shell: None,
            options: Some(options),
            vm: None,
            hooks,
            listeners: Vec::new(),
            new_subscribers: Vec::new(),
            outcome: None,
            start_request: None,
            metrics_timer_wanted: false,
            serial_dropped: Arc::default(),
        }
    }

    /// A controller whose VM will be configured into the prepared `shell`.
    pub fn with_shell(mut self, shell: PreparedVm) -> Self {
        self.shell = Some(shell);
        self
    }

    /// Calls `listener` now with the current state, and on every change.
    pub fn add_state_listener(&mut self, mut listener: StateListener) {
        listener(self.state);
        self.listeners.push(listener);
    }

    pub fn state(&self) -> VmState {
        self.state
    }

    /// The validated configuration.
    pub fn resources(&self) -> &VmResources {
        &self.resources
    }

    /// The running (or paused) VM, if any.
    pub fn vm(&self) -> Option<&MicroVm> {
        self.vm.as_ref()
    }

    /// Subscribers the VMM loop must add (the VM's devices once it starts).
    pub(crate) fn take_new_subscribers(&mut self) -> Vec<Subscriber> {
        std::mem::take(&mut self.new_subscribers)
    }

    /// Whether a periodic metrics timer should be armed now (asked once, after the start).
    pub(crate) fn take_metrics_timer_wanted(&mut self) -> bool {
        std::mem::take(&mut self.metrics_timer_wanted)
    }

    /// How the VMM's work ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Ends the VMM's work from outside the action set (front ends gone, a start that must
    /// not be retried).
    pub fn finish(&mut self, outcome: Outcome) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
    }

    /// Carries out one action. `request_id` names it in every log and metrics line.
    pub fn handle(&mut self, request_id: &str, action: VmmAction) -> VmmResult {
        log::debug!("[{request_id}] {action:?}");
        let result = match &action {
            VmmAction::CreateSnapshot(params) => self.create_snapshot(request_id, params),
            VmmAction::LoadSnapshot(params) => self.load_snapshot(request_id, params),
            _ => match self.resources.apply(&action, self.state) {
                Some(answered) => answered,
                None => self.execute(request_id, &action),
            },
        };
        if let (VmmAction::ConfigureLogger(logger), Ok(_)) = (&action, &result) {
            if let Some(configure) = &mut self.hooks.configure_logger {
                configure(logger).map_err(VmmActionError::Logger)?;
            }
        }
        if let Err(e) = &result {
            log::debug!("[{request_id}] refused: {e}");
        }
        result
    }

    pub(crate) fn set_state(&mut self, state: VmState) {
        if self.state == state {
            return;
        }
        self.state = state;
        for listener in self.listeners.iter_mut() {
            listener(state);
        }
    }

    /// The work only the VMM can do; `VmResources::apply` has checked the state allows it.
    fn execute(&mut self, request_id: &str, action: &VmmAction) -> VmmResult {
        match action {
            VmmAction::StartMicroVm => self.start(request_id),
            VmmAction::Pause => {
                let vm = self.running_vm()?;
                vm.pause().map_err(|e| VmmActionError::PauseResume {
                    action: "pause",
                    reason: e.to_string(),
                })?;
                log::info!("[{request_id}] microVM paused");
                self.set_state(VmState::Paused);
                Ok(VmmData::Empty)
            }
            VmmAction::Resume => {
                let vm = self.running_vm()?;
                vm.resume().map_err(|e| VmmActionError::PauseResume {
                    action: "resume",
                    reason: e.to_string(),
                })?;
                log::info!("[{request_id}] microVM resumed");
                self.set_state(VmState::Running);
                Ok(VmmData::Empty)
            }
            VmmAction::StopMicroVm => {
                log::info!("[{request_id}] microVM stopped by the host");
                self.running_vm()?.request_stop();
                self.check_exit();
                Ok(VmmData::Empty)
            }
            VmmAction::SendCtrlAltDel => {
                let vm = self.running_vm()?;
                // Both ways a guest can hear it: the noxs page's sysctl word (the unikernel,
                // noxs-aware guests) and the keys on the i8042 keyboard (Linux, as in
                // Firecracker). Refused only when the keyboard cannot take the keys.
                vm.sysctl().post(Sysctl::PowerOff);
                vm.send_ctrl_alt_del()
                    .map_err(|e| VmmActionError::SendCtrlAltDel(e.to_string()))?;
                Ok(VmmData::Empty)
            }
            VmmAction::FlushMetrics => self.flush_metrics(request_id),
            VmmAction::UpdateBlockDevice(update) => self.update_drive(update),
            VmmAction::UpdateBalloon(update) => {
                let devices = self.running_vm()?.virtio_devices();
                compat::set_balloon_target(devices, update.amount_mib)?;
                self.resources.commit_balloon(Some(update.amount_mib), None);
                Ok(VmmData::Empty)
            }
            VmmAction::UpdateBalloonStats(update) => {
                let devices = self.running_vm()?.virtio_devices();
                let seconds = update.stats_polling_interval_s;
                compat::set_balloon_stats_interval(devices, seconds)?;
                self.resources.commit_balloon(None, Some(seconds));
                Ok(VmmData::Empty)
            }
            VmmAction::GetBalloonStats => {
                compat::balloon_stats(self.running_vm()?.virtio_devices())
            }
            VmmAction::UpdateNetworkInterface(update) => {
                compat::update_net(self.running_vm()?.virtio_devices(), update)?;
                self.resources.commit_net_update(update);
                Ok(VmmData::Empty)
            }
            other => Err(VmmActionError::internal(format!(
                "{other:?} reached the VMM unexpectedly"
            ))),
        }
    }

    fn running_vm(&self) -> Result<&MicroVm, VmmActionError> {
        self.vm
            .as_ref()
            .ok_or_else(|| VmmActionError::not_allowed("the microVM is not running"))
    }

    fn start(&mut self, request_id: &str) -> VmmResult {
        let config = self.resources.vm_config();
        let (built, spent_shell) = match self.shell.take() {
            Some(shell) => (MicroVm::configure(shell, config), true),
            None => (MicroVm::build(config), false),
        };
        let mut vm = match built {
            Ok(vm) => vm,
            // A cold build consumed nothing: the client may fix the configuration and retry.
            Err(e) if !spent_shell => return Err(VmmActionError::StartMicroVm(e.to_string())),
            Err(e) => return Err(self.start_failed(e)),
        };
        let Some(mut options) = self.options.take() else {
            return Err(VmmActionError::not_allowed(
                "cannot start the microVM: it has already been started",
            ));
        };
        let console = std::mem::replace(&mut options.console_out, Box::new(std::io::sink()));
        options.console_out =
            match compat::serial_output(config.serial.as_ref(), console, &self.serial_dropped) {
                Ok(out) => out,
                Err(e) => {
                    self.options = Some(options);
                    return Err(e);
                }
            };
        vm.attach_host(options);
        if let Err(e) = vm.start() {
            return Err(self.start_failed(e));
        }
        self.new_subscribers.extend(vm.take_subscribers());
        self.metrics_timer_wanted = config.metrics.is_some();
        self.vm = Some(vm);
        self.start_request = Some(request_id.to_string());
        log::info!("[{request_id}] microVM started");
        self.set_state(VmState::Running);
        Ok(VmmData::Empty)
    }

    fn create_snapshot(&mut self, request_id: &str, params: &SnapshotCreateParams) -> VmmResult {
        crate::snapshot_actions::create(self, request_id, params)
    }

    fn load_snapshot(&mut self, request_id: &str, params: &SnapshotLoadParams) -> VmmResult {
        crate::snapshot_actions::load(self, request_id, params)
    }

    /// A failed start that spent the prepared shell or the console hooks is final.
    pub(crate) fn start_failed(&mut self, e: MicroVmError) -> VmmActionError {
        let message = e.to_string();
        self.set_state(VmState::Failed);
        self.finish(Outcome::StartFailed(message.clone()));
        VmmActionError::StartMicroVm(message)
    }

    /// Called by the VMM loop after each round: ends the VM once something reported its end.
    pub(crate) fn check_exit(&mut self) {
        let Some(exit) = self.vm.as_ref().and_then(MicroVm::take_exit) else {
            return;
        };
        if let Some(vm) = self.vm.as_mut() {
            vm.shutdown();
        }
        log::info!("microVM ended: {exit}");
        if self.resources.vm_config().metrics.is_some() {
            let id = self.start_request.clone().unwrap_or_default();
            if let Err(e) = self.flush_metrics(&id) {
                log::error!("{e}");
            }
        }
        self.set_state(if exit.is_clean() {
            VmState::Halted
        } else {
            VmState::Failed
        });
        self.finish(Outcome::Exited(exit));
    }

    /// Drops the VM (after `shutdown`, so in the right order); the loop calls it last.
    pub(crate) fn release_vm(&mut self) {
        self.vm.take();
    }

    /// Appends one metrics line if a metrics path is configured (the periodic timer).
    pub(crate) fn flush_metrics_periodic(&mut self) {
        if self.resources.vm_config().metrics.is_none() || self.state.has_ended() {
            return;
        }
        let id = self.start_request.clone().unwrap_or_default();
        if let Err(e) = self.flush_metrics(&id) {
            log::error!("{e}");
        }
    }

    fn flush_metrics(&self, request_id: &str) -> VmmResult {
        let Some(metrics) = &self.resources.vm_config().metrics else {
            return Err(VmmActionError::bad_request(
                "cannot flush metrics: PUT /metrics first",
            ));
        };
        let devices: serde_json::Map<String, serde_json::Value> = self
            .vm
            .iter()
            .flat_map(|vm| device_counters(vm.virtio_devices()))
            .map(|(id, m)| (id, serde_json::to_value(m.snapshot()).unwrap_or_default()))
            .collect();
        let mut line = serde_json::json!({
            "utc_timestamp_ms": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            "request_id": request_id,
            "api": self.hooks.api_metrics.as_ref().map(|f| f()),
            "devices": devices,
        });
        let id = self.resources.instance_id();
        compat::extend_metrics_line(&mut line, metrics, id, &self.serial_dropped);
        append_json_line(&metrics.metrics_path, &line)
            .map(|()| VmmData::Empty)
            .map_err(|e| VmmActionError::Metrics(e.to_string()))
    }

    fn update_drive(&mut self, update: &DriveUpdate) -> VmmResult {
        let failed = |reason: String| VmmActionError::UpdateDrive {
            drive_id: update.drive_id.clone(),
            reason,
        };
        let transport = self
            .running_vm()?
            .virtio_devices()
            .iter()
            .find(|h| h.kind == "block" && h.id == update.drive_id)
            .map(|h| h.transport.clone())
            .ok_or_else(|| failed("no such drive in the running microVM".into()))?;
        swap_backing(&transport, update).map_err(failed)?;
        self.resources.commit_drive_update(update);
        Ok(VmmData::Empty)
    }
}

fn swap_backing(transport: &Arc<Mutex<MmioTransport>>, update: &DriveUpdate) -> Result<(), String> {
    let mut t = transport
        .lock()
        .map_err(|_| "drive state is poisoned".to_string())?;
    let block = t
        .device_mut::<Block>()
        .ok_or_else(|| "not a block device".to_string())?;
    if let Some(limiter) = &update.rate_limiter {
        let (bandwidth, ops) = crate::virtio_devices::buckets(Some(limiter));
        block
            .set_rate_limiter(bandwidth, ops)
            .map_err(|e| format!("cannot set the rate limiter: {e}"))?;
    }
    match &update.path_on_host {
        Some(path) => block.update_backing(path).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

/// Per-device counters by "kind:id".
fn device_counters(list: &[VirtioHandle]) -> Vec<(String, Arc<DeviceMetrics>)> {
    list.iter()
        .filter_map(|h| {
            let t = h.transport.lock().ok()?;
            Some((format!("{}:{}", h.kind, h.id), t.metrics().clone()))
        })
        .collect()
}
