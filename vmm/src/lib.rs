//! The Wisp VMM core: a KVM VM with guest memory, vCPUs, x86_64 boot, the device manager and
//! the VMM thread's event loop. `MicroVm::build` turns a validated `VmConfig` into a VM ready
//! to run; `MicroVm::run` starts the vCPUs and serves devices until the guest stops.

pub mod device_manager;
pub mod event_loop;
pub mod exit;
pub mod host_kvm;
pub mod layout;
pub mod legacy_devices;
pub mod loader;
pub mod memory;
pub mod microvm;
pub mod prepared;
pub mod vcpu;
pub mod vcpu_control;
pub mod virtio_devices;
pub mod vm;
pub mod x86_64;

pub use exit::VmExit;
pub use microvm::{MicroVm, MicroVmError, MicroVmOptions, Subscriber, VmController};
pub use prepared::{PrepareError, PreparedVm};
