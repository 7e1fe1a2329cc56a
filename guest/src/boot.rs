//! The PVH entry: from the loader's 32-bit protected mode to 64-bit Rust.
//!
//! PVH boot ABI (Xen `docs/misc/pvh.pandoc`, also followed by QEMU and linux-loader): the
//! loader finds the entry point in an ELF note of type `XEN_ELFNOTE_PHYS32_ENTRY` (18) and
//! starts the boot CPU there in 32-bit protected mode with paging off, flat 4 GiB CS/DS/ES/SS
//! and `ebx` = physical address of `struct hvm_start_info`.
//!
//! The stub below (AT&T syntax) then:
//! 1. points CR3 at an identity map of the first 4 GiB with 2 MiB pages (PML4 -> 1 PDPT -> 4
//!    page directories, assembled into the image), so RAM, the boot-timer MMIO at 0xd000_0000
//!    and the local APIC at 0xfee0_0000 are all reachable at their physical addresses; the MMIO
//!    gap from 0xd000_0000 is mapped uncached;
//! 2. loads our GDT, enables PAE, SSE (CR4.OSFXSR/OSXMMEXCPT, CR0.MP, CR0.EM clear: the
//!    architectural x86_64 state, although the image is built without SSE because this
//!    machine's kvm_pvm cannot run SSE instructions; see ../README.md), long mode (EFER.LME)
//!    and paging (Intel SDM Vol. 3A §10.8.5);
//! 3. far-jumps to 64-bit code, switches to the boot stack and calls `rust_main(ebx)`.
//!
//! The application processors reuse the GDT and page tables (see `smp.rs`).

use core::arch::global_asm;

/// GDT selector of the 64-bit code segment.
pub const CODE64_SELECTOR: u16 = 0x08;
/// GDT selector of the flat data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// GDT selector of the flat 32-bit code segment (used by the AP trampoline).
pub const CODE32_SELECTOR: u16 = 0x18;

/// `lgdt` limit of the boot GDT: four 8-byte descriptors (null, code64, data, code32).
pub const GDT_LIMIT: u16 = 4 * 8 - 1;

/// Start of the VMM's 32-bit MMIO gap (`wisp_abi::memory_map`); mapped uncached.
const MMIO_GAP_START: usize = wisp_abi::memory_map::MMIO_GAP_START as usize;

/// Size of the boot CPU's stack.
const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    // --- The PVH entry note (ELF note: namesz, descsz, type, name, desc; 4-byte aligned).
    // desc is 8 bytes like Linux's; readers take the low 32 bits.
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 8",
    ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    ".quad pvh_start32",
    ".balign 4",
    ".popsection",
    // --- GDT shared by the boot CPU and the APs. Accessed bits are preset so the CPU never
    // needs to write to the table.
    ".pushsection .data.boot_gdt, \"aw\", @progbits",
    ".balign 16",
    ".global boot_gdt",
    "boot_gdt:",
    ".quad 0",
    ".quad 0x00af9b000000ffff", // 0x08: 64-bit code, DPL 0
    ".quad 0x00cf93000000ffff", // 0x10: flat 4 GiB data, read/write
    ".quad 0x00cf9b000000ffff", // 0x18: flat 4 GiB 32-bit code
    ".balign 8",
    "boot_gdtr:",
    ".word {gdt_limit}",
    ".quad boot_gdt",
    ".popsection",
    // --- Page tables, built by the assembler as data in the image rather than by a loop at
    // entry: the entry code runs in 32-bit mode with paging off, which a software hypervisor
    // (this machine's kvm_pvm) may have to emulate instruction by instruction — 2048 loop
    // iterations there cost milliseconds, a few hundred bytes more of image cost nothing.
    ".pushsection .data.boot_tables, \"aw\", @progbits",
    ".balign 4096",
    ".global boot_pml4",
    // PML4[0] -> PDPT (present | writable).
    "boot_pml4: .quad boot_pdpt + 0x3",
    ".skip 4096 - 8",
    // PDPT[0..4] -> the four page directories.
    "boot_pdpt:",
    ".quad boot_pd + 0x3",
    ".quad boot_pd + 0x1000 + 0x3",
    ".quad boot_pd + 0x2000 + 0x3",
    ".quad boot_pd + 0x3000 + 0x3",
    ".skip 4096 - 32",
    // PD entry i maps [i * 2 MiB, (i + 1) * 2 MiB): present | writable | 2 MiB page (0x83);
    // entries from 0xd000_0000 up (the MMIO gap: boot timer, noxs page, virtio-mmio, APIC)
    // also get PWT | PCD (0x18): uncached.
    "boot_pd:",
    ".set pd_index, 0",
    ".rept 2048",
    ".if pd_index < {mmio_first_pd_entry}",
    ".quad (pd_index << 21) | 0x83",
    ".else",
    ".quad (pd_index << 21) | 0x9b",
    ".endif",
    ".set pd_index, pd_index + 1",
    ".endr",
    ".popsection",
    // --- The boot stack: zero-filled by the loader (ELF p_memsz > p_filesz).
    ".pushsection .bss.boot_stack, \"aw\", @nobits",
    ".balign 16",
    "boot_stack_bottom: .skip {stack_size}",
    "boot_stack_top:",
    ".popsection",
    // --- 32-bit entry.
    ".pushsection .text.boot32, \"ax\", @progbits",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "cli",
    "cld",
    "lgdt boot_gdtr",
    // CR4: PAE (bit 5), OSFXSR (bit 9), OSXMMEXCPT (bit 10).
    "movl %cr4, %eax",
    "orl $0x620, %eax",
    "movl %eax, %cr4",
    "movl $boot_pml4, %eax",
    "movl %eax, %cr3",
    // IA32_EFER.LME (bit 8).
    "movl $0xc0000080, %ecx",
    "rdmsr",
    "orl $0x100, %eax",
    "wrmsr",
    // CR0: PG (31), MP (1), PE (0) set; EM (2) and TS (3) clear.
    "movl %cr0, %eax",
    "andl $~0xc, %eax",
    "orl $0x80000003, %eax",
    "movl %eax, %cr0",
    "ljmpl ${code64}, $pvh_start64",
    // --- 64-bit continuation.
    ".code64",
    "pvh_start64:",
    "movw ${data}, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movq $boot_stack_top, %rsp",
    "xorl %ebp, %ebp",
    "movl %ebx, %edi",
    "call {rust_main}",
    "4:",
    "cli",
    "hlt",
    "jmp 4b",
    ".popsection",
    stack_size = const BOOT_STACK_SIZE,
    gdt_limit = const GDT_LIMIT,
    mmio_first_pd_entry = const MMIO_GAP_START >> 21,
    code64 = const CODE64_SELECTOR,
    data = const DATA_SELECTOR,
    rust_main = sym crate::rust_main,
    options(att_syntax)
);
