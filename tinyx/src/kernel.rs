//! Building a Tinyx kernel: `tinyconfig` + fragments → checked `.config` → `vmlinux`
//! and `bzImage`, cached by a hash of (source package version, fragments).
//!
//! One out-of-tree build directory (`O=`, Documentation/kbuild/kbuild.rst) per source
//! version is kept in the cache, so a different fragment set or a minimiser trial
//! rebuilds only what the changed options touch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cache::{self, CacheError};
use crate::fragment::{apply_to_config, check_config, Fragment, FragmentError, Mismatch};
use crate::progress::{log_tail, run_logged, ProgressError};
use crate::source::{find_source, unpacked_tree, KernelSource, SourceError};

/// The microVM fragment shipped with the crate (also in `configs/`).
pub const MICROVM_FRAGMENT: &str = include_str!("../configs/microvm.config");
/// The application fragment shipped with the crate (also in `configs/`).
pub const APP_FRAGMENT: &str = include_str!("../configs/app.config");
/// The ACPI fragment (ACPI, PCI for ACPICA, pvpanic): power-off and panic reach the VMM
/// through devices.
pub const ACPI_FRAGMENT: &str = include_str!("../configs/acpi.config");
/// The virtio-fs fragment (FUSE, virtio-fs, overlayfs): host directories shared through
/// vhost-user-fs, overlay container roots.
pub const FS_FRAGMENT: &str = include_str!("../configs/fs.config");
/// The virtio-balloon fragment: the host reclaims memory from idle guests, reads their figures.
pub const BALLOON_FRAGMENT: &str = include_str!("../configs/balloon.config");
/// The keyboard fragment (i8042, atkbd, VT): for guests that must act on Ctrl-Alt-Del.
pub const KEYBOARD_FRAGMENT: &str = include_str!("../configs/keyboard.config");

/// The server fragment (IPv6, found by trial runs of nginx and redis): for application images.
/// What a container sandbox's guest needs: namespaces, cgroups v2 (wisp-agent as PID 1).
pub const CONTAINER_FRAGMENT: &str = include_str!("../configs/container.config");
pub const SERVER_FRAGMENT: &str = include_str!("../configs/server.config");

/// Errors building a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Fragment(#[from] FragmentError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Run(#[from] ProgressError),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the final .config differs from the fragments in {} option(s):\n  {}", .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Config(Vec<Mismatch>),
    #[error("`make {target}` failed ({status}); full log: {log}\n--- last lines ---\n{tail}")]
    Make {
        target: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
}

/// The products of a kernel build, inside a cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelArtifacts {
    /// The ELF kernel; boots through its PVH entry note.
    pub vmlinux: PathBuf,
    /// The compressed kernel for the Linux boot protocol.
    pub bzimage: PathBuf,
    /// The final `.config`.
    pub config: PathBuf,
}

impl KernelArtifacts {
    fn in_dir(dir: &Path) -> Self {
        Self {
            vmlinux: dir.join("vmlinux"),
            bzimage: dir.join("bzImage"),
            config: dir.join("config"),
        }
    }

    fn complete(&self) -> bool {
        self.vmlinux.is_file() && self.bzimage.is_file() && self.config.is_file()
    }
}

/// A named fragment text, the unit the cache key is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSource {
    pub name: String,
    pub text: String,
}

impl FragmentSource {
    pub fn load(path: &Path) -> Result<Self, KernelError> {
        let text = std::fs::read_to_string(path).map_err(|source| KernelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            name: path.display().to_string(),
            text,
        })
    }
}

/// The default fragments: microvm.config, app.config, acpi.config, fs.config, balloon.config,
/// server.config, then container.config (IPv6, which application images' servers need: one kernel serves plain guests,
/// container guests and `tinyx image` applications, so a fresh machine builds it once).
pub fn default_fragments() -> Vec<FragmentSource> {
    vec![
        FragmentSource {
            name: "microvm.config".into(),
            text: MICROVM_FRAGMENT.into(),
        },
        FragmentSource {
            name: "app.config".into(),
            text: APP_FRAGMENT.into(),
        },
        FragmentSource {
            name: "acpi.config".into(),
            text: ACPI_FRAGMENT.into(),
        },
        FragmentSource {
            name: "fs.config".into(),
            text: FS_FRAGMENT.into(),
        },
        FragmentSource {
            name: "balloon.config".into(),
            text: BALLOON_FRAGMENT.into(),
        },
        FragmentSource {
            name: "server.config".into(),
            text: SERVER_FRAGMENT.into(),
        },
        FragmentSource {
            name: "container.config".into(),
            text: CONTAINER_FRAGMENT.into(),
        },
    ]
}

/// The default fragments plus keyboard.config: a kernel that restarts on the Ctrl-Alt-Del
/// Wisp's `SendCtrlAltDel` injects (the default one has no keyboard, which #3 keeps off).
pub fn keyboard_fragments() -> Vec<FragmentSource> {
    let mut fragments = default_fragments();
    fragments.push(FragmentSource {
        name: "keyboard.config".into(),
        text: KEYBOARD_FRAGMENT.into(),
    });
    fragments
}

/// Builds (or takes from the cache) a kernel from fragment files, applied in order.
/// An empty list means the default fragments.
pub fn build_kernel(fragments: &[PathBuf]) -> Result<KernelArtifacts, KernelError> {
    let sources = if fragments.is_empty() {
        default_fragments()
    } else {
        fragments
            .iter()
            .map(|p| FragmentSource::load(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    build_kernel_from(&sources)
}

/// Builds (or takes from the cache) a kernel from fragment texts.
pub fn build_kernel_from(fragments: &[FragmentSource]) -> Result<KernelArtifacts, KernelError> {
    let parsed = fragments
        .iter()
        .map(|f| Fragment::parse(&f.text, &f.name))
        .collect::<Result<Vec<_>, _>>()?;
    let wanted = Fragment::merged(&parsed);
    let src = find_source()?;
    let dir = cache::tinyx_dir()?;
    let entry = entry_for(&src, &dir, fragments);
    let hash = entry
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("kernel-")
                .to_string()
        })
        .unwrap_or_default();
    let artifacts = KernelArtifacts::in_dir(&entry);
    if artifacts.complete() {
        log::info!("kernel {hash} from cache");
        return Ok(artifacts);
    }
    let _lock = cache::lock(&dir)?;
    if artifacts.complete() {
        return Ok(artifacts);
    }
    let log = dir.join("logs").join(format!("kernel-{hash}.log"));
    let started = Instant::now();
    eprintln!(
        "tinyx: building kernel {hash} from {} {} (log: {})",
        src.package,
        src.version,
        log.display()
    );
    let work = WorkTree::open(&src, &dir)?;
    let built = work.build(&wanted, &log, true)?;

    let staging = cache::staging_dir(&entry)?;
    let staged = KernelArtifacts::in_dir(&staging);
    copy(&built.vmlinux, &staged.vmlinux)?;
    copy(&built.bzimage, &staged.bzimage)?;
    copy(&built.config, &staged.config)?;
    let mut info = format!(
        "source: {} {}\nbuild_seconds: {}\n",
        src.package,
        src.version,
        started.elapsed().as_secs()
    );
    for f in fragments {
        info.push_str(&format!("\n# fragment {}\n{}", f.name, f.text));
    }
    write(&staging.join("recipe.txt"), info.as_bytes())?;
    cache::publish(&staging, &entry)?;
    eprintln!(
        "tinyx: kernel {hash} built in {}s",
        started.elapsed().as_secs()
    );
    Ok(artifacts)
}

/// The cache entry (`$WISP_CACHE/tinyx/kernel-<hash>`) that holds, or will hold,
/// the kernel for these fragments; it exists only once the build has succeeded.
pub fn cache_entry(fragments: &[FragmentSource]) -> Result<PathBuf, KernelError> {
    Ok(entry_for(&find_source()?, &cache::tinyx_dir()?, fragments))
}

fn entry_for(src: &KernelSource, dir: &Path, fragments: &[FragmentSource]) -> PathBuf {
    let mut parts: Vec<&[u8]> = vec![src.package.as_bytes(), src.version.as_bytes()];
    parts.extend(fragments.iter().map(|f| f.text.as_bytes()));
    dir.join(format!("kernel-{}", cache::content_hash(&parts)))
}

/// The shared out-of-tree build directory for one source version. Callers hold
/// the cache lock while they use it.
pub struct WorkTree {
    pub source_tree: PathBuf,
    pub build_dir: PathBuf,
}

impl WorkTree {
    /// Unpacks the source if needed and opens its build directory.
    pub fn open(src: &KernelSource, cache_dir: &Path) -> Result<Self, KernelError> {
        let source_tree = unpacked_tree(src, cache_dir)?;
        let build_dir = cache_dir.join(format!("work-{}_{}", src.package, src.version));
        create_dir(&build_dir)?;
        create_dir(&cache_dir.join("logs"))?;
        Ok(Self {
            source_tree,
            build_dir,
        })
    }

    /// Configures for `wanted` without building; returns the mismatches.
    pub fn configure(&self, wanted: &Fragment, log: &Path) -> Result<Vec<Mismatch>, KernelError> {
        self.make(&["tinyconfig"], log, false)?;
        let config_path = self.build_dir.join(".config");
        let text = std::fs::read_to_string(&config_path).map_err(|source| KernelError::Io {
            path: config_path.clone(),
            source,
        })?;
        write(&config_path, apply_to_config(&text, wanted).as_bytes())?;
        self.make(&["olddefconfig"], log, false)?;
        let text = std::fs::read_to_string(&config_path).map_err(|source| KernelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config = Fragment::parse(&text, &config_path.display().to_string())?;
        Ok(check_config(wanted, &config))
    }

    /// Configures for `wanted`, checks, and builds `vmlinux` and `bzImage`. The
    /// returned paths are inside the build directory and change on the next build.
    pub fn build(
        &self,
        wanted: &Fragment,
        log: &Path,
        show: bool,
    ) -> Result<KernelArtifacts, KernelError> {
        let mismatches = self.configure(wanted, log)?;
        if !mismatches.is_empty() {
            return Err(KernelError::Config(mismatches));
        }
        self.make(&["vmlinux", "bzImage"], log, show)?;
        Ok(KernelArtifacts {
            vmlinux: self.build_dir.join("vmlinux"),
            bzimage: self.build_dir.join("arch/x86/boot/bzImage"),
            config: self.build_dir.join(".config"),
        })
    }

    fn make(&self, targets: &[&str], log: &Path, show: bool) -> Result<(), KernelError> {
        let jobs = std::env::var("TINYX_JOBS")
            .ok()
            .and_then(|j| j.parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // Niced: the kernel build shares the machine with everything else.
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "10", "make", "-C"])
            .arg(&self.source_tree)
            .arg(format!("O={}", self.build_dir.display()))
            .arg(format!("-j{jobs}"))
            .args(targets)
            .env("LC_ALL", "C");
        let status = run_logged(&mut cmd, log, "kernel", show)?;
        if !status.success() {
            return Err(KernelError::Make {
                target: targets.join(" "),
                status,
                log: log.to_path_buf(),
                tail: log_tail(log, 40),
            });
        }
        Ok(())
    }
}

fn create_dir(path: &Path) -> Result<(), KernelError> {
    std::fs::create_dir_all(path).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn copy(from: &Path, to: &Path) -> Result<(), KernelError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| KernelError::Io {
            path: from.to_path_buf(),
            source,
        })
}

fn write(path: &Path, data: &[u8]) -> Result<(), KernelError> {
    std::fs::write(path, data).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    })
}
