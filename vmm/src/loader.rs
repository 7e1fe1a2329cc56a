//! Loading what boots: the kernel (ELF `vmlinux`, PVH or 64-bit entry, or `bzImage`), the
//! initrd (at the top of low RAM) and the command line, with linux-loader. Both files are
//! opened by wisp-hostfs: regular files only, reached without symbolic links. Whole pages are
//! mapped from the file rather than copied where the layout allows (`file_map`).

mod file_map;

use crate::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_MEMORY_START, MMIO_GAP_START};
use crate::x86_64::boot_params::InitrdRegion;
use crate::x86_64::regs::EntryMode;
use file_map::FileSource;
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// The 64-bit entry point of a bzImage is 0x200 past its protected-mode code (boot.rst,
/// "64-bit BOOT PROTOCOL").
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const PAGE_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot open kernel image {}: {source}", path.display())]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: wisp_hostfs::HostFsError,
    },
    #[error("cannot open initrd {}: {source}", path.display())]
    OpenInitrd {
        path: PathBuf,
        #[source]
        source: wisp_hostfs::HostFsError,
    },
    #[error("cannot read kernel image {}: {source}", path.display())]
    KernelFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel image {} is not an ELF vmlinux or a bzImage", .0.display())]
    NotAKernel(PathBuf),
    #[error("guest memory ({mem_mib} MiB) is too small for kernel image {} (it needs {need_mib} MiB)", path.display())]
    KernelDoesNotFit {
        path: PathBuf,
        mem_mib: u64,
        need_mib: u64,
    },
    #[error("cannot load kernel image {}: {source}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("cannot read initrd {}: {source}", path.display())]
    InitrdFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest memory is too small for initrd {} ({size} bytes) above the kernel", path.display())]
    InitrdDoesNotFit { path: PathBuf, size: u64 },
    #[error("kernel command line: {0}")]
    Cmdline(#[from] linux_loader::cmdline::Error),
    #[error("cannot write the kernel command line: {0}")]
    WriteCmdline(#[source] linux_loader::loader::Error),
}

/// A kernel in guest memory, and how to enter it.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub mode: EntryMode,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
    /// First byte after the kernel.
    pub end: u64,
}

/// The end of the RAM the guest is told about below the MMIO gap: where kernels and initrds
/// must fit (a prepared shell may have more memory mapped than this guest is given).
fn low_ram_end(ram_size: u64) -> u64 {
    ram_size.min(MMIO_GAP_START)
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn u16_at(b: &[u8], off: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[off], b[off + 1]]))
}

fn u32_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32::from_le_bytes([
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
    ]))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

/// The highest guest-physical byte an ELF's loadable segments need (ELF-64 program headers).
fn elf_end(file: &mut File) -> std::io::Result<u64> {
    let mut ehdr = [0u8; 64];
    read_at(file, 0, &mut ehdr)?;
    let (phoff, phentsize, phnum) = (
        u64_at(&ehdr, 0x20),
        u16_at(&ehdr, 0x36),
        u16_at(&ehdr, 0x38),
    );
    let mut end = 0;
    let mut phdr = [0u8; 56];
    for i in 0..phnum {
        read_at(file, phoff + i * phentsize, &mut phdr)?;
        if u32_at(&phdr, 0) == 1 {
            // PT_LOAD: p_paddr + p_memsz.
            end = end.max(u64_at(&phdr, 0x18).saturating_add(u64_at(&phdr, 0x28)));
        }
    }
    Ok(end)
}

/// The highest byte a bzImage needs: its protected-mode code at `code32_start` decompresses in
/// place within `init_size` bytes (boot.rst, header fields 0x214 and 0x260).
fn bzimage_end(file: &mut File) -> std::io::Result<u64> {
    let mut hdr = [0u8; 0x268];
    read_at(file, 0, &mut hdr)?;
    Ok(u32_at(&hdr, 0x214).max(HIGH_MEMORY_START) + u32_at(&hdr, 0x260))
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    path: &Path,
) -> Result<LoadedKernel, LoaderError> {
    let file_err = |source| LoaderError::KernelFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file =
        wisp_hostfs::open_read(path, wisp_hostfs::FileKind::Regular).map_err(|source| {
            LoaderError::OpenKernel {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let mut magic = [0u8; 0x206];
    let n = file.read(&mut magic).map_err(file_err)?;
    let is_elf = n >= 4 && &magic[..4] == b"\x7fELF";
    let is_bzimage = n >= 0x206 && &magic[0x202..0x206] == b"HdrS";
    if !is_elf && !is_bzimage {
        return Err(LoaderError::NotAKernel(path.to_path_buf()));
    }
    let need = if is_elf {
        elf_end(&mut file)
    } else {
        bzimage_end(&mut file)
    }
    .map_err(|_| LoaderError::NotAKernel(path.to_path_buf()))?;
    if need > low_ram_end(ram_size) {
        return Err(LoaderError::KernelDoesNotFit {
            path: path.to_path_buf(),
            mem_mib: ram_size >> 20,
            need_mib: need.div_ceil(1 << 20),
        });
    }
    file.seek(SeekFrom::Start(0)).map_err(file_err)?;
    let load_err = |source| LoaderError::Load {
        path: path.to_path_buf(),
        source,
    };
    let mut file = FileSource::new(file, file_map::mappable(mem)).map_err(file_err)?;
    let start = Some(GuestAddress(HIGH_MEMORY_START));
    let loaded = load_image(mem, &mut file, is_elf, need, start).map_err(load_err);
    log::info!(
        "kernel {}: {} of {} bytes mapped from the file",
        path.display(),
        file.mapped_bytes(),
        file.file_len()
    );
    loaded
}

/// linux-loader's ELF or bzImage loader over `file`.
fn load_image(
    mem: &GuestMemoryMmap,
    file: &mut FileSource,
    is_elf: bool,
    need: u64,
    start: Option<GuestAddress>,
) -> Result<LoadedKernel, linux_loader::loader::Error> {
    if is_elf {
        let res = Elf::load(mem, None, file, start)?;
        let (entry, mode) = match res.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => (addr, EntryMode::Pvh),
            _ => (res.kernel_load, EntryMode::LongMode),
        };
        Ok(LoadedKernel {
            entry,
            mode,
            setup_header: None,
            end: res.kernel_end,
        })
    } else {
        let res = BzImage::load(mem, None, file, start)?;
        Ok(LoadedKernel {
            entry: res.kernel_load.unchecked_add(BZIMAGE_64BIT_ENTRY_OFFSET),
            mode: EntryMode::LongMode,
            setup_header: res.setup_header,
            end: need.max(res.kernel_end),
        })
    }
}

/// Loads the initrd at the highest page-aligned address of low RAM that the kernel accepts.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<InitrdRegion, LoaderError> {
    let file_err = |source| LoaderError::InitrdFile {
        path: path.to_path_buf(),
        source,
    };
    let file = wisp_hostfs::open_read(path, wisp_hostfs::FileKind::Regular).map_err(|source| {
        LoaderError::OpenInitrd {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let size = file.metadata().map_err(file_err)?.len();
    let mut top = low_ram_end(ram_size);
    if let Some(hdr) = kernel.setup_header {
        let max = u64::from(hdr.initrd_addr_max);
        if max != 0 {
            top = top.min(max + 1);
        }
    }
    let too_big = || LoaderError::InitrdDoesNotFit {
        path: path.to_path_buf(),
        size,
    };
    let address = top.checked_sub(size).ok_or_else(too_big)? & !(PAGE_SIZE - 1);
    if address < kernel.end {
        return Err(too_big());
    }
    let len = usize::try_from(size).map_err(|_| too_big())?;
    let mut file = FileSource::new(file, file_map::mappable(mem)).map_err(file_err)?;
    mem.read_exact_volatile_from(GuestAddress(address), &mut file, len)
        .map_err(|e| file_err(std::io::Error::other(e)))?;
    log::info!(
        "initrd {}: {} of {len} bytes mapped from the file",
        path.display(),
        file.mapped_bytes()
    );
    Ok(InitrdRegion {
        address: GuestAddress(address),
        size: len,
    })
}

/// A command line builder with Linux's size limit.
pub fn new_cmdline(args: &str) -> Result<Cmdline, LoaderError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE)?;
    if !args.trim().is_empty() {
        cmdline.insert_str(args.trim())?;
    }
    Ok(cmdline)
}

/// Writes the finished command line at its fixed address.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, LoaderError> {
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(LoaderError::WriteCmdline)?;
    Ok(cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;
    use std::io::Write;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("wisp-loader-{}-{name}", std::process::id()));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    #[test]
    fn missing_kernel_names_the_file() {
        let mem = create_guest_memory(16).unwrap();
        let err = load_kernel(&mem, 16 << 20, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn a_fifo_is_neither_kernel_nor_initrd() {
        let mem = create_guest_memory(16).unwrap();
        let dir = std::env::temp_dir().join(format!("wisp-loader-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = load_kernel(&mem, 16 << 20, &fifo).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let kernel = LoadedKernel {
            entry: GuestAddress(HIGH_MEMORY_START),
            mode: EntryMode::Pvh,
            setup_header: None,
            end: 2 << 20,
        };
        let err = load_initrd(&mem, 16 << 20, &fifo, &kernel).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn text_file_is_not_a_kernel() {
        let mem = create_guest_memory(16).unwrap();
        let path = temp_file("text", b"#!/bin/sh\necho not a kernel\n");
        let err = load_kernel(&mem, 16 << 20, &path).unwrap_err();
        assert!(matches!(err, LoaderError::NotAKernel(_)), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory_page_aligned() {
        let mem = create_guest_memory(16).unwrap();
        let path = temp_file("initrd", &[7u8; 5000]);
        let kernel = LoadedKernel {
            entry: GuestAddress(HIGH_MEMORY_START),
            mode: EntryMode::Pvh,
            setup_header: None,
            end: 2 << 20,
        };
        let rd = load_initrd(&mem, 16 << 20, &path, &kernel).unwrap();
        assert_eq!(rd.address.raw_value() % PAGE_SIZE, 0);
        assert!(rd.address.raw_value() + 5000 <= 16 << 20);
        let small = LoadedKernel {
            end: 16 << 20,
            ..kernel
        };
        assert!(matches!(
            load_initrd(&mem, 16 << 20, &path, &small),
            Err(LoaderError::InitrdDoesNotFit { .. })
        ));
        std::fs::remove_file(path).unwrap();
    }
}
