//! A deliberate triple fault, so tests can check that the VMM reports one clearly.
//!
//! With a zero-limit IDT every exception vector is outside the table: the first exception
//! (#UD from `ud2`) raises #GP for the bad vector, delivering #GP fails the same way and
//! raises #DF, and a fault while delivering #DF is a triple fault, which resets/shuts down
//! the CPU (Intel SDM Vol. 3A §7.15, "Exception and Interrupt Reference", interrupt 8).

use core::arch::asm;

/// The operand of `lidt`: a 16-bit limit and a 64-bit base.
#[repr(C, packed)]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

/// Triple-faults the CPU. Never returns.
pub fn triple_fault() -> ! {
    let empty_idt = DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: loading an empty IDT and faulting is exactly the intended crash; nothing after
    // it runs (`ud2` then, should #UD somehow be ignored, `int3`, then halting).
    unsafe {
        asm!(
            "lidt [{idtr}]",
            "ud2",
            "int3",
            "2:",
            "cli",
            "hlt",
            "jmp 2b",
            idtr = in(reg) &empty_idt,
            options(noreturn, nostack)
        )
    }
}
