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
mod cmdline;
mod cpu;
mod fault;
mod lapic;
mod mptable;
mod panic;
mod power;
mod pvh;
mod serial;
mod smp;

use cmdline::Command;
use pvh::BootInfo;
use serial::{println, Serial};

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
            for command in cmdline::commands(boot.cmdline()) {
                run(command, &boot);
            }
        }
        Err(err) => println!("wisp unikernel: {err}"),
    }
    power::reset()
}

fn run(command: Command, boot: &BootInfo) {
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
        Command::TripleFault => {
            println!("triple-fault: loading an empty IDT and faulting");
            fault::triple_fault()
        }
        Command::Panic => panic!("requested on the command line"),
        Command::Idle => {
            println!("idle: halting until the host stops this VM");
            cpu::halt_forever()
        }
        Command::Echo => loop {
            let byte = Serial::read_byte();
            if byte == ECHO_END {
                // End the echoed text's line so the next output starts on its own line.
                Serial::write_byte(b'\n');
                break;
            }
            Serial::write_byte(byte);
        },
    }
}
