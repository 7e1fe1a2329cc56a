//! pvpanic (QEMU's docs/specs/pvpanic.rst) on an I/O port: a guest kernel that panics says so
//! with one write, so the VMM reports the panic from a device and not from console text.
//! Linux's driver (drivers/misc/pvpanic, ACPI id `QEMU0001` in Wisp's DSDT) reads the port at
//! probe for the events the device supports and writes PVPANIC_PANICKED from its panic notifier.

use crate::trigger::EventFdTrigger;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use wisp_abi::acpi::PVPANIC_PANICKED;

/// The pvpanic port.
pub struct PvPanic {
    panicked: Arc<AtomicBool>,
    doorbell: EventFdTrigger,
}

impl PvPanic {
    /// `panicked` is set on the guest's panic report, before `doorbell` is written: a reset
    /// the guest makes afterwards (`panic=-1`) can then still be told from a clean one, however
    /// the VMM loop orders the two doorbells.
    pub fn new(panicked: Arc<AtomicBool>, doorbell: EventFdTrigger) -> Self {
        PvPanic { panicked, doorbell }
    }
}

impl MutDevicePio for PvPanic {
    fn pio_read(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &mut [u8]) {
        // Only "panicked" is offered: not CRASH_LOADED (a kdump kernel would keep the VM
        // running) nor SHUTDOWN (power-off has its own register).
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = PVPANIC_PANICKED;
        }
    }

    fn pio_write(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &[u8]) {
        let [event] = data else {
            return;
        };
        if event & PVPANIC_PANICKED != 0 {
            self.panicked.store(true, Ordering::Release);
            if let Err(e) = self.doorbell.write(1) {
                log::error!("cannot signal the guest's panic: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;
    use wisp_abi::acpi::PVPANIC_PORT;

    #[test]
    fn advertises_panicked_and_reports_it() {
        let flag = Arc::new(AtomicBool::new(false));
        let bell = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = PvPanic::new(flag.clone(), EventFdTrigger::new(bell.try_clone().unwrap()));
        let mut caps = [0xff];
        dev.pio_read(PioAddress(PVPANIC_PORT), 0, &mut caps);
        assert_eq!(caps, [PVPANIC_PANICKED]);
        // CRASH_LOADED alone (not offered) and a wide write are not a panic.
        dev.pio_write(PioAddress(PVPANIC_PORT), 0, &[2]);
        dev.pio_write(PioAddress(PVPANIC_PORT), 0, &[1, 0]);
        assert!(!flag.load(Ordering::Acquire));
        assert!(bell.read().is_err());
        dev.pio_write(PioAddress(PVPANIC_PORT), 0, &[PVPANIC_PANICKED]);
        assert!(flag.load(Ordering::Acquire));
        assert_eq!(bell.read().unwrap(), 1);
    }
}
