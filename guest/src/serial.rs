//! The console: an 8250/16550 UART at COM1 (I/O port 0x3f8), polled, no interrupts.
//!
//! Registers (offsets from the base, DLAB = 0): 0 = THR (write) / RBR (read), 5 = LSR with
//! bit 0 "data ready" and bit 5 "transmit holding register empty". The UART is used as the
//! firmware left it (the VMM's reset state is fine for output), so booting costs no setup
//! port writes.

use crate::cpu;
use core::fmt;

const COM1: u16 = 0x3f8;
const THR: u16 = COM1;
const RBR: u16 = COM1;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Polls of LSR before writing anyway: a missing or stuck UART must not hang the guest.
const TX_POLL_LIMIT: u32 = 1 << 16;

/// The COM1 console. A zero-sized handle: the UART itself is the state.
pub struct Serial;

impl Serial {
    fn line_status() -> u8 {
        // SAFETY: reading COM1's LSR has no side effect beyond reporting status.
        unsafe { cpu::inb(LSR) }
    }

    /// Sends one byte, waiting (bounded) for the transmit holding register to be empty.
    pub fn write_byte(byte: u8) {
        for _ in 0..TX_POLL_LIMIT {
            if Self::line_status() & LSR_THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        // SAFETY: writing THR of COM1 transmits the byte; COM1 is the console by the guest ABI.
        unsafe { cpu::outb(THR, byte) };
    }

    /// Sends every byte of `bytes`.
    pub fn write_bytes(bytes: &[u8]) {
        for &byte in bytes {
            Self::write_byte(byte);
        }
    }

    /// Waits (unbounded: the caller asked for input) for a received byte and returns it.
    pub fn read_byte() -> u8 {
        while Self::line_status() & LSR_DATA_READY == 0 {
            core::hint::spin_loop();
        }
        // SAFETY: reading RBR of COM1 pops the received byte, which is what we want.
        unsafe { cpu::inb(RBR) }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        Self::write_bytes(text.as_bytes());
        Ok(())
    }
}

/// Prints a line on the serial console (`\n` terminated).
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        // Serial output cannot fail (`write_str` always returns Ok).
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}
pub(crate) use println;
