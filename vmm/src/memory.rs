//! Guest RAM: anonymous, `MAP_NORESERVE` mappings from vm-memory (pages cost host memory only
//! once the guest touches them), split around the 32-bit MMIO gap, each at a large-page-aligned
//! host address (`align`) so KVM can map it with 2 MiB pages.

mod align;

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};
use vm_memory::mmap::MmapRegionError;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Smallest guest we accept: room for the boot structures below 1 MiB plus a kernel.
pub const MIN_MEM_MIB: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} MiB is too small (at least {MIN_MEM_MIB} MiB)")]
    TooSmall(u32),
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    MapRegion {
        mib: u32,
        #[source]
        source: MmapRegionError,
    },
    #[error("guest memory regions overlap or overflow: {0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
}

/// Guest-physical ranges for `mem_mib` MiB of RAM.
pub fn ram_ranges(mem_mib: u32) -> Vec<(GuestAddress, usize)> {
    let size = u64::from(mem_mib) << 20;
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Maps the guest's RAM (not yet registered with KVM).
pub fn create_guest_memory(mem_mib: u32) -> Result<GuestMemoryMmap, MemoryError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(MemoryError::TooSmall(mem_mib));
    }
    let mut regions = Vec::new();
    for (start, size) in ram_ranges(mem_mib) {
        // vm-memory's anonymous region: private, `MAP_NORESERVE`.
        let mapping = align::map_aligned(size, || MmapRegion::new(size)).map_err(|source| {
            MemoryError::MapRegion {
                mib: mem_mib,
                source,
            }
        })?;
        if start == GuestAddress(0) {
            align::keep_base_pages(&mapping, align::PAGE_2M);
        }
        // `ram_ranges` never overflows the guest address space, so `new` always succeeds.
        regions.extend(GuestRegionMmap::new(mapping, start));
    }
    GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Regions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_guest_is_one_region_below_the_gap() {
        let mem = create_guest_memory(128).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.last_addr(), GuestAddress((128 << 20) - 1));
    }

    #[test]
    fn large_guest_is_split_around_the_mmio_gap() {
        let r = ram_ranges(4096);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64, MMIO_GAP_START);
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[0].1 + r[1].1, 4096 << 20);
        let total: u64 = create_guest_memory(64)
            .unwrap()
            .iter()
            .map(|reg| reg.len())
            .sum();
        assert_eq!(total, 64 << 20);
    }

    #[test]
    fn regions_are_2mib_aligned_in_host_and_guest_addresses() {
        for mib in [16, 127, 128, 3073] {
            let mem = create_guest_memory(mib).unwrap();
            for reg in mem.iter() {
                let host = reg.as_ptr() as usize;
                assert!(
                    host.is_multiple_of(align::PAGE_2M),
                    "{mib} MiB: host {host:#x}"
                );
                assert!(reg.start_addr().0.is_multiple_of(align::PAGE_2M as u64));
            }
        }
    }

    /// The `VmFlags` of the mapping that starts at `addr` (/proc/self/smaps).
    fn vm_flags_at(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            let start = line.split('-').next().unwrap_or("");
            if usize::from_str_radix(start, 16) == Ok(addr) {
                return lines
                    .find_map(|l| l.strip_prefix("VmFlags:"))
                    .unwrap_or("")
                    .to_string();
            }
        }
        panic!("no mapping starts at {addr:#x}");
    }

    #[test]
    fn low_2mib_keeps_base_pages_and_large_guests_ask_for_huge_pages() {
        let mem = create_guest_memory(128).unwrap();
        let base = mem.iter().next().unwrap().as_ptr() as usize;
        let low = vm_flags_at(base);
        assert!(low.split_whitespace().any(|f| f == "nh"), "{low}");
        let rest = vm_flags_at(base + align::PAGE_2M);
        assert!(rest.split_whitespace().any(|f| f == "hg"), "{rest}");
        // A small guest refuses huge pages throughout: one mapping.
        let small = create_guest_memory(16).unwrap();
        let base = small.iter().next().unwrap().as_ptr() as usize;
        let all = vm_flags_at(base);
        assert!(all.split_whitespace().any(|f| f == "nh"), "{all}");
    }

    #[test]
    fn tiny_guest_is_refused() {
        assert!(matches!(
            create_guest_memory(1),
            Err(MemoryError::TooSmall(1))
        ));
    }
}
