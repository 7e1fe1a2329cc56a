//! The noxs device page: a read-only page at a fixed guest-physical address that lists the VM's
//! devices and carries a sysctl word for host requests (LightVM's noxs, docs/design.md §5).
//!
//! Layout, little endian: u32 magic "NOXS", u32 version, u32 device count, u32 sysctl, then one
//! 16-byte entry per device: u32 virtio device type, u32 IRQ, u64 MMIO base. The guest may
//! write 0 to the sysctl word to acknowledge a request; every other write is ignored.
//! The page's last 8 bytes are the VM generation, a u64: 0 for a VM that booted, a new
//! value on every snapshot restore (each clone gets its own), so a guest learns that it was
//! restored or cloned and reseeds what must differ between copies (Firecracker's VMGenID).

/// Guest-physical address of the page.
pub const NOXS_PAGE_ADDR: u64 = crate::memory_map::NOXS_PAGE_START;
pub const NOXS_PAGE_SIZE: u64 = 4096;
/// "NOXS", little endian.
pub const NOXS_MAGIC: u32 = u32::from_le_bytes(*b"NOXS");
pub const NOXS_VERSION: u32 = 1;

pub const OFF_MAGIC: usize = 0;
pub const OFF_VERSION: usize = 4;
pub const OFF_COUNT: usize = 8;
pub const OFF_SYSCTL: usize = 12;
pub const HEADER_SIZE: usize = 16;

/// Within an entry.
pub const ENTRY_OFF_TYPE: usize = 0;
pub const ENTRY_OFF_IRQ: usize = 4;
pub const ENTRY_OFF_BASE: usize = 8;
pub const ENTRY_SIZE: usize = 16;
/// The VM generation (u64) at the end of the page.
pub const OFF_GENERATION: usize = NOXS_PAGE_SIZE as usize - 8;
/// Entries that fit in the page before the generation; a reader clamps a larger count.
pub const MAX_ENTRIES: usize = (OFF_GENERATION - HEADER_SIZE) / ENTRY_SIZE;

/// Values of the sysctl word: no request, power off, suspend.
pub const SYSCTL_NONE: u32 = 0;
pub const SYSCTL_POWER_OFF: u32 = 1;
pub const SYSCTL_SUSPEND: u32 = 2;

const _: () = assert!(NOXS_MAGIC == 0x5358_4f4e);
const _: () = assert!(MAX_ENTRIES >= crate::memory_map::MAX_VIRTIO_DEVICES);
const _: () = assert!(NOXS_PAGE_ADDR + NOXS_PAGE_SIZE <= crate::memory_map::VIRTIO_MMIO_START);
