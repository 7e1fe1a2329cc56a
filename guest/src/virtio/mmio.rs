//! The virtio-mmio transport, version 2 ("modern"): virtio 1.2 §4.2.2 (registers) and
//! §4.2.3.1 (device initialization), with the generic steps of §3.1.1.

use super::queue::Virtqueue;
use super::VirtioError;
use core::ptr;
use core::sync::atomic::{fence, Ordering};

/// "virt" in little endian (§4.2.2, MagicValue).
const MAGIC: u32 = 0x7472_6976;
/// The only transport version this driver speaks; version 1 is the legacy interface.
const VERSION_MODERN: u32 = 2;

// Register offsets (§4.2.2, table "MMIO Device Register Layout").
const REG_MAGIC: usize = 0x000;
const REG_VERSION: usize = 0x004;
const REG_DEVICE_ID: usize = 0x008;
const REG_DEVICE_FEATURES: usize = 0x010;
const REG_DEVICE_FEATURES_SEL: usize = 0x014;
const REG_DRIVER_FEATURES: usize = 0x020;
const REG_DRIVER_FEATURES_SEL: usize = 0x024;
const REG_QUEUE_SEL: usize = 0x030;
const REG_QUEUE_NUM_MAX: usize = 0x034;
const REG_QUEUE_NUM: usize = 0x038;
const REG_QUEUE_READY: usize = 0x044;
const REG_QUEUE_NOTIFY: usize = 0x050;
const REG_INTERRUPT_STATUS: usize = 0x060;
const REG_INTERRUPT_ACK: usize = 0x064;
const REG_STATUS: usize = 0x070;
const REG_QUEUE_DESC_LOW: usize = 0x080;
const REG_QUEUE_DESC_HIGH: usize = 0x084;
const REG_QUEUE_DRIVER_LOW: usize = 0x090;
const REG_QUEUE_DRIVER_HIGH: usize = 0x094;
const REG_QUEUE_DEVICE_LOW: usize = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: usize = 0x0a4;
const REG_CONFIG_GENERATION: usize = 0x0fc;
const REG_CONFIG: usize = 0x100;

// Device status bits (§2.1).
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
const STATUS_FAILED: u32 = 128;

/// VIRTIO_F_VERSION_1 (§6): the device is a modern (non-legacy) device. Required.
pub const F_VERSION_1: u64 = 1 << 32;

/// Reads of the status register while waiting for a reset to finish (§4.2.3.1 asks the driver
/// to wait for 0; a device that never gets there is reported, not waited on forever).
const RESET_POLL_LIMIT: u32 = 1 << 20;
/// Reads of a 64-bit config field before giving up on a stable ConfigGeneration (§2.5.1).
const CONFIG_GENERATION_RETRIES: u32 = 16;

/// One virtio-mmio device, at `base` (identity-mapped, uncached: `boot.rs`).
pub struct MmioTransport {
    base: usize,
    /// Set once we started initializing the device: dropping the transport then resets it, so
    /// it stops using the DMA memory it was given (§2.4).
    driven: bool,
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        if self.driven {
            // Nothing more can be done about a device that does not reset; the next command's
            // `negotiate` reports it.
            let _ = self.reset();
        }
    }
}

impl MmioTransport {
    /// The transport at guest-physical `base`, after checking that a modern virtio-mmio device
    /// with a device ID sits there. Returns the transport and the device ID.
    pub fn probe(base: u64) -> Result<(Self, u32), VirtioError> {
        // The boot stub identity-maps (and makes uncached) only 0xd000_0000..4 GiB for MMIO.
        if !(super::MMIO_WINDOW_START..super::MMIO_WINDOW_END).contains(&base)
            || !base.is_multiple_of(4)
        {
            return Err(VirtioError::BaseOutsideMmioWindow { base });
        }
        let transport = MmioTransport {
            base: base as usize,
            driven: false,
        };
        let magic = transport.read(REG_MAGIC);
        if magic != MAGIC {
            return Err(VirtioError::BadMagic { base, magic });
        }
        let version = transport.read(REG_VERSION);
        if version != VERSION_MODERN {
            return Err(VirtioError::UnsupportedVersion { base, version });
        }
        let device_id = transport.read(REG_DEVICE_ID);
        if device_id == 0 {
            return Err(VirtioError::NoDevice { base });
        }
        Ok((transport, device_id))
    }

    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `base` was checked to lie in the identity-mapped, uncached MMIO window and
        // `offset` is a register of the 4 KiB (or 512-byte) virtio-mmio slot; MMIO reads must
        // be volatile and 32-bit wide (§4.2.2.2).
        unsafe { ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`: a 32-bit register of this device's slot.
        unsafe { ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// Writes `value` to register `offset` whatever the register is: the `mmio-flood`
    /// command's bad accesses (e.g. a write to the read-only ConfigGeneration).
    pub fn poke(&self, offset: usize, value: u32) {
        if offset < 0x100 && offset.is_multiple_of(4) {
            self.write(offset, value);
        }
    }

    fn status(&self) -> u32 {
        self.read(REG_STATUS)
    }

    fn add_status(&self, bits: u32) {
        self.write(REG_STATUS, self.status() | bits);
    }

    /// Writes 0 to Status and waits (bounded) until the device reads back 0 (§4.2.3.1 step 1;
    /// §2.4.1). After this the device no longer uses the queues it was given.
    pub fn reset(&self) -> Result<(), VirtioError> {
        self.write(REG_STATUS, 0);
        for _ in 0..RESET_POLL_LIMIT {
            if self.status() == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VirtioError::ResetTimeout)
    }

    /// §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, feature negotiation, FEATURES_OK.
    /// `wanted` is what this driver understands; VERSION_1 is always required. Returns the
    /// negotiated features.
    pub fn negotiate(&mut self, wanted: u64) -> Result<u64, VirtioError> {
        self.driven = true;
        self.reset()?;
        self.add_status(STATUS_ACKNOWLEDGE);
        self.add_status(STATUS_DRIVER);
        let offered = self.device_features();
        if offered & F_VERSION_1 == 0 {
            self.add_status(STATUS_FAILED);
            return Err(VirtioError::NoVersion1 { offered });
        }
        let accepted = offered & (wanted | F_VERSION_1);
        self.write(REG_DRIVER_FEATURES_SEL, 0);
        self.write(REG_DRIVER_FEATURES, accepted as u32);
        self.write(REG_DRIVER_FEATURES_SEL, 1);
        self.write(REG_DRIVER_FEATURES, (accepted >> 32) as u32);
        self.add_status(STATUS_FEATURES_OK);
        // §3.1.1 step 6: the device clears FEATURES_OK if it cannot live with our subset.
        if self.status() & STATUS_FEATURES_OK == 0 {
            self.add_status(STATUS_FAILED);
            return Err(VirtioError::FeaturesRejected { accepted });
        }
        Ok(accepted)
    }

    fn device_features(&self) -> u64 {
        self.write(REG_DEVICE_FEATURES_SEL, 0);
        let low = self.read(REG_DEVICE_FEATURES);
        self.write(REG_DEVICE_FEATURES_SEL, 1);
        let high = self.read(REG_DEVICE_FEATURES);
        (u64::from(high) << 32) | u64::from(low)
    }

    /// §4.2.3.2: gives queue `index` to the device. Returns the size the device allows
    /// (QueueNumMax), so the caller can build a ring no larger than that.
    pub fn queue_max(&self, index: u16) -> Result<u16, VirtioError> {
        self.write(REG_QUEUE_SEL, u32::from(index));
        if self.read(REG_QUEUE_READY) != 0 {
            return Err(VirtioError::QueueInUse { index });
        }
        match self.read(REG_QUEUE_NUM_MAX) {
            0 => Err(VirtioError::QueueMissing { index }),
            max => Ok(u16::try_from(max).unwrap_or(u16::MAX)),
        }
    }

    /// §4.2.3.2 (after `queue_max`): tells the device the ring's size and addresses and sets
    /// QueueReady.
    pub fn activate_queue(&self, queue: &Virtqueue) {
        self.write(REG_QUEUE_SEL, u32::from(queue.index()));
        self.write(REG_QUEUE_NUM, u32::from(queue.size()));
        let (desc, driver, device) = queue.addresses();
        self.write(REG_QUEUE_DESC_LOW, desc as u32);
        self.write(REG_QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write(REG_QUEUE_DRIVER_LOW, driver as u32);
        self.write(REG_QUEUE_DRIVER_HIGH, (driver >> 32) as u32);
        self.write(REG_QUEUE_DEVICE_LOW, device as u32);
        self.write(REG_QUEUE_DEVICE_HIGH, (device >> 32) as u32);
        // The ring contents must be visible before the device may look at them.
        fence(Ordering::SeqCst);
        self.write(REG_QUEUE_READY, 1);
    }

    /// §3.1.1 step 8: the driver is ready; the device may now use the queues.
    pub fn driver_ok(&self) -> Result<(), VirtioError> {
        self.add_status(STATUS_DRIVER_OK);
        self.check_healthy()
    }

    /// Fails if the device has asked for a reset (§2.1.2 DEVICE_NEEDS_RESET).
    pub fn check_healthy(&self) -> Result<(), VirtioError> {
        let status = self.status();
        if status & STATUS_DEVICE_NEEDS_RESET != 0 {
            return Err(VirtioError::DeviceNeedsReset { status });
        }
        Ok(())
    }

    /// Tells the device that queue `index` has new available buffers (§4.2.3.3).
    pub fn notify(&self, index: u16) {
        // Ring writes must reach memory before the doorbell (§2.7.13 "memory barrier").
        fence(Ordering::SeqCst);
        self.write(REG_QUEUE_NOTIFY, u32::from(index));
    }

    /// Acknowledges any pending interrupt (§4.2.2 InterruptStatus / InterruptACK). We poll the
    /// used rings with interrupts off, so this only keeps the device's view tidy.
    pub fn ack_interrupts(&self) {
        let pending = self.read(REG_INTERRUPT_STATUS);
        if pending != 0 {
            self.write(REG_INTERRUPT_ACK, pending);
        }
    }

    /// A byte of the device-specific configuration space (8-bit access, §4.2.2.2).
    pub fn config_u8(&self, offset: usize) -> u8 {
        // SAFETY: a byte of this device's configuration space (offset 0x100 of its slot),
        // identity-mapped MMIO; volatile as MMIO must be.
        unsafe { ptr::read_volatile((self.base + REG_CONFIG + offset) as *const u8) }
    }

    /// A 32-bit configuration field (aligned 32-bit access, §4.2.2.2).
    pub fn config_u32(&self, offset: usize) -> u32 {
        self.read(REG_CONFIG + offset)
    }

    /// Writes a 32-bit configuration field (aligned 32-bit access, §4.2.2.2), e.g. the
    /// balloon's `actual`.
    pub fn config_write_u32(&self, offset: usize, value: u32) {
        self.write(REG_CONFIG + offset, value);
    }

    /// A 64-bit configuration field, read as two 32-bit halves under a stable
    /// ConfigGeneration (§2.5.1 and §4.2.2.2).
    pub fn config_u64(&self, offset: usize) -> Result<u64, VirtioError> {
        for _ in 0..CONFIG_GENERATION_RETRIES {
            let before = self.read(REG_CONFIG_GENERATION);
            let low = self.config_u32(offset);
            let high = self.config_u32(offset + 4);
            if self.read(REG_CONFIG_GENERATION) == before {
                return Ok((u64::from(high) << 32) | u64::from(low));
            }
        }
        Err(VirtioError::ConfigUnstable)
    }
}
