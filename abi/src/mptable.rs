//! The Intel MultiProcessor table (MP spec 1.4, chapter 4) as Wisp writes it (host) and reads
//! it (unikernel): the structure signatures and sizes, the entry types and the CPU flags.

/// Floating pointer structure: "_MP_", one 16-byte paragraph, spec revision 1.4.
pub const FLOATING_POINTER_SIGNATURE: [u8; 4] = *b"_MP_";
pub const FLOATING_POINTER_LEN: usize = 16;
/// The floating pointer's length byte counts 16-byte paragraphs.
pub const FLOATING_POINTER_PARAGRAPHS: u8 = 1;
pub const SPEC_REVISION: u8 = 4;
/// Configuration table header: "PCMP", 44 bytes.
pub const CONFIG_TABLE_SIGNATURE: [u8; 4] = *b"PCMP";
pub const CONFIG_HEADER_LEN: usize = 44;

/// Entry types and their lengths.
pub const ENTRY_PROCESSOR: u8 = 0;
pub const ENTRY_BUS: u8 = 1;
pub const ENTRY_IOAPIC: u8 = 2;
pub const ENTRY_IO_INTERRUPT: u8 = 3;
pub const ENTRY_LOCAL_INTERRUPT: u8 = 4;
pub const PROCESSOR_ENTRY_LEN: usize = 20;
/// Bus, I/O APIC, I/O interrupt and local interrupt entries are all 8 bytes.
pub const OTHER_ENTRY_LEN: usize = 8;

/// Processor entry flags.
pub const CPU_FLAG_ENABLED: u8 = 1 << 0;
pub const CPU_FLAG_BOOTSTRAP: u8 = 1 << 1;

/// IOAPIC pins (and legacy IRQs) the table describes.
pub const IOAPIC_PINS: u8 = 24;
