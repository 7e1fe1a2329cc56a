//! What a VM state file holds: the configuration that reopens the VM's host resources, the
//! KVM state of every vCPU and of the VM, and every device's state. Guest memory is not in
//! it: it lives in its own file (`memory_file`).

use super::kvm_state::{VcpuState, VmKvmState};
use serde::{Deserialize, Serialize};
use wisp_devices::i8042::I8042Snapshot;
use wisp_devices::serial::SerialSnapshot;
use wisp_devices::virtio::{BalloonState, TransportState};

/// A whole microVM, minus its memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct MicroVmState {
    /// The VM's configuration as JSON (`VmConfig`: machine size, drives' paths, tap names,
    /// vsock socket, ...). JSON because the configuration's serde attributes (optional and
    /// defaulted fields) need a self-describing format; it is validated again on restore.
    pub config_json: String,
    /// Guest RAM in MiB; the memory file must hold exactly this much.
    pub mem_mib: u32,
    /// One per vCPU, in id order.
    pub vcpus: Vec<VcpuState>,
    pub vm: VmKvmState,
    pub devices: DevicesState,
}

/// Every device's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: SerialSnapshot,
    pub i8042: I8042Snapshot,
    pub acpi_pm: Vec<u8>,
    /// pvpanic: the guest reported a panic.
    pub panicked: bool,
    /// The noxs page's sysctl word (a host request the guest has not acknowledged yet).
    pub sysctl: u32,
    /// The noxs page's VM generation when the snapshot was taken.
    pub generation: u64,
    /// The virtio devices in attach order (the order the configuration recreates).
    pub virtio: Vec<VirtioState>,
}

/// One virtio device: which configuration entry it is and its transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VirtioState {
    /// "block", "net", "vsock", "rng", "balloon".
    pub kind: String,
    /// Drive or interface id.
    pub id: String,
    pub transport: TransportState,
    /// A balloon's own state (the other devices keep none beyond their transport).
    pub balloon: Option<BalloonState>,
}
