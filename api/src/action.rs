//! The typed boundary between the front ends (REST server, control page, config file) and the
//! VMM thread: a `VmmAction` goes in, a `Result<VmmData, VmmActionError>` comes back. Data, not
//! closures, so a request can be logged, fuzzed and produced by more than one front end
//! (Dragonball's `VmmAction`, see STYLE.md).

use crate::config::{
    BootSource, Drive, DriveUpdate, Entropy, Logger, MachineConfig, MachineConfigUpdate, Metrics,
    NetworkInterface, VmConfig, Vsock,
};
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
    /// The guest has ended (power-off, reset, or a fatal exit); the process is about to exit.
    Halted,
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
    VmConfig(VmConfig),
    MachineConfig(MachineConfig),
    Version(VersionInfo),
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

/// A failed action: a kind and a message for `fault_message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VmmActionError {
    pub kind: ErrorKind,
    pub message: String,
}

impl VmmActionError {
    /// An invalid request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        VmmActionError {
            kind: ErrorKind::BadRequest,
            message: message.into(),
        }
    }

    /// A valid request that the current state does not allow.
    pub fn not_allowed(message: impl Into<String>) -> Self {
        VmmActionError {
            kind: ErrorKind::NotAllowedInState,
            message: message.into(),
        }
    }

    /// A failure inside the VMM; the message should name what failed and why.
    pub fn internal(message: impl Into<String>) -> Self {
        VmmActionError {
            kind: ErrorKind::Internal,
            message: message.into(),
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
        assert!(!VmmAction::SetEntropy(Entropy {}).is_read_only());
    }
}
