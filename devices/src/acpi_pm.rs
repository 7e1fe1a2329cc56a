//! The power-management registers of Wisp's hardware-reduced ACPI machine (ACPI 6.5 §4.8.3.7,
//! the FADT's SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG; ports in `wisp_abi::acpi`).
//!
//! This is how a guest ends the VM on purpose without console text: Linux's `poweroff` writes
//! SLP_TYP(S5) | SLP_EN to the sleep control register, ACPI reboot (`reboot=a`) writes the
//! reset value to the reset register. Each rings a doorbell the VMM loop watches; the register
//! write itself returns at once (the guest then spins on the status register until it stops).

use crate::trigger::EventFdTrigger;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use wisp_abi::acpi::{
    RESET_PORT, RESET_VALUE, SLEEP_CONTROL_PORT, SLEEP_STATUS_PORT, SLP_EN, SLP_TYP_MASK,
    SLP_TYP_S5, SLP_TYP_SHIFT,
};

/// The sleep control, sleep status and reset registers, one byte each.
pub struct AcpiPm {
    power_off: EventFdTrigger,
    reset: EventFdTrigger,
}

impl AcpiPm {
    /// `power_off` is written when the guest enters S5, `reset` when it writes the reset
    /// register.
    pub fn new(power_off: EventFdTrigger, reset: EventFdTrigger) -> Self {
        AcpiPm { power_off, reset }
    }

    fn ring(trigger: &EventFdTrigger, what: &str) {
        if let Err(e) = trigger.write(1) {
            log::error!("cannot signal the guest's {what}: {e}");
        }
    }

    fn sleep_control(&self, value: u8) {
        if value & SLP_EN == 0 {
            return;
        }
        let slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
        if slp_typ == SLP_TYP_S5 {
            Self::ring(&self.power_off, "power-off");
        } else {
            // The DSDT offers S5 only; a guest asking for another state stays running.
            log::debug!("guest asked for unsupported sleep type {slp_typ}: ignored");
        }
    }
}

impl MutDevicePio for AcpiPm {
    fn pio_read(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &mut [u8]) {
        // Sleep status reads 0: WAK_STS never sets, a powered-off guest never wakes. The
        // control and reset registers are write-only (ACPI reads them as 0).
        data.fill(0);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let [value] = data else {
            return;
        };
        match base.0.checked_add(offset).unwrap_or(0) {
            SLEEP_CONTROL_PORT => self.sleep_control(*value),
            // Writing WAK_STS clears it; there is nothing to clear.
            SLEEP_STATUS_PORT => {}
            RESET_PORT if *value == RESET_VALUE => Self::ring(&self.reset, "reset"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

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

    fn write(pm: &mut AcpiPm, port: u16, data: &[u8]) {
        pm.pio_write(
            PioAddress(SLEEP_CONTROL_PORT),
            port - SLEEP_CONTROL_PORT,
            data,
        );
    }

    #[test]
    fn linux_s5_write_powers_off() {
        let mut r = rig();
        // What acpi_hw_extended_sleep writes for SLP_TYP 5: clear WAK_STS, then SLP_TYP|SLP_EN.
        write(&mut r.pm, SLEEP_STATUS_PORT, &[0x80]);
        assert!(r.power_off.read().is_err());
        write(&mut r.pm, SLEEP_CONTROL_PORT, &[0x34]);
        assert_eq!(r.power_off.read().unwrap(), 1);
        assert!(r.reset.read().is_err());
        let mut status = [0xff];
        r.pm.pio_read(PioAddress(SLEEP_CONTROL_PORT), 1, &mut status);
        assert_eq!(status, [0], "a powered-off guest never reads WAK_STS");
    }

    #[test]
    fn other_sleep_types_and_stray_writes_do_nothing() {
        let mut r = rig();
        // S5's type without SLP_EN, SLP_EN with S3's type (not offered), a wide write, the
        // reset register with another value.
        write(
            &mut r.pm,
            SLEEP_CONTROL_PORT,
            &[SLP_TYP_S5 << SLP_TYP_SHIFT],
        );
        write(
            &mut r.pm,
            SLEEP_CONTROL_PORT,
            &[(3 << SLP_TYP_SHIFT) | SLP_EN],
        );
        write(&mut r.pm, SLEEP_CONTROL_PORT, &[0x34, 0]);
        write(&mut r.pm, RESET_PORT, &[0x06]);
        assert!(r.power_off.read().is_err());
        assert!(r.reset.read().is_err());
    }

    #[test]
    fn reset_register_resets() {
        let mut r = rig();
        write(&mut r.pm, RESET_PORT, &[RESET_VALUE]);
        assert_eq!(r.reset.read().unwrap(), 1);
        assert!(r.power_off.read().is_err());
    }
}
