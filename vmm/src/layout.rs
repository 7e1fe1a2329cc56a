//! The guest-physical memory map of a Wisp microVM (x86_64). This is guest ABI: the unikernel
//! and the Tinyx init rely on the fixed addresses below (see guest/README.md); those they share
//! with the host come from `wisp-abi`.
//!
//! ```text
//! 0x0000_0500  GDT (boot segments)            0x0000_6000  PVH hvm_start_info (+ module list)
//! 0x0000_7000  zero page (boot_params) or PVH memory map
//! 0x0000_9000  identity page tables (PML4, PDPT, PD) for the 64-bit boot protocol
//! 0x0002_0000  kernel command line            0x0009_fc00  MP table (EBDA), to 0xa0000
//! 0x0010_0000  high memory: bzImage / kernels, initrd at the top of low RAM
//! 0xd000_0000  MMIO gap: boot timer, noxs page, virtio-mmio slots (4 KiB each) ... 4 GiB
//! ```

/// Start of the GDT used while booting.
pub const BOOT_GDT_START: u64 = 0x500;
/// Start of the (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd), right after `hvm_start_info`.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map, or the Linux zero page for the 64-bit boot protocol.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Identity-mapping page tables for the 64-bit boot protocol.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line and its maximum size (Linux's COMMAND_LINE_SIZE on x86).
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Initial stack pointer for the 64-bit boot protocol (grows down, below the cmdline).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Where high memory starts; kernels load at or above it.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// The guest-visible MMIO map (gap, boot timer, noxs page, virtio-mmio slots, IOAPIC, local
/// APIC), the EBDA that holds the MP table, and the legacy IRQs (IOAPIC pins) handed to
/// virtio devices: guest ABI, defined once in `wisp-abi`.
pub use wisp_abi::memory_map::{
    APIC_START, BOOT_TIMER_START, EBDA_START, IOAPIC_START, IRQ_FIRST_DEVICE, IRQ_LAST_DEVICE,
    MAX_VIRTIO_DEVICES, MMIO_GAP_END, MMIO_GAP_START, MMIO_SLOT_SIZE, NOXS_PAGE_START,
    VIRTIO_MMIO_START,
};

/// KVM's TSS and identity-map pages (needed by VMX real-mode emulation) sit in the gap.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
