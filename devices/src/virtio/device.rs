//! The contract between the virtio-mmio transport and a virtio device model.

use std::any::Any;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events};
use log::warn;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::DeviceMetrics;

/// InterruptStatus bit 0: "the device used a buffer in at least one of the active virtual
/// queues" (virtio 1.2 §4.2.2, table 4.1).
pub const INT_USED_RING: u32 = 1;
/// InterruptStatus bit 1: "the configuration of the device has changed".
pub const INT_CONFIG_CHANGE: u32 = 2;

/// The device's interrupt line as seen from the host: the InterruptStatus register plus the
/// EventFd the VMM turns into a KVM irqfd (edge: KVM pulses the GSI on each write).
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    config_generation: AtomicU32,
    evt: EventFd,
    metrics: Arc<DeviceMetrics>,
}

impl Interrupt {
    pub(crate) fn new(metrics: Arc<DeviceMetrics>) -> std::io::Result<Self> {
        Ok(Interrupt {
            status: AtomicU32::new(0),
            config_generation: AtomicU32::new(0),
            evt: EventFd::new(EFD_NONBLOCK)?,
            metrics,
        })
    }

    /// The EventFd the VMM registers as an irqfd.
    pub fn event(&self) -> &EventFd {
        &self.evt
    }

    /// Tell the driver that used buffers are waiting.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// Tell the driver that the device configuration space changed (virtio 1.2 §2.5.1: the
    /// configuration generation changes with it, so a driver re-reads consistently).
    pub fn signal_config_change(&self) {
        self.config_generation.fetch_add(1, Ordering::SeqCst);
        self.raise(INT_CONFIG_CHANGE);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.metrics.interrupt();
        if let Err(e) = self.evt.write(1) {
            // Only EAGAIN is possible (counter saturated): the guest already has an interrupt
            // pending, so nothing is lost.
            warn!("virtio: cannot write interrupt eventfd: {e}");
        }
    }

    pub(crate) fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub(crate) fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub(crate) fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// A restored transport's InterruptStatus and configuration generation. A pending bit is
    /// raised again, so the restored guest hears about it (KVM's irqfd is edge-triggered).
    pub(crate) fn restore(&self, status: u32, config_generation: u32) {
        self.config_generation
            .store(config_generation, Ordering::SeqCst);
        self.status.store(0, Ordering::SeqCst);
        if status != 0 {
            self.raise(status);
        }
    }
}

/// What a device sees while it processes an event: guest memory, its queues (only those the
/// driver made ready are usable) and its interrupt.
pub struct QueueContext<'a> {
    /// Guest memory; every descriptor is checked against it.
    pub mem: &'a GuestMemoryMmap,
    /// The device's virtqueues, indexed as in the device's section of the spec.
    pub queues: &'a mut [Queue],
    /// The interrupt to raise after adding used buffers.
    pub interrupt: &'a Arc<Interrupt>,
    /// Set by a device that stopped early to bound the time it holds the transport lock
    /// (vCPUs wait on it for register accesses); the transport re-signals the queue so the
    /// event loop comes back to it after other work.
    pub again: bool,
}

/// A virtio device model behind an [`super::MmioTransport`].
///
/// All methods run on the VMM thread (event loop) or on a vCPU thread with the transport's
/// mutex held, never concurrently.
pub trait VirtioDevice: Send + Any {
    /// Device ID (virtio 1.2 §5: 1 net, 2 block, 4 entropy, 19 socket).
    fn device_type(&self) -> u32;

    /// Maximum size of each virtqueue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers (VIRTIO_F_VERSION_1 included).
    fn features(&self) -> u64;

    /// The driver's accepted features, once it sets FEATURES_OK (a subset of `features()`).
    fn ack_features(&mut self, _features: u64) {}

    /// The device configuration space (virtio 1.2 §4.2.2 offset 0x100), little-endian.
    fn config_space(&self) -> Vec<u8>;

    /// A driver write to the configuration space; most devices have nothing writable.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        crate::guest_log!(
            log::Level::Warn,
            Some(&**self.metrics()),
            "virtio: ignored {}-byte config write at {offset:#x} (read-only config)",
            data.len()
        );
    }

    /// The driver set DRIVER_OK: start the backend (register its fds with `ops`).
    fn activate(&mut self, ctx: &mut QueueContext, ops: &mut EventOps) -> Result<(), String>;

    /// The driver reset the device: drop backend state and deregister fds added to `ops`.
    fn reset(&mut self, ops: &mut EventOps);

    /// The driver notified queue `index`.
    fn process_queue(&mut self, index: usize, ctx: &mut QueueContext, ops: &mut EventOps);

    /// A backend fd the device registered became ready.
    fn process_backend(&mut self, _events: Events, _ctx: &mut QueueContext, _ops: &mut EventOps) {}

    /// The device's counters.
    fn metrics(&self) -> &Arc<DeviceMetrics>;

    /// For the VMM to reach a concrete device (e.g. `Block::update_backing`).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}
