//! The boot-timer device: the guest writes one byte, 123, to guest-physical 0xd000_0000 once
//! it is up, and the VMM records the time since it started (the same convention as
//! Firecracker's boot timer, at Wisp's address).

use core::ptr;

/// Guest-physical address of the boot-timer register (the host's, from `wisp_abi`).
pub const BOOT_TIMER_ADDR: usize = wisp_abi::boot_timer::BOOT_TIMER_ADDR as usize;
/// The byte that means "booted".
pub use wisp_abi::boot_timer::BOOT_TIMER_MAGIC;

/// Tells the VMM the unikernel has booted.
pub fn signal() {
    // SAFETY: 0xd000_0000 is identity-mapped (uncached) by the boot stub; by the guest ABI it
    // is the VMM's boot-timer MMIO register (or unbacked, where a write is dropped), never RAM
    // that Rust owns. Volatile so the write is neither elided nor merged.
    unsafe { ptr::write_volatile(BOOT_TIMER_ADDR as *mut u8, BOOT_TIMER_MAGIC) };
}
