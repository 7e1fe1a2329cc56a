//! The typed boundary between the front ends (REST server, control page, config file) and the
//! VMM thread: a `VmmAction` goes in, a `Result<VmmData, VmmActionError>` comes back. Data, not
//! closures, so a request can be logged, fuzzed and produced by more than one front end
//! (Dragonball's `VmmAction`, see STYLE.md).

use crate::config::{
    Balloon, BalloonStats, BalloonStatsUpdate, BalloonUpdate, BootSource, Drive, DriveUpdate,
    Entropy, Fs, Logger, MachineConfig, MachineConfigUpdate, Metrics, NetworkInterface,
    NetworkInterfaceUpdate, Serial, VmConfig, Vsock,
};
use crate::snapshot::{SnapshotCreateParams, SnapshotLoadParams};
use serde::{Deserialize, Serialize};

/// Name reported as `app_name` by `GET /`.
pub const APP_NAME: &str = "Wisp";
/// Version reported by `GET /` and `GET /version`.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One request for the VMM thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmAction {
    /// `GET /`.
    GetVmInfo,
    /// `GET /vm/config`.
    GetVmConfig,
    /// `GET /version`.
    GetVersion,
    /// `PUT /boot-source`.
    ConfigureBootSource(BootSource),
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /drives/{id}`.
    InsertBlockDevice(Drive),
    /// `PATCH /drives/{id}`.
    UpdateBlockDevice(DriveUpdate),
    /// `PUT /network-interfaces/{id}`.
    InsertNetworkDevice(NetworkInterface),
    /// `PUT /vsock`.
    SetVsock(Vsock),
    /// `PUT /entropy`.
    SetEntropy(Entropy),
    /// `PUT /fs/{id}`.
    InsertFs(Fs),
    /// `PUT /logger`.
    ConfigureLogger(Logger),
    /// `PUT /metrics`.
    ConfigureMetrics(Metrics),
    /// `PUT /actions` `InstanceStart`.
    StartMicroVm,
    /// `PUT /actions` `SendCtrlAltDel`.
    SendCtrlAltDel,
    /// `PUT /actions` `FlushMetrics`.
    FlushMetrics,
    /// `PATCH /vm` `{"state": "Paused"}`.
    Pause,
    /// `PATCH /vm` `{"state": "Resumed"}`.
    Resume,
    /// The whole configuration at once, before boot (`--config-file`, `wisp run`, a control
    /// page Create): validated as one document, replacing whatever was configured.
    ConfigureAll(Box<VmConfig>),
    /// End the VM from the host (control page Destroy).
    StopMicroVm,
    // Firecracker-compatibility resources (issue 19).
    /// `PATCH /network-interfaces/{id}`.
    UpdateNetworkInterface(NetworkInterfaceUpdate),
    /// `PUT /balloon`.
    SetBalloon(Balloon),
    /// `PATCH /balloon`.
    UpdateBalloon(BalloonUpdate),
    /// `GET /balloon`.
    GetBalloon,
    /// `GET /balloon/statistics`.
    GetBalloonStats,
    /// `PATCH /balloon/statistics`.
    UpdateBalloonStats(BalloonStatsUpdate),
    /// `PUT /serial`.
    SetSerial(Serial),
    /// `PUT /snapshot/create` (a paused VM).
    CreateSnapshot(SnapshotCreateParams),
    /// `PUT /snapshot/load` (a VMM with nothing configured, or a prepared shell).
    LoadSnapshot(SnapshotLoadParams),
}

impl VmmAction {
    /// True for actions that only read state; they are allowed in every state.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            VmmAction::GetVmInfo
                | VmmAction::GetVmConfig
                | VmmAction::GetVersion
                | VmmAction::GetMachineConfig
                | VmmAction::GetBalloon
                | VmmAction::GetBalloonStats
        )
    }
}

/// Lifecycle state of the microVM, as `GET /` reports it (Firecracker's spellings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    #[default]
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
    /// The guest has ended cleanly (power-off, reset, or stopped by the host).
    Halted,
    /// The guest ended badly (panic, triple fault, KVM error) or the VM could not start.
    Failed,
}

impl VmState {
    /// Whether the VM has ended (it never runs again).
    pub fn has_ended(self) -> bool {
        matches!(self, VmState::Halted | VmState::Failed)
    }
}

/// `GET /` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub state: VmState,
    pub vmm_version: String,
    pub app_name: String,
}

/// `GET /version` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub wisp_version: String,
}

/// What a successful action returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmData {
    /// Success without a body (HTTP 204).
    Empty,
    InstanceInfo(InstanceInfo),
    VmConfig(Box<VmConfig>),
    MachineConfig(MachineConfig),
    Version(VersionInfo),
    Balloon(Balloon),
    BalloonStats(BalloonStats),
}

/// How an action failed, which decides the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is invalid (HTTP 400).
    BadRequest,
    /// Valid, but not in the microVM's current state (HTTP 400, like Firecracker).
    NotAllowedInState,
    /// The VMM failed to carry out a valid request (HTTP 500).
    Internal,
}

/// Why an action failed, typed to the edge: the REST layer maps `kind()` to a status and the
/// message to `fault_message`; the control page and the CLI print it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VmmActionError {
    /// The request itself is invalid (a configuration rule, a missing file, a bad value).
    #[error("{0}")]
    InvalidRequest(String),
    /// Valid, but not in the microVM's current state.
    #[error("{0}")]
    NotAllowed(String),
    /// InstanceStart failed: the VM could not be built or its vCPUs started.
    #[error("cannot start the microVM: {0}")]
    StartMicroVm(String),
    /// The vCPUs did not all acknowledge a pause or resume.
    #[error("cannot {action} the microVM: {reason}")]
    PauseResume {
        action: &'static str,
        reason: String,
    },
    /// The keyboard cannot take Ctrl-Alt-Del now.
    #[error("Ctrl-Alt-Del not delivered: {0}")]
    SendCtrlAltDel(String),
    /// A drive's backing file could not be swapped after boot.
    #[error("cannot update drive `{drive_id}`: {reason}")]
    UpdateDrive { drive_id: String, reason: String },
    /// Metrics could not be written.
    #[error("cannot write metrics: {0}")]
    Metrics(String),
    /// The logger could not be (re)configured.
    #[error("cannot configure the logger: {0}")]
    Logger(String),
    /// A snapshot could not be written.
    #[error("cannot create the snapshot: {0}")]
    CreateSnapshot(String),
    /// A snapshot could not be loaded; nothing was changed.
    #[error("cannot load the snapshot: {0}")]
    LoadSnapshot(String),
    /// The VMM thread is gone (the VM ended and the process is exiting).
    #[error("the VMM thread is not running")]
    VmmGone,
    /// Any other failure inside the VMM; the message names what failed and why.
    #[error("{0}")]
    Internal(String),
}

impl VmmActionError {
    /// An invalid request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        VmmActionError::InvalidRequest(message.into())
    }

    /// A valid request that the current state does not allow.
    pub fn not_allowed(message: impl Into<String>) -> Self {
        VmmActionError::NotAllowed(message.into())
    }

    /// A failure inside the VMM; the message should name what failed and why.
    pub fn internal(message: impl Into<String>) -> Self {
        VmmActionError::Internal(message.into())
    }

    /// How the failure is reported: Firecracker answers 400 for bad input, refused states
    /// and failed starts, 500 for the VMM's own failures.
    pub fn kind(&self) -> ErrorKind {
        use VmmActionError as E;
        match self {
            E::InvalidRequest(_)
            | E::StartMicroVm(_)
            | E::SendCtrlAltDel(_)
            | E::UpdateDrive { .. }
            | E::Logger(_)
            | E::CreateSnapshot(_)
            | E::LoadSnapshot(_) => ErrorKind::BadRequest,
            E::NotAllowed(_) => ErrorKind::NotAllowedInState,
            E::PauseResume { .. } | E::Metrics(_) | E::VmmGone | E::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_state_uses_firecracker_spellings() {
        assert_eq!(
            serde_json::to_string(&VmState::NotStarted).unwrap(),
            "\"Not started\""
        );
        assert_eq!(
            serde_json::to_string(&VmState::Running).unwrap(),
            "\"Running\""
        );
    }

    #[test]
    fn only_getters_are_read_only() {
        assert!(VmmAction::GetVmConfig.is_read_only());
        assert!(!VmmAction::StartMicroVm.is_read_only());
        assert!(!VmmAction::SetEntropy(Entropy::default()).is_read_only());
    }
}
