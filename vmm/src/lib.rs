//! The Wisp VMM core: a KVM VM with guest memory, vCPUs, x86_64 boot, the device manager, the
//! one VM controller every front end feeds, and the VMM thread's event loop (docs/design.md §2).
//! A front end builds a `Controller` (with a prepared shell or not), puts it in a `VmmLoop`,
//! adds its own subscriber and sends `VmmAction`s; `VmmLoop::run` serves until the VM ends.

pub mod controller;
pub mod controller_compat;
pub mod device_manager;
pub mod event_loop;
pub mod exit;
pub mod host_kvm;
pub mod layout;
pub mod legacy_devices;
pub mod loader;
pub mod memory;
pub mod memory_backing;
pub mod memory_shared;
pub mod microvm;
pub mod prepared;
pub mod snapshot;
mod snapshot_actions;
pub mod vcpu;
pub mod vcpu_control;
pub mod vcpu_thread;
pub mod virtio_devices;
pub mod vm;
pub mod vmm_loop;
pub mod x86_64;

pub use controller::{Controller, ControllerHooks, Outcome};
pub use exit::VmExit;
pub use microvm::{MicroVm, MicroVmError, MicroVmOptions, Subscriber};
pub use prepared::{PrepareError, PreparedVm};
pub use vmm_loop::{ApiFrontEnd, SharedController, VmmLoop};
