//! The ACPI tables of a minimal fixed-hardware machine, so a guest's lifecycle goes through
//! devices and not through console text:
//!
//! * RSDP → XSDT → FADT and MADT; FADT → DSDT and FACS.
//! * FADT: the PM1a event and control blocks (`poweroff` writes S5 to PM1_CNT) and the reset
//!   register, I/O ports of `wisp_devices::acpi_pm`; an SCI that is never raised; no GPE
//!   blocks, no PM timer, no SMI command port (always in ACPI mode).
//!
//!   Not hardware-reduced (HW_REDUCED_ACPI): Linux then drops the legacy PIC and maps ISA IRQs
//!   only through devices the DSDT declares, so COM1 and the i8042 (IRQ 4, 1) would lose
//!   their interrupts (seen in the test host: the serial tty never transmitted). With fixed
//!   hardware the ISA IRQs stay identity-mapped as with the MP table.
//! * DSDT: `\_S5_` (SLP_TYP for soft-off; Linux offers power-off only when S5 is declared and
//!   the sleep registers exist), the pvpanic device `QEMU0001` on its I/O port, and every
//!   virtio-mmio device as `LNRO0005` (the `_HID` Linux's virtio_mmio driver matches) with
//!   its 4 KiB window and its GSI (edge, active high) in `_CRS`, as Firecracker and Cloud
//!   Hypervisor declare them. Linux maps a GSI above 15 only for a device the DSDT declares,
//!   so this is what makes the 12th and later devices (GSI 16..23) work with ACPI on. Such a
//!   guest gets no `virtio_mmio.device=` entries (no device is probed twice); a guest booted
//!   with `acpi=off` gets them instead (`guest_reads_dsdt`) and reads the MP table.
//! * MADT: the local APICs, the IOAPIC and LINT1 as NMI — what the MP table says (mptable.rs),
//!   which Linux with ACPI ignores in favour of the MADT — and the SCI's interrupt source
//!   override (level, active high). The MP table stays for the unikernel and for `acpi=off`.
//!
//! Written as plain bytes with their offsets spelled out, like the MP table (the AML through
//! aml.rs); the tables sit in
//! the BIOS area (reserved in the e820 map) from `wisp_abi::acpi::RSDP_ADDR`.

use super::aml;
use crate::device_manager::MmioSlot;
use crate::layout::{APIC_START, IOAPIC_START, MMIO_SLOT_SIZE};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use wisp_abi::acpi::{
    ACPI_TABLES_END, PM1_CNT_LEN, PM1_CNT_PORT, PM1_EVT_LEN, PM1_EVT_PORT, PVPANIC_PORT,
    RESET_PORT, RESET_VALUE, RSDP_ADDR, SCI_IRQ, SLP_TYP_S5,
};

const OEM_ID: [u8; 6] = *b"WISP  ";
const CREATOR_ID: [u8; 4] = *b"WISP";
const HEADER_LEN: usize = 36;
/// Offsets in every system description table header.
const LENGTH_OFFSET: usize = 4;
const CHECKSUM_OFFSET: usize = 9;

/// FADT: revision 6 (ACPI 6.x, 276 bytes).
const FADT_REVISION: u8 = 6;
const FADT_MINOR_REVISION: u8 = 5;
const FADT_LEN: usize = 276;
/// FADT field offsets (ACPI 6.5 table 5.9).
const FADT_FIRMWARE_CTRL: usize = 36;
const FADT_SCI_INT: usize = 46;
const FADT_PM1A_EVT_BLK: usize = 56;
const FADT_PM1A_CNT_BLK: usize = 64;
const FADT_PM1_EVT_LEN: usize = 88;
const FADT_PM1_CNT_LEN: usize = 89;
const FADT_IAPC_BOOT_ARCH: usize = 109;
const FADT_FLAGS: usize = 112;
const FADT_RESET_REG: usize = 116;
const FADT_RESET_VALUE: usize = 128;
const FADT_MINOR_VERSION: usize = 131;
const FADT_X_DSDT: usize = 140;
const FADT_HYPERVISOR_ID: usize = 268;
/// FADT flags: RESET_REG_SUP (bit 10), PWR_BUTTON and SLP_BUTTON (bits 4, 5: no fixed-feature
/// buttons); HW_REDUCED_ACPI (bit 20) stays clear (see the module docs).
pub const FADT_FLAG_PWR_BUTTON: u32 = 1 << 4;
pub const FADT_FLAG_SLP_BUTTON: u32 = 1 << 5;
pub const FADT_FLAG_RESET_REG_SUP: u32 = 1 << 10;
pub const FADT_FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;
/// IA-PC boot architecture flags: an 8042 is present (Linux skips its i8042 driver otherwise),
/// no VGA, no CMOS RTC.
pub const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
pub const IAPC_BOOT_ARCH_NO_VGA: u16 = 1 << 2;
pub const IAPC_BOOT_ARCH_NO_CMOS_RTC: u16 = 1 << 5;

/// Generic Address Structure (ACPI 6.5 §5.2.3.2): one byte in system I/O space.
const GAS_SYSTEM_IO: u8 = 1;
const GAS_ACCESS_BYTE: u8 = 1;

/// MADT (ACPI 6.5 §5.2.12): revision 5, PCAT_COMPAT (KVM's irqchip has the dual 8259).
const MADT_REVISION: u8 = 5;
const MADT_PCAT_COMPAT: u32 = 1;
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_LOCAL_APIC_NMI: u8 = 4;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const LOCAL_APIC_ENABLED: u32 = 1;
/// MPS INTI flags: active high (01), level triggered (11 << 2).
const INTI_LEVEL_HIGH: u16 = 0b1101;

/// FACS (ACPI 6.5 §5.2.10): 64 bytes on a 64-byte boundary, no checksum; required outside
/// hardware-reduced mode (waking vector and global lock, both unused here).
const FACS_LEN: usize = 64;
const FACS_VERSION: u8 = 2;

/// The RSDP (ACPI 6.5 §5.2.5.3): revision 2 points at the XSDT.
const RSDP_LEN: usize = 36;
const RSDP_REVISION: u8 = 2;

/// The `_HID` Linux's virtio-mmio driver matches (drivers/virtio/virtio_mmio.c,
/// `virtio_mmio_acpi_match`).
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables need {0} bytes, more than the BIOS area holds")]
    TooLarge(usize),
    #[error("cannot write the ACPI tables into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// A table header with length and checksum left for `finish`.
fn header(signature: &[u8; 4], revision: u8, table_id: &[u8; 8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(HEADER_LEN);
    t.extend_from_slice(signature);
    t.extend_from_slice(&[0; 4]); // length
    t.push(revision);
    t.push(0); // checksum
    t.extend_from_slice(&OEM_ID);
    t.extend_from_slice(table_id);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(&CREATOR_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t
}

/// Fills in a table's length and checksum.
fn finish(mut table: Vec<u8>) -> Vec<u8> {
    let len = table.len() as u32;
    table[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
    table[CHECKSUM_OFFSET] = checksum(&table);
    table
}

fn put(table: &mut [u8], offset: usize, bytes: &[u8]) {
    table[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// A Generic Address Structure for the one-byte I/O port `port`.
fn io_port_gas(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[..4].copy_from_slice(&[GAS_SYSTEM_IO, 8, 0, GAS_ACCESS_BYTE]);
    gas[4..].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

/// Whether a Linux booted with `boot_args` interprets the DSDT, and so finds the virtio
/// devices there. `acpi=off` and `acpi=ht` (tables for CPUs only) turn the interpreter off,
/// `acpi=force` / `acpi=on` back on; the last of them wins, as Linux parses them in order
/// (arch/x86/kernel/acpi/boot.c, `parse_acpi`). Other `acpi=` options leave it on.
pub fn guest_reads_dsdt(boot_args: &str) -> bool {
    boot_args
        .split_whitespace()
        .rev()
        .filter_map(|word| word.strip_prefix("acpi="))
        .find_map(|value| match value {
            "off" | "ht" => Some(false),
            "force" | "on" => Some(true),
            _ => None,
        })
        .unwrap_or(true)
}

/// The name of the `index`th virtio-mmio device in `\_SB`: `VR00`, `VR01`, … (hex).
fn virtio_device_name(index: usize) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [b'V', b'R', HEX[(index >> 4) & 0xf], HEX[index & 0xf]]
}

/// `Device (VRnn) { _HID "LNRO0005", _UID nn, _CRS { Memory32Fixed, Interrupt } }`: what
/// Linux's virtio-mmio ACPI driver probes, and the GSI Linux then programs on the IOAPIC
/// (edge, active high: an irqfd pulses the pin).
fn virtio_device(index: usize, slot: &MmioSlot) -> Vec<u8> {
    let crs = aml::resource_template(&[
        // Slots sit in the MMIO gap below 4 GiB (layout.rs): the base fits 32 bits.
        aml::memory32_fixed(slot.base as u32, MMIO_SLOT_SIZE as u32),
        aml::edge_interrupt(slot.irq),
    ]);
    let mut body = aml::name(b"_HID", &aml::string(VIRTIO_MMIO_HID));
    body.extend(aml::name(b"_UID", &aml::integer(index as u64)));
    body.extend(aml::name(b"_CRS", &crs));
    aml::device(&virtio_device_name(index), &body)
}

/// The DSDT's AML: `\_S5_`, the pvpanic device and every virtio-mmio device.
fn dsdt_aml(virtio: &[MmioSlot]) -> Vec<u8> {
    // Name (_S5_, Package (2) { SLP_TYPa, SLP_TYPb }): Linux uses SLP_TYPa.
    let s5 = aml::package(2, &[aml::op::BYTE_PREFIX, SLP_TYP_S5, aml::op::ZERO]);
    // Device (PEVT) { Name (_HID, "QEMU0001"); Name (_CRS, ResourceTemplate () { IO }) }
    let mut pvpanic = aml::name(b"_HID", &aml::string("QEMU0001"));
    pvpanic.extend(aml::name(
        b"_CRS",
        &aml::resource_template(&[aml::io_port(PVPANIC_PORT)]),
    ));
    // Scope (\_SB) { the devices }
    let mut devices = aml::device(b"PEVT", &pvpanic);
    for (index, slot) in virtio.iter().enumerate() {
        devices.extend(virtio_device(index, slot));
    }
    let mut out = aml::name(b"_S5_", &s5);
    out.extend(aml::root_scope(b"_SB_", &devices));
    out
}

fn dsdt(virtio: &[MmioSlot]) -> Vec<u8> {
    // Revision 2: integers are 64 bits.
    let mut t = header(b"DSDT", 2, b"WISPDSDT");
    t.extend(dsdt_aml(virtio));
    finish(t)
}

fn facs() -> Vec<u8> {
    let mut t = vec![0u8; FACS_LEN];
    t[..4].copy_from_slice(b"FACS");
    t[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    t[32] = FACS_VERSION;
    t
}

fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let mut t = header(b"FACP", FADT_REVISION, b"WISPFACP");
    t.resize(FADT_LEN, 0);
    put(
        &mut t,
        FADT_FIRMWARE_CTRL,
        &(facs_addr as u32).to_le_bytes(),
    );
    put(&mut t, FADT_SCI_INT, &u16::from(SCI_IRQ).to_le_bytes());
    put(
        &mut t,
        FADT_PM1A_EVT_BLK,
        &u32::from(PM1_EVT_PORT).to_le_bytes(),
    );
    put(
        &mut t,
        FADT_PM1A_CNT_BLK,
        &u32::from(PM1_CNT_PORT).to_le_bytes(),
    );
    t[FADT_PM1_EVT_LEN] = PM1_EVT_LEN;
    t[FADT_PM1_CNT_LEN] = PM1_CNT_LEN;
    let boot_arch = IAPC_BOOT_ARCH_8042 | IAPC_BOOT_ARCH_NO_VGA | IAPC_BOOT_ARCH_NO_CMOS_RTC;
    put(&mut t, FADT_IAPC_BOOT_ARCH, &boot_arch.to_le_bytes());
    let flags = FADT_FLAG_PWR_BUTTON | FADT_FLAG_SLP_BUTTON | FADT_FLAG_RESET_REG_SUP;
    put(&mut t, FADT_FLAGS, &flags.to_le_bytes());
    put(&mut t, FADT_RESET_REG, &io_port_gas(RESET_PORT));
    t[FADT_RESET_VALUE] = RESET_VALUE;
    t[FADT_MINOR_VERSION] = FADT_MINOR_REVISION;
    put(&mut t, FADT_X_DSDT, &dsdt_addr.to_le_bytes());
    put(&mut t, FADT_HYPERVISOR_ID, b"WISPVMM\0");
    finish(t)
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut t = header(b"APIC", MADT_REVISION, b"WISPMADT");
    t.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    t.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..cpus {
        // Processor UID and APIC ID are both the vCPU index (as KVM numbers them).
        t.extend_from_slice(&[MADT_LOCAL_APIC, 8, id, id]);
        t.extend_from_slice(&LOCAL_APIC_ENABLED.to_le_bytes());
    }
    // The IOAPIC takes the first ID after the CPUs, as in the MP table; GSIs from 0.
    t.extend_from_slice(&[MADT_IO_APIC, 12, cpus, 0]);
    t.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    // The SCI: ISA IRQ 3 on GSI 3, level triggered, active high (KVM's IOAPIC honours the
    // polarity, and nothing drives the line, so it stays quiet).
    t.extend_from_slice(&[MADT_INTERRUPT_OVERRIDE, 10, 0, SCI_IRQ]);
    t.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    t.extend_from_slice(&INTI_LEVEL_HIGH.to_le_bytes());
    // NMI on LINT1 of every processor (UID 0xff), conforming polarity and trigger.
    t.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    finish(t)
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut t = header(b"XSDT", 1, b"WISPXSDT");
    for e in entries {
        t.extend_from_slice(&e.to_le_bytes());
    }
    finish(t)
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RSDP_LEN);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes
    r.extend_from_slice(&OEM_ID);
    r.push(RSDP_REVISION);
    r.extend_from_slice(&0u32.to_le_bytes()); // no RSDT: the XSDT is the root
    r.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.extend_from_slice(&[0; 4]); // extended checksum, reserved
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// The tables and the guest address of each, from `RSDP_ADDR` on (16-byte aligned).
fn layout(cpus: u8, virtio: &[MmioSlot]) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let mut next = RSDP_ADDR + RSDP_LEN as u64;
    let mut place = |len: usize, align: u64| {
        let at = next.next_multiple_of(align);
        next = at + len as u64;
        at
    };
    let facs = facs();
    let facs_at = place(facs.len(), 64);
    let dsdt = dsdt(virtio);
    let dsdt_at = place(dsdt.len(), 16);
    let fadt = fadt(dsdt_at, facs_at);
    let fadt_at = place(fadt.len(), 16);
    let madt = madt(cpus);
    let madt_at = place(madt.len(), 16);
    let xsdt = xsdt(&[fadt_at, madt_at]);
    let xsdt_at = place(xsdt.len(), 16);
    if next > ACPI_TABLES_END {
        return Err(AcpiError::TooLarge((next - RSDP_ADDR) as usize));
    }
    Ok(vec![
        (RSDP_ADDR, rsdp(xsdt_at)),
        (facs_at, facs),
        (dsdt_at, dsdt),
        (fadt_at, fadt),
        (madt_at, madt),
        (xsdt_at, xsdt),
    ])
}

/// Writes the tables for `cpus` vCPUs and the virtio-mmio devices in `virtio` (in attach
/// order) into guest memory; returns the RSDP's address, which the boot protocols pass on
/// (`boot_params.acpi_rsdp_addr`, PVH `rsdp_paddr`).
pub fn setup_acpi(mem: &GuestMemoryMmap, cpus: u8, virtio: &[MmioSlot]) -> Result<u64, AcpiError> {
    for (at, table) in layout(cpus, virtio)? {
        mem.write_slice(&table, GuestAddress(at))
            .map_err(AcpiError::Write)?;
    }
    Ok(RSDP_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{IRQ_FIRST_DEVICE, MAX_VIRTIO_DEVICES, VIRTIO_MMIO_START};
    use crate::memory::create_guest_memory;

    fn u16_at(t: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([t[off], t[off + 1]])
    }
    fn u32_at(t: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(t[off..off + 4].try_into().unwrap())
    }
    fn u64_at(t: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(t[off..off + 8].try_into().unwrap())
    }
    /// The slots the device manager hands out when every virtio device is attached.
    fn all_slots() -> Vec<MmioSlot> {
        (0..MAX_VIRTIO_DEVICES)
            .map(|i| MmioSlot {
                base: VIRTIO_MMIO_START + i as u64 * MMIO_SLOT_SIZE,
                irq: IRQ_FIRST_DEVICE + i as u32,
            })
            .collect()
    }
    fn sums_to_zero(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    /// Reads the table at `addr` back from guest memory, by the length in its header.
    fn read_table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let mut head = [0u8; HEADER_LEN];
        mem.read_slice(&mut head, GuestAddress(addr)).unwrap();
        let mut t = vec![0u8; u32_at(&head, LENGTH_OFFSET) as usize];
        mem.read_slice(&mut t, GuestAddress(addr)).unwrap();
        assert!(sums_to_zero(&t), "{:?} checksum", &t[..4]);
        t
    }

    /// Follows RSDP → XSDT → FADT, MADT → DSDT, FACS as Linux does, checking every checksum.
    fn tables(cpus: u8, virtio: &[MmioSlot]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let mem = create_guest_memory(16).unwrap();
        let rsdp_addr = setup_acpi(&mem, cpus, virtio).unwrap();
        assert_eq!(rsdp_addr, RSDP_ADDR);
        assert_eq!(
            rsdp_addr % 16,
            0,
            "the BIOS-area scan looks on 16-byte boundaries"
        );
        let mut rsdp = [0u8; RSDP_LEN];
        mem.read_slice(&mut rsdp, GuestAddress(rsdp_addr)).unwrap();
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(sums_to_zero(&rsdp[..20]) && sums_to_zero(&rsdp));
        assert_eq!(rsdp[15], 2, "revision 2: the XSDT is used");
        let xsdt = read_table(&mem, u64_at(&rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(xsdt.len(), HEADER_LEN + 16);
        let fadt = read_table(&mem, u64_at(&xsdt, HEADER_LEN));
        let madt = read_table(&mem, u64_at(&xsdt, HEADER_LEN + 8));
        assert_eq!((&fadt[..4], &madt[..4]), (&b"FACP"[..], &b"APIC"[..]));
        let dsdt = read_table(&mem, u64_at(&fadt, FADT_X_DSDT));
        assert_eq!(&dsdt[..4], b"DSDT");
        let facs_addr = u64::from(u32_at(&fadt, FADT_FIRMWARE_CTRL));
        assert_eq!(facs_addr % 64, 0, "the FACS sits on a 64-byte boundary");
        let mut facs = vec![0u8; FACS_LEN];
        mem.read_slice(&mut facs, GuestAddress(facs_addr)).unwrap();
        (fadt, madt, dsdt, facs)
    }

    #[test]
    fn fadt_describes_pm1_blocks_reset_register_and_a_fixed_hardware_machine() {
        let (fadt, _, _, facs) = tables(1, &[]);
        assert_eq!((fadt.len(), fadt[8], fadt[FADT_MINOR_VERSION]), (276, 6, 5));
        let flags = u32_at(&fadt, FADT_FLAGS);
        // Not hardware-reduced: Linux keeps the legacy PIC and ISA IRQs 0..15.
        assert_eq!(flags & FADT_FLAG_HW_REDUCED_ACPI, 0);
        assert_ne!(flags & FADT_FLAG_RESET_REG_SUP, 0);
        assert_eq!(u32_at(&fadt, FADT_PM1A_EVT_BLK), 0x600);
        assert_eq!(u32_at(&fadt, FADT_PM1A_CNT_BLK), 0x604);
        assert_eq!((fadt[FADT_PM1_EVT_LEN], fadt[FADT_PM1_CNT_LEN]), (4, 2));
        assert_eq!(u16_at(&fadt, FADT_SCI_INT), 3);
        assert_eq!(
            u32_at(&fadt, 48),
            0,
            "no SMI command port: always in ACPI mode"
        );
        // GAS: system I/O, 8 bits at bit 0, byte access, the port.
        let gas = |off: usize| (fadt[off..off + 4].to_vec(), u64_at(&fadt, off + 4));
        assert_eq!(gas(FADT_RESET_REG), (vec![1, 8, 0, 1], 0x606));
        assert_eq!(fadt[FADT_RESET_VALUE], RESET_VALUE);
        // Linux keeps its i8042 driver (Ctrl-Alt-Del) only if the 8042 flag is set.
        assert_ne!(u16_at(&fadt, FADT_IAPC_BOOT_ARCH) & IAPC_BOOT_ARCH_8042, 0);
        // No PM2, PM timer or GPE blocks.
        assert!(fadt[72..88].iter().all(|b| *b == 0));
        assert!(fadt[90..94].iter().all(|b| *b == 0));
        assert_eq!((&facs[..4], facs.len(), facs[32]), (&b"FACS"[..], 64, 2));
    }

    #[test]
    fn madt_lists_every_cpu_the_ioapic_the_sci_and_lint1_nmi() {
        let (_, madt, _, _) = tables(3, &[]);
        assert_eq!(u32_at(&madt, 36), APIC_START as u32);
        assert_eq!(u32_at(&madt, 40), MADT_PCAT_COMPAT);
        let mut entries = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let len = usize::from(madt[off + 1]);
            entries.push(madt[off..off + len].to_vec());
            off += len;
        }
        assert_eq!(off, madt.len());
        assert_eq!(entries.len(), 3 + 3);
        for (id, e) in entries[..3].iter().enumerate() {
            assert_eq!(e[..4], [0, 8, id as u8, id as u8]);
            assert_eq!(u32_at(e, 4), LOCAL_APIC_ENABLED);
        }
        assert_eq!(entries[3][..4], [1, 12, 3, 0]);
        assert_eq!(u32_at(&entries[3], 4), IOAPIC_START as u32);
        assert_eq!(u32_at(&entries[3], 8), 0, "GSI base");
        // ISA IRQ 3 → GSI 3, level, active high.
        assert_eq!(entries[4], [2, 10, 0, 3, 3, 0, 0, 0, 0x0d, 0]);
        assert_eq!(entries[5], [4, 6, 0xff, 0, 0, 1]);
    }

    #[test]
    fn dsdt_declares_s5_and_the_pvpanic_device() {
        let (_, _, dsdt, _) = tables(1, &[]);
        assert_eq!(dsdt[8], 2, "revision 2: 64-bit integers");
        let expected: &[u8] = &[
            // Name (_S5_, Package (0x02) { 0x05, Zero })
            0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00,
            // Scope (\_SB) {
            0x10, 0x2f, b'\\', b'_', b'S', b'B', b'_', //   Device (PEVT) {
            0x5b, 0x82, 0x27, b'P', b'E', b'V', b'T', //     Name (_HID, "QEMU0001")
            0x08, b'_', b'H', b'I', b'D', 0x0d, b'Q', b'E', b'M', b'U', b'0', b'0', b'0', b'1',
            0x00,
            //     Name (_CRS, ResourceTemplate () { IO (Decode16, 0x505, 0x505, 1, 1) })
            0x08, b'_', b'C', b'R', b'S', 0x11, 0x0d, 0x0a, 0x0a, 0x47, 0x01, 0x05, 0x05, 0x05,
            0x05, 0x01, 0x01, 0x79, 0x00,
        ];
        assert_eq!(&dsdt[HEADER_LEN..], expected);
    }

    #[test]
    fn only_acpi_off_or_ht_keeps_a_guest_from_the_dsdt() {
        assert!(guest_reads_dsdt("console=ttyS0 reboot=k pci=off"));
        assert!(guest_reads_dsdt("acpi=noirq acpi=strict"));
        assert!(!guest_reads_dsdt("console=ttyS0 acpi=off"));
        assert!(!guest_reads_dsdt("acpi=ht"));
        assert!(guest_reads_dsdt("acpi=off acpi=force"));
        assert!(!guest_reads_dsdt("acpi=force acpi=off"));
        // Only the exact word counts.
        assert!(guest_reads_dsdt("wisp_acpi=off xacpi=off"));
    }

    #[test]
    fn tables_for_the_most_cpus_and_devices_fit_below_1_mib() {
        let tables = layout(crate::x86_64::mptable::MAX_CPUS, &all_slots()).unwrap();
        let (at, last) = tables.last().unwrap();
        assert!(at + last.len() as u64 <= ACPI_TABLES_END);
        // No two tables overlap.
        let mut spans: Vec<_> = tables
            .iter()
            .map(|(a, t)| (*a, *a + t.len() as u64))
            .collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    }
}
