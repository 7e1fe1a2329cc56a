//! The noxs device page: Wisp's read-only page at guest-physical 0xd000_1000 that lists the
//! VM's devices, so the unikernel finds them without probing (DESIGN.md §5; the host half is
//! `devices/src/noxs_page.rs`).
//!
//! Layout, little endian: u32 magic "NOXS" (0x5358_4f4e), u32 version (1), u32 device count,
//! u32 sysctl (host request: 0 none, 1 power-off, 2 suspend), then one 16-byte entry per
//! device: u32 virtio device type, u32 IRQ, u64 MMIO base. Unbacked MMIO reads as all ones
//! under Wisp and as zeros under QEMU; either fails the magic check.

use core::fmt;
use core::ptr;

/// Guest-physical address of the page (identity-mapped, uncached: `boot.rs`).
pub const NOXS_PAGE_ADDR: usize = 0xd000_1000;
pub const NOXS_MAGIC: u32 = 0x5358_4f4e;
pub const NOXS_VERSION: u32 = 1;
const PAGE_SIZE: usize = 4096;
const HEADER_SIZE: usize = 16;
const ENTRY_SIZE: usize = 16;
/// Entries that fit in the page; a larger count is clamped, not trusted.
pub const MAX_ENTRIES: usize = (PAGE_SIZE - HEADER_SIZE) / ENTRY_SIZE;

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
    // SAFETY: offset < 4096 (callers stay inside the page); the page is MMIO in the
    // identity-mapped, uncached window, or unbacked (reads return a fill value). Volatile:
    // the host may change the sysctl word at any time.
    unsafe { ptr::read_volatile((NOXS_PAGE_ADDR + offset) as *const u32) }
}

impl DevicePage {
    /// Reads and checks the header.
    pub fn read() -> Result<Self, NoxsError> {
        let magic = read_u32(0);
        if magic != NOXS_MAGIC {
            return Err(NoxsError::NoPage { magic });
        }
        let version = read_u32(4);
        if version != NOXS_VERSION {
            return Err(NoxsError::UnknownVersion { version });
        }
        let count = usize::try_from(read_u32(8)).unwrap_or(MAX_ENTRIES);
        Ok(DevicePage {
            count: count.min(MAX_ENTRIES),
            sysctl: read_u32(12),
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
                device_type: read_u32(at),
                irq: read_u32(at + 4),
                mmio_base: u64::from(read_u32(at + 8)) | (u64::from(read_u32(at + 12)) << 32),
            }
        })
    }
}
