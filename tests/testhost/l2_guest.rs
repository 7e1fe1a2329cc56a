//! The L2 guest images the tests boot under `wisp` inside L1: the Tinyx kernel
//! (`wisp_tinyx::default_guest()`, built once per machine) as ELF `vmlinux` (PVH entry) and as
//! `bzImage`, Tinyx's default initramfs, and the harness's probe initramfs (l2_init.sh), which
//! prints the facts the tests check.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::initramfs::{self, HostFile, InitramfsError};
use super::l1_kernel;

/// Why the L2 images could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum L2GuestError {
    #[error("cannot build the Tinyx guest: {0}")]
    Tinyx(#[source] wisp_tinyx::GuestError),
    #[error("cannot build the L2 probe initramfs: {0}")]
    Initramfs(#[source] InitramfsError),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} (first attempt in this process)")]
    Earlier(String),
}

/// Kernel and initramfs images for L2.
#[derive(Debug, Clone)]
pub struct L2Guest {
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    /// Tinyx's default initramfs: writes the boot timer, prints
    /// `wisp_tinyx::initramfs::INIT_MARKER`, runs its app and resets.
    pub tinyx_initramfs: PathBuf,
    /// The probe initramfs (l2_init.sh).
    pub probe_initramfs: PathBuf,
}

impl L2Guest {
    /// The Tinyx guest and the probe initramfs, prepared once per process.
    pub fn tinyx() -> Result<Self, L2GuestError> {
        static BUILT: OnceLock<Result<L2Guest, String>> = OnceLock::new();
        BUILT
            .get_or_init(|| Self::build().map_err(|e| e.to_string()))
            .clone()
            .map_err(L2GuestError::Earlier)
    }

    fn build() -> Result<Self, L2GuestError> {
        let tinyx = wisp_tinyx::default_guest().map_err(L2GuestError::Tinyx)?;
        Ok(Self {
            vmlinux: tinyx.vmlinux,
            bzimage: tinyx.bzimage,
            tinyx_initramfs: tinyx.initramfs,
            probe_initramfs: build_probe_initramfs()?,
        })
    }
}

/// The Tinyx kernel built with keyboard.config as well (i8042, atkbd, VT): the ELF `vmlinux`
/// of a guest that acts on Ctrl-Alt-Del. Built on first use, then from the cache.
pub fn keyboard_vmlinux() -> Result<PathBuf, L2GuestError> {
    let kernel = wisp_tinyx::kernel::build_kernel_from(&wisp_tinyx::kernel::keyboard_fragments())
        .map_err(|e| L2GuestError::Tinyx(e.into()))?;
    Ok(kernel.vmlinux)
}

fn build_probe_initramfs() -> Result<PathBuf, L2GuestError> {
    build_cached("l2-probe", initramfs::build_l2_probe)
}

/// An L2 initramfs of busybox with the shell script `init` as /init and `files` (for tests
/// with their own guest-side scenario), cached as `$WISP_CACHE/testhost/l2-<name>/initramfs.cpio`.
pub fn initramfs_with_init(
    name: &str,
    init: &str,
    files: &[HostFile],
) -> Result<PathBuf, L2GuestError> {
    build_cached(&format!("l2-{name}"), |out| {
        initramfs::build_l2(out, init, files)
    })
}

fn build_cached(
    name: &str,
    build: impl FnOnce(&std::path::Path) -> Result<(), InitramfsError>,
) -> Result<PathBuf, L2GuestError> {
    let dir = l1_kernel::cache_dir().join(name);
    std::fs::create_dir_all(&dir).map_err(|source| L2GuestError::Io {
        path: dir.clone(),
        source,
    })?;
    // Rebuilt by every process (it takes milliseconds) and renamed into place, so parallel
    // test binaries never read a half-written archive.
    let tmp = dir.join(format!(".initramfs-{}.cpio", std::process::id()));
    let out = dir.join("initramfs.cpio");
    build(&tmp).map_err(L2GuestError::Initramfs)?;
    std::fs::rename(&tmp, &out).map_err(|source| L2GuestError::Io {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}
