//! A guest byte on the serial console: the port-I/O write the vCPU thread makes for each
//! `out` to COM1's THR, directly on `SerialConsole` and through the `IoManager` as the vCPU
//! loop does. Two cases: interrupts off (a polling driver, like the unikernel's), and the
//! THR-empty interrupt on with the driver reading IIR after each byte (an interrupt-driven
//! driver like Linux's 8250): then every byte also raises the interrupt, an eventfd write
//! (a syscall) on the irqfd. vm-superio raises THRE again only once IIR was read.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use vm_device::bus::{PioAddress, PioRange};
use vm_device::device_manager::{IoManager, PioManager};
use vm_device::MutDevicePio;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use wisp_devices::serial::{
    ConsoleOutput, ConsoleWatch, SerialConsole, COM1_PORT, COM1_PORT_COUNT,
};
use wisp_devices::trigger::EventFdTrigger;

/// 8250 registers (offsets from the base): transmit holding, interrupt enable, interrupt
/// identification.
const THR: u16 = 0;
const IER: u16 = 1;
const IIR: u16 = 2;
/// IER bit 1: interrupt when the transmit holding register is empty.
const IER_THRE: u8 = 0b10;

fn console() -> SerialConsole {
    let irq = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    let watch = ConsoleWatch {
        panicked: Arc::new(AtomicBool::new(false)),
        halted: Arc::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")),
    };
    let out = ConsoleOutput::new(Box::new(io::sink()), Some(watch));
    SerialConsole::new(irq, out)
}

fn serial_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("serial_pio_write");
    let base = PioAddress(COM1_PORT);
    for (name, ier) in [("irq_off", 0u8), ("thre_irq_on_iir_read", IER_THRE)] {
        let acknowledge = ier != 0;
        let mut iir = [0u8];
        let mut uart = console();
        uart.pio_write(base, IER, &[ier]);
        group.bench_function(format!("device/{name}"), |b| {
            b.iter(|| {
                uart.pio_write(base, black_box(THR), black_box(b"x"));
                if acknowledge {
                    uart.pio_read(base, IIR, &mut iir);
                }
            })
        });

        let uart = Arc::new(Mutex::new(console()));
        let mut io = IoManager::new();
        io.register_pio(
            PioRange::new(base, COM1_PORT_COUNT).expect("COM1 range"),
            uart,
        )
        .expect("register COM1");
        io.pio_write(PioAddress(COM1_PORT + IER), &[ier])
            .expect("write IER");
        group.bench_function(format!("io_manager/{name}"), |b| {
            b.iter(|| {
                let _ = io.pio_write(black_box(PioAddress(COM1_PORT + THR)), black_box(b"x"));
                if acknowledge {
                    let _ = io.pio_read(PioAddress(COM1_PORT + IIR), &mut iir);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, serial_write);
criterion_main!(benches);
