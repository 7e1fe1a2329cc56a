//! Waking the other CPUs (application processors, APs) with INIT-SIPI-SIPI and counting the
//! ones that really run (Intel SDM Vol. 3A §9.4 "Multiple-Processor (MP) Initialization";
//! MP Specification 1.4 appendix B.4).
//!
//! A STARTUP IPI with vector V starts an AP in real mode at CS:IP = (V << 8):0000, i.e. at
//! physical V * 4 KiB. The trampoline below is copied to [`TRAMPOLINE_ADDR`]; it loads the
//! boot GDT, goes to 32-bit protected mode, then to long mode with the boot page tables
//! (same steps as the PVH stub in `boot.rs`), and jumps to `ap_start64` in the image, which
//! takes a ticket, switches to that ticket's stack and calls [`ap_main`]. APs then halt.

use crate::boot::{CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR, GDT_LIMIT};
use crate::cpu;
use crate::lapic::{LapicError, LocalApic};
use crate::mptable::{MpConfig, MpTableError, MAX_CPUS};
use crate::serial::println;
use core::arch::global_asm;
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

/// Where the trampoline runs: the STARTUP vector times 4 KiB, in low RAM below 640 KiB.
const TRAMPOLINE_ADDR: usize = 0x8000;
const STARTUP_VECTOR: u8 = (TRAMPOLINE_ADDR >> 12) as u8;
/// The trampoline must fit the page the STARTUP vector names.
const TRAMPOLINE_MAX_LEN: usize = 4096;
/// APs the image has stacks for: every xAPIC ID but the boot CPU's.
const MAX_APS: usize = MAX_CPUS - 1;
/// Per-AP stack: an AP only counts itself and halts (2 KiB also leaves room for a panic
/// message), and 254 of them keep the image's zero-filled part near 0.5 MiB.
const AP_STACK_SIZE: usize = 2048;
/// INIT to STARTUP delay: the SDM asks for 10 ms; 30 M cycles is >= 10 ms up to 3 GHz.
const INIT_DELAY_CYCLES: u64 = 30_000_000;
/// How long to wait for an AP to check in after each STARTUP IPI (about 1 s at 2-3 GHz).
/// Only a bound for a CPU that never comes: a healthy one checks in within microseconds.
const STARTUP_WAIT_CYCLES: u64 = 2_000_000_000;
/// The SDM's INIT-SIPI-SIPI sends STARTUP twice; a CPU already running ignores the second.
const STARTUP_ATTEMPTS: usize = 2;

/// Tickets taken by APs entering long mode (index of their stack).
static AP_TICKETS: AtomicU32 = AtomicU32::new(0);
/// APs that reached Rust code.
static APS_ONLINE: AtomicU32 = AtomicU32::new(0);

global_asm!(
    // --- Real-mode trampoline: assembled here, copied to TRAMPOLINE_ADDR, run there. It
    // addresses itself relative to its start (CS = DS = TRAMPOLINE_ADDR >> 4).
    ".pushsection .rodata.ap_trampoline, \"a\", @progbits",
    ".global ap_trampoline_start",
    "ap_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    "lgdtl ap_trampoline_gdtr - ap_trampoline_start",
    "movl %cr0, %eax",
    "orl $1, %eax",
    "movl %eax, %cr0",
    "ljmpl ${code32}, ${base} + (ap_trampoline_pm32 - ap_trampoline_start)",
    ".code32",
    "ap_trampoline_pm32:",
    "movw ${data}, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    // CR4: PAE | OSFXSR | OSXMMEXCPT; CR3: the boot page tables; EFER.LME; CR0: PG | MP,
    // EM and TS clear (see boot.rs).
    "movl %cr4, %eax",
    "orl $0x620, %eax",
    "movl %eax, %cr4",
    "movl $boot_pml4, %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx",
    "rdmsr",
    "orl $0x100, %eax",
    "wrmsr",
    "movl %cr0, %eax",
    "andl $~0xc, %eax",
    "orl $0x80000003, %eax",
    "movl %eax, %cr0",
    "ljmpl ${code64}, $ap_start64",
    ".balign 8",
    "ap_trampoline_gdtr:",
    ".word {gdt_limit}",
    ".long boot_gdt",
    ".global ap_trampoline_end",
    "ap_trampoline_end:",
    ".code64",
    ".popsection",
    // --- 64-bit AP entry, in place in the image.
    ".pushsection .text.ap_start64, \"ax\", @progbits",
    "ap_start64:",
    "movw ${data}, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movl $1, %eax",
    "lock xaddl %eax, {tickets}(%rip)",
    "cmpl ${max_aps}, %eax",
    "jae 2f",
    // Stack top of ticket t: ap_stacks + (t + 1) * AP_STACK_SIZE.
    "incl %eax",
    "imull ${stack_size}, %eax, %eax",
    "leaq ap_stacks(%rip), %rsp",
    "addq %rax, %rsp",
    "xorl %ebp, %ebp",
    "call {ap_main}",
    "2:",
    "cli",
    "hlt",
    "jmp 2b",
    ".popsection",
    ".pushsection .bss.ap_stacks, \"aw\", @nobits",
    ".balign 16",
    "ap_stacks: .skip {max_aps} * {stack_size}",
    ".popsection",
    base = const TRAMPOLINE_ADDR,
    code32 = const CODE32_SELECTOR,
    code64 = const CODE64_SELECTOR,
    data = const DATA_SELECTOR,
    gdt_limit = const GDT_LIMIT,
    max_aps = const MAX_APS,
    stack_size = const AP_STACK_SIZE,
    tickets = sym AP_TICKETS,
    ap_main = sym ap_main,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// Why the APs could not be started.
#[derive(Debug)]
pub enum SmpError {
    /// No CPU list: the MP table is missing or malformed.
    MpTable(MpTableError),
    /// The boot CPU's local APIC cannot send IPIs.
    Lapic(LapicError),
    /// The trampoline does not fit in the page the STARTUP vector names.
    TrampolineTooLarge { len: usize },
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MpTable(err) => write!(f, "cannot list CPUs: {err}"),
            Self::Lapic(err) => write!(f, "cannot send IPIs: {err}"),
            Self::TrampolineTooLarge { len } => {
                write!(
                    f,
                    "AP trampoline is {len} bytes, more than {TRAMPOLINE_MAX_LEN}"
                )
            }
        }
    }
}

impl From<MpTableError> for SmpError {
    fn from(err: MpTableError) -> Self {
        Self::MpTable(err)
    }
}

impl From<LapicError> for SmpError {
    fn from(err: LapicError) -> Self {
        Self::Lapic(err)
    }
}

/// Where the APs land in Rust: count this CPU as online, then halt for good.
extern "C" fn ap_main() -> ! {
    APS_ONLINE.fetch_add(1, Ordering::SeqCst);
    cpu::halt_forever()
}

/// Starts every enabled CPU the MP table lists; returns how many CPUs are online (the boot
/// CPU plus every AP that reached Rust code).
pub fn start_application_processors() -> Result<u32, SmpError> {
    let mp = MpConfig::find()?;
    let apic = LocalApic::enable(mp.lapic_addr())?;
    let boot_apic_id = apic.id();
    if mp.bootstrap_apic_id().is_some_and(|id| id != boot_apic_id) {
        println!(
            "smp: MP table names APIC {:?} as the boot CPU, but it is {boot_apic_id}",
            mp.bootstrap_apic_id()
        );
    }
    if mp.apic_ids().is_empty() {
        println!("smp: the MP table lists no processors");
    }
    install_trampoline()?;
    for &apic_id in mp.apic_ids().iter().filter(|&&id| id != boot_apic_id) {
        if !start_one(&apic, apic_id)? {
            println!("smp: CPU with APIC ID {apic_id} did not start");
        }
    }
    Ok(1 + APS_ONLINE.load(Ordering::SeqCst))
}

fn install_trampoline() -> Result<(), SmpError> {
    let start = ptr::addr_of!(ap_trampoline_start);
    let len = ptr::addr_of!(ap_trampoline_end) as usize - start as usize;
    if len > TRAMPOLINE_MAX_LEN {
        return Err(SmpError::TrampolineTooLarge { len });
    }
    // SAFETY: the source is the trampoline's bytes in the image; the destination is low RAM
    // at 0x8000 (identity-mapped) that the guest ABI leaves free for the unikernel once the
    // start info has been read (main reads it before any command runs), and that does not
    // overlap the image (linked at 1 MiB).
    unsafe { ptr::copy_nonoverlapping(start, TRAMPOLINE_ADDR as *mut u8, len) };
    Ok(())
}

/// INIT-SIPI-SIPI to one AP; true when it checked in.
fn start_one(apic: &LocalApic, apic_id: u8) -> Result<bool, SmpError> {
    let online_before = APS_ONLINE.load(Ordering::SeqCst);
    apic.send_init(apic_id)?;
    cpu::spin_cycles(INIT_DELAY_CYCLES);
    for _ in 0..STARTUP_ATTEMPTS {
        apic.send_startup(apic_id, STARTUP_VECTOR)?;
        let start = cpu::rdtsc();
        while cpu::rdtsc().wrapping_sub(start) < STARTUP_WAIT_CYCLES {
            if APS_ONLINE.load(Ordering::SeqCst) > online_before {
                return Ok(true);
            }
            core::hint::spin_loop();
        }
    }
    Ok(false)
}
