//! Tinyx: builds minimal guest kernels and initramfs images (LightVM §4.1).
//!
//! - [`kernel::build_kernel`]: `tinyconfig` + fragments from the distribution's
//!   kernel source → checked `.config` → `vmlinux` + `bzImage`, cached.
//! - [`initramfs::build_initramfs`]: busybox-static + an application + its shared
//!   libraries ([`elf::library_closure`]) + `/init`, as a gzip newc cpio ([`cpio`]).
//! - [`minimize::minimize`]: trial-boot minimisation of a fragment.
//! - [`app_image::build_image`]: an application image from Debian packages (closure,
//!   maintainer scripts, trimming, `/init` with `ip=` networking); [`image_min`] trims it
//!   further by trial runs.
//! - [`default_guest`]: the default kernel + initramfs, built once per machine.

pub mod app_image;
pub mod cache;
pub mod configure;
pub mod cpio;
pub mod debian;
pub mod elf;
pub mod fragment;
pub mod image_min;
pub mod initramfs;
pub mod kernel;
pub mod minimize;
pub mod progress;
pub mod qemu;
pub mod source;
pub mod trial;
pub mod trim;

use std::path::PathBuf;

use initramfs::{
    build_initramfs, default_init, InitramfsError, InitramfsSpec, BUSYBOX, DEFAULT_APP_MARKER,
};
use kernel::{build_kernel_from, default_fragments, KernelError};

/// Errors building the default guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot build the Tinyx kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("cannot build the Tinyx initramfs: {0}")]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot publish {path}: {source}")]
    Publish {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A bootable guest: kernel (both formats) and initramfs, all in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestArtifacts {
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
}

/// The default Tinyx guest: the kernel from `microvm.config` + `app.config`, and
/// an initramfs whose `/init` writes the boot timer, prints
/// [`initramfs::INIT_MARKER`], runs `echo tinyx: app ran` and resets the VM.
/// Built on first use (the kernel takes a few minutes), then taken from the cache.
pub fn default_guest() -> Result<GuestArtifacts, GuestError> {
    let kernel = build_kernel_from(&default_fragments())?;
    let dir = cache::tinyx_dir()?;
    let busybox = std::fs::read(BUSYBOX).map_err(|source| GuestError::Read {
        path: BUSYBOX.into(),
        source,
    })?;
    let init = default_init(&format!("/bin/sh -c 'echo {DEFAULT_APP_MARKER}'"), &[]);
    let hash = cache::content_hash(&[
        &busybox,
        init.as_bytes(),
        env!("CARGO_PKG_VERSION").as_bytes(),
    ]);
    let initramfs = dir.join(format!("initramfs-{hash}.cpio.gz"));
    if !initramfs.is_file() {
        // Written under a temporary name and renamed: readers never see half a file.
        let tmp = dir.join(format!(".initramfs-{hash}.tmp-{}", std::process::id()));
        build_initramfs(&InitramfsSpec::default(), &tmp)?;
        std::fs::rename(&tmp, &initramfs).map_err(|source| GuestError::Publish {
            path: initramfs.clone(),
            source,
        })?;
    }
    Ok(GuestArtifacts {
        vmlinux: kernel.vmlinux,
        bzimage: kernel.bzimage,
        initramfs,
    })
}
