//! How guest RAM is backed, as `machine-config.huge_pages` asks (Firecracker's names):
//! regular 4 KiB pages (`memory::create_guest_memory`), transparent huge pages
//! (`madvise(MADV_HUGEPAGE)` on the same anonymous mappings) or explicit 2 MiB pages from the
//! host's hugetlb pool (`MAP_HUGETLB | MAP_HUGE_2MB`). The hugetlb pool is reserved at mmap
//! time (no `MAP_NORESERVE`), so a host without enough free huge pages fails here, with the
//! numbers, and not later with a SIGBUS inside the guest.

use crate::memory::{create_guest_memory, ram_ranges, MemoryError, MIN_MEM_MIB};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap};
use wisp_api::HugePages;

/// log2 of 2 MiB, shifted into mmap's huge page size bits (include/uapi/asm-generic/mman.h).
const MAP_HUGE_2MB: i32 = 21 << libc::MAP_HUGE_SHIFT;

#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(
        "cannot map {mib} MiB of guest memory from 2 MiB huge pages: {source} (the host has \
         {free} free huge pages of 2 MiB; raise /proc/sys/vm/nr_hugepages)"
    )]
    HugeTlb {
        mib: u32,
        free: u64,
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("guest memory of {0} MiB is not a multiple of 2 MiB, as 2 MiB huge pages need")]
    NotHugeAligned(u32),
    #[error("cannot build guest memory from its regions: {0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    #[error("madvise(MADV_HUGEPAGE) on guest memory failed: {0}")]
    Madvise(#[source] std::io::Error),
}

/// Maps the guest's RAM backed as `huge` asks (not yet registered with KVM).
pub fn create_backed_guest_memory(
    mem_mib: u32,
    huge: HugePages,
) -> Result<GuestMemoryMmap, BackingError> {
    match huge {
        HugePages::None => Ok(create_guest_memory(mem_mib)?),
        HugePages::Transparent => {
            let mem = create_guest_memory(mem_mib)?;
            for region in mem.iter() {
                advise_huge(region)?;
            }
            Ok(mem)
        }
        HugePages::Huge2M => hugetlb_memory(mem_mib),
    }
}

fn advise_huge(region: &GuestRegionMmap) -> Result<(), BackingError> {
    let len = usize::try_from(region.len()).unwrap_or(usize::MAX);
    // SAFETY: the range is exactly one live anonymous mapping owned by `region`; MADV_HUGEPAGE
    // only changes how the kernel may back it, never its contents or validity.
    let rc = unsafe { libc::madvise(region.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        return Err(BackingError::Madvise(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn hugetlb_memory(mem_mib: u32) -> Result<GuestMemoryMmap, BackingError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(MemoryError::TooSmall(mem_mib).into());
    }
    if !mem_mib.is_multiple_of(2) {
        return Err(BackingError::NotHugeAligned(mem_mib));
    }
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | MAP_HUGE_2MB;
    let mut regions = Vec::new();
    for (start, size) in ram_ranges(mem_mib) {
        let mapping = MmapRegionBuilder::new(size)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(true)
            .build()
            .map_err(|source| BackingError::HugeTlb {
                mib: mem_mib,
                free: free_huge_pages(),
                source,
            })?;
        // Both ranges start and end on 2 MiB boundaries (the MMIO gap is 2 MiB aligned), so
        // the region cannot fail to fit.
        let region = GuestRegionMmap::new(mapping, start).ok_or(BackingError::Regions(
            vm_memory::GuestRegionCollectionError::NoMemoryRegion,
        ))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(BackingError::Regions)
}

/// `HugePages_Free` of /proc/meminfo (0 when unreadable), for the error message.
fn free_huge_pages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("HugePages_Free:"))?;
            line.trim_start_matches("HugePages_Free:")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_huge_pages_keep_the_layout() {
        let mem = create_backed_guest_memory(64, HugePages::Transparent).unwrap();
        let total: u64 = mem.iter().map(|r| r.len()).sum();
        assert_eq!(total, 64 << 20);
    }

    #[test]
    fn hugetlb_memory_maps_or_names_the_missing_pool() {
        // Either outcome is the contract: mapped when the pool holds 2 free pages, else an
        // error that names the pool.
        let free = free_huge_pages();
        match create_backed_guest_memory(4, HugePages::Huge2M) {
            Ok(mem) => {
                assert!(free >= 2, "mapped with {free} free huge pages");
                assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), 4 << 20);
            }
            Err(e) => {
                assert!(free < 2, "refused with {free} free huge pages: {e}");
                assert!(e.to_string().contains("nr_hugepages"), "{e}");
            }
        }
        assert!(matches!(
            create_backed_guest_memory(3, HugePages::Huge2M),
            Err(BackingError::NotHugeAligned(3))
        ));
    }
}
