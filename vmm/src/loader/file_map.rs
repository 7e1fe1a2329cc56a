//! Zero-copy loading: kernel segments and the initrd mapped from their file over guest RAM
//! (`MAP_PRIVATE | MAP_FIXED`) instead of copied into it.
//!
//! `FileSource` is the file linux-loader reads the kernel from (and the loader the initrd):
//! headers go through `Read` as before, but when vm-memory hands it a slice of guest memory to
//! fill (`ReadVolatile`), every whole page whose file offset and host address agree modulo the
//! page size is mapped from the file, and only the unaligned head and tail are copied. So a
//! kernel already in the page cache costs page-table updates rather than a copy of every byte,
//! the pages are shared by every VM booted from the same file until a guest writes one (then
//! that page is copied for it alone, as after a copy), and linux-loader's parsing and checks
//! stay exactly as they are.
//!
//! Only private anonymous guest RAM is mapped over (never a shared or hugetlbfs backing, whose
//! pages other processes or the page size rule); anything else, and a range that would reach
//! past the end of the file, is copied. Caveat of any private file mapping: a page the guest has
//! not yet written follows the file, so rewriting the kernel file in place while a VM runs
//! changes that guest's unwritten kernel pages (replace files by renaming, as package managers
//! do), and truncating it makes them unreadable.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileMemoryError;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, ReadVolatile, VolatileSlice};

const PAGE: u64 = 4096;

/// Smaller runs of whole pages are copied: replacing part of a mapping KVM already holds costs
/// an MMU-notifier round, more than copying a few pages. (Warm creates of the 84 KiB unikernel,
/// 4 × 300 interleaved: doorbell → first instruction 234–265 µs mapped, 291–294 µs copied.)
pub const MAP_MIN_BYTES: u64 = 64 << 10;

/// `WISP_KERNEL_LOAD=copy` turns mapping off (for measuring copy against map).
pub const LOAD_ENV: &str = "WISP_KERNEL_LOAD";

/// Whether guest RAM of `mem` may have file pages mapped over it: every region private,
/// anonymous and of base pages; and mapping not turned off by `LOAD_ENV`.
pub fn mappable(mem: &GuestMemoryMmap) -> bool {
    if std::env::var_os(LOAD_ENV).is_some_and(|v| v == "copy") {
        return false;
    }
    mem.iter().all(|r| {
        r.flags() & libc::MAP_PRIVATE != 0
            && r.flags() & libc::MAP_HUGETLB == 0
            && r.file_offset().is_none()
            && r.is_hugetlbfs() != Some(true)
    })
}

/// A kernel or initrd file, read by copy or by mapping (see the module docs).
pub struct FileSource {
    file: File,
    /// Our idea of the file position (kept in step with every read and seek).
    pos: u64,
    len: u64,
    map: bool,
    mapped: u64,
}

impl FileSource {
    /// `map`: whether whole pages may be mapped over the guest memory handed to `read_volatile`.
    pub fn new(mut file: File, map: bool) -> io::Result<FileSource> {
        let len = file.metadata()?.len();
        let pos = file.stream_position()?;
        Ok(FileSource {
            file,
            pos,
            len,
            map,
            mapped: 0,
        })
    }

    /// Bytes mapped rather than copied so far.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped
    }

    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Copies into `dst..dst+n` from the current position (one `pread`); returns the count.
    fn copy(&mut self, dst: *mut u8, n: usize) -> io::Result<usize> {
        let off = libc::off_t::try_from(self.pos)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: `dst..dst+n` lies inside the VolatileSlice vm-memory handed us (guest memory
        // it keeps mapped for the call); pread writes at most `n` bytes there.
        let got = unsafe { libc::pread(self.file.as_raw_fd(), dst.cast(), n, off) };
        let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
        self.pos += got as u64;
        Ok(got)
    }

    /// Maps `n` (a multiple of the page size) bytes of the file at the current position over
    /// `dst` (page-aligned).
    fn map_pages(&mut self, dst: *mut u8, n: usize) -> io::Result<()> {
        let off = libc::off_t::try_from(self.pos)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: `dst..dst+n` is page-aligned guest RAM inside the VolatileSlice vm-memory
        // handed us, a private anonymous mapping it owns (`mappable`); replacing its pages with
        // a private, writable mapping of the file keeps the range mapped and accessible as
        // before, with the file's bytes as contents — what a copy would have written.
        let got = unsafe {
            libc::mmap(
                dst.cast(),
                n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                self.file.as_raw_fd(),
                off,
            )
        };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.pos += n as u64;
        self.mapped += n as u64;
        Ok(())
    }

    fn fill(&mut self, dst: *mut u8, n: usize) -> io::Result<usize> {
        let addr = dst as u64;
        let congruent = addr % PAGE == self.pos % PAGE;
        let head = ((PAGE - addr % PAGE) % PAGE).min(n as u64) as usize;
        let body = (n - head) as u64 / PAGE * PAGE;
        let in_file = self.pos + head as u64 + body <= self.len;
        if !(self.map && congruent && body >= MAP_MIN_BYTES && in_file) {
            return self.copy(dst, n);
        }
        let mut done = 0;
        while done < head {
            // SAFETY of the pointer arithmetic: `done < head <= n`, inside the slice.
            let got = self.copy(dst.wrapping_add(done), head - done)?;
            if got == 0 {
                return Ok(done);
            }
            done += got;
        }
        self.map_pages(dst.wrapping_add(head), body as usize)?;
        done += body as usize;
        // The tail (less than a page) is copied: a mapped page would also bring in whatever
        // follows it in the file, where the guest must see zeros (an ELF segment's .bss).
        while done < n {
            let got = self.copy(dst.wrapping_add(done), n - done)?;
            if got == 0 {
                break;
            }
            done += got;
        }
        Ok(done)
    }
}

impl Read for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FileSource {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.file.seek(to)?;
        Ok(self.pos)
    }
}

impl ReadVolatile for FileSource {
    fn read_volatile<B: BitmapSlice>(
        &mut self,
        buf: &mut VolatileSlice<B>,
    ) -> Result<usize, VolatileMemoryError> {
        let guard = buf.ptr_guard_mut();
        let got = self
            .fill(guard.as_ptr(), buf.len())
            .map_err(VolatileMemoryError::IOError)?;
        buf.bitmap().mark_dirty(0, got);
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use std::io::Write;
    use vm_memory::{Bytes, GuestAddress};

    fn file_of(bytes: &[u8]) -> File {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("wisp-file-map-{}-{n}", std::process::id()));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Reads `len` bytes at file offset `off` into guest memory at `gpa`, mapped or copied.
    fn load(map: bool, data: &[u8], off: u64, gpa: u64, len: usize) -> (Vec<u8>, u64) {
        let mem = create_guest_memory(16).unwrap();
        let mut src = FileSource::new(file_of(data), map && mappable(&mem)).unwrap();
        src.seek(SeekFrom::Start(off)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(gpa), &mut src, len)
            .unwrap();
        let mut out = vec![0u8; len + 8192];
        mem.read_slice(&mut out, GuestAddress(gpa - 4096)).unwrap();
        (out, src.mapped_bytes())
    }

    #[test]
    fn mapped_and_copied_loads_leave_the_same_guest_memory() {
        let big = MAP_MIN_BYTES as usize;
        let data = pattern(big + 5 * 4096 + 123);
        for (off, gpa, len) in [
            (4096, 0x10_0000, big + 3 * 4096 + 17),
            (100, 0x10_0000 + 100, big + 4 * 4096),
            (0, 0x20_0000, data.len()),
            (5, 0x10_0000, big + 4 * 4096),
            // Too short to be worth a mapping: copied.
            (4096, 0x10_0000, 8 * 4096),
        ] {
            let (copied, none) = load(false, &data, off, gpa, len);
            let (mapped, bytes) = load(true, &data, off, gpa, len);
            assert_eq!(none, 0);
            assert!(copied == mapped, "off {off} gpa {gpa:#x} len {len}");
            // Bytes before and after the range stay zero; inside, the file's.
            assert!(copied[..4096].iter().all(|&b| b == 0));
            assert_eq!(
                &copied[4096..4096 + len],
                &data[off as usize..off as usize + len]
            );
            assert!(copied[4096 + len..].iter().all(|&b| b == 0));
            let mappable = gpa % 4096 == off % 4096 && len >= big + 4096;
            assert_eq!(bytes > 0, mappable, "off {off} gpa {gpa:#x} len {len}");
        }
    }

    #[test]
    fn guest_writes_to_mapped_pages_stay_private() {
        let data = pattern(MAP_MIN_BYTES as usize + 4 * 4096);
        let file = file_of(&data);
        let mem = create_guest_memory(16).unwrap();
        let mut src = FileSource::new(file.try_clone().unwrap(), mappable(&mem)).unwrap();
        mem.read_exact_volatile_from(GuestAddress(0x10_0000), &mut src, data.len())
            .unwrap();
        assert_eq!(src.mapped_bytes(), data.len() as u64);
        mem.write_obj(0xabu8, GuestAddress(0x10_0000 + 4096))
            .unwrap();
        let mut back = vec![0u8; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 0).unwrap();
        assert_eq!(back, data, "the file changed under a guest write");
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x10_0000 + 4096)).unwrap(),
            0xab
        );
    }

    #[test]
    fn a_range_past_the_end_of_the_file_is_an_error_not_a_mapping() {
        let data = pattern(2 * 4096);
        let mem = create_guest_memory(16).unwrap();
        let mut src = FileSource::new(file_of(&data), true).unwrap();
        let res = mem.read_exact_volatile_from(
            GuestAddress(0x10_0000),
            &mut src,
            MAP_MIN_BYTES as usize + 4 * 4096,
        );
        assert!(res.is_err());
    }
}
