//! The noxs device page: Wisp's read-only page at guest-physical 0xd000_1000 that lists the
//! VM's devices, so the unikernel finds them without probing (docs/design.md §5; the host half is
//! `devices/src/noxs_page.rs`).
//!
//! The layout is the host's, from `wisp_abi::noxs`: u32 magic "NOXS", u32 version, u32 device
//! count, u32 sysctl (host request: 0 none, 1 power-off, 2 suspend), then one 16-byte entry per
//! device: u32 virtio device type, u32 IRQ, u64 MMIO base. Unbacked MMIO reads as all ones
//! under Wisp and as zeros under QEMU; either fails the magic check.

use core::fmt;
use crate::println;
use core::ptr;
use wisp_abi::noxs::{
    ENTRY_OFF_BASE, ENTRY_OFF_IRQ, ENTRY_OFF_TYPE, ENTRY_SIZE, HEADER_SIZE, NOXS_PAGE_SIZE,
    OFF_COUNT, OFF_GENERATION, OFF_MAGIC, OFF_SYSCTL, OFF_VERSION,
};
pub use wisp_abi::noxs::{MAX_ENTRIES, NOXS_MAGIC, NOXS_VERSION};

/// Guest-physical address of the page (identity-mapped, uncached: `boot.rs`).
pub const NOXS_PAGE_ADDR: usize = wisp_abi::noxs::NOXS_PAGE_ADDR as usize;

/// Why the page cannot be used.
#[derive(Debug)]
pub enum NoxsError {
    /// The magic is absent: this VMM provides no page.
    NoPage { magic: u32 },
    /// A layout version this unikernel does not know.
    UnknownVersion { version: u32 },
}

impl fmt::Display for NoxsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPage { magic } => write!(f, "no device page (magic {magic:#x})"),
            Self::UnknownVersion { version } => {
                write!(f, "device page version {version} is not {NOXS_VERSION}")
            }
        }
    }
}

/// One device the page lists.
#[derive(Clone, Copy, Debug)]
pub struct NoxsEntry {
    pub device_type: u32,
    pub irq: u32,
    pub mmio_base: u64,
}

/// A validated view of the page. Entries are read from MMIO on demand.
pub struct DevicePage {
    count: usize,
    sysctl: u32,
}

fn read_u32(offset: usize) -> u32 {
    debug_assert!(offset + 4 <= NOXS_PAGE_SIZE as usize);
    // SAFETY: offset < 4096 (callers stay inside the page); the page is MMIO in the
    // identity-mapped, uncached window, or unbacked (reads return a fill value). Volatile:
    // the host may change the sysctl word at any time.
    unsafe { ptr::read_volatile((NOXS_PAGE_ADDR + offset) as *const u32) }
}

impl DevicePage {
    /// Reads and checks the header.
    pub fn read() -> Result<Self, NoxsError> {
        let magic = read_u32(OFF_MAGIC);
        if magic != NOXS_MAGIC {
            return Err(NoxsError::NoPage { magic });
        }
        let version = read_u32(OFF_VERSION);
        if version != NOXS_VERSION {
            return Err(NoxsError::UnknownVersion { version });
        }
        let count = usize::try_from(read_u32(OFF_COUNT)).unwrap_or(MAX_ENTRIES);
        Ok(DevicePage {
            count: count.min(MAX_ENTRIES),
            sysctl: read_u32(OFF_SYSCTL),
        })
    }

    /// Number of listed devices (at most [`MAX_ENTRIES`]).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The host's request word when the page was read.
    pub fn sysctl(&self) -> u32 {
        self.sysctl
    }

    /// The listed devices.
    pub fn entries(&self) -> impl Iterator<Item = NoxsEntry> {
        (0..self.count).map(|index| {
            let at = HEADER_SIZE + index * ENTRY_SIZE;
            NoxsEntry {
                device_type: read_u32(at + ENTRY_OFF_TYPE),
                irq: read_u32(at + ENTRY_OFF_IRQ),
                mmio_base: u64::from(read_u32(at + ENTRY_OFF_BASE))
                    | (u64::from(read_u32(at + ENTRY_OFF_BASE + 4)) << 32),
            }
        })
    }
}

/// The VM generation the host shows on the page: 0 after a boot, a new value after each
/// snapshot restore (each clone of one snapshot has its own).
pub fn generation() -> u64 {
    u64::from(read_u32(OFF_GENERATION)) | (u64::from(read_u32(OFF_GENERATION + 4)) << 32)
}

/// The `await-restore` command: waits (polling every millisecond, no exits in between) until
/// the VM is restored from a snapshot, then prints its new generation, its identity.
pub fn await_restore() {
    println!("await-restore: waiting");
    let interval = crate::deadline::tsc_hz() / 1000;
    loop {
        match generation() {
            // No page (or all ones from unbacked MMIO): no restore will ever be seen.
            0 => crate::cpu::spin_cycles(interval),
            u64::MAX => return println!("await-restore: no device page"),
            g => return println!("restored: generation={g:#x}"),
        }
    }
}
