//! Hardware-reduced ACPI as Wisp presents it (ACPI 6.5): where the tables sit in guest memory,
//! and the I/O ports of the two lifecycle devices they describe.
//!
//! * The power-management registers the FADT names: the sleep control register (a write of
//!   SLP_TYP = [`SLP_TYP_S5`] with [`SLP_EN`] powers the machine off, ACPI 6.5 §4.8.3.7), the
//!   sleep status register, and the reset register (a write of [`RESET_VALUE`] resets it).
//! * pvpanic (QEMU's docs/specs/pvpanic.rst): the DSDT device `QEMU0001` at [`PVPANIC_PORT`];
//!   reading the port gives the events the device supports, writing one reports it.
//!
//! A guest may also use these registers without parsing the tables (the unikernel does).

/// The RSDP, where Linux's fallback scan of the BIOS area (0xe0000..0x100000, on 16-byte
/// boundaries) finds it; the boot protocols also hand its address over (`acpi_rsdp_addr`,
/// PVH `rsdp_paddr`). The other tables follow it, up to [`ACPI_TABLES_END`].
pub const RSDP_ADDR: u64 = 0x000e_0000;
/// End (exclusive) of the area the tables may use: the rest of the BIOS area.
pub const ACPI_TABLES_END: u64 = 0x0010_0000;

/// Sleep control register (one byte): SLP_TYP in bits 2..4, SLP_EN in bit 5.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// Sleep status register (one byte): WAK_STS in bit 7. It never reads as woken.
pub const SLEEP_STATUS_PORT: u16 = 0x601;
/// Reset register (one byte).
pub const RESET_PORT: u16 = 0x602;
/// The ports the power-management device decodes, from [`SLEEP_CONTROL_PORT`].
pub const PM_PORT_COUNT: u16 = 3;
/// SLP_EN: "enter the sleep state in SLP_TYP" (sleep control register bit 5).
pub const SLP_EN: u8 = 1 << 5;
/// SLP_TYP sits in bits 2..4 of the sleep control register.
pub const SLP_TYP_SHIFT: u8 = 2;
pub const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;
/// The SLP_TYP value the DSDT's `\_S5_` package gives for soft-off.
pub const SLP_TYP_S5: u8 = 5;
/// The byte that resets the machine through the reset register.
pub const RESET_VALUE: u8 = 0x0f;

/// pvpanic's I/O port (QEMU's default for the ISA pvpanic device).
pub const PVPANIC_PORT: u16 = 0x505;
/// pvpanic event: the guest kernel panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
