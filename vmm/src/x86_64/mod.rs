//! x86_64 specifics: CPU state for boot, CPUID, MSRs, the GDT, page tables, the MP table, the
//! ACPI tables and the boot structures of the Linux and PVH boot protocols.

pub mod acpi;
pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod msr;
pub mod regs;
