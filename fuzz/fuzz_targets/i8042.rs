//! The i8042 controller under arbitrary port sequences: reads and writes of ports 0x60-0x64
//! (and bad widths), Ctrl-Alt-Del injections from the API side, and full drains of the output
//! buffer.
//!
//! Input: operations of two bytes, a kind and a value. Kind bits 0-2: write 0x60, write 0x64,
//! read 0x60, read 0x64, drain, inject Ctrl-Alt-Del, write to an unused port (0x61-0x63),
//! 2-byte access; bits 3-7 pick the unused port.
//!
//! Invariants besides no panic: the reset line (the VMM's exit) fires exactly when the guest
//! writes command 0xFE to port 0x64; the output buffer is bounded (a drain empties it within
//! 32 reads) and the status register's output-buffer-full bit tells the truth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_device::bus::PioAddress;
use vm_device::MutDevicePio;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use wisp_devices::i8042::{I8042, I8042_PORT};
use wisp_devices::trigger::EventFdTrigger;

const DATA: u16 = 0;
const COMMAND: u16 = 4;
const STATUS_OBF: u8 = 1;
/// The controller's buffer (a real one holds 16; the chord needs 11).
const CAPACITY: usize = 32;

fn status(kbd: &mut I8042) -> u8 {
    let mut b = [0];
    kbd.pio_read(PioAddress(I8042_PORT), COMMAND, &mut b);
    b[0]
}

fuzz_target!(|data: &[u8]| {
    let reset = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut kbd = I8042::new(
        EventFdTrigger::new(reset.try_clone().expect("eventfd clone")),
        Some(EventFdTrigger::new(irq.try_clone().expect("eventfd clone"))),
    );
    let base = PioAddress(I8042_PORT);
    for op in data.chunks(2) {
        let (kind, value) = (op[0], op.get(1).copied().unwrap_or(0));
        let mut resets = 0;
        match kind & 7 {
            0 => kbd.pio_write(base, DATA, &[value]),
            1 => {
                kbd.pio_write(base, COMMAND, &[value]);
                resets = u64::from(value == 0xFE);
            }
            2 => kbd.pio_read(base, DATA, &mut [0]),
            3 => {
                status(&mut kbd);
            }
            4 => {
                let mut reads = 0;
                while status(&mut kbd) & STATUS_OBF != 0 {
                    kbd.pio_read(base, DATA, &mut [0]);
                    reads += 1;
                    assert!(
                        reads <= CAPACITY,
                        "output buffer holds more than {CAPACITY}"
                    );
                }
            }
            5 => {
                let _ = kbd.send_ctrl_alt_del();
            }
            6 => {
                let port = 1 + u16::from(kind >> 3) % 3;
                kbd.pio_write(base, port, &[value]);
                kbd.pio_read(base, port, &mut [0]);
            }
            _ => {
                let port = if kind & 8 != 0 { COMMAND } else { DATA };
                kbd.pio_write(base, port, &[value, value]);
                kbd.pio_read(base, port, &mut [0, 0]);
            }
        }
        let fired = reset.read().unwrap_or(0);
        assert_eq!(
            fired, resets,
            "reset line fired {fired} times for operation {kind:#04x} {value:#04x}"
        );
    }
});
