//! The virtio-mmio transport, version 2 ("modern"), virtio 1.2 §4.2.2.
//!
//! Registers are read and written by vCPU threads through the VMM's MMIO bus
//! (`vm_device::MutDeviceMmio`); queue notifications and backend readiness are handled on the
//! VMM thread (`event_manager::MutEventSubscriber`). The VMM keeps the transport in an
//! `Arc<Mutex<MmioTransport>>` and gives that to both.
//!
//! Activation and reset of the backend happen on the event loop, not on the vCPU thread that
//! wrote the status register: the write only records the new state and rings `control_evt`,
//! so a vCPU never waits for backend work and backend fds are (de)registered where the
//! `EventOps` live.

use std::num::Wrapping;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};
use thiserror::Error;
use virtio_queue::{Queue, QueueT};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{Interrupt, QueueContext, VirtioDevice};
use super::metrics::DeviceMetrics;
use super::VIRTIO_F_VERSION_1;

#[path = "mmio_state.rs"]
mod state;
pub use state::{QueueSnapshot, RestoreError, TransportState};

/// "virt" in little-endian (§4.2.2 MagicValue).
const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (non-legacy) register layout.
const MMIO_VERSION: u32 = 2;
/// Reported VendorID: "WISP" has no meaning to drivers; any value is allowed.
const VENDOR_ID: u32 = 0x5053_4957;

// Register offsets, virtio 1.2 §4.2.2 table 4.1.
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
/// QueueNotify; the VMM registers each queue's EventFd as an ioeventfd here (datamatch = index).
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Device-specific configuration space starts here.
const CONFIG_SPACE: u64 = 0x100;
// Queue configuration registers whose last write was refused (`MmioTransport::queue_bad`).
const BAD_SIZE: u8 = 1;
const BAD_DESC: u8 = 2;
const BAD_AVAIL: u8 = 4;
const BAD_USED: u8 = 8;

/// Size of an MMIO slot; offsets beyond it are not ours.
pub const MMIO_SLOT_SIZE: u64 = 0x1000;

// Device status bits, virtio 1.2 §2.1.
/// Guest OS found the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Guest OS knows how to drive it.
pub const STATUS_DRIVER: u32 = 2;
/// Driver is ready.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Feature negotiation done.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Device hit an error it cannot recover from without a reset.
pub const STATUS_NEEDS_RESET: u32 = 64;
/// Driver gave up on the device.
pub const STATUS_FAILED: u32 = 128;

/// Errors creating a transport.
#[derive(Debug, Error)]
pub enum Error {
    /// An EventFd could not be created.
    #[error("cannot create virtio-mmio eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// The device asked for a queue size virtio-queue rejects (0, not a power of two, > 32768).
    #[error("virtio device type {device_type} queue {index}: invalid maximum size {size}")]
    QueueSize {
        /// Device type.
        device_type: u32,
        /// Queue index.
        index: usize,
        /// Offending size.
        size: u16,
    },
    /// The device offers no VIRTIO_F_VERSION_1, which a modern transport needs.
    #[error("virtio device type {0} does not offer VIRTIO_F_VERSION_1")]
    NotModern(u32),
}

/// A virtio device behind a virtio-mmio v2 register block.
pub struct MmioTransport {
    mem: GuestMemoryMmap,
    device: Box<dyn VirtioDevice>,
    device_type: u32,
    queues: Vec<Queue>,
    /// Per queue, the `BAD_*` registers whose last write virtio-queue refused (size 0, not a
    /// power of two, misaligned ring): QueueReady refuses such a queue.
    queue_bad: Vec<u8>,
    queue_evts: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    control_evt: EventFd,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    /// The backend was activated on the event loop (and not yet reset there).
    activated: bool,
    /// A driver reset happened that the event loop has not yet passed to an activated device.
    reset_pending: bool,
    metrics: Arc<DeviceMetrics>,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Wraps `device`; queues start unconfigured, status 0.
    pub fn new(mem: GuestMemoryMmap, device: Box<dyn VirtioDevice>) -> Result<Self, Error> {
        let device_type = device.device_type();
        if device.features() & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(Error::NotModern(device_type));
        }
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| Error::QueueSize {
                device_type,
                index,
                size,
            })?);
            queue_evts.push(EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?);
        }
        let metrics = device.metrics().clone();
        let interrupt = Arc::new(Interrupt::new(metrics.clone()).map_err(Error::EventFd)?);
        Ok(MmioTransport {
            mem,
            device,
            device_type,
            queue_bad: vec![0; queues.len()],
            queues,
            queue_evts,
            interrupt,
            control_evt: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            activated: false,
            reset_pending: false,
            metrics,
        })
    }

    /// One EventFd per queue; the VMM registers each as a KVM ioeventfd at
    /// `base + REG_QUEUE_NOTIFY` with `datamatch` = the queue index (u32).
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The interrupt EventFd; the VMM registers it as a KVM irqfd on the slot's GSI.
    pub fn interrupt_event(&self) -> &EventFd {
        self.interrupt.event()
    }

    /// The virtio device ID (virtio 1.2 §5).
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The device's counters (for the VMM's metrics flush).
    pub fn metrics(&self) -> &Arc<DeviceMetrics> {
        &self.metrics
    }

    /// The device status register as the driver last left it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The concrete device, e.g. `transport.device_mut::<Block>()` for `update_backing`.
    pub fn device_mut<T: VirtioDevice>(&mut self) -> Option<&mut T> {
        self.device.as_any_mut().downcast_mut::<T>()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device_type,
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            // No shared memory regions: length -1 means "does not exist" (§4.2.2).
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                crate::guest_log!(
                    log::Level::Warn,
                    Some(&*self.metrics),
                    "virtio-mmio (type {}): read of unknown/write-only register {offset:#x}",
                    self.device_type
                );
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        let configuring = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => {
                // Only between DRIVER and FEATURES_OK (virtio 1.2 §3.1.1 steps 3-5).
                if self.status & STATUS_DRIVER == 0 || self.status & STATUS_FEATURES_OK != 0 {
                    return self.guest_error("DriverFeatures write outside feature negotiation");
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => self.guest_error("DriverFeatures write with selector > 1"),
                }
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM
            | REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH => self.write_queue_register(offset, value, configuring),
            REG_QUEUE_READY => self.write_queue_ready(value),
            REG_QUEUE_NOTIFY => {
                // Reached only when the VMM did not install the ioeventfd (or in tests):
                // forward to the same EventFd so there is one notification path.
                match self.queue_evts.get(value as usize) {
                    Some(evt) => {
                        if let Err(e) = evt.write(1) {
                            warn!("virtio-mmio: cannot signal queue {value}: {e}");
                        }
                    }
                    None => self.guest_error("QueueNotify for a queue that does not exist"),
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            REG_SHM_SEL => {}
            _ => self.guest_error("write to unknown or read-only register"),
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32, configuring: bool) {
        let index = self.queue_sel as usize;
        let Some(queue) = self.queues.get_mut(index) else {
            return self.guest_error("queue register write with an invalid QueueSel");
        };
        // §4.2.2.3: the driver must not change a queue while it is ready.
        if queue.ready() || !configuring {
            return self.guest_error("queue register write while the queue is ready");
        }
        match offset {
            REG_QUEUE_NUM => {
                let valid = u16::try_from(value).is_ok_and(|size| queue.try_set_size(size).is_ok());
                if valid {
                    self.queue_bad[index] &= !BAD_SIZE;
                } else {
                    self.queue_bad[index] |= BAD_SIZE;
                    self.guest_error("QueueNum is 0, not a power of two or above QueueNumMax");
                }
            }
            _ => {
                // virtio-queue ignores a misaligned ring address (§2.7: 16/2/4-byte alignment)
                // and keeps the old one; notice that, so QueueReady can refuse the queue
                // instead of running it on addresses the driver never gave.
                let (bit, before) = match offset {
                    REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH => (BAD_DESC, queue.desc_table()),
                    REG_QUEUE_DRIVER_LOW | REG_QUEUE_DRIVER_HIGH => (BAD_AVAIL, queue.avail_ring()),
                    _ => (BAD_USED, queue.used_ring()),
                };
                let high = matches!(
                    offset,
                    REG_QUEUE_DESC_HIGH | REG_QUEUE_DRIVER_HIGH | REG_QUEUE_DEVICE_HIGH
                );
                let (low_half, high_half) = if high {
                    (None, Some(value))
                } else {
                    (Some(value), None)
                };
                let expected = if high {
                    (before & 0xffff_ffff) | (u64::from(value) << 32)
                } else {
                    (before & !0xffff_ffff) | u64::from(value)
                };
                let after = match bit {
                    BAD_DESC => {
                        queue.set_desc_table_address(low_half, high_half);
                        queue.desc_table()
                    }
                    BAD_AVAIL => {
                        queue.set_avail_ring_address(low_half, high_half);
                        queue.avail_ring()
                    }
                    _ => {
                        queue.set_used_ring_address(low_half, high_half);
                        queue.used_ring()
                    }
                };
                if after == expected {
                    self.queue_bad[index] &= !bit;
                } else {
                    self.queue_bad[index] |= bit;
                    self.guest_error("misaligned virtqueue ring address");
                }
            }
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        let index = self.queue_sel as usize;
        let config_ok = self.queue_bad.get(index) == Some(&0);
        let mem = self.mem.clone();
        let Some(queue) = self.selected_queue() else {
            return self.guest_error("QueueReady write with an invalid QueueSel");
        };
        if value != 1 {
            queue.set_ready(false);
            return;
        }
        // Refuse a queue whose size or rings are unusable: the driver reads QueueReady back as
        // 0 and the device never walks those rings.
        queue.set_ready(true);
        if !config_ok || !queue.is_valid(&mem) {
            queue.set_ready(false);
            self.guest_error("QueueReady with an invalid size or rings outside guest memory");
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // Bits only ever get added until a reset (§2.1.2), in the order of §3.1.1.
        if value & self.status != self.status {
            return self.guest_error("status write clears bits without a reset");
        }
        let new = value & !self.status;
        let after = value;
        let ordered = (new & STATUS_DRIVER == 0 || after & STATUS_ACKNOWLEDGE != 0)
            && (new & STATUS_FEATURES_OK == 0 || after & STATUS_DRIVER != 0)
            && (new & STATUS_DRIVER_OK == 0 || after & STATUS_FEATURES_OK != 0)
            && new & STATUS_NEEDS_RESET == 0;
        if !ordered {
            return self.guest_error("status bits set out of order");
        }
        let mut accepted = value;
        if new & STATUS_FEATURES_OK != 0 {
            let offered = self.device.features();
            if self.driver_features & !offered != 0
                || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0
            {
                // §3.1.1 step 6: leaving FEATURES_OK clear tells the driver we refuse.
                accepted &= !STATUS_FEATURES_OK;
                if new & STATUS_DRIVER_OK != 0 {
                    accepted &= !STATUS_DRIVER_OK;
                }
                crate::guest_log!(
                    log::Level::Warn,
                    Some(&*self.metrics),
                    "virtio-mmio (type {}): refusing features {:#x} (offered {offered:#x})",
                    self.device_type,
                    self.driver_features
                );
            } else {
                self.device.ack_features(self.driver_features);
            }
        }
        self.status = accepted;
        if new & STATUS_DRIVER_OK != 0 && accepted & STATUS_DRIVER_OK != 0 {
            self.kick_control();
        }
    }

    /// Device reset (§2.4): registers and queues go back to their initial state now; the
    /// backend is reset on the event loop.
    fn reset(&mut self) {
        debug!("virtio-mmio (type {}): reset", self.device_type);
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_bad.iter_mut().for_each(|v| *v = 0);
        self.interrupt.reset();
        self.reset_pending = true;
        self.kick_control();
    }

    fn kick_control(&self) {
        if let Err(e) = self.control_evt.write(1) {
            error!("virtio-mmio: cannot signal the event loop: {e}");
        }
    }

    fn guest_error(&self, what: &str) {
        crate::guest_log!(
            log::Level::Warn,
            Some(&*self.metrics),
            "virtio-mmio (type {}): guest error: {what}",
            self.device_type
        );
        self.metrics.error();
    }

    /// Runs on the event loop after `control_evt`: finish a reset, then activate if DRIVER_OK.
    fn process_control(&mut self, ops: &mut EventOps) {
        let _ = self.control_evt.read();
        if self.reset_pending {
            self.reset_pending = false;
            if self.activated {
                self.device.reset(ops);
                self.activated = false;
            }
        }
        let wants = self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_FAILED == 0;
        if !wants || self.activated {
            return;
        }
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &self.interrupt,
            again: false,
        };
        match self.device.activate(&mut ctx, ops) {
            Ok(()) => {
                self.activated = true;
                // Buffers the driver queued before we got here got no notification we acted on.
                for index in 0..self.queues.len() {
                    self.run_queue(index, ops);
                }
            }
            Err(e) => {
                error!(
                    "virtio-mmio (type {}): activation failed: {e}",
                    self.device_type
                );
                self.status |= STATUS_NEEDS_RESET;
                self.interrupt.signal_config_change();
            }
        }
    }

    fn run_queue(&mut self, index: usize, ops: &mut EventOps) {
        if !self.activated || !self.queues.get(index).is_some_and(|q| q.ready()) {
            return;
        }
        let mut ctx = QueueContext {
            mem: &self.mem,
            queues: &mut self.queues,
            interrupt: &self.interrupt,
            again: false,
        };
        self.device.process_queue(index, &mut ctx, ops);
        let again = ctx.again;
        if self
            .queues
            .get(index)
            .is_some_and(|q| avail_index_broken(q, &self.mem))
        {
            // The driver published more entries than the queue holds: virtio-queue refuses to
            // walk the ring from now on. Say so (§2.1.2 DEVICE_NEEDS_RESET) instead of going
            // silent; the driver recovers by resetting the device.
            if self.status & STATUS_NEEDS_RESET == 0 {
                self.status |= STATUS_NEEDS_RESET;
                self.guest_error("available ring index ran past the queue size");
                self.interrupt.signal_config_change();
            }
            return;
        }
        if again {
            if let Some(evt) = self.queue_evts.get(index) {
                if let Err(e) = evt.write(1) {
                    warn!("virtio-mmio: cannot re-signal queue {index}: {e}");
                }
            }
        }
    }
}

/// Whether the available index is unreadable or further ahead than the queue can hold.
fn avail_index_broken(queue: &Queue, mem: &GuestMemoryMmap) -> bool {
    match queue.avail_idx(mem, Ordering::Acquire) {
        Ok(idx) => (idx - Wrapping(queue.next_avail())).0 > queue.size(),
        Err(_) => true,
    }
}

impl MutDeviceMmio for MmioTransport {
    fn mmio_read(&mut self, _base: MmioAddress, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            let config = self.device.config_space();
            let start = (offset - CONFIG_SPACE) as usize;
            match config.get(start..start.saturating_add(data.len())) {
                Some(bytes) => data.copy_from_slice(bytes),
                None => {
                    data.fill(0);
                    self.guest_error("config space read out of range");
                }
            }
            return;
        }
        // Registers below 0x100 are 32-bit, naturally aligned (§4.2.2.2).
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return self.guest_error("register read with bad size or alignment");
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if offset >= MMIO_SLOT_SIZE {
                return self.guest_error("write past the MMIO slot");
            }
            self.device.write_config(offset - CONFIG_SPACE, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return self.guest_error("register write with bad size");
        };
        if !offset.is_multiple_of(4) {
            return self.guest_error("register write with bad alignment");
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

impl MutEventSubscriber for MmioTransport {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in self
            .queue_evts
            .iter()
            .chain(std::iter::once(&self.control_evt))
        {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                error!(
                    "virtio-mmio (type {}): cannot register eventfd: {e}",
                    self.device_type
                );
            }
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if self.reset_pending {
            // Tear the backend down before it sees another event for a device the driver reset.
            self.process_control(ops);
        }
        if fd == std::os::fd::AsRawFd::as_raw_fd(&self.control_evt) {
            return self.process_control(ops);
        }
        if let Some(index) = self
            .queue_evts
            .iter()
            .position(|e| std::os::fd::AsRawFd::as_raw_fd(e) == fd)
        {
            let _ = self.queue_evts[index].read();
            return self.run_queue(index, ops);
        }
        if self.activated {
            let mut ctx = QueueContext {
                mem: &self.mem,
                queues: &mut self.queues,
                interrupt: &self.interrupt,
                again: false,
            };
            self.device.process_backend(events, &mut ctx, ops);
            if ctx.again {
                // A backend event (e.g. a rate limiter's timer) served a queue and stopped at
                // its per-pass bound: come back to every queue after other work (a queue with
                // nothing to do costs one empty pass).
                for (index, evt) in self.queue_evts.iter().enumerate() {
                    if let Err(e) = evt.write(1) {
                        warn!("virtio-mmio: cannot re-signal queue {index}: {e}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
