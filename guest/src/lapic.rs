//! The boot CPU's local APIC in xAPIC (MMIO) mode, just enough to send the INIT and STARTUP
//! IPIs that wake the other CPUs (Intel SDM Vol. 3A §11.6 "Issuing Interprocessor
//! Interrupts", §9.4.4 "MP Initialization Example").

use crate::cpu;
use core::fmt;
use core::ptr;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_GLOBAL_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;

const REG_ID: usize = 0x20;
const REG_SPURIOUS: usize = 0xf0;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;

/// Spurious-interrupt vector register: APIC software enable.
const SPURIOUS_APIC_ENABLE: u32 = 1 << 8;
const SPURIOUS_VECTOR: u32 = 0xff;
/// ICR: delivery mode INIT (101b) and STARTUP (110b), level "assert", delivery status.
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_SEND_PENDING: u32 = 1 << 12;
/// TSC cycles to wait for an IPI to leave before giving up on it.
const ICR_SEND_TIMEOUT_CYCLES: u64 = 100_000_000;

/// Why IPIs cannot be sent.
#[derive(Debug)]
pub enum LapicError {
    /// The APIC is in x2APIC mode, where the MMIO window does not exist.
    X2ApicMode,
    /// The APIC base MSR and the MP table disagree on where the APIC is.
    AddressMismatch { msr: u64, table: u32 },
    /// An IPI stayed "send pending" for too long.
    IpiStuck { apic_id: u8 },
}

impl fmt::Display for LapicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::X2ApicMode => write!(
                f,
                "the local APIC is in x2APIC mode; xAPIC MMIO is unavailable"
            ),
            Self::AddressMismatch { msr, table } => {
                write!(
                    f,
                    "local APIC at {msr:#x} per IA32_APIC_BASE but {table:#x} per the MP table"
                )
            }
            Self::IpiStuck { apic_id } => write!(f, "IPI to APIC {apic_id} never left the ICR"),
        }
    }
}

/// The boot CPU's local APIC.
pub struct LocalApic {
    base: usize,
}

impl LocalApic {
    /// Enables the local APIC whose registers the MP table puts at `table_addr`.
    pub fn enable(table_addr: u32) -> Result<Self, LapicError> {
        // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (the MP table says we have one).
        let apic_base = unsafe { cpu::rdmsr(IA32_APIC_BASE) };
        if apic_base & APIC_BASE_X2APIC != 0 {
            return Err(LapicError::X2ApicMode);
        }
        let msr_addr = apic_base & 0x000f_ffff_f000;
        if msr_addr != u64::from(table_addr) {
            return Err(LapicError::AddressMismatch {
                msr: msr_addr,
                table: table_addr,
            });
        }
        if apic_base & APIC_BASE_GLOBAL_ENABLE == 0 {
            // SAFETY: setting the global enable bit at the same base turns on the xAPIC.
            unsafe { cpu::wrmsr(IA32_APIC_BASE, apic_base | APIC_BASE_GLOBAL_ENABLE) };
        }
        let apic = LocalApic {
            base: table_addr as usize,
        };
        // The SDM lets a software-disabled APIC send INIT/STARTUP, but some emulations are
        // stricter; enable it (all LVT entries stay masked, no vector will ever be raised).
        let spurious = apic.read(REG_SPURIOUS);
        apic.write(
            REG_SPURIOUS,
            spurious | SPURIOUS_APIC_ENABLE | SPURIOUS_VECTOR,
        );
        Ok(apic)
    }

    fn read(&self, reg: usize) -> u32 {
        // SAFETY: `base` is the xAPIC register page (checked against IA32_APIC_BASE),
        // identity-mapped uncached; registers are 32-bit, 16-byte aligned.
        unsafe { ptr::read_volatile((self.base + reg) as *const u32) }
    }

    fn write(&self, reg: usize, value: u32) {
        // SAFETY: as in `read`; the callers write only ID-, spurious- and ICR-register values
        // the SDM defines.
        unsafe { ptr::write_volatile((self.base + reg) as *mut u32, value) }
    }

    /// This CPU's APIC ID.
    pub fn id(&self) -> u8 {
        (self.read(REG_ID) >> 24) as u8
    }

    /// Sends an INIT IPI to `apic_id` (puts it into wait-for-SIPI).
    pub fn send_init(&self, apic_id: u8) -> Result<(), LapicError> {
        self.send_ipi(apic_id, ICR_INIT | ICR_LEVEL_ASSERT)
    }

    /// Sends a STARTUP IPI: `apic_id` starts in real mode at `vector * 4 KiB`.
    pub fn send_startup(&self, apic_id: u8, vector: u8) -> Result<(), LapicError> {
        self.send_ipi(apic_id, ICR_STARTUP | ICR_LEVEL_ASSERT | u32::from(vector))
    }

    fn send_ipi(&self, apic_id: u8, command: u32) -> Result<(), LapicError> {
        // The write to the low half sends the IPI, so the destination goes first.
        self.write(REG_ICR_HIGH, u32::from(apic_id) << 24);
        self.write(REG_ICR_LOW, command);
        let start = cpu::rdtsc();
        while self.read(REG_ICR_LOW) & ICR_SEND_PENDING != 0 {
            if cpu::rdtsc().wrapping_sub(start) > ICR_SEND_TIMEOUT_CYCLES {
                return Err(LapicError::IpiStuck { apic_id });
            }
            core::hint::spin_loop();
        }
        Ok(())
    }
}
