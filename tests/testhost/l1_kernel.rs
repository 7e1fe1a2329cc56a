//! The L1 kernel: Debian's stock `linux-image-amd64` kernel, which runs inside QEMU/TCG on an
//! emulated AMD CPU with SVM and provides a real /dev/kvm through `kvm_amd`.
//!
//! Fetched with `apt-get download` (the only network the harness uses), unpacked with
//! `dpkg-deb -x`, reduced to an ELF `vmlinux` and the KVM modules with their dependencies in
//! load order, and cached under `$WISP_CACHE/testhost/<package>_<version>/`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::bzimage::{self, BzImageError};
use super::host_command::{self, CommandError};

/// The metapackage whose dependency names the current kernel package.
const META_PACKAGE: &str = "linux-image-amd64";
/// The module whose dependency closure gives a working /dev/kvm on an AMD CPU.
const ROOT_MODULE: &str = "kvm_amd";
/// Written last into a cache entry, so a half-written entry is never used.
const STAMP: &str = "complete";
/// The module load order, one file name per line.
const ORDER: &str = "modules.order";

/// Why the L1 kernel could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum L1KernelError {
    #[error("cannot resolve the L1 kernel package: {0}")]
    Resolve(#[source] CommandError),
    #[error("`apt-cache depends {META_PACKAGE}` names no linux-image package:\n{0}")]
    NoKernelPackage(String),
    #[error("`apt-cache show {0}` gives no Version")]
    NoVersion(String),
    #[error("cannot download or unpack {package}: {source}")]
    Fetch {
        package: String,
        #[source]
        source: CommandError,
    },
    #[error("cannot read module metadata: {0}")]
    Modinfo(#[source] CommandError),
    #[error("{package} has no {what}")]
    Missing { package: String, what: String },
    #[error("cannot extract vmlinux from {path}: {source}")]
    Extract {
        path: PathBuf,
        #[source]
        source: BzImageError,
    },
    #[error("cannot decompress module {path}: {source}")]
    Decompress {
        path: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("{0} (first attempt in this process)")]
    Earlier(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> L1KernelError + '_ {
    move |source| L1KernelError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A cached L1 kernel.
#[derive(Debug, Clone)]
pub struct L1Kernel {
    /// The Debian package and version it came from, e.g. `linux-image-6.1.0-56-amd64_6.1.192-2`.
    pub id: String,
    /// The bzImage as shipped (`/boot/vmlinuz-*`).
    pub bzimage: PathBuf,
    /// The uncompressed ELF kernel (PVH entry), which QEMU boots fastest.
    pub vmlinux: PathBuf,
    /// The KVM modules (uncompressed `.ko`), in an order `insmod` can load them.
    pub modules: Vec<PathBuf>,
}

/// The harness cache: `$WISP_CACHE`, else `~/.cache/wisp`, then `testhost/`.
pub fn cache_dir() -> PathBuf {
    let root = std::env::var_os("WISP_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wisp")))
        .unwrap_or_else(|| std::env::temp_dir().join("wisp-cache"));
    root.join("testhost")
}

impl L1Kernel {
    /// Returns the cached L1 kernel for the current `linux-image-amd64`, fetching it first if
    /// needed. Resolved once per process (apt-cache takes seconds).
    pub fn fetch() -> Result<Self, L1KernelError> {
        static FETCHED: OnceLock<Result<L1Kernel, String>> = OnceLock::new();
        FETCHED
            .get_or_init(|| Self::fetch_uncached().map_err(|e| e.to_string()))
            .clone()
            .map_err(L1KernelError::Earlier)
    }

    fn fetch_uncached() -> Result<Self, L1KernelError> {
        let (package, version) = resolve_package()?;
        let id = format!("{package}_{version}");
        let dir = cache_dir().join(&id);
        if !dir.join(STAMP).exists() {
            log::info!("testhost: fetching L1 kernel {id}");
            populate(&package, &dir)?;
        }
        Self::load(id, &dir)
    }

    fn load(id: String, dir: &Path) -> Result<Self, L1KernelError> {
        let order = dir.join(ORDER);
        let text = fs::read_to_string(&order).map_err(io_err(&order))?;
        Ok(Self {
            id,
            bzimage: dir.join("vmlinuz"),
            vmlinux: dir.join("vmlinux"),
            modules: text.lines().map(|m| dir.join("modules").join(m)).collect(),
        })
    }
}

impl L1Kernel {
    /// The module `name` (e.g. `tun`) of this kernel and its dependencies, in load order, for
    /// tests that need more than KVM in L1. Cached in its own entry beside the kernel's
    /// (`<id>-module-<name>/`), so the KVM entry and its users stay as they are; the package
    /// is downloaded again the first time.
    pub fn extra_module(&self, name: &str) -> Result<Vec<PathBuf>, L1KernelError> {
        let package = self.id.split_once('_').map_or(self.id.as_str(), |(p, _)| p);
        let dir = cache_dir().join(format!("{}-module-{name}", self.id));
        if !dir.join(STAMP).exists() {
            log::info!("testhost: fetching module {name} of {}", self.id);
            let parent = dir.parent().unwrap_or(&dir);
            let work = parent.join(format!(".tmp-{}-{package}-{name}", std::process::id()));
            if work.exists() {
                fs::remove_dir_all(&work).map_err(io_err(&work))?;
            }
            let entry = work.join("entry");
            fs::create_dir_all(&entry).map_err(io_err(&entry))?;
            let root = download_and_unpack(package, &work)?;
            write_modules(&root, name, package, &entry)?;
            commit_entry(&work, &entry, &dir)?;
        }
        let order = dir.join(ORDER);
        let text = fs::read_to_string(&order).map_err(io_err(&order))?;
        Ok(text.lines().map(|m| dir.join("modules").join(m)).collect())
    }
}

/// Resolves `linux-image-amd64` to the concrete package it depends on and that package's
/// candidate version.
fn resolve_package() -> Result<(String, String), L1KernelError> {
    let deps = host_command::stdout(Command::new("apt-cache").args(["depends", META_PACKAGE]))
        .map_err(L1KernelError::Resolve)?;
    let package = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| L1KernelError::NoKernelPackage(deps.clone()))?
        .to_owned();
    let show = host_command::stdout(Command::new("apt-cache").args([
        "show",
        "--no-all-versions",
        &package,
    ]))
    .map_err(L1KernelError::Resolve)?;
    let version = show
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| L1KernelError::NoVersion(package.clone()))?;
    Ok((package, version))
}

/// Downloads and unpacks `package` and writes the cache entry `dir` atomically (a temporary
/// sibling renamed into place, so concurrent test processes never see half an entry).
fn populate(package: &str, dir: &Path) -> Result<(), L1KernelError> {
    let parent = dir.parent().unwrap_or(dir);
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    let work = parent.join(format!(".tmp-{}-{package}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work).map_err(io_err(&work))?;
    }
    let entry = work.join("entry");
    fs::create_dir_all(&entry).map_err(io_err(&entry))?;
    let root = download_and_unpack(package, &work)?;

    let missing = |what: &str| L1KernelError::Missing {
        package: package.to_owned(),
        what: what.to_owned(),
    };
    let boot = root.join("boot");
    let vmlinuz = find_file(&boot, |n| n.starts_with("vmlinuz-"))?
        .ok_or_else(|| missing("/boot/vmlinuz-*"))?;
    let image = fs::read(&vmlinuz).map_err(io_err(&vmlinuz))?;
    let elf = bzimage::extract_vmlinux(&image).map_err(|source| L1KernelError::Extract {
        path: vmlinuz.clone(),
        source,
    })?;
    let out = entry.join("vmlinux");
    fs::write(&out, elf).map_err(io_err(&out))?;
    let out = entry.join("vmlinuz");
    fs::write(&out, image).map_err(io_err(&out))?;

    write_modules(&root, ROOT_MODULE, package, &entry)?;
    commit_entry(&work, &entry, dir)
}

/// Downloads `package` into `work` and unpacks it to `work/root`.
fn download_and_unpack(package: &str, work: &Path) -> Result<PathBuf, L1KernelError> {
    let fetch_err = |source| L1KernelError::Fetch {
        package: package.to_owned(),
        source,
    };
    host_command::run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(work),
    )
    .map_err(fetch_err)?;
    let deb = find_file(work, |n| n.ends_with(".deb"))?.ok_or_else(|| L1KernelError::Missing {
        package: package.to_owned(),
        what: ".deb after apt-get download".to_owned(),
    })?;
    let root = work.join("root");
    host_command::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))
        .map_err(fetch_err)?;
    Ok(root)
}

/// Writes the dependency closure of `root_module` from the unpacked package `root` into
/// `entry/modules/` and its load order into `entry/modules.order`.
fn write_modules(
    root: &Path,
    root_module: &str,
    package: &str,
    entry: &Path,
) -> Result<(), L1KernelError> {
    let modules_dir = entry.join("modules");
    fs::create_dir_all(&modules_dir).map_err(io_err(&modules_dir))?;
    let all = module_files(&root.join("lib/modules"))?;
    let order = load_order(&all, root_module, package)?;
    let mut names = String::new();
    for name in &order {
        let src = &all[name];
        let file = format!("{name}.ko");
        write_module(src, &modules_dir.join(&file))?;
        names.push_str(&file);
        names.push('\n');
    }
    let out = entry.join(ORDER);
    fs::write(&out, names).map_err(io_err(&out))
}

/// Stamps `entry` complete, renames it to `dir` and removes the work directory.
fn commit_entry(work: &Path, entry: &Path, dir: &Path) -> Result<(), L1KernelError> {
    let out = entry.join(STAMP);
    fs::write(&out, "").map_err(io_err(&out))?;
    match fs::rename(entry, dir) {
        Ok(()) => {}
        // Another test process finished first; its entry is as good as ours.
        Err(_) if dir.join(STAMP).exists() => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    fs::remove_dir_all(work).map_err(io_err(work))
}

/// The first file directly in `dir` whose name satisfies `pred`.
fn find_file(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<Option<PathBuf>, L1KernelError> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(&pred) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Every kernel module under `dir`, by module name (`-` normalised to `_`, as the kernel does).
fn module_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, L1KernelError> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|ext| name.strip_suffix(ext));
            if let Some(stem) = stem {
                found.insert(stem.replace('-', "_"), path.clone());
            }
        }
    }
    Ok(found)
}

/// The dependency closure of `root_module`, dependencies first, read from each module's
/// `depends=` modinfo field.
fn load_order(
    all: &BTreeMap<String, PathBuf>,
    root_module: &str,
    package: &str,
) -> Result<Vec<String>, L1KernelError> {
    fn visit(
        name: &str,
        all: &BTreeMap<String, PathBuf>,
        package: &str,
        order: &mut Vec<String>,
    ) -> Result<(), L1KernelError> {
        if order.iter().any(|m| m == name) {
            return Ok(());
        }
        let path = all.get(name).ok_or_else(|| L1KernelError::Missing {
            package: package.to_owned(),
            what: format!("module {name}"),
        })?;
        let depends =
            host_command::stdout(Command::new("modinfo").args(["-F", "depends"]).arg(path))
                .map_err(L1KernelError::Modinfo)?;
        for dep in depends.trim().split(',').filter(|d| !d.is_empty()) {
            visit(&dep.replace('-', "_"), all, package, order)?;
        }
        order.push(name.to_owned());
        Ok(())
    }
    let mut order = Vec::new();
    visit(root_module, all, package, &mut order)?;
    Ok(order)
}

/// Copies a module, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` (busybox `insmod` wants plain ELF).
fn write_module(src: &Path, dst: &Path) -> Result<(), L1KernelError> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let data = match tool {
        None => fs::read(src).map_err(io_err(src))?,
        Some(tool) => {
            host_command::run(Command::new(tool).arg("-dc").arg(src))
                .map_err(|source| L1KernelError::Decompress {
                    path: src.to_owned(),
                    source,
                })?
                .stdout
        }
    };
    fs::write(dst, data).map_err(io_err(dst))
}
