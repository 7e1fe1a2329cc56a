//! Thin wrappers around the x86 instructions the unikernel needs: port I/O, MSRs, the TSC and
//! halting.

use core::arch::asm;

/// Writes `value` to I/O port `port`.
///
/// # Safety
/// Port writes can reprogram devices; the caller must know what the port is.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from I/O port `port`.
///
/// # Safety
/// Port reads can have side effects on devices (e.g. pop a FIFO).
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads model-specific register `msr`.
///
/// # Safety
/// The MSR must exist (else #GP, which with no IDT is a triple fault).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller vouches that the MSR exists; `rdmsr` touches no memory.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// The MSR must exist and `value` must be valid for it; MSRs change CPU behaviour.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // Splitting into the EDX:EAX halves `wrmsr` takes; truncation is intended.
    let (low, high) = (value as u32, (value >> 32) as u32);
    // SAFETY: the caller vouches for the MSR and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") low, in("edx") high, options(nostack, preserves_flags))
    };
}

/// The time-stamp counter: cycles of unknown (but constant on anything modern) frequency.
/// Only used to bound waits, never to measure.
pub fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the counter (CR4.TSD is clear: we never set it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Spins for at least `cycles` TSC cycles.
pub fn spin_cycles(cycles: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// Stops this CPU for good: interrupts off, then `hlt` forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU; nothing else depends on it running.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
