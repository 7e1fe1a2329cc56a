//! Bounded waits: a deadline on the time-stamp counter.
//!
//! The TSC rate comes from CPUID when the CPU or hypervisor reports it (leaf 0x15 "TSC/crystal
//! ratio", leaf 0x16 "processor base frequency", hypervisor leaf 0x4000_0010 "TSC frequency in
//! kHz"); otherwise 3 GHz is assumed, which makes waits longer, never shorter, on slower
//! CPUs. These deadlines only keep a broken device from hanging the guest: nothing is timed.

use crate::cpu;
use core::arch::x86_64::__cpuid;
use core::sync::atomic::{AtomicU64, Ordering};

/// Used when CPUID does not say.
const FALLBACK_TSC_HZ: u64 = 3_000_000_000;
/// CPUID leaf with the hypervisor's vendor and highest leaf (Linux `arch/x86/kernel/kvm.c`).
const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// Hypervisor timing leaf (VMware's convention, also set by some KVM VMMs): EAX = TSC kHz.
const HYPERVISOR_TIMING_LEAF: u32 = 0x4000_0010;

/// The TSC rate once found (0: not yet). CPUID exits to the hypervisor, which costs
/// microseconds under PVM: a benchmark that sets a deadline per request must not pay it each
/// time.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// The TSC frequency in Hz (found once, then cached).
pub fn tsc_hz() -> u64 {
    match TSC_HZ.load(Ordering::Relaxed) {
        0 => {
            let hz = tsc_hz_from_cpuid().unwrap_or(FALLBACK_TSC_HZ);
            TSC_HZ.store(hz, Ordering::Relaxed);
            hz
        }
        hz => hz,
    }
}

/// The TSC frequency CPUID reports, if any leaf does.
pub fn tsc_hz_from_cpuid() -> Option<u64> {
    // CPUID only reads identification registers; the leaves below are only read when the
    // maximum leaf covers them.
    let max_leaf = __cpuid(0).eax;
    if max_leaf >= 0x15 {
        let leaf = __cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            return Some(u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax));
        }
    }
    if max_leaf >= 0x16 {
        let mhz = __cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1_000_000);
        }
    }
    // Leaves from 0x4000_0000 read as reserved (not faulting) without a hypervisor.
    let hypervisor_max = __cpuid(HYPERVISOR_LEAF).eax;
    if (HYPERVISOR_TIMING_LEAF..HYPERVISOR_LEAF + 0x100).contains(&hypervisor_max) {
        let khz = __cpuid(HYPERVISOR_TIMING_LEAF).eax;
        if khz != 0 {
            return Some(u64::from(khz) * 1000);
        }
    }
    None
}

/// A point in TSC time after which a wait gives up.
pub struct Deadline {
    start: u64,
    cycles: u64,
}

impl Deadline {
    /// `ms` milliseconds from now.
    pub fn after_ms(ms: u64) -> Self {
        Deadline {
            start: cpu::rdtsc(),
            cycles: tsc_hz().saturating_mul(ms) / 1000,
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        cpu::rdtsc().wrapping_sub(self.start) >= self.cycles
    }
}
