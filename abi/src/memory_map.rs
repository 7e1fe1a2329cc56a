//! The guest-physical MMIO map and the legacy IRQs handed to virtio devices (x86_64).
//!
//! ```text
//! 0x0009_fc00  MP table (EBDA), to 0xa0000
//! 0xd000_0000  MMIO gap: boot timer (4 KiB), noxs page (4 KiB), virtio-mmio slots (4 KiB each)
//! 0xfec0_0000  IOAPIC        0xfee0_0000  local APIC        ... 4 GiB
//! ```

/// The 32-bit MMIO gap below 4 GiB (768 MiB, as in Firecracker). Never RAM.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// The boot timer register page.
pub const BOOT_TIMER_START: u64 = MMIO_GAP_START;
/// The noxs device page (read-only for the guest).
pub const NOXS_PAGE_START: u64 = MMIO_GAP_START + 0x1000;
/// First virtio-mmio slot; slots are `MMIO_SLOT_SIZE` apart.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START + 0x2000;
pub const MMIO_SLOT_SIZE: u64 = 0x1000;

/// The IOAPIC and the local APIC (fixed by the PC platform).
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const APIC_START: u64 = 0xfee0_0000;
/// The extended BIOS data area, where the MP table lives (the e820 map keeps it out of RAM).
pub const EBDA_START: u64 = 0x9fc00;

/// Legacy IRQs (IOAPIC pins) handed to virtio devices, one each; 4 is COM1.
pub const IRQ_FIRST_DEVICE: u32 = 5;
pub const IRQ_LAST_DEVICE: u32 = 23;
/// The most virtio devices one VM can have: one IRQ each. Every front end (REST API, config
/// file, control page) refuses a configuration with more.
pub const MAX_VIRTIO_DEVICES: usize = (IRQ_LAST_DEVICE - IRQ_FIRST_DEVICE + 1) as usize;

const _: () = assert!(MAX_VIRTIO_DEVICES == 19);
const _: () = assert!((IRQ_LAST_DEVICE as usize) < crate::mptable::IOAPIC_PINS as usize);
const _: () =
    assert!(VIRTIO_MMIO_START + MAX_VIRTIO_DEVICES as u64 * MMIO_SLOT_SIZE <= IOAPIC_START);
