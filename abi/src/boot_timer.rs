//! The boot timer: the guest writes one byte, [`BOOT_TIMER_MAGIC`], to [`BOOT_TIMER_ADDR`] once
//! it is up and the VMM records the time (Firecracker's convention, at Wisp's address).

/// Guest-physical address of the one-byte register.
pub const BOOT_TIMER_ADDR: u64 = crate::memory_map::BOOT_TIMER_START;
/// Size of the MMIO region the VMM decodes for it.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// The byte that means "booted".
pub const BOOT_TIMER_MAGIC: u8 = 123;
