//! ACPI as Wisp presents it (ACPI 6.5, fixed hardware with no optional blocks): where the tables sit in guest memory,
//! and the I/O ports of the two lifecycle devices they describe.
//!
//! * The power-management registers the FADT names: the PM1a event and control blocks (a
//!   write of SLP_TYP = [`SLP_TYP_S5`] with [`SLP_EN`] to PM1_CNT powers the machine off,
//!   ACPI 6.5 §4.8.3.2, §7.4.2) and the reset register (a write of [`RESET_VALUE`] resets it).
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

/// PM1a event block (ACPI 6.5 §4.8.3.1): PM1_STS (2 bytes), then PM1_EN (2 bytes).
pub const PM1_EVT_PORT: u16 = 0x600;
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control block (ACPI 6.5 §4.8.3.2, 2 bytes): SCI_EN bit 0, SLP_TYP bits 10..12,
/// SLP_EN bit 13.
pub const PM1_CNT_PORT: u16 = 0x604;
pub const PM1_CNT_LEN: u8 = 2;
/// Reset register (one byte).
pub const RESET_PORT: u16 = 0x606;
/// The ports the power-management device decodes, from [`PM1_EVT_PORT`].
pub const PM_PORT_COUNT: u16 = 7;
/// SCI_EN: the machine is in ACPI mode (always: there is no SMI command port).
pub const SCI_EN: u16 = 1 << 0;
/// SLP_EN: "enter the sleep state in SLP_TYP".
pub const SLP_EN: u16 = 1 << 13;
/// SLP_TYP sits in bits 10..12 of PM1_CNT.
pub const SLP_TYP_SHIFT: u16 = 10;
pub const SLP_TYP_MASK: u16 = 0b111 << SLP_TYP_SHIFT;
/// The SLP_TYP value the DSDT's `\_S5_` package gives for soft-off.
pub const SLP_TYP_S5: u8 = 5;
/// The byte that resets the machine through the reset register.
pub const RESET_VALUE: u8 = 0x0f;
/// The SCI's ISA IRQ: 3, the one no Wisp device uses (COM1 is 4, virtio devices 5..23). The
/// VMM never raises it: there are no GPEs and no fixed events to report.
pub const SCI_IRQ: u8 = 3;

/// pvpanic's I/O port (QEMU's default for the ISA pvpanic device).
pub const PVPANIC_PORT: u16 = 0x505;
/// pvpanic event: the guest kernel panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
