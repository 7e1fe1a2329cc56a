//! The 8250 UART console (COM1, port 0x3f8, IRQ 4), built on vm-superio's `Serial`.
//!
//! Guest output goes to a host writer (stdout for `wisp run`); host input is pushed in with
//! `enqueue_input`. The console also watches the guest's output for Linux's panic banner, so a
//! guest that panics and then resets (`panic=-1`) is reported as a failure, not as a clean exit.

use crate::trigger::EventFdTrigger;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_superio::serial::NoEvents;
use vm_superio::Serial;

/// I/O port base of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of UART registers.
pub const COM1_PORT_COUNT: u16 = 8;
/// Legacy IRQ of COM1.
pub const COM1_IRQ: u32 = 4;

/// The line Linux prints first when it panics (kernel/panic.c).
const PANIC_BANNER: &[u8] = b"Kernel panic - not syncing";

/// A writer that forwards guest output and remembers whether the panic banner went past.
pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    matched: usize,
    panicked: Arc<AtomicBool>,
    /// Set once the host side failed (e.g. a closed pipe): further output is dropped quietly
    /// rather than failing every byte the guest writes.
    broken: bool,
}

impl ConsoleOutput {
    pub fn new(out: Box<dyn Write + Send>, panicked: Arc<AtomicBool>) -> Self {
        ConsoleOutput {
            out,
            matched: 0,
            panicked,
            broken: false,
        }
    }

    fn scan(&mut self, buf: &[u8]) {
        for &b in buf {
            // The banner has no repeated prefix, so a mismatch can restart at 0 or 1.
            if b == PANIC_BANNER[self.matched] {
                self.matched += 1;
                if self.matched == PANIC_BANNER.len() {
                    self.panicked.store(true, Ordering::Release);
                    self.matched = 0;
                }
            } else {
                self.matched = usize::from(b == PANIC_BANNER[0]);
            }
        }
    }
}

impl Write for ConsoleOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scan(buf);
        if !self.broken {
            if let Err(e) = self.out.write_all(buf) {
                log::warn!("guest console output is lost from now on: {e}");
                self.broken = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// COM1 as a port-I/O device.
pub struct SerialConsole {
    uart: Serial<EventFdTrigger, NoEvents, ConsoleOutput>,
}

impl SerialConsole {
    /// `irq` is written when the UART raises its interrupt line; wire it to an irqfd on IRQ 4.
    pub fn new(irq: EventFdTrigger, out: ConsoleOutput) -> Self {
        SerialConsole {
            uart: Serial::new(irq, out),
        }
    }

    /// Host input for the guest (stdin). Bytes beyond the UART FIFO's room are dropped, as a
    /// real UART would drop them; returns how many were queued.
    pub fn enqueue_input(&mut self, input: &[u8]) -> io::Result<usize> {
        let room = self.uart.fifo_capacity().min(input.len());
        self.uart
            .enqueue_raw_bytes(&input[..room])
            .map_err(|e| io::Error::other(format!("serial input: {e:?}")))
    }
}

impl MutDevicePio for SerialConsole {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        if data.len() == 1 {
            if let Ok(off) = u8::try_from(offset) {
                data[0] = self.uart.read(off);
            }
        }
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        if data.len() != 1 {
            return;
        }
        if let Ok(off) = u8::try_from(offset) {
            if let Err(e) = self.uart.write(off, data[0]) {
                log::warn!("serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn console_output_detects_panic_banner_split_across_writes() {
        let flag = Arc::new(AtomicBool::new(false));
        let sink = Sink::default();
        let mut out = ConsoleOutput::new(Box::new(sink.clone()), flag.clone());
        out.write_all(b"[ 1.0] KKernel pan").unwrap();
        assert!(!flag.load(Ordering::Acquire));
        out.write_all(b"ic - not syncing: Attempted to kill init!")
            .unwrap();
        assert!(flag.load(Ordering::Acquire));
        assert!(sink.0.lock().unwrap().starts_with(b"[ 1.0] KKernel"));
    }

    #[test]
    fn console_output_ignores_ordinary_output() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut out = ConsoleOutput::new(Box::new(io::sink()), flag.clone());
        out.write_all(b"Kernel panic is a phrase in this text but not the banner")
            .unwrap();
        assert!(!flag.load(Ordering::Acquire));
    }

    #[test]
    fn guest_writes_reach_the_host_writer() {
        let sink = Sink::default();
        let flag = Arc::new(AtomicBool::new(false));
        let irq =
            EventFdTrigger::new(vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut com1 = SerialConsole::new(irq, ConsoleOutput::new(Box::new(sink.clone()), flag));
        for b in b"hi\n" {
            com1.pio_write(PioAddress(COM1_PORT), 0, &[*b]);
        }
        // A wide access is ignored rather than misinterpreted.
        com1.pio_write(PioAddress(COM1_PORT), 0, b"xy");
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
    }
}
