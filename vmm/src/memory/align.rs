//! Guest RAM mappings at 2 MiB-aligned host addresses.
//!
//! KVM maps guest memory with a 2 MiB page only where the host backs it with a page that large
//! *and* the host-virtual and guest-physical addresses agree modulo 2 MiB. Guest regions start at
//! 2 MiB-aligned guest-physical addresses, so the host mapping must start at an aligned host
//! address too — which `mmap(NULL, ..)` does not promise (Linux aligns anonymous mappings by
//! itself only since 6.7, only for 2 MiB-multiple lengths, and not on the test host's 6.1).
//! 1 GiB pages come only from hugetlbfs, whose mappings the kernel aligns to the page size.
//!
//! vm-memory unmaps a region on drop only if it made the mapping itself, and it always lets the
//! kernel choose the address. So we steer the kernel's choice instead of mapping over a
//! reservation: reserve `size + 4 MiB` `PROT_NONE`, open a hole of `size + 2 MiB` at a 2 MiB
//! boundary inside it (the reservation's remains stay as guards), and let vm-memory map into the
//! hole. The kernel takes the highest free gap that fits (top-down layout), which is the hole
//! unless a higher one exists or another thread took it first; it places the mapping at the
//! hole's end (`start + 2 MiB`) or, when it pads the search to align by itself (Linux >= 6.7), at
//! its start; the bottom-up layout takes the start too: aligned in every case. A miss is kept
//! mapped while we retry, so the next try cannot land there again; after a few misses the region
//! is used unaligned (correct, only slower).

use vm_memory::mmap::MmapRegionError;
use vm_memory::MmapRegion;

/// The large page transparent huge pages give, and the alignment of every mapping.
pub const PAGE_2M: usize = 2 << 20;

/// Regions at least this large ask for transparent huge pages (`MADV_HUGEPAGE`); smaller ones
/// refuse them (`MADV_NOHUGEPAGE`): an idle small guest touches a few scattered pages, and a
/// 2 MiB page for each would multiply its footprint (density), while a Linux-sized guest walks
/// most of its memory and gains from fewer, larger TLB and nested-page-table entries.
pub const HUGE_PAGE_MIN_REGION: usize = 64 << 20;

/// How many placements are tried before the region is used unaligned.
const ATTEMPTS: usize = 4;

/// Maps `size` bytes with `map` (a vm-memory builder call that lets the kernel choose the
/// address) so that the mapping starts at a multiple of 2 MiB, where the kernel
/// allows it; then advises the kernel on transparent huge pages (see `HUGE_PAGE_MIN_REGION`).
pub fn map_aligned<F>(size: usize, mut map: F) -> Result<MmapRegion, MmapRegionError>
where
    F: FnMut() -> Result<MmapRegion, MmapRegionError>,
{
    let mut misses = Vec::new();
    let mut region = None;
    for _ in 0..ATTEMPTS {
        let hole = Hole::open(size);
        let mapped = map()?;
        drop(hole);
        if is_aligned(mapped.as_ptr()) {
            region = Some(mapped);
            break;
        }
        misses.push(mapped);
    }
    let region = match region {
        Some(r) => r,
        None => {
            log::debug!("guest memory of {size} bytes is not 2 MiB-aligned: base pages only");
            match misses.pop() {
                Some(r) => r,
                None => map()?,
            }
        }
    };
    advise_huge_pages(&region);
    Ok(region)
}

fn is_aligned(addr: *mut u8) -> bool {
    (addr as usize).is_multiple_of(PAGE_2M)
}

/// Base pages only for the first `len` bytes of `region` (`MADV_NOHUGEPAGE`): guest RAM below
/// 2 MiB holds the boot structures the VMM writes while preparing a shell and, for the
/// unikernel, the whole guest (loaded at 1 MiB); a huge page there would cost 2 MiB per shell
/// and be split again by a kernel mapped from its file.
pub fn keep_base_pages(region: &MmapRegion, len: usize) {
    let len = len.min(region.size());
    // SAFETY: the range is inside the live mapping `region` owns; THP advice changes how the
    // kernel backs it, never its contents or validity.
    let rc = unsafe { libc::madvise(region.as_ptr().cast(), len, libc::MADV_NOHUGEPAGE) };
    if rc != 0 {
        log::debug!(
            "madvise(MADV_NOHUGEPAGE) on low guest memory: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// `MADV_HUGEPAGE` or `MADV_NOHUGEPAGE` on the whole region. Advice only: a kernel without
/// THP refuses it and the guest runs on base pages.
fn advise_huge_pages(region: &MmapRegion) {
    let advice = if region.size() >= HUGE_PAGE_MIN_REGION {
        libc::MADV_HUGEPAGE
    } else {
        libc::MADV_NOHUGEPAGE
    };
    // SAFETY: the range is exactly the live mapping `region` owns; THP advice changes how the
    // kernel backs it, never its contents or validity.
    let rc = unsafe { libc::madvise(region.as_ptr().cast(), region.size(), advice) };
    if rc != 0 {
        log::debug!(
            "madvise(transparent huge pages) on guest memory: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A `PROT_NONE` reservation with an aligned hole 2 MiB larger than the wanted size punched into
/// it; dropping it unmaps the guards on either side (never the hole, which the region may fill).
struct Hole {
    guards: [(usize, usize); 2],
}

impl Hole {
    /// Reserves and punches; on any failure there is simply no hole (and no reservation left).
    fn open(size: usize) -> Option<Hole> {
        let hole_len = size.checked_add(PAGE_2M)?;
        let total = hole_len.checked_add(PAGE_2M)?;
        // SAFETY: a fresh PROT_NONE, non-reserving private mapping at an address the kernel
        // chooses: it overlaps nothing of ours and nothing can access it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = base as usize;
        let aligned = start.next_multiple_of(PAGE_2M);
        let hole_end = aligned + hole_len;
        let guards = [
            (start, aligned - start),
            (hole_end, start + total - hole_end),
        ];
        // SAFETY: [aligned, aligned + hole_len) lies inside the reservation made above, which
        // nothing else uses.
        if unsafe { libc::munmap(aligned as *mut libc::c_void, hole_len) } != 0 {
            unmap(start, total);
            return None;
        }
        Some(Hole { guards })
    }
}

impl Drop for Hole {
    fn drop(&mut self) {
        for (start, len) in self.guards {
            unmap(start, len);
        }
    }
}

/// Unmaps part of a reservation `Hole` made (a zero length is a no-op).
fn unmap(start: usize, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the range is (part of) a PROT_NONE reservation this module mapped and still
    // owns; no Rust object refers to it.
    unsafe { libc::munmap(start as *mut libc::c_void, len) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::mmap::MmapRegionBuilder;

    fn anonymous(size: usize) -> impl FnMut() -> Result<MmapRegion, MmapRegionError> {
        move || {
            MmapRegionBuilder::new(size)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
                .build()
        }
    }

    /// Placement is best effort against other threads' mappings (a concurrent mmap may take
    /// the hole; then the region falls back to base pages). The test harness maps guest memory
    /// on many threads at once, so the strict checks run in a process of their own: the test
    /// binary again, filtered to the one test.
    fn alone(test: &str) -> bool {
        if std::env::var_os("WISP_ALIGN_TEST_ALONE").is_some() {
            return true;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--test-threads=1", "--nocapture"])
            .env("WISP_ALIGN_TEST_ALONE", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{test} alone: {out:?}"
        );
        false
    }

    #[test]
    fn regions_start_on_a_large_page_boundary() {
        if !alone("memory::align::tests::regions_start_on_a_large_page_boundary") {
            return;
        }
        // Odd sizes too: Linux >= 6.7 aligns only PMD-multiple anonymous mappings by itself.
        let sizes = [
            2 << 20,
            16 << 20,
            (16 << 20) + 4096,
            128 << 20,
            (128 << 20) - 4096,
        ];
        for size in sizes.into_iter().chain([(1 << 30) + (2 << 20), 3 << 30]) {
            let region = map_aligned(size, anonymous(size)).unwrap();
            assert_eq!(region.size(), size);
            assert!(
                is_aligned(region.as_ptr()),
                "{size} bytes at {:p}",
                region.as_ptr()
            );
        }
    }

    #[test]
    fn many_live_regions_are_all_aligned() {
        if !alone("memory::align::tests::many_live_regions_are_all_aligned") {
            return;
        }
        // Fragment the address space with live odd-sized mappings between the regions.
        let mut keep = Vec::new();
        for i in 0..32 {
            let size = (3 << 20) + i * 4096;
            keep.push(map_aligned(size, anonymous(size)).unwrap());
            keep.push(anonymous(4096 * (i + 1))().unwrap());
        }
        for r in keep.iter().step_by(2) {
            assert!(is_aligned(r.as_ptr()), "{:p}", r.as_ptr());
        }
    }
}
