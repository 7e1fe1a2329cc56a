//! Finding the CPUs from the Intel MultiProcessor table (MP Specification 1.4, chapter 4).
//!
//! The MP floating pointer structure ("_MP_", 16 bytes, on a 16-byte boundary) is searched
//! in the places §4 lists: the first KiB of the EBDA, the last KiB of base memory
//! (0x9fc00..0xa0000) and the BIOS ROM area 0xf0000..0x100000. It points at the MP
//! configuration table ("PCMP"), whose processor entries (type 0) list one local APIC per CPU.

use core::fmt;
use core::slice;
use wisp_abi::mptable::{
    CONFIG_HEADER_LEN, CONFIG_TABLE_SIGNATURE, CPU_FLAG_BOOTSTRAP, CPU_FLAG_ENABLED,
    ENTRY_LOCAL_INTERRUPT, ENTRY_PROCESSOR, FLOATING_POINTER_LEN, FLOATING_POINTER_PARAGRAPHS,
    FLOATING_POINTER_SIGNATURE, OTHER_ENTRY_LEN, PROCESSOR_ENTRY_LEN,
};

/// The most CPUs recorded (the xAPIC has 8-bit IDs; 0xff is broadcast).
pub const MAX_CPUS: usize = 255;

/// Physical address of the BIOS data area word holding the EBDA segment.
const BDA_EBDA_SEGMENT: usize = 0x40e;
/// The local APIC address when the table gives none.
const DEFAULT_LAPIC_ADDR: u32 = wisp_abi::memory_map::APIC_START as u32;

/// Why no usable CPU list came out of the MP table.
#[derive(Debug)]
pub enum MpTableError {
    /// No valid "_MP_" floating pointer in any of the searched areas.
    NoFloatingPointer,
    /// The floating pointer has no configuration table (a "default configuration" system).
    NoConfigTable,
    /// The configuration table's signature or checksum is wrong.
    BadConfigTable { paddr: u32 },
    /// An entry of an unknown type: its length, hence the rest of the table, is unknown.
    UnknownEntry { entry_type: u8, offset: usize },
}

impl fmt::Display for MpTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFloatingPointer => write!(f, "no MP floating pointer structure found"),
            Self::NoConfigTable => write!(f, "MP floating pointer has no configuration table"),
            Self::BadConfigTable { paddr } => {
                write!(
                    f,
                    "MP configuration table at {paddr:#x} has a bad signature or checksum"
                )
            }
            Self::UnknownEntry { entry_type, offset } => {
                write!(
                    f,
                    "MP configuration table entry type {entry_type} at offset {offset} is unknown"
                )
            }
        }
    }
}

/// The CPUs of the machine as the MP table lists them.
pub struct MpConfig {
    apic_ids: [u8; MAX_CPUS],
    count: usize,
    bootstrap_apic_id: Option<u8>,
    lapic_addr: u32,
}

impl MpConfig {
    /// Finds and parses the MP table.
    pub fn find() -> Result<Self, MpTableError> {
        let pointer = find_floating_pointer().ok_or(MpTableError::NoFloatingPointer)?;
        let config_paddr = u32::from_le_bytes([pointer[4], pointer[5], pointer[6], pointer[7]]);
        if config_paddr == 0 {
            return Err(MpTableError::NoConfigTable);
        }
        Self::parse(config_paddr)
    }

    fn parse(paddr: u32) -> Result<Self, MpTableError> {
        let bad = MpTableError::BadConfigTable { paddr };
        let header = phys_bytes(paddr as usize, CONFIG_HEADER_LEN);
        if header[0..4] != CONFIG_TABLE_SIGNATURE {
            return Err(bad);
        }
        let table_len = usize::from(u16::from_le_bytes([header[4], header[5]]));
        if table_len < CONFIG_HEADER_LEN {
            return Err(bad);
        }
        let table = phys_bytes(paddr as usize, table_len);
        if !checksum_ok(table) {
            return Err(bad);
        }
        let lapic_addr = match u32::from_le_bytes([table[36], table[37], table[38], table[39]]) {
            0 => DEFAULT_LAPIC_ADDR,
            addr => addr,
        };
        let mut config = MpConfig {
            apic_ids: [0; MAX_CPUS],
            count: 0,
            bootstrap_apic_id: None,
            lapic_addr,
        };
        // Entries are walked up to the base table length rather than the entry count, as
        // Linux does (`smp_read_mpc`): some firmware (QEMU microvm's qboot) leaves the count 0.
        let mut offset = CONFIG_HEADER_LEN;
        while let Some(&entry_type) = table.get(offset) {
            let len = match entry_type {
                ENTRY_PROCESSOR => PROCESSOR_ENTRY_LEN,
                1..=ENTRY_LOCAL_INTERRUPT => OTHER_ENTRY_LEN,
                _ => return Err(MpTableError::UnknownEntry { entry_type, offset }),
            };
            let Some(entry) = table.get(offset..offset + len) else {
                break;
            };
            if entry_type == ENTRY_PROCESSOR {
                config.add_processor(entry[1], entry[3]);
            }
            offset += len;
        }
        Ok(config)
    }

    fn add_processor(&mut self, apic_id: u8, flags: u8) {
        if flags & CPU_FLAG_ENABLED == 0 || self.count == MAX_CPUS {
            return;
        }
        if flags & CPU_FLAG_BOOTSTRAP != 0 {
            self.bootstrap_apic_id = Some(apic_id);
        }
        self.apic_ids[self.count] = apic_id;
        self.count += 1;
    }

    /// Local APIC IDs of the enabled processors, the boot processor included.
    pub fn apic_ids(&self) -> &[u8] {
        &self.apic_ids[..self.count]
    }

    /// The APIC ID the table marks as the bootstrap processor, if it marks one.
    pub fn bootstrap_apic_id(&self) -> Option<u8> {
        self.bootstrap_apic_id
    }

    /// Physical address of the local APICs' registers.
    pub fn lapic_addr(&self) -> u32 {
        self.lapic_addr
    }
}

/// `len` bytes of physical memory at `paddr`.
fn phys_bytes(paddr: usize, len: usize) -> &'static [u8] {
    // SAFETY: the first 4 GiB are identity-mapped and only firmware/VMM tables in low memory
    // or the BIOS area are read (addresses come from the MP spec or from a checksummed
    // pointer); nothing writes them while the slice lives (the APs are not running yet).
    unsafe { slice::from_raw_parts(paddr as *const u8, len) }
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}

fn find_floating_pointer() -> Option<&'static [u8]> {
    // SAFETY: the BIOS data area word at 0x40e is plain low RAM, identity-mapped.
    let ebda_segment = unsafe { core::ptr::read_unaligned(BDA_EBDA_SEGMENT as *const u16) };
    let ebda = usize::from(ebda_segment) << 4;
    let ebda_area = (0x8_0000..0xa_0000)
        .contains(&ebda)
        .then_some((ebda, ebda + 1024));
    ebda_area
        .into_iter()
        .chain([(0x9_fc00, 0xa_0000), (0xf_0000, 0x10_0000)])
        .find_map(|(start, end)| scan(start, end))
}

fn scan(start: usize, end: usize) -> Option<&'static [u8]> {
    (start..end)
        .step_by(16)
        .map(|paddr| phys_bytes(paddr, FLOATING_POINTER_LEN))
        .find(|candidate| {
            // The length byte counts 16-byte paragraphs; version 1.4 pointers are one paragraph.
            candidate[0..4] == FLOATING_POINTER_SIGNATURE
                && candidate[8] == FLOATING_POINTER_PARAGRAPHS
                && checksum_ok(candidate)
        })
}
