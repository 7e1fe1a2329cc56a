//! virtio over MMIO (virtio 1.2 §4.2): the transport and the block, net, vsock, rng and
//! vhost-user-fs devices.
//!
//! # Contract with the VMM
//!
//! One [`MmioTransport`] per 4 KiB MMIO slot, wrapping one device:
//!
//! ```ignore
//! let block = Block::new(path, read_only, Some("disk0".into()))?;       // or Net / Vsock / Rng
//! let transport = Arc::new(Mutex::new(MmioTransport::new(mem.clone(), Box::new(block))?));
//! // 1. MMIO bus: `Mutex<MmioTransport>` implements `vm_device::DeviceMmio` (via
//! //    `MutDeviceMmio`), so register `transport.clone()` for [base, base + 0x1000).
//! // 2. Notifications: for (i, evt) in transport.queue_events().enumerate(), register `evt`
//! //    as a KVM ioeventfd at `base + REG_QUEUE_NOTIFY` (0x50), 4 bytes, datamatch = i as u32.
//! //    (Without ioeventfds a QueueNotify write reaches `mmio_write`, which rings the same fd.)
//! // 3. Interrupt: register `transport.interrupt_event()` as a KVM irqfd on the slot's GSI.
//! // 4. Event loop: `event_manager.add_subscriber(transport.clone())` — `Arc<Mutex<T>>` is a
//! //    `MutEventSubscriber` through event-manager's blanket impls; `init` registers the queue
//! //    eventfds and a control eventfd; backend fds (tap, vsock sockets) are registered by the
//! //    device when the driver sets DRIVER_OK and removed on reset.
//! // 5. Kernel command line: `virtio_mmio.device=4K@0x<base>:<gsi>`.
//! ```
//!
//! vCPU threads only touch registers under the mutex; all backend I/O happens on the VMM
//! thread inside `process`. Sockets and the tap are non-blocking (a guest connect to a host
//! port uses a non-blocking connect too); block I/O is synchronous pread/pwrite/fdatasync, at
//! most 32 requests and 1 MiB per event before the lock is released and the queue re-signalled
//! ([`QueueContext::again`]; a larger request stays in flight), so a vCPU reading a register
//! or the API waiting for the loop waits for at most one bounded pass. Block, net and rng can
//! carry a [`crate::rate_limiter::RateLimiter`] whose timerfd the device registers as a backend
//! fd.
//! A status write never runs backend work on the vCPU: DRIVER_OK (activation) and reset (0)
//! are finished on the event loop through an internal control EventFd.
//!
//! Interrupts: devices set InterruptStatus bit 0 (used buffer) or bit 1 (config change, e.g.
//! [`Block::update_backing`]) and write the interrupt EventFd.
//!
//! Hostile guests: every descriptor chain goes through [`chain::pop_chain`] (bounds, order,
//! termination); a malformed request fails alone (IOERR / dropped), is returned to the used
//! ring, and counts in the device's [`DeviceMetrics`] (`transport.metrics().snapshot()` is
//! serde-serializable).

pub mod balloon;
pub mod block;
pub mod chain;
pub mod device;
pub mod metrics;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod tap;
pub mod vhost_user_fs;
pub mod vsock;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod test_driver;

pub use balloon::{Balloon, BalloonState};
pub use block::Block;
pub use device::{Interrupt, QueueContext, VirtioDevice};
pub use metrics::{DeviceMetrics, MetricsSnapshot};
pub use mmio::{MmioTransport, TransportState, MMIO_SLOT_SIZE, REG_QUEUE_NOTIFY};
pub use net::Net;
pub use rng::Rng;
pub use vhost_user_fs::VhostUserFs;
pub use vsock::Vsock;

/// Feature bit: compliance with virtio 1.0+ (virtio 1.2 §6); mandatory on the modern transport.
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// virtio device IDs (virtio 1.2 §5).
pub mod device_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Memory balloon.
    pub const BALLOON: u32 = 5;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device (virtio-fs, served by a vhost-user backend).
    pub const FS: u32 = 26;
}
