//! The initramfs images the harness builds: the L1 test host's, and a small probe guest for L2.
//!
//! Both are busybox-static plus an init script; busybox is taken from the host's
//! `busybox-static` package (it must be static: neither image has a libc).

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::host_command::{self, CommandError};
use super::l1_kernel::L1Kernel;
use wisp_tinyx::cpio::{CpioError, CpioWriter};

const L1_INIT: &str = include_str!("l1_init.sh");
const L1_LIB: &str = include_str!("l1_lib.sh");
const L2_INIT: &str = include_str!("l2_init.sh");

/// Why an initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("no static busybox found (looked at {0:?}); install busybox-static")]
    NoBusybox(Vec<PathBuf>),
    #[error("cannot list the busybox applets: {0}")]
    Applets(#[source] CommandError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the initramfs: {0}")]
    Cpio(#[from] CpioError),
    #[error("cannot find the libraries of {path}: {source}")]
    Libraries {
        path: PathBuf,
        #[source]
        source: wisp_tinyx::elf::ElfError,
    },
}

type Archive = CpioWriter<BufWriter<File>>;

fn create(path: &Path) -> Result<Archive, InitramfsError> {
    let file = File::create(path).map_err(|source| InitramfsError::Create {
        path: path.to_owned(),
        source,
    })?;
    Ok(CpioWriter::new(BufWriter::new(file)))
}

/// Adds the host file `src` as `dst`.
fn add_host_file(
    cpio: &mut Archive,
    dst: &str,
    perm: u32,
    src: &Path,
) -> Result<(), InitramfsError> {
    let data = fs::read(src).map_err(|source| InitramfsError::Read {
        path: src.to_owned(),
        source,
    })?;
    cpio.add_file(dst, perm, &data)?;
    Ok(())
}

/// A file copied from the host into an image.
#[derive(Debug, Clone)]
pub struct HostFile {
    pub src: PathBuf,
    /// Absolute path inside the image.
    pub dst: String,
    pub perm: u32,
}

/// A dynamically linked host program (e.g. `/usr/bin/curl`) at its own path, with its loader
/// and every library it needs (Tinyx's `DT_NEEDED` closure) at theirs, so it runs unchanged.
pub fn host_program(path: &Path) -> Result<Vec<HostFile>, InitramfsError> {
    let libraries =
        wisp_tinyx::elf::library_closure(path).map_err(|source| InitramfsError::Libraries {
            path: path.to_owned(),
            source,
        })?;
    let mut files = vec![HostFile {
        src: path.to_owned(),
        dst: path.display().to_string(),
        perm: 0o755,
    }];
    files.extend(libraries.into_iter().map(|lib| HostFile {
        dst: lib.display().to_string(),
        src: lib,
        perm: 0o755,
    }));
    Ok(files)
}

/// True when `elf` is an ELF executable without a program interpreter (`PT_INTERP`), i.e.
/// statically linked (ELF-64 layout: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38).
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let field = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    let header = || -> Option<bool> {
        if !elf.starts_with(b"\x7fELF\x02\x01") {
            return Some(false);
        }
        let phoff = usize::try_from(field(0x20, 8)?).ok()?;
        let phentsize = usize::try_from(field(0x36, 2)?).ok()?;
        let phnum = usize::try_from(field(0x38, 2)?).ok()?;
        for i in 0..phnum {
            if field(phoff + i * phentsize, 4)? == u64::from(PT_INTERP) {
                return Some(false);
            }
        }
        Some(true)
    };
    header().unwrap_or(false)
}

/// The host's static busybox: `$WISP_TESTHOST_BUSYBOX`, else Debian's `busybox-static` path.
pub fn static_busybox() -> Result<PathBuf, InitramfsError> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("WISP_TESTHOST_BUSYBOX")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.extend(["/bin/busybox", "/usr/bin/busybox"].map(PathBuf::from));
    candidates
        .iter()
        .find(|p| fs::read(p).is_ok_and(|elf| is_static_elf(&elf)))
        .cloned()
        .ok_or(InitramfsError::NoBusybox(candidates))
}

/// Adds busybox as /bin/busybox with a /bin symlink for every applet it has.
fn add_busybox(cpio: &mut Archive) -> Result<(), InitramfsError> {
    let busybox = static_busybox()?;
    add_host_file(cpio, "/bin/busybox", 0o755, &busybox)?;
    let list = host_command::stdout(Command::new(&busybox).arg("--list"))
        .map_err(InitramfsError::Applets)?;
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "busybox" {
            cpio.add_symlink(&format!("/bin/{applet}"), "busybox")?;
        }
    }
    Ok(())
}

/// Adds what every Linux init needs before it mounts anything.
fn add_skeleton(cpio: &mut Archive) -> Result<(), InitramfsError> {
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/root"] {
        cpio.add_dir(dir, 0o755)?;
    }
    // Linux opens /dev/console for init's stdio before any devtmpfs exists
    // (init/main.c: console_on_rootfs); major 5, minor 1 (Documentation/admin-guide/devices.txt).
    cpio.add_char_device("/dev/console", 0o600, 5, 1)?;
    Ok(())
}

/// What goes into the L1 test host's initramfs.
pub struct L1Image<'a> {
    pub kernel: &'a L1Kernel,
    /// Modules to load after the kernel's KVM modules (duplicates of those are skipped).
    pub extra_modules: &'a [PathBuf],
    pub files: &'a [HostFile],
    pub script: &'a str,
}

/// Writes the L1 initramfs to `out`: busybox, the KVM modules and their load order, the
/// harness's /init and shell helpers, the caller's files and script.
pub fn build_l1(image: &L1Image<'_>, out: &Path) -> Result<(), InitramfsError> {
    let mut cpio = create(out)?;
    add_skeleton(&mut cpio)?;
    add_busybox(&mut cpio)?;
    let mut order = String::new();
    for module in image.kernel.modules.iter().chain(image.extra_modules) {
        let name = module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if order.lines().any(|loaded| loaded == name) {
            continue;
        }
        add_host_file(&mut cpio, &format!("/lib/modules/{name}"), 0o644, module)?;
        order.push_str(&name);
        order.push('\n');
    }
    cpio.add_file("/lib/modules/order", 0o644, order.as_bytes())?;
    cpio.add_file("/init", 0o755, L1_INIT.as_bytes())?;
    cpio.add_file("/testhost/lib.sh", 0o644, L1_LIB.as_bytes())?;
    cpio.add_file("/testhost/script.sh", 0o644, image.script.as_bytes())?;
    for file in image.files {
        add_host_file(&mut cpio, &file.dst, file.perm, &file.src)?;
    }
    cpio.finish()?;
    Ok(())
}

/// Writes the L2 probe guest's initramfs to `out`: busybox and an /init that prints
/// `WISP-L2 …` facts (CPUs, memory) and ends the VM as its command line asks (see l2_init.sh).
pub fn build_l2_probe(out: &Path) -> Result<(), InitramfsError> {
    build_l2(out, L2_INIT, &[])
}

/// Writes an L2 initramfs to `out`: busybox, the shell script `init` as /init, and `files`
/// (which must be static executables or data: the image has no libc).
pub fn build_l2(out: &Path, init: &str, files: &[HostFile]) -> Result<(), InitramfsError> {
    let mut cpio = create(out)?;
    add_skeleton(&mut cpio)?;
    add_busybox(&mut cpio)?;
    cpio.add_file("/init", 0o755, init.as_bytes())?;
    for file in files {
        add_host_file(&mut cpio, &file.dst, file.perm, &file.src)?;
    }
    cpio.finish()?;
    Ok(())
}
