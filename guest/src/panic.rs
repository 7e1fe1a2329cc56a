//! The panic handler: one line on the console, then a triple fault. Not a reset (a panic is a
//! failure, and the VMM must not mistake it for a clean exit) and not a halt (that would leave
//! the VMM running a dead guest): a triple fault ends the VM and the VMM reports it.

use crate::fault;
use crate::serial::println;
use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    println!("unikernel panic: {}", info.message());
    fault::triple_fault()
}

/// The unwinding personality routine. Never called: the unikernel is built with
/// `panic = "abort"`, but the precompiled `core` (built for unwinding) still references the
/// symbol from its unwind tables, and without LTO (dev builds) the linker wants it defined.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
