//! Guest memory in a snapshot: written as one file (the regions back to back, in guest-physical
//! order), sparse where the guest's pages are zero; restored by mapping that file `MAP_PRIVATE`
//! over the guest's RAM, so nothing is read up front: pages fault in from the page cache when
//! the guest touches them, copies of one snapshot share those pages, and a guest write makes
//! a private copy of just its page (the file never changes).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const PAGE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("cannot write guest memory to {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the memory file {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the memory file {path} holds {have} bytes; the snapshot's guest has {want}")]
    Size { path: String, have: u64, want: u64 },
    #[error("the guest's RAM layout does not fit the memory file ({0})")]
    Layout(String),
    #[error("cannot map the memory file over guest RAM: {0}")]
    Map(#[source] std::io::Error),
}

/// Which pages of `len` bytes at `host` are resident (mincore); `None` if the kernel cannot
/// say. For anonymous memory a page never touched is not resident and reads as zero.
fn resident_pages(host: *mut u8, len: usize) -> Option<Vec<u8>> {
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: `host..host + len` is a live mapping (the caller's region) and `vec` has one
    // byte per page of it, which is what mincore writes.
    let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
    (rc == 0).then_some(vec)
}

/// Writes every region of `mem` to `path`, back to back; returns the bytes actually written
/// (zero pages are holes). With `anonymous` (RAM that is not a mapped snapshot file), pages
/// the guest never touched are not even read. The vCPUs must be paused and devices idle (the
/// caller runs on the VMM thread, which is the one that serves the devices).
pub fn write_memory(
    mem: &GuestMemoryMmap,
    path: &Path,
    anonymous: bool,
) -> Result<u64, MemoryFileError> {
    let err = |source| MemoryFileError::Write {
        path: path.display().to_string(),
        source,
    };
    // A new inode, never the old one truncated: the old file may be the very memory file
    // this VM was restored from, still mapped over its RAM (truncating it would take the
    // pages from under the guest; unlinked, it lives on until the mapping goes).
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let file = File::create(path).map_err(err)?;
    let mut offset = 0u64;
    let mut written = 0u64;
    // Where the file ends so far: past the last page written.
    let mut file_end = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        // SAFETY: `host..host + len` is the region's live mapping, owned by `mem` for the
        // whole call. The vCPUs are paused and the devices are served by this thread, so
        // nothing writes it while it is read; it is only read.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len) };
        let resident = if anonymous {
            resident_pages(host, len)
        } else {
            None
        };
        for (i, page) in bytes.chunks(PAGE).enumerate() {
            if resident.as_ref().is_some_and(|r| r.get(i) == Some(&0)) {
                continue;
            }
            if page.iter().any(|&b| b != 0) {
                let at = offset + (i * PAGE) as u64;
                file.write_all_at(page, at).map_err(err)?;
                written += page.len() as u64;
                file_end = at + page.len() as u64;
            }
        }
        offset += len as u64;
    }
    // The file is the guest's size: a zero byte at the end makes it so (a hole before it)
    // without ftruncate, one syscall fewer for the VMM thread's filter.
    if file_end < offset {
        file.write_all_at(&[0], offset - 1).map_err(err)?;
    }
    file.sync_all().map_err(err)?;
    Ok(written)
}

/// Writes the pages `dirty` marks (one bitmap per region of `mem`, as
/// `Vm::take_dirty_bitmaps` reads them) at their offsets in `path`, a file laid out as
/// `write_memory`'s; returns the bytes written. An existing file of the guest's size is
/// written over in place (a copy of the base file becomes the merged snapshot); a new one is
/// sparse, only the dirty pages allocated, to be laid over the base later. A dirty page is
/// written even if it is zero: the base may not be. Nothing is written into a file of
/// another size.
pub fn write_diff(
    mem: &GuestMemoryMmap,
    dirty: &[Vec<u64>],
    path: &Path,
) -> Result<u64, MemoryFileError> {
    let err = |source| MemoryFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    if dirty.len() != mem.iter().count() {
        return Err(MemoryFileError::Layout(format!(
            "{} dirty bitmaps for {} regions",
            dirty.len(),
            mem.iter().count()
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(err)?;
    let have = file.metadata().map_err(err)?.len();
    if have != 0 && have != total {
        return Err(MemoryFileError::Size {
            path: path.display().to_string(),
            have,
            want: total,
        });
    }
    let mut offset = 0u64;
    let mut written = 0u64;
    for (region, bitmap) in mem.iter().zip(dirty) {
        let len = region.len() as usize;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        // SAFETY: as in `write_memory`: the region's live mapping, only read, while the
        // vCPUs are paused and this thread serves the devices.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len) };
        let pages = len / PAGE;
        let is_dirty = |p: usize| bitmap.get(p / 64).is_some_and(|w| w >> (p % 64) & 1 == 1);
        // Runs of dirty pages go out in one write each.
        let mut page = 0;
        while page < pages {
            if !is_dirty(page) {
                page += 1;
                continue;
            }
            let first = page;
            while page < pages && is_dirty(page) {
                page += 1;
            }
            let run = &bytes[first * PAGE..page * PAGE];
            file.write_all_at(run, offset + (first * PAGE) as u64)
                .map_err(err)?;
            written += run.len() as u64;
        }
        offset += len as u64;
    }
    // A new file ends at the guest's size: a zero byte past its end (a hole up to there),
    // as in `write_memory`, without ftruncate.
    if file.metadata().map_err(err)?.len() < total {
        file.write_all_at(&[0], total - 1).map_err(err)?;
    }
    file.sync_all().map_err(err)?;
    Ok(written)
}

/// A memory file opened for a restore, its size checked.
pub struct MemoryFile {
    file: File,
    size: u64,
}

impl MemoryFile {
    /// Opens `path` (read-only: a restore never changes it) and checks it holds `mem_mib` MiB.
    pub fn open(path: &Path, mem_mib: u32) -> Result<MemoryFile, MemoryFileError> {
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| MemoryFileError::Open {
            path: name(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| MemoryFileError::Open {
            path: name(),
            source,
        })?;
        let want = u64::from(mem_mib) << 20;
        if !meta.is_file() || meta.len() != want {
            return Err(MemoryFileError::Size {
                path: name(),
                have: meta.len(),
                want,
            });
        }
        Ok(MemoryFile {
            file,
            size: meta.len(),
        })
    }

    /// Maps the file over `mem`'s RAM: the snapshot's ranges (`ranges`, back to back in the
    /// file) each land at the start of the region that begins at the same guest address. A
    /// region larger than its range (a bigger prepared shell) keeps its anonymous tail, which
    /// the restored guest never uses. All ranges are checked before anything is mapped.
    pub fn map_over(
        &self,
        mem: &GuestMemoryMmap,
        ranges: &[(GuestAddress, usize)],
    ) -> Result<(), MemoryFileError> {
        let total: u64 = ranges.iter().map(|r| r.1 as u64).sum();
        if total != self.size {
            return Err(MemoryFileError::Layout(format!(
                "{total} bytes of ranges, {} in the file",
                self.size
            )));
        }
        let mut targets = Vec::with_capacity(ranges.len());
        for &(start, len) in ranges {
            let region = mem
                .iter()
                .find(|r| r.start_addr() == start && r.len() >= len as u64)
                .ok_or_else(|| {
                    MemoryFileError::Layout(format!(
                        "no RAM region of at least {len:#x} bytes at {:#x}",
                        start.raw_value()
                    ))
                })?;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| MemoryFileError::Layout(e.to_string()))?;
            if !(host as usize).is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
                return Err(MemoryFileError::Layout("unaligned region".into()));
            }
            targets.push((host, len));
        }
        let mut offset: u64 = 0;
        for (host, len) in targets {
            let file_offset = libc::off_t::try_from(offset)
                .map_err(|_| MemoryFileError::Layout("file offset overflows".into()))?;
            // SAFETY: `host..host + len` lies inside a live mapping owned by `mem` (checked
            // above), which nothing references as Rust memory: guest RAM is only reached
            // through vm-memory's volatile accessors and by KVM, which follows the new pages
            // through its MMU notifier. MAP_FIXED replaces those pages with the file's, same
            // size and protection, so the owner's eventual munmap of its range stays exact.
            let got = unsafe {
                libc::mmap(
                    host.cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    self.file.as_raw_fd(),
                    file_offset,
                )
            };
            if got == libc::MAP_FAILED {
                return Err(MemoryFileError::Map(std::io::Error::last_os_error()));
            }
            offset += len as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("wisp-memfile-{}-{name}", std::process::id()))
    }

    #[test]
    fn memory_is_written_sparse_at_the_guest_size_and_maps_back() {
        for (anonymous, last_page_used) in [(true, false), (true, true), (false, true)] {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            mem.write_obj(0xabcd_u32, GuestAddress(0x3000)).unwrap();
            if last_page_used {
                mem.write_obj(0x77_u8, GuestAddress((1 << 20) - 1)).unwrap();
            }
            let path = scratch(&format!("{anonymous}-{last_page_used}"));
            let written = write_memory(&mem, &path, anonymous).unwrap();
            assert_eq!(written, if last_page_used { 2 * 4096 } else { 4096 });
            assert!(
                MemoryFile::open(&path, 2).is_err(),
                "a file of another size"
            );
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), 1 << 20);
            assert_eq!(&bytes[0x3000..0x3004], &0xabcd_u32.to_le_bytes());
            assert_eq!(bytes[(1 << 20) - 1], if last_page_used { 0x77 } else { 0 });

            // Mapped over fresh RAM, the guest sees the saved bytes; its writes stay private.
            let file = MemoryFile::open(&path, 1).unwrap();
            let fresh = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            file.map_over(&fresh, &[(GuestAddress(0), 1 << 20)])
                .unwrap();
            assert_eq!(fresh.read_obj::<u32>(GuestAddress(0x3000)).unwrap(), 0xabcd);
            fresh.write_obj(1_u32, GuestAddress(0x3000)).unwrap();
            assert_eq!(
                &std::fs::read(&path).unwrap()[0x3000..0x3004],
                &0xabcd_u32.to_le_bytes()
            );
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn a_diff_writes_only_dirty_pages_and_merges_over_its_base_in_place() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_obj(0x11_u8, GuestAddress(0x1000)).unwrap();
        mem.write_obj(0x22_u8, GuestAddress(0x5000)).unwrap();
        let base = scratch("diff-base");
        write_memory(&mem, &base, true).unwrap();
        // The guest then zeroes page 1 and writes pages 3 and 4.
        mem.write_obj(0_u8, GuestAddress(0x1000)).unwrap();
        mem.write_obj(0x33_u8, GuestAddress(0x3000)).unwrap();
        mem.write_obj(0x44_u8, GuestAddress(0x4000)).unwrap();
        let dirty = vec![vec![0b11010_u64, 0, 0, 0]];
        let diff = scratch("diff-new");
        assert_eq!(write_diff(&mem, &dirty, &diff).unwrap(), 3 * 4096);
        let bytes = std::fs::read(&diff).unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(
            (bytes[0x3000], bytes[0x4000], bytes[0x5000]),
            (0x33, 0x44, 0)
        );

        // Over a copy of the base: the merged file is the guest's memory now.
        let merged = scratch("diff-merged");
        std::fs::copy(&base, &merged).unwrap();
        write_diff(&mem, &dirty, &merged).unwrap();
        let bytes = std::fs::read(&merged).unwrap();
        assert_eq!(
            (bytes[0x1000], bytes[0x3000], bytes[0x4000], bytes[0x5000]),
            (0, 0x33, 0x44, 0x22)
        );
        // A file of another size is left alone.
        let other = scratch("diff-other");
        std::fs::write(&other, [7u8; 100]).unwrap();
        assert!(write_diff(&mem, &dirty, &other).is_err());
        assert_eq!(std::fs::read(&other).unwrap(), [7u8; 100]);
        for p in [base, diff, merged, other] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn a_layout_that_does_not_fit_maps_nothing() {
        let path = scratch("layout");
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_memory(&mem, &path, true).unwrap();
        let file = MemoryFile::open(&path, 1).unwrap();
        let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 19)]).unwrap();
        small.write_obj(5_u8, GuestAddress(0)).unwrap();
        assert!(file
            .map_over(&small, &[(GuestAddress(0), 1 << 20)])
            .is_err());
        assert_eq!(small.read_obj::<u8>(GuestAddress(0)).unwrap(), 5);
        std::fs::remove_file(&path).unwrap();
    }
}
