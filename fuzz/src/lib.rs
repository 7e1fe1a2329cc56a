//! Shared pieces of the guest-facing fuzz targets (fuzz_targets/): a byte reader for the
//! fuzzer's input, a guest-side virtio-mmio driver over a small guest-memory image with the
//! invariants every device must keep, and the host ends of the net and vsock backends.
//!
//! The targets drive the real device code in-process, without KVM: the transport's registers
//! through `vm_device::MutDeviceMmio`, queue notifications and backend readiness through a real
//! `event_manager::EventManager`, exactly as the VMM thread runs them.

pub mod input;
pub mod net_host;
pub mod seeds;
pub mod virtq;
pub mod vsock_host;
