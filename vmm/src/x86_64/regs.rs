//! Initial CPU state for the boot vCPU: registers, segments, control registers, identity page
//! tables (64-bit Linux boot protocol) or flat 32-bit protected mode (PVH ABI), FPU and LAPIC.

use super::gdt::{boot_gdt, kvm_segment_from_gdt};
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};
use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, identity paging, `rsi` = zero page.
    LongMode,
    /// PVH: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh,
}

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write the boot GDT into guest memory: {0}")]
    Gdt(#[source] vm_memory::GuestMemoryError),
    #[error("cannot write the boot page tables into guest memory: {0}")]
    PageTables(#[source] vm_memory::GuestMemoryError),
}

/// General-purpose registers at the kernel's entry point.
pub fn boot_regs(mode: EntryMode, entry: u64, boot_info: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::LongMode => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = boot_info;
        }
        EntryMode::Pvh => regs.rbx = boot_info,
    }
    regs
}

/// Writes the GDT (and for long mode the page tables) and sets the segment and control
/// registers in `sregs`.
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    sregs: &mut kvm_sregs,
) -> Result<(), RegsError> {
    let gdt = boot_gdt(mode == EntryMode::LongMode);
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(RegsError::Gdt)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(RegsError::Gdt)?;

    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::LongMode => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// Identity-maps the first 1 GiB with 2 MiB pages: enough for the 64-bit boot protocol, which
/// only needs the kernel, zero page and cmdline mapped.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    // Present | writable.
    mem.write_obj(PDPTE_START | 0x3, GuestAddress(PML4_START))
        .map_err(RegsError::PageTables)?;
    mem.write_obj(PDE_START | 0x3, GuestAddress(PDPTE_START))
        .map_err(RegsError::PageTables)?;
    let mut pd = [0u64; 512];
    for (i, e) in pd.iter_mut().enumerate() {
        // Present | writable | page size (2 MiB).
        *e = ((i as u64) << 21) | 0x83;
    }
    for (i, e) in pd.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(PDE_START + 8 * i as u64))
            .map_err(RegsError::PageTables)?;
    }
    Ok(())
}

/// FPU state after reset, as a kernel expects it (x87 control word, SSE exceptions masked).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn read_apic_reg(lapic: &kvm_lapic_state, reg: usize) -> u32 {
    let b = &lapic.regs[reg..reg + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn write_apic_reg(lapic: &mut kvm_lapic_state, reg: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[reg + i] = *byte as _;
    }
}

/// LINT0 as ExtINT (the PIC's output) and LINT1 as NMI, like a PC's BIOS leaves them
/// (Intel MP spec §5.1, virtual wire mode).
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let delivery = |v: u32, mode: u32| (v & !0x700) | (mode << 8);
    let lvt0 = read_apic_reg(lapic, APIC_LVT0);
    write_apic_reg(lapic, APIC_LVT0, delivery(lvt0, APIC_MODE_EXTINT));
    let lvt1 = read_apic_reg(lapic, APIC_LVT1);
    write_apic_reg(lapic, APIC_LVT1, delivery(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn long_mode_sregs_enable_paging_and_map_the_first_gigabyte() {
        let mem = create_guest_memory(16).unwrap();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, EntryMode::LongMode, &mut sregs).unwrap();
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.cr0 & X86_CR0_PG, 0);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        assert_eq!(sregs.cs.l, 1);
        let pde: u64 = mem.read_obj(GuestAddress(PDE_START + 8 * 3)).unwrap();
        assert_eq!(pde, (3 << 21) | 0x83);
    }

    #[test]
    fn pvh_sregs_are_flat_protected_mode_without_paging() {
        let mem = create_guest_memory(16).unwrap();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&mem, EntryMode::Pvh, &mut sregs).unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, 1);
        assert_eq!((sregs.cs.l, sregs.cs.db), (0, 1));
        let regs = boot_regs(EntryMode::Pvh, 0x100_0000, 0x6000);
        assert_eq!((regs.rip, regs.rbx), (0x100_0000, 0x6000));
    }

    #[test]
    fn lint_pins_become_extint_and_nmi() {
        let mut lapic = kvm_lapic_state::default();
        set_lint(&mut lapic);
        assert_eq!(
            (read_apic_reg(&lapic, APIC_LVT0) >> 8) & 7,
            APIC_MODE_EXTINT
        );
        assert_eq!((read_apic_reg(&lapic, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
    }
}
