//! The boot information a kernel reads at entry: the e820 memory map, then either Linux's
//! `boot_params` ("zero page", Documentation/arch/x86/boot.rst) or PVH's `hvm_start_info`
//! (xen/include/public/arch-x86/hvm/start_info.h).

use crate::layout::{
    CMDLINE_START, EBDA_START, HIGH_MEMORY_START, MMIO_GAP_END, MMIO_GAP_START, PVH_INFO_START,
    PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Address, ByteValued, GuestAddress, GuestMemoryMmap};

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// "HdrS": the boot protocol header magic.
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// Kernels are relocated to 2 MiB boundaries unless their header asks otherwise.
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// One e820 entry: start, size, type.
pub type E820Entry = (u64, u64, u32);

#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    #[error("cannot write the Linux zero page: {0}")]
    ZeroPage(#[source] linux_loader::configurator::Error),
    #[error("cannot write the PVH start info: {0}")]
    StartInfo(#[source] linux_loader::configurator::Error),
    #[error("the e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
}

/// Newtypes so vm-memory can copy linux-loader's C structs (plain old data) into the guest;
/// their fields are only ever read as bytes, by the guest.
#[derive(Clone, Copy, Default)]
#[allow(dead_code)]
struct ZeroPage(boot_params);
// SAFETY: boot_params is a C struct of integers and arrays of integers, valid for any bytes.
unsafe impl ByteValued for ZeroPage {}
#[derive(Clone, Copy, Default)]
#[allow(dead_code)]
struct StartInfo(hvm_start_info);
// SAFETY: hvm_start_info is a C struct of integers, valid for any bytes.
unsafe impl ByteValued for StartInfo {}
#[derive(Clone, Copy, Default)]
#[allow(dead_code)]
struct MemmapEntry(hvm_memmap_table_entry);
// SAFETY: hvm_memmap_table_entry is a C struct of integers, valid for any bytes.
unsafe impl ByteValued for MemmapEntry {}
#[derive(Clone, Copy, Default)]
#[allow(dead_code)]
struct ModlistEntry(hvm_modlist_entry);
// SAFETY: hvm_modlist_entry is a C struct of integers, valid for any bytes.
unsafe impl ByteValued for ModlistEntry {}

/// The guest's e820 map for `ram_size` bytes of RAM: low RAM below the EBDA, high RAM from
/// 1 MiB up (split around the MMIO gap). The EBDA, legacy ROM area and the gap are not RAM.
pub fn e820_map(ram_size: u64) -> Vec<E820Entry> {
    let end = if ram_size <= MMIO_GAP_START {
        ram_size
    } else {
        MMIO_GAP_END + (ram_size - MMIO_GAP_START)
    };
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIGH_MEMORY_START - EBDA_START, E820_RESERVED),
    ];
    if end <= MMIO_GAP_START {
        map.push((HIGH_MEMORY_START, end - HIGH_MEMORY_START, E820_RAM));
    } else {
        map.push((
            HIGH_MEMORY_START,
            MMIO_GAP_START - HIGH_MEMORY_START,
            E820_RAM,
        ));
        map.push((MMIO_GAP_END, end - MMIO_GAP_END, E820_RAM));
    }
    map
}

/// Where an initrd loaded into guest memory sits.
#[derive(Clone, Copy, Debug)]
pub struct InitrdRegion {
    pub address: GuestAddress,
    pub size: usize,
}

/// Writes the zero page for the Linux boot protocol. `header` is the bzImage's setup header, or
/// `None` for an ELF vmlinux entered at its 64-bit entry point; `rsdp` is where the ACPI
/// tables start (boot protocol 2.14's `acpi_rsdp_addr`).
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    header: Option<setup_header>,
    cmdline_size: usize,
    initrd: Option<InitrdRegion>,
    rsdp: u64,
) -> Result<(), BootParamsError> {
    let mut params = boot_params {
        acpi_rsdp_addr: rsdp,
        ..Default::default()
    };
    if let Some(hdr) = header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_size as u32;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    if let Some(rd) = initrd {
        params.hdr.ramdisk_image = rd.address.raw_value() as u32;
        params.hdr.ramdisk_size = rd.size as u32;
    }
    let map = e820_map(ram_size);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, (addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
        slot.addr = *addr;
        slot.size = *size;
        slot.r#type = *type_;
    }
    params.e820_entries = map.len() as u8;
    let bp = BootParams::new(&ZeroPage(params), GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(BootParamsError::ZeroPage)
}

/// Writes `hvm_start_info`, its memory map and module list (the initrd) for a PVH entry;
/// `rsdp` is where the ACPI tables start.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    initrd: Option<InitrdRegion>,
    rsdp: u64,
) -> Result<(), BootParamsError> {
    let map: Vec<MemmapEntry> = e820_map(ram_size)
        .into_iter()
        .map(|(addr, size, type_)| {
            MemmapEntry(hvm_memmap_table_entry {
                addr,
                size,
                type_,
                reserved: 0,
            })
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        rsdp_paddr: rsdp,
        ..Default::default()
    };
    if initrd.is_some() {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    let mut bp = BootParams::new(&StartInfo(info), GuestAddress(PVH_INFO_START));
    if let Some(rd) = initrd {
        let module = ModlistEntry(hvm_modlist_entry {
            paddr: rd.address.raw_value(),
            size: rd.size as u64,
            ..Default::default()
        });
        bp.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
    }
    bp.set_sections(&map, GuestAddress(PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams(&bp, mem).map_err(BootParamsError::StartInfo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn e820_skips_ebda_and_the_mmio_gap() {
        let map = e820_map(128 << 20);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(
            map[2],
            (HIGH_MEMORY_START, (128 << 20) - HIGH_MEMORY_START, E820_RAM)
        );
        let map = e820_map(4096 << 20);
        assert_eq!(map.len(), 4);
        let ram: u64 = map.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(ram, (4096 << 20) - (HIGH_MEMORY_START - EBDA_START));
    }

    #[test]
    fn pvh_start_info_has_magic_memmap_and_initrd_module() {
        let mem = create_guest_memory(64).unwrap();
        let rd = InitrdRegion {
            address: GuestAddress(0x300_0000),
            size: 4096,
        };
        write_pvh_start_info(&mem, 64 << 20, Some(rd), 0xe_0000).unwrap();
        let info: StartInfo = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.0.magic, XEN_HVM_START_MAGIC);
        assert_eq!((info.0.nr_modules, info.0.memmap_entries), (1, 3));
        assert_eq!({ info.0.rsdp_paddr }, 0xe_0000);
        let module: ModlistEntry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((module.0.paddr, module.0.size), (0x300_0000, 4096));
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let mem = create_guest_memory(64).unwrap();
        let rd = InitrdRegion {
            address: GuestAddress(0x200_0000),
            size: 100,
        };
        write_zero_page(&mem, 64 << 20, None, 10, Some(rd), 0xe_0000).unwrap();
        let zp: ZeroPage = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let hdr = zp.0.hdr;
        assert_eq!({ hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ hdr.ramdisk_image }, 0x200_0000);
        assert_eq!(zp.0.e820_entries, 3);
        assert_eq!({ zp.0.acpi_rsdp_addr }, 0xe_0000);
    }
}
