//! Shared guest RAM: one memfd, mapped `MAP_SHARED`, so that a vhost-user backend (virtiofsd)
//! can map the same pages from the fds of SET_MEM_TABLE. The memfd is sealed against
//! shrinking (and growing): a backend or a bug that truncated it would turn every later guest
//! access into SIGBUS in the VMM. Regions are the same as anonymous memory's
//! ([`crate::memory::ram_ranges`]), each at its own offset of the one file; pages still cost
//! host memory only once touched.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use vm_memory::{FileOffset, GuestMemoryMmap};

use crate::memory::{ram_ranges, MIN_MEM_MIB};

/// Errors creating shared guest memory.
#[derive(Debug, thiserror::Error)]
pub enum SharedMemoryError {
    #[error("guest memory of {0} MiB is too small (at least {MIN_MEM_MIB} MiB)")]
    TooSmall(u32),
    #[error("cannot create the memfd for shared guest memory: {0}")]
    Create(#[source] std::io::Error),
    #[error("cannot size the shared guest memory to {mib} MiB: {source}")]
    Size {
        mib: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot seal the shared guest memory: {0}")]
    Seal(#[source] std::io::Error),
    #[error("cannot map {mib} MiB of shared guest memory: {source}")]
    Map {
        mib: u32,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Maps `mem_mib` MiB of guest RAM from a sealed memfd (not yet registered with KVM).
pub fn create_shared_guest_memory(mem_mib: u32) -> Result<GuestMemoryMmap, SharedMemoryError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(SharedMemoryError::TooSmall(mem_mib));
    }
    // SAFETY: memfd_create reads a NUL-terminated name and takes flags; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"wisp-guest-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(SharedMemoryError::Create(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let size = u64::from(mem_mib) << 20;
    file.set_len(size)
        .map_err(|source| SharedMemoryError::Size {
            mib: mem_mib,
            source,
        })?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a memfd we own, with a plain integer argument.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
        return Err(SharedMemoryError::Seal(std::io::Error::last_os_error()));
    }
    let file = Arc::new(file);
    let mut offset = 0u64;
    let ranges: Vec<_> = ram_ranges(mem_mib)
        .into_iter()
        .map(|(addr, len)| {
            let region = (addr, len, Some(FileOffset::from_arc(file.clone(), offset)));
            offset += len as u64;
            region
        })
        .collect();
    GuestMemoryMmap::from_ranges_with_files(ranges).map_err(|source| SharedMemoryError::Map {
        mib: mem_mib,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn shared_memory_is_one_sealed_memfd_behind_every_region() {
        let mem = create_shared_guest_memory(4096).unwrap();
        assert_eq!(mem.num_regions(), 2);
        let offsets: Vec<u64> = mem
            .iter()
            .map(|r| r.file_offset().expect("file-backed").start())
            .collect();
        assert_eq!(offsets[0], 0);
        assert_eq!(offsets[1], mem.iter().next().unwrap().len());
        let fd = mem
            .iter()
            .next()
            .unwrap()
            .file_offset()
            .unwrap()
            .file()
            .as_raw_fd();
        // SAFETY: F_GET_SEALS on a valid fd.
        let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_SHRINK, 0);
        // A write through the mapping is in the file: what a backend mapping it would see.
        mem.write_obj(0xabcd_u16, GuestAddress(0x1000)).unwrap();
        let mut b = [0u8; 2];
        let file = mem.iter().next().unwrap().file_offset().unwrap().file();
        std::os::unix::fs::FileExt::read_exact_at(file, &mut b, 0x1000).unwrap();
        assert_eq!(u16::from_le_bytes(b), 0xabcd);
        assert!(file.set_len(0).is_err(), "a sealed memfd cannot shrink");
    }

    #[test]
    fn tiny_shared_guest_is_refused() {
        assert!(matches!(
            create_shared_guest_memory(1),
            Err(SharedMemoryError::TooSmall(1))
        ));
    }
}
