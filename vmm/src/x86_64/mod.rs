//! x86_64 specifics: CPU state for boot, CPUID, MSRs, the GDT, page tables, the MP table, the
//! ACPI tables (with their AML) and the boot structures of the Linux and PVH boot protocols.

pub mod acpi;
mod aml;
pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod msr;
pub mod regs;

#[cfg(test)]
mod dsdt_tests;
