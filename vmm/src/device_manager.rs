//! The device manager: owns the port-I/O and MMIO buses (vm-device's `IoManager`), hands out
//! MMIO slots and legacy IRQs (vm-allocator), and attaches each device everywhere it must
//! appear — bus, irqfd, ioeventfds and kernel command line — in one call, so they cannot drift.

use crate::layout::{IRQ_FIRST_DEVICE, IRQ_LAST_DEVICE, MMIO_SLOT_SIZE, VIRTIO_MMIO_START};
use kvm_ioctls::{IoEventAddress, VmFd};
use linux_loader::cmdline::Cmdline;
use std::sync::{Arc, Mutex};
use vm_allocator::{AddressAllocator, AllocPolicy, IdAllocator};
use vm_device::bus::{MmioAddress, MmioRange, PioAddress, PioRange};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_device::{MutDeviceMmio, MutDevicePio};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

/// virtio-mmio register the driver writes a queue index to (virtio 1.2 §4.2.2, QueueNotify).
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;
/// How many virtio-mmio slots the gap offers (they end where the IOAPIC region begins).
const MAX_MMIO_SLOTS: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    #[error("cannot register {name} on the {bus} bus: {source}")]
    Bus {
        name: &'static str,
        bus: &'static str,
        #[source]
        source: vm_device::bus::Error,
    },
    #[error("no free MMIO slot for {0}")]
    NoSlot(&'static str),
    #[error("no free IRQ for {0}")]
    NoIrq(&'static str),
    #[error("cannot wire {name} to KVM ({what}): {source}")]
    Kvm {
        name: &'static str,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot add {name} to the kernel command line: {source}")]
    Cmdline {
        name: &'static str,
        #[source]
        source: linux_loader::cmdline::Error,
    },
    #[error("cannot set up the allocators: {0}")]
    Allocator(#[source] vm_allocator::Error),
}

/// Where a virtio-mmio device sits, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioSlot {
    pub base: u64,
    pub irq: u32,
}

/// One attached virtio device, as listed on the noxs device page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachedDevice {
    pub device_type: u32,
    pub slot: MmioSlot,
}

pub struct DeviceManager {
    io: IoManager,
    slots: AddressAllocator,
    irqs: IdAllocator,
    attached: Vec<AttachedDevice>,
    /// Whether virtio devices get a `virtio_mmio.device=` entry (see `set_virtio_on_cmdline`).
    virtio_on_cmdline: bool,
}

impl DeviceManager {
    pub fn new() -> Result<Self, DeviceManagerError> {
        Ok(DeviceManager {
            io: IoManager::new(),
            slots: AddressAllocator::new(VIRTIO_MMIO_START, MAX_MMIO_SLOTS * MMIO_SLOT_SIZE)
                .map_err(DeviceManagerError::Allocator)?,
            irqs: IdAllocator::new(IRQ_FIRST_DEVICE, IRQ_LAST_DEVICE)
                .map_err(DeviceManagerError::Allocator)?,
            attached: Vec::new(),
            virtio_on_cmdline: true,
        })
    }

    /// Whether `attach_virtio` adds the `virtio_mmio.device=` entry. A Linux that reads the
    /// ACPI tables finds the devices in the DSDT (acpi.rs) instead; with both it would probe
    /// each device twice, and the command line cannot give it IRQs above 15.
    pub fn set_virtio_on_cmdline(&mut self, on: bool) {
        self.virtio_on_cmdline = on;
    }

    /// Puts a port-I/O device on `base..base + len`.
    pub fn add_pio<D: MutDevicePio + Send + 'static>(
        &mut self,
        name: &'static str,
        base: u16,
        len: u16,
        device: Arc<Mutex<D>>,
    ) -> Result<(), DeviceManagerError> {
        let bus_err = |source| DeviceManagerError::Bus {
            name,
            bus: "port I/O",
            source,
        };
        let range = PioRange::new(PioAddress(base), len).map_err(bus_err)?;
        self.io.register_pio(range, device).map_err(bus_err)
    }

    /// Puts an MMIO device on `base..base + len`.
    pub fn add_mmio<D: MutDeviceMmio + Send + 'static>(
        &mut self,
        name: &'static str,
        base: u64,
        len: u64,
        device: Arc<Mutex<D>>,
    ) -> Result<(), DeviceManagerError> {
        let bus_err = |source| DeviceManagerError::Bus {
            name,
            bus: "MMIO",
            source,
        };
        let range = MmioRange::new(MmioAddress(base), len).map_err(bus_err)?;
        self.io.register_mmio(range, device).map_err(bus_err)
    }

    /// Attaches a virtio-mmio device: a slot and an IRQ, the bus, one ioeventfd per queue on
    /// QueueNotify (datamatch = queue index, so a notify never leaves the kernel as an exit),
    /// the interrupt as an irqfd, and the `virtio_mmio.device=` command line entry (unless the
    /// DSDT declares the devices: `set_virtio_on_cmdline`).
    #[allow(clippy::too_many_arguments)]
    pub fn attach_virtio<D: MutDeviceMmio + Send + 'static>(
        &mut self,
        name: &'static str,
        vm: &VmFd,
        cmdline: &mut Cmdline,
        device_type: u32,
        device: Arc<Mutex<D>>,
        queue_events: &[EventFd],
        interrupt: &EventFd,
    ) -> Result<MmioSlot, DeviceManagerError> {
        let range = self
            .slots
            .allocate(MMIO_SLOT_SIZE, MMIO_SLOT_SIZE, AllocPolicy::FirstMatch)
            .map_err(|_| DeviceManagerError::NoSlot(name))?;
        let irq = self
            .irqs
            .allocate_id()
            .map_err(|_| DeviceManagerError::NoIrq(name))?;
        let slot = MmioSlot {
            base: range.start(),
            irq,
        };
        let kvm_err = |what| move |source| DeviceManagerError::Kvm { name, what, source };
        for (index, evt) in queue_events.iter().enumerate() {
            vm.register_ioevent(
                evt,
                &IoEventAddress::Mmio(slot.base + VIRTIO_MMIO_QUEUE_NOTIFY),
                index as u32,
            )
            .map_err(kvm_err("KVM_IOEVENTFD"))?;
        }
        vm.register_irqfd(interrupt, irq)
            .map_err(kvm_err("KVM_IRQFD"))?;
        self.add_mmio(name, slot.base, MMIO_SLOT_SIZE, device)?;
        if self.virtio_on_cmdline {
            cmdline
                .add_virtio_mmio_device(MMIO_SLOT_SIZE, GuestAddress(slot.base), irq, None)
                .map_err(|source| DeviceManagerError::Cmdline { name, source })?;
        }
        self.attached.push(AttachedDevice { device_type, slot });
        Ok(slot)
    }

    /// The virtio devices attached so far, in attach order (for the noxs device page and
    /// the DSDT).
    pub fn attached(&self) -> &[AttachedDevice] {
        &self.attached
    }

    /// The buses, shared read-only with the vCPU threads once devices are in place.
    pub fn into_io(self) -> Arc<IoManager> {
        Arc::new(self.io)
    }
}
