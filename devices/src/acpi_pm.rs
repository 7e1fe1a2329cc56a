//! The power-management registers of Wisp's ACPI machine (ACPI 6.5 §4.8.3: the FADT's PM1a
//! event and control blocks and RESET_REG; ports in `wisp_abi::acpi`).
//!
//! This is how a guest ends the VM on purpose without console text: Linux's `poweroff` writes
//! SLP_TYP(S5) | SLP_EN to PM1_CNT (acpi_hw_legacy_sleep), ACPI reboot (`reboot=a`) writes
//! the reset value to the reset register. Each rings a doorbell the VMM loop watches; the
//! register write itself returns at once (the guest then polls PM1_STS until it stops).
//!
//! Registers, from `PM1_EVT_PORT`: PM1_STS (2 bytes, reads 0: no event, and WAK_STS never
//! sets), PM1_EN (2 bytes, kept: there are no fixed events to enable), PM1_CNT (2 bytes,
//! SCI_EN always set), the reset register (1 byte). Byte and word accesses both work.

use crate::trigger::EventFdTrigger;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use wisp_abi::acpi::{
    PM_PORT_COUNT, RESET_VALUE, SCI_EN, SLP_EN, SLP_TYP_MASK, SLP_TYP_S5, SLP_TYP_SHIFT,
};

/// Offsets from the block's first port.
const PM1_EN: usize = 2;
const PM1_CNT: usize = 4;
const RESET: usize = 6;

/// PM1 event and control blocks and the reset register.
pub struct AcpiPm {
    /// The register file as the guest sees it (PM1_STS stays 0).
    regs: [u8; PM_PORT_COUNT as usize],
    power_off: EventFdTrigger,
    reset: EventFdTrigger,
}

impl AcpiPm {
    /// `power_off` is written when the guest enters S5, `reset` when it writes the reset
    /// register.
    pub fn new(power_off: EventFdTrigger, reset: EventFdTrigger) -> Self {
        let mut regs = [0; PM_PORT_COUNT as usize];
        regs[PM1_CNT..PM1_CNT + 2].copy_from_slice(&SCI_EN.to_le_bytes());
        AcpiPm {
            regs,
            power_off,
            reset,
        }
    }

    /// The register file, for a snapshot.
    pub fn save_state(&self) -> Vec<u8> {
        self.regs.to_vec()
    }

    /// Puts the registers back; a file of another size is refused.
    pub fn restore_state(&mut self, regs: &[u8]) -> Result<(), String> {
        self.regs = regs
            .try_into()
            .map_err(|_| format!("{} ACPI PM register bytes", regs.len()))?;
        Ok(())
    }

    fn ring(trigger: &EventFdTrigger, what: &str) {
        if let Err(e) = trigger.write(1) {
            log::error!("cannot signal the guest's {what}: {e}");
        }
    }

    fn pm1_control(&mut self, value: u16) {
        // SCI_EN stays set; SLP_EN is write-only and reads as 0.
        let kept = (value | SCI_EN) & !SLP_EN;
        self.regs[PM1_CNT..PM1_CNT + 2].copy_from_slice(&kept.to_le_bytes());
        if value & SLP_EN == 0 {
            return;
        }
        let slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if slp_typ == u16::from(SLP_TYP_S5) {
            Self::ring(&self.power_off, "power-off");
        } else {
            // The DSDT offers S5 only; a guest asking for another state stays running.
            log::debug!("guest asked for unsupported sleep type {slp_typ}: ignored");
        }
    }
}

impl MutDevicePio for AcpiPm {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match usize::from(offset) + i {
                at @ PM1_EN..RESET => self.regs[at],
                _ => 0,
            };
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let start = usize::from(offset);
        if data.is_empty() || data.len() > 2 || start + data.len() > self.regs.len() {
            return;
        }
        let mut regs = self.regs;
        regs[start..start + data.len()].copy_from_slice(data);
        match start {
            // PM1_STS: write 1 to clear; nothing is ever set.
            0 | 1 => {}
            2 | 3 => self.regs[PM1_EN..PM1_EN + 2].copy_from_slice(&regs[PM1_EN..PM1_EN + 2]),
            4 | 5 => self.pm1_control(u16::from_le_bytes([regs[PM1_CNT], regs[PM1_CNT + 1]])),
            _ if data == [RESET_VALUE] => Self::ring(&self.reset, "reset"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;
    use wisp_abi::acpi::PM1_EVT_PORT;

    struct Rig {
        pm: AcpiPm,
        power_off: EventFd,
        reset: EventFd,
    }

    fn rig() -> Rig {
        let power_off = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let pm = AcpiPm::new(
            EventFdTrigger::new(power_off.try_clone().unwrap()),
            EventFdTrigger::new(reset.try_clone().unwrap()),
        );
        Rig {
            pm,
            power_off,
            reset,
        }
    }

    fn write(pm: &mut AcpiPm, offset: u16, data: &[u8]) {
        pm.pio_write(PioAddress(PM1_EVT_PORT), offset, data);
    }

    fn read16(pm: &mut AcpiPm, offset: u16) -> u16 {
        let mut b = [0xff; 2];
        pm.pio_read(PioAddress(PM1_EVT_PORT), offset, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn linux_s5_sequence_powers_off() {
        let mut r = rig();
        // acpi_hw_legacy_sleep: clear WAK_STS, write SLP_TYP, then SLP_TYP | SLP_EN.
        write(&mut r.pm, 0, &0x8000u16.to_le_bytes());
        write(&mut r.pm, 4, &(5u16 << 10 | SCI_EN).to_le_bytes());
        assert!(r.power_off.read().is_err());
        assert_eq!(read16(&mut r.pm, 4), 5 << 10 | SCI_EN);
        write(&mut r.pm, 4, &(5u16 << 10 | SLP_EN | SCI_EN).to_le_bytes());
        assert_eq!(r.power_off.read().unwrap(), 1);
        assert!(r.reset.read().is_err());
        assert_eq!(
            read16(&mut r.pm, 0),
            0,
            "a powered-off guest never reads WAK_STS"
        );
    }

    #[test]
    fn acpi_mode_is_on_and_pm1_en_is_kept() {
        let mut r = rig();
        assert_eq!(read16(&mut r.pm, 4) & SCI_EN, SCI_EN);
        write(&mut r.pm, 2, &0x0120u16.to_le_bytes());
        assert_eq!(read16(&mut r.pm, 2), 0x0120);
        // A byte write reaches one half of the register.
        write(&mut r.pm, 3, &[0]);
        assert_eq!(read16(&mut r.pm, 2), 0x0020);
    }

    #[test]
    fn other_sleep_types_and_stray_writes_do_nothing() {
        let mut r = rig();
        write(&mut r.pm, 4, &(3u16 << 10 | SLP_EN).to_le_bytes());
        write(&mut r.pm, 4, &[0, 0, 0, 0]);
        write(&mut r.pm, 6, &[0x06]);
        write(&mut r.pm, 6, &[RESET_VALUE, 0]);
        assert!(r.power_off.read().is_err());
        assert!(r.reset.read().is_err());
    }

    #[test]
    fn reset_register_resets() {
        let mut r = rig();
        write(&mut r.pm, 6, &[RESET_VALUE]);
        assert_eq!(r.reset.read().unwrap(), 1);
        assert!(r.power_off.read().is_err());
    }
}
