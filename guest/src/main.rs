//! The Wisp unikernel: a freestanding PVH guest for the Wisp microVM monitor.
//!
//! Boot path: `boot.rs` (32-bit PVH entry -> long mode) calls [`rust_main`] with the address
//! of the PVH start info. The unikernel greets on the serial console, signals the boot timer,
//! runs the commands named on its command line (`cmdline.rs`) and resets the VM through the
//! i8042. The guest ABI is described in ../README.md.

#![no_std]
#![no_main]

mod boot;
mod boot_timer;
mod builtins;
mod bytes_fmt;
mod cmdline;
mod cpu;
mod deadline;
mod fault;
mod lapic;
mod mptable;
mod noxs;
mod panic;
mod power;
mod pvh;
mod serial;
mod smp;
mod virtio;

use cmdline::Command;
use core::fmt::Display;
use noxs::DevicePage;
use pvh::BootInfo;
use serial::{println, Serial};
use virtio::Slots;

/// The first line on the console; tests and the VMM's docs look for it.
const GREETING: &[u8] = b"hello from wisp unikernel\n";
/// The byte that ends `echo`.
const ECHO_END: u8 = b'q';

/// The boot CPU's Rust entry, called by the PVH stub with `ebx` (start info address).
pub extern "C" fn rust_main(start_info_paddr: u32) -> ! {
    // The greeting and the boot timer come first: they are what boot time is measured to.
    Serial::write_bytes(GREETING);
    boot_timer::signal();
    match BootInfo::read(start_info_paddr) {
        Ok(boot) => {
            // Devices are listed once: from the noxs page, else from the command line.
            let slots = Slots::discover(boot.cmdline());
            for command in cmdline::commands(boot.cmdline()) {
                run(command, &boot, &slots);
            }
        }
        Err(err) => println!("wisp unikernel: {err}"),
    }
    power::reset()
}

fn run(command: Command, boot: &BootInfo, slots: &Slots) {
    match command {
        Command::Smp => match smp::start_application_processors() {
            Ok(online) => println!("cpus online: {online}"),
            Err(err) => println!("smp: {err}"),
        },
        Command::Mem => match boot.ram_bytes() {
            // Rounded to the nearest MiB: firmware holes make the sum slightly uneven.
            Some(bytes) => println!("memory: {} MiB", bytes.saturating_add(1 << 19) >> 20),
            None => println!("mem: the start info (version 0) has no memory map"),
        },
        Command::Cmdline => match core::str::from_utf8(boot.cmdline()) {
            Ok(text) => println!("cmdline: {text}"),
            Err(_) => println!("cmdline: not UTF-8"),
        },
        Command::TripleFault => {
            println!("triple-fault: loading an empty IDT and faulting");
            fault::triple_fault()
        }
        Command::Panic => panic!("requested on the command line"),
        Command::Idle => {
            println!("idle: halting until the host stops this VM");
            cpu::halt_forever()
        }
        Command::Count => count_forever(),
        Command::Echo => loop {
            let byte = Serial::read_byte();
            if byte == ECHO_END {
                // End the echoed text's line so the next output starts on its own line.
                Serial::write_byte(b'\n');
                break;
            }
            Serial::write_byte(byte);
        },
        Command::Noxs => print_device_page(),
        Command::Virtio => slots.print(),
        Command::Blk => report("blk", virtio::blk::run(slots, false)),
        Command::AwaitRestore => noxs::await_restore(),
        Command::BlkRestored => report("blk", virtio::blk::run(slots, true)),
        Command::BlkBench => report(
            "blk-bench",
            virtio::blk_bench::run(slots, boot.cmdline(), boot.ram_bytes()),
        ),
        Command::BlkHog => report(
            "blk-hog",
            virtio::blk_bench::hog(slots, boot.cmdline(), boot.ram_bytes()),
        ),
        Command::MmioFlood => report("mmio-flood", virtio::flood::run(slots)),
        Command::Rng => report("rng", virtio::rng::run(slots)),
        Command::Net => report("net", virtio::net::run(slots)),
        Command::NetEcho => report("net-echo", virtio::net::echo(slots)),
        Command::NetBench => report("net-bench", virtio::net_bench::run(slots, boot.cmdline())),
        Command::Vsock => report("vsock", virtio::vsock::run(slots)),
        Command::Balloon => report(
            "balloon",
            virtio::balloon::run(slots, boot.cmdline(), boot.ram_bytes()),
        ),
        Command::VsockBench => report(
            "vsock-bench",
            virtio::vsock_bench::run(slots, boot.cmdline(), boot.ram_bytes()),
        ),
    }
}

/// The word `count` increments; the host reads it through guest memory. On a page of its
/// own: PVM shadows the guest's page tables, and a write to a page that shares a frame with
/// them is trapped and emulated (thousands of times slower).
#[repr(C, align(4096))]
struct CounterPage(core::sync::atomic::AtomicU64);
static COUNTER_PAGE: CounterPage = CounterPage(core::sync::atomic::AtomicU64::new(0));
static COUNTER: &core::sync::atomic::AtomicU64 = &COUNTER_PAGE.0;

fn count_forever() -> ! {
    use core::sync::atomic::Ordering;
    println!("count: at {:#x}", COUNTER as *const _ as usize);
    loop {
        // One CPU writes it: a plain store (no locked instruction, which PVM makes slow).
        let n = COUNTER.load(Ordering::Relaxed) + 1;
        COUNTER.store(n, Ordering::Relaxed);
        if n.is_multiple_of(1 << 12) {
            println!("count: {}", n >> 12);
        }
    }
}

/// Prints a device command's error, if any, and takes back the DMA memory (the command's
/// device was reset when its transport was dropped).
fn report<E: Display>(name: &str, result: Result<(), E>) {
    if let Err(err) = result {
        println!("{name}: error: {err}");
    }
    virtio::dma::reset();
}

/// The `noxs` command.
fn print_device_page() {
    match DevicePage::read() {
        Ok(page) => {
            println!("noxs: {} devices", page.count());
            for entry in page.entries() {
                println!(
                    "noxs: type={} base={:#x} irq={}",
                    entry.device_type, entry.mmio_base, entry.irq
                );
            }
            println!("noxs: sysctl={}", page.sysctl());
        }
        Err(noxs::NoxsError::NoPage { .. }) => println!("noxs: no device page"),
        Err(err) => println!("noxs: {err}"),
    }
}
