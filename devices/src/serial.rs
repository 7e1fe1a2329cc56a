//! The 8250 UART console (COM1, port 0x3f8, IRQ 4), built on vm-superio's `Serial`.
//!
//! Guest output goes to a host writer (stdout for `wisp run`); host input is pushed in with
//! `enqueue_input`.
//!
//! For legacy guests only (Linux without ACPI and pvpanic), and only when asked: the console can
//! also watch the guest's output for Linux's panic banner and halt lines. That lets any guest
//! process that prints those lines decide the VM's fate, so it is off unless the VMM is told
//! otherwise; the lifecycle normally comes from devices (ACPI power-off, pvpanic, i8042 reset).

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

/// What Linux prints first when it panics (kernel/panic.c).
const PANIC_BANNER: &[u8] = b"Kernel panic - not syncing";
/// What Linux prints when it halts or powers off without ACPI (kernel/reboot.c): the vCPUs
/// then sit in `hlt` inside KVM and no exit ever reaches the VMM, so the console is the signal.
const HALT_BANNERS: [&[u8]; 3] = [
    b"reboot: System halted",
    b"reboot: Power down",
    // `poweroff` without ACPI: the kernel says this and halts without printing more.
    b"reboot: Power off not available: System halted instead",
];
/// Longest line kept for matching; banners sit at the start of short lines.
const LINE_MAX: usize = 160;

/// What the console saw that the VMM must act on.
#[derive(Clone, Debug)]
pub struct ConsoleWatch {
    /// Set when the panic banner went past (a following reset is then a failure).
    pub panicked: Arc<AtomicBool>,
    /// Written when the guest halted or powered off.
    pub halted: Arc<vmm_sys_util::eventfd::EventFd>,
}

/// A writer that forwards guest output and, with a watch, looks for Linux's panic and halt
/// banners in it.
pub struct ConsoleOutput {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    watch: Option<ConsoleWatch>,
    /// Set once the host side failed (e.g. a closed pipe): further output is dropped quietly
    /// rather than failing every byte the guest writes.
    broken: bool,
}

impl ConsoleOutput {
    /// Output to `out`; with `watch`, the banners in it are reported there (legacy guests).
    pub fn new(out: Box<dyn Write + Send>, watch: Option<ConsoleWatch>) -> Self {
        ConsoleOutput {
            out,
            line: Vec::with_capacity(if watch.is_some() { LINE_MAX } else { 0 }),
            watch,
            broken: false,
        }
    }

    fn scan(&mut self, buf: &[u8]) {
        let Some(watch) = &self.watch else {
            return;
        };
        for &b in buf {
            if b == b'\n' {
                self.line.clear();
                continue;
            }
            if self.line.len() < LINE_MAX {
                self.line.push(b);
            }
            let ends_with = |banner: &[u8]| self.line.ends_with(banner);
            if ends_with(PANIC_BANNER) {
                watch.panicked.store(true, Ordering::Release);
            } else if HALT_BANNERS.iter().any(|h| ends_with(h)) {
                if let Err(e) = watch.halted.write(1) {
                    log::error!("cannot signal the guest's halt: {e}");
                }
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

/// Console output through a token bucket (`PUT /serial` `rate_limiter`): bytes the bucket
/// cannot pay for at once are dropped, never waited for (the UART is written by a vCPU), and
/// counted.
pub struct RateLimitedOutput {
    out: Box<dyn Write + Send>,
    bucket: crate::rate_limiter::TokenBucket,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl RateLimitedOutput {
    /// `out` limited by `bucket`; `dropped` counts the bytes lost.
    pub fn new(
        out: Box<dyn Write + Send>,
        bucket: crate::rate_limiter::TokenBucket,
        dropped: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        RateLimitedOutput {
            out,
            bucket,
            dropped,
        }
    }
}

impl Write for RateLimitedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bucket.try_consume(buf.len() as u64) {
            self.out.write_all(buf)?;
        } else {
            self.dropped.fetch_add(buf.len() as u64, Ordering::Relaxed);
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

    /// Where guest output goes from now on (a prepared VM's console is wired at create time).
    pub fn set_output(&mut self, out: ConsoleOutput) {
        *self.uart.writer_mut() = out;
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

/// COM1's registers and pending input, for a snapshot (vm-superio's `SerialState`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub registers: [u8; 9],
    pub in_buffer: Vec<u8>,
}

impl SerialConsole {
    /// The UART's state (registers, receive FIFO).
    pub fn save_state(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }

    /// Puts the UART into `state`, keeping its interrupt line and output.
    pub fn restore_state(&mut self, state: &SerialSnapshot) -> io::Result<()> {
        let [baud_divisor_low, baud_divisor_high, interrupt_enable, interrupt_identification, line_control, line_status, modem_control, modem_status, scratch] =
            state.registers;
        let s = vm_superio::serial::SerialState {
            baud_divisor_low,
            baud_divisor_high,
            interrupt_enable,
            interrupt_identification,
            line_control,
            line_status,
            modem_control,
            modem_status,
            scratch,
            in_buffer: state.in_buffer.clone(),
        };
        let irq = self.uart.interrupt_evt().try_clone()?;
        let out = std::mem::replace(
            self.uart.writer_mut(),
            ConsoleOutput::new(Box::new(io::sink()), None),
        );
        self.uart = Serial::from_state(&s, irq, NoEvents, out)
            .map_err(|e| io::Error::other(format!("serial state: {e:?}")))?;
        Ok(())
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

    fn watch() -> ConsoleWatch {
        ConsoleWatch {
            panicked: Arc::new(AtomicBool::new(false)),
            halted: Arc::new(vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap()),
        }
    }

    #[test]
    fn console_output_detects_panic_banner_split_across_writes() {
        let w = watch();
        let sink = Sink::default();
        let mut out = ConsoleOutput::new(Box::new(sink.clone()), Some(w.clone()));
        out.write_all(b"[ 1.0] KKernel pan").unwrap();
        assert!(!w.panicked.load(Ordering::Acquire));
        out.write_all(b"ic - not syncing: Attempted to kill init!")
            .unwrap();
        assert!(w.panicked.load(Ordering::Acquire));
        assert!(w.halted.read().is_err());
        assert!(sink.0.lock().unwrap().starts_with(b"[ 1.0] KKernel"));
    }

    #[test]
    fn console_output_signals_a_halt_and_ignores_ordinary_output() {
        let w = watch();
        let mut out = ConsoleOutput::new(Box::new(io::sink()), Some(w.clone()));
        out.write_all(b"Kernel panic is a phrase here\nreboot: System\n halted\n")
            .unwrap();
        assert!(!w.panicked.load(Ordering::Acquire));
        assert!(w.halted.read().is_err());
        out.write_all(b"[ 1.5] reboot: Power off not available: System halted instead\n")
            .unwrap();
        assert_eq!(w.halted.read().unwrap(), 1);
        out.write_all(b"[ 1.5] reboot: System halted\n").unwrap();
        assert_eq!(w.halted.read().unwrap(), 1);
    }

    #[test]
    fn without_a_watch_banners_are_just_text() {
        let sink = Sink::default();
        let mut out = ConsoleOutput::new(Box::new(sink.clone()), None);
        let text = b"reboot: Power down\nKernel panic - not syncing: fake\n";
        out.write_all(text).unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), text);
        assert!(out.line.is_empty(), "nothing is kept for matching");
    }

    #[test]
    fn guest_writes_reach_the_host_writer() {
        let sink = Sink::default();
        let irq =
            EventFdTrigger::new(vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut com1 = SerialConsole::new(
            irq,
            ConsoleOutput::new(Box::new(sink.clone()), Some(watch())),
        );
        for b in b"hi\n" {
            com1.pio_write(PioAddress(COM1_PORT), 0, &[*b]);
        }
        // A wide access is ignored rather than misinterpreted.
        com1.pio_write(PioAddress(COM1_PORT), 0, b"xy");
        assert_eq!(&*sink.0.lock().unwrap(), b"hi\n");
    }
}

#[cfg(test)]
mod rate_limited_tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::sync::Mutex;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_beyond_the_bucket_is_dropped_and_counted() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        // 100 bytes per hour: nothing refills during the test.
        let bucket = crate::rate_limiter::TokenBucket::new(100, 0, 3_600_000).unwrap();
        let mut out =
            RateLimitedOutput::new(Box::new(Shared(got.clone())), bucket, dropped.clone());
        for _ in 0..300 {
            out.write_all(b"x").unwrap();
        }
        assert_eq!(got.lock().unwrap().len(), 100);
        assert_eq!(dropped.load(Ordering::Relaxed), 200);
    }
}
