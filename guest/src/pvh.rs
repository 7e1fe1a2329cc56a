//! The PVH `hvm_start_info` handed over by the loader (Xen `xen/include/public/arch-x86/
//! hvm/start_info.h`), read once at boot into a [`BootInfo`] snapshot.
//!
//! The snapshot copies the command line and sums the memory map before anything else runs,
//! because the loader's structures live in low RAM that later work (the SMP trampoline at
//! 0x8000) may reuse.

use core::fmt;
use core::ptr;

/// `hvm_start_info.magic` ("xEn3" with the top bit set).
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// `hvm_memmap_table_entry.type` of usable RAM (same numbering as the e820 map).
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// Longest command line kept (Linux's x86 `COMMAND_LINE_SIZE`); longer ones are truncated.
pub const CMDLINE_MAX: usize = 2048;
/// More memory-map entries than this are ignored (a sanity bound on a loader-given count).
const MEMMAP_MAX_ENTRIES: u32 = 1024;

/// `struct hvm_start_info`, version 1 layout.
#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    // The fields below exist from version 1 on.
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// Why the start info could not be used.
#[derive(Debug)]
pub enum PvhError {
    /// `ebx` did not point at a start info (wrong or missing magic).
    BadMagic { paddr: u32, found: u32 },
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { paddr, found } => write!(
                f,
                "no PVH start_info at {paddr:#x}: magic is {found:#x}, expected {START_INFO_MAGIC:#x}"
            ),
        }
    }
}

/// What the unikernel keeps from the start info.
pub struct BootInfo {
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    ram_bytes: Option<u64>,
}

impl BootInfo {
    /// Reads the start info at physical address `paddr` (the `ebx` of the PVH entry).
    pub fn read(paddr: u32) -> Result<Self, PvhError> {
        // SAFETY: the first 4 GiB are identity-mapped, so any 32-bit physical address is a
        // readable virtual address; by the PVH ABI `paddr` is the start info, and the magic
        // check below rejects anything else. read_unaligned: the ABI promises no alignment.
        let info = unsafe { ptr::read_unaligned(paddr as usize as *const StartInfo) };
        if info.magic != START_INFO_MAGIC {
            return Err(PvhError::BadMagic {
                paddr,
                found: info.magic,
            });
        }
        let mut boot = BootInfo {
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            ram_bytes: None,
        };
        if info.cmdline_paddr != 0 && info.cmdline_paddr < (1 << 32) {
            boot.copy_cmdline(info.cmdline_paddr);
        }
        if info.version >= 1 && info.memmap_paddr != 0 {
            boot.ram_bytes = Some(sum_ram(info.memmap_paddr, info.memmap_entries));
        }
        Ok(boot)
    }

    fn copy_cmdline(&mut self, paddr: u64) {
        let mut len = 0;
        while len < CMDLINE_MAX {
            // SAFETY: identity-mapped low memory; the loader put a NUL-terminated string at
            // `paddr` and we stop at its NUL or after CMDLINE_MAX bytes.
            let byte = unsafe { ptr::read((paddr as usize + len) as *const u8) };
            if byte == 0 {
                break;
            }
            self.cmdline[len] = byte;
            len += 1;
        }
        self.cmdline_len = len;
    }

    /// The kernel command line (bytes up to its NUL).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// Total RAM from the PVH memory map, or `None` when the loader gave none (version 0).
    pub fn ram_bytes(&self) -> Option<u64> {
        self.ram_bytes
    }
}

fn sum_ram(memmap_paddr: u64, entries: u32) -> u64 {
    let base = memmap_paddr as usize as *const MemmapEntry;
    (0..entries.min(MEMMAP_MAX_ENTRIES) as usize)
        .map(|index| {
            // SAFETY: the start info says `entries` map entries start at `memmap_paddr`, in
            // identity-mapped memory below 4 GiB.
            unsafe { ptr::read_unaligned(base.add(index)) }
        })
        .filter(|entry| entry.kind == MEMMAP_TYPE_RAM)
        .map(|entry| entry.size)
        .fold(0u64, u64::saturating_add)
}
