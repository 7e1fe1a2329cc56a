//! The Intel MultiProcessor table (MP spec 1.4, chapter 4): how a guest without ACPI learns its
//! CPUs, its IOAPIC and how the 24 legacy IRQs are wired. Linux reads it for SMP; the Wisp
//! unikernel reads it to count CPUs. Written as plain bytes: no packed structs needed.

use crate::layout::{APIC_START, EBDA_START, IOAPIC_START};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use wisp_abi::mptable::{
    CONFIG_HEADER_LEN, CONFIG_TABLE_SIGNATURE, CPU_FLAG_BOOTSTRAP, CPU_FLAG_ENABLED, ENTRY_BUS,
    ENTRY_IOAPIC, ENTRY_IO_INTERRUPT, ENTRY_LOCAL_INTERRUPT, ENTRY_PROCESSOR, FLOATING_POINTER_LEN,
    FLOATING_POINTER_PARAGRAPHS, FLOATING_POINTER_SIGNATURE, IOAPIC_PINS, SPEC_REVISION,
};

/// The table must fit in the first KiB of the EBDA, where guests search for it.
pub const MAX_CPUS: u8 = 32;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const BUS_ISA: u8 = 0;
const IRQ_INT: u8 = 0;
const IRQ_NMI: u8 = 1;
const IRQ_EXTINT: u8 = 3;
/// CPU signature and feature flags the table reports (family 6; FPU and APIC present).
const CPU_SIGNATURE: u32 = (6 << 8) | (1 << 4);
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("the MP table supports at most {MAX_CPUS} vCPUs, not {0}")]
    TooManyCpus(u8),
    #[error("cannot write the MP table into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The configuration table (header and entries) for `cpus` CPUs, at guest address `at`.
fn config_table(cpus: u8) -> Vec<u8> {
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = CPU_FLAG_ENABLED | if id == 0 { CPU_FLAG_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, BUS_ISA]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 2;
    for irq in 0..IOAPIC_PINS {
        // I/O interrupt assignment: ISA IRQ n → IOAPIC pin n, conforming polarity/trigger.
        let entry = [
            ENTRY_IO_INTERRUPT,
            IRQ_INT,
            0,
            0,
            BUS_ISA,
            irq,
            ioapic_id,
            irq,
        ];
        entries.extend_from_slice(&entry);
        count += 1;
    }
    // Local interrupts: the PIC on LINT0 (virtual wire), NMI on LINT1 of every CPU.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, IRQ_EXTINT, 0, 0, BUS_ISA, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, IRQ_NMI, 0, 0, BUS_ISA, 0, 0xff, 1]);
    count += 2;

    let length = (CONFIG_HEADER_LEN + entries.len()) as u16;
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend_from_slice(&CONFIG_TABLE_SIGNATURE);
    table.extend_from_slice(&length.to_le_bytes());
    table.push(SPEC_REVISION);
    table.push(0); // checksum, below
    table.extend_from_slice(b"WISP    "); // OEM id
    table.extend_from_slice(b"MICROVM     "); // product id
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length/checksum
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    table
}

/// Writes the floating pointer and the configuration table at the start of the EBDA.
pub fn setup_mptable(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let table_addr = EBDA_START + FLOATING_POINTER_LEN as u64;
    let mut fp = Vec::with_capacity(FLOATING_POINTER_LEN);
    fp.extend_from_slice(&FLOATING_POINTER_SIGNATURE);
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    // Length in paragraphs, revision, checksum (below), feature bytes.
    fp.extend_from_slice(&[FLOATING_POINTER_PARAGRAPHS, SPEC_REVISION, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);
    mem.write_slice(&fp, GuestAddress(EBDA_START))
        .map_err(MptableError::Write)?;
    mem.write_slice(&config_table(cpus), GuestAddress(table_addr))
        .map_err(MptableError::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn floating_pointer_and_table_checksum_to_zero() {
        let mem = create_guest_memory(16).unwrap();
        setup_mptable(&mem, 4).unwrap();
        let mut fp = [0u8; 16];
        mem.read_slice(&mut fp, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&fp[..4], b"_MP_");
        assert_eq!(fp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = config_table(4);
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // 4 CPUs + bus + IOAPIC + 24 IRQs + 2 local interrupts.
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 4 + 2 + 24 + 2);
        assert_eq!(table.len(), 44 + 4 * 20 + 8 + 8 + 24 * 8 + 2 * 8);
    }

    #[test]
    fn the_largest_table_fits_in_the_ebda() {
        assert!(16 + config_table(MAX_CPUS).len() <= 0x400);
    }

    #[test]
    fn zero_or_too_many_cpus_are_refused() {
        let mem = create_guest_memory(16).unwrap();
        assert!(setup_mptable(&mem, 0).is_err());
        assert!(matches!(
            setup_mptable(&mem, MAX_CPUS + 1),
            Err(MptableError::TooManyCpus(33))
        ));
    }
}
