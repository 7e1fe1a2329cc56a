//! The i8042 keyboard controller, reduced to what a microVM needs: the guest writing the
//! "pulse reset line" command (0xFE to port 0x64) ends the VM. Linux uses it for `reboot=k`
//! (its default without ACPI), and the Wisp unikernel uses it to power off.

use crate::trigger::EventFdTrigger;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::I8042Device;

/// First port of the controller (data port 0x60; command/status is 0x64 = base + 4).
pub const I8042_PORT: u16 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_PORT_COUNT: u16 = 5;

/// The controller as a port-I/O device; `reset` is written when the guest resets the CPU.
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    pub fn new(reset: EventFdTrigger) -> Self {
        I8042 {
            inner: I8042Device::new(reset),
        }
    }
}

impl MutDevicePio for I8042 {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        if let (1, Ok(off)) = (data.len(), u8::try_from(offset)) {
            data[0] = self.inner.read(off);
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if let (1, Ok(off)) = (data.len(), u8::try_from(offset)) {
            if let Err(e) = self.inner.write(off, data[0]) {
                log::error!("i8042: cannot signal the reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn reset_command_signals_the_vmm_and_other_writes_do_not() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut kbd = I8042::new(EventFdTrigger::new(evt.try_clone().unwrap()));
        kbd.pio_write(PioAddress(I8042_PORT), 4, &[0xAA]);
        kbd.pio_write(PioAddress(I8042_PORT), 0, &[0xFE]);
        assert!(evt.read().is_err(), "no reset expected yet");
        kbd.pio_write(PioAddress(I8042_PORT), 4, &[0xFE]);
        assert_eq!(evt.read().unwrap(), 1);
    }
}
