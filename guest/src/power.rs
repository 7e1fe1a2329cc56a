//! Ending the VM: a reset through the i8042 keyboard controller, which Wisp's VMM (and QEMU
//! with `-no-reboot`) treats as the guest's clean exit.

use crate::cpu;

/// i8042 command/status port.
const I8042_COMMAND: u16 = 0x64;
/// i8042 command "pulse output line 0" (bit 0 = CPU reset line, active low): reset the CPU.
const I8042_PULSE_RESET: u8 = 0xfe;

/// Asks the platform to reset; halts if it does not.
pub fn reset() -> ! {
    // SAFETY: writing the reset command to the i8042 only ends the VM, which is the intent.
    unsafe { cpu::outb(I8042_COMMAND, I8042_PULSE_RESET) };
    cpu::halt_forever()
}
