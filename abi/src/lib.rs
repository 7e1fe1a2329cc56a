//! The one definition of every address, magic value and layout that two sides of Wisp must
//! agree on, so they cannot drift apart:
//!
//! * guest-visible ABI, shared by the VMM and devices (host) and the unikernel (guest):
//!   the MMIO map and device IRQs ([`memory_map`]), the boot timer ([`boot_timer`]), the noxs
//!   device page ([`noxs`]), the MP table ([`mptable`]) and the ACPI lifecycle registers
//!   ([`acpi`]);
//! * the control page between `wispd` and a prepared `wisp shell` ([`control_page`]).
//!
//! Constants only: no code that touches memory, no dependencies, `no_std`, so the freestanding
//! unikernel can use it as it is.

#![cfg_attr(not(test), no_std)]

pub mod acpi;
pub mod boot_timer;
pub mod control_page;
pub mod memory_map;
pub mod mptable;
pub mod noxs;

#[cfg(test)]
mod tests {
    //! The guest ABI's values as documented (guest/README.md, docs/design.md): a change here
    //! breaks guests built against an older Wisp, so it must be deliberate.

    use super::*;

    #[test]
    fn guest_visible_values_are_the_documented_ones() {
        assert_eq!(boot_timer::BOOT_TIMER_ADDR, 0xd000_0000);
        assert_eq!(boot_timer::BOOT_TIMER_MAGIC, 123);
        assert_eq!(noxs::NOXS_PAGE_ADDR, 0xd000_1000);
        assert_eq!(noxs::NOXS_MAGIC, 0x5358_4f4e);
        assert_eq!(noxs::NOXS_VERSION, 1);
        assert_eq!(
            (noxs::OFF_COUNT, noxs::OFF_SYSCTL, noxs::HEADER_SIZE),
            (8, 12, 16)
        );
        // The last 8 bytes hold the VM generation (snapshots), so one entry fewer fits.
        assert_eq!(noxs::OFF_GENERATION, 4088);
        assert_eq!(noxs::MAX_ENTRIES, 254);
        assert_eq!(memory_map::VIRTIO_MMIO_START, 0xd000_2000);
        assert_eq!(memory_map::EBDA_START, 0x9fc00);
        assert_eq!(&mptable::FLOATING_POINTER_SIGNATURE, b"_MP_");
        assert_eq!(&mptable::CONFIG_TABLE_SIGNATURE, b"PCMP");
        assert_eq!(acpi::RSDP_ADDR, 0xe_0000);
        assert_eq!(
            (acpi::PM1_EVT_PORT, acpi::PM1_CNT_PORT, acpi::RESET_PORT),
            (0x600, 0x604, 0x606)
        );
        // PM1_CNT for an S5 entry with SLP_TYP 5: (5 << 10) | SLP_EN.
        assert_eq!(
            (u16::from(acpi::SLP_TYP_S5) << acpi::SLP_TYP_SHIFT) | acpi::SLP_EN,
            0x3400
        );
        assert_eq!(acpi::PVPANIC_PORT, 0x505);
    }

    #[test]
    fn every_virtio_device_gets_its_own_ioapic_pin_and_mmio_slot() {
        let irqs = memory_map::IRQ_FIRST_DEVICE..=memory_map::IRQ_LAST_DEVICE;
        assert_eq!(irqs.clone().count(), memory_map::MAX_VIRTIO_DEVICES);
        assert!(irqs
            .clone()
            .all(|irq| irq < u32::from(mptable::IOAPIC_PINS)));
        // Not the timer (0), keyboard (1), cascade (2) or COM1 (4).
        assert!(!irqs.clone().any(|irq| [0, 1, 2, 4].contains(&irq)));
        let last_slot_end = memory_map::VIRTIO_MMIO_START
            + memory_map::MAX_VIRTIO_DEVICES as u64 * memory_map::MMIO_SLOT_SIZE;
        assert!(last_slot_end <= memory_map::IOAPIC_START);
    }
}
