//! Application images from Debian packages (`tinyx image --deb PKG…`): the packages'
//! dependency closure ([`crate::debian`]) unpacked into a root tree, configured as their
//! maintainer scripts would ([`crate::configure`]), trimmed of what a server never reads
//! ([`crate::trim`]), given an `/init` that brings up the network from `ip=` and runs the
//! application in the foreground, and written as an initramfs (and optionally an ext4 root).
//!
//! Images are cache entries `$WISP_CACHE/tinyx/app-<hash>/` (hash of the package versions, the
//! command and the recipe), built in a staging directory and renamed into place: a failed build
//! leaves nothing behind. Each entry keeps its root tree (`rootfs/`), which `minimize-image`
//! trims further by trial runs.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::cache::{self, CacheError};
use crate::configure::{self, ConfigureError};
use crate::cpio::{CpioError, CpioWriter};
use crate::debian::{self, DebianError, Package};
use crate::initramfs::{BOOT_TIMER_ADDR, BUSYBOX, INIT_MARKER};
use crate::trial::{self, TrialError, TrialOutcome};
use crate::trim;

/// Printed by `/init` just before it starts the application.
pub const APP_START_MARKER: &str = "tinyx: starting the application";

/// Applets linked into /bin (where no package put a file of that name): what `/init` and a
/// shell in the guest need.
const APPLETS: &[&str] = &[
    "sh", "mount", "umount", "mkdir", "cat", "echo", "ls", "sleep", "sync", "reboot", "poweroff",
    "ifconfig", "route", "hostname", "ps", "kill", "grep",
];

/// Bump when the build recipe changes in a way the hashed inputs do not show.
const RECIPE: &str = "app-image-4";

/// How long the build's smoke run watches the application for an early exit.
const SMOKE_SECONDS: u32 = 3;

/// How long the smoke run waits for `--port` to accept a connection.
const LISTEN_SECONDS: u32 = 20;

/// Errors building an application image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Debian(#[from] DebianError),
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Trial(#[from] TrialError),
    #[error("no packages given: name at least one with --deb")]
    NoPackages,
    #[error("the command's program {program:?} is not in the image (packages: {packages})")]
    ProgramMissing { program: String, packages: String },
    #[error("the application exited at once (status {status}) instead of serving:\n{output}")]
    ExitedAtOnce { status: String, output: String },
    #[error("the application never listened on port {port} within {seconds} s:\n{output}")]
    NotListening {
        port: u16,
        seconds: u32,
        output: String,
    },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Archive {
        path: String,
        #[source]
        source: CpioError,
    },
    #[error("mkfs.ext4 failed for {path}: {detail}")]
    Mkfs { path: PathBuf, detail: String },
    #[error("cache entry {0} has no readable report.txt")]
    Report(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What to build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSpec {
    /// Packages asked for (their closure is taken).
    pub packages: Vec<String>,
    /// The shell command `/init` runs in the foreground; default: the program named after the
    /// first package, when there is one.
    pub run: Option<String>,
    /// A TCP port the application must listen on in the build's smoke run.
    pub port: Option<u16>,
    /// Also write an ext4 root filesystem image.
    pub rootfs: bool,
}

/// A built image and the figures of its build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageReport {
    pub entry: PathBuf,
    /// `name=version` of every package taken, in configuration order.
    pub packages: Vec<String>,
    /// Sum of the packages' `Installed-Size` (what Debian would install), bytes.
    pub installed_bytes: u64,
    /// Bytes of regular files after unpacking and configuring.
    pub unpacked_bytes: u64,
    /// Bytes of regular files after trimming (before busybox and `/init` are added).
    pub trimmed_bytes: u64,
    /// The compressed initramfs, bytes.
    pub initramfs_bytes: u64,
    /// The command `/init` runs.
    pub command: String,
}

impl ImageReport {
    pub fn initramfs(&self) -> PathBuf {
        self.entry.join("initramfs.cpio.gz")
    }
    pub fn rootfs_image(&self) -> PathBuf {
        self.entry.join("rootfs.ext4")
    }
    pub fn root_tree(&self) -> PathBuf {
        self.entry.join("rootfs")
    }

    /// The `report.txt` form, read back by [`ImageReport::load`].
    pub fn to_text(&self) -> String {
        format!(
            "command {}\ninstalled_bytes {}\nunpacked_bytes {}\ntrimmed_bytes {}\n\
             initramfs_bytes {}\n{}",
            self.command,
            self.installed_bytes,
            self.unpacked_bytes,
            self.trimmed_bytes,
            self.initramfs_bytes,
            self.packages
                .iter()
                .map(|p| format!("package {p}\n"))
                .collect::<String>()
        )
    }

    /// Reads an entry's report.txt back.
    pub fn load(entry: &Path) -> Result<Self, ImageError> {
        let text = std::fs::read_to_string(entry.join("report.txt"))
            .map_err(|_| ImageError::Report(entry.to_path_buf()))?;
        let mut r = ImageReport {
            entry: entry.to_path_buf(),
            ..Default::default()
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            let n = || v.parse().unwrap_or(0);
            match k {
                "command" => r.command = v.to_string(),
                "installed_bytes" => r.installed_bytes = n(),
                "unpacked_bytes" => r.unpacked_bytes = n(),
                "trimmed_bytes" => r.trimmed_bytes = n(),
                "initramfs_bytes" => r.initramfs_bytes = n(),
                "package" => r.packages.push(v.to_string()),
                _ => {}
            }
        }
        Ok(r)
    }
}

/// The application `/init`: mounts, boot timer, loopback and `ip=` networking, then the
/// application in the foreground; when it exits, the VM ends (`reboot -f`, which ends it under
/// every VMM, see [`crate::initramfs::default_init`]).
pub fn app_init(command: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
# Tinyx application /init (generated by `tinyx image`).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
busybox mkdir -p /dev/pts /dev/shm
busybox mount -t devpts devpts /dev/pts 2>/dev/null
busybox devmem {BOOT_TIMER_ADDR:#x} 8 123
echo "{INIT_MARKER}"
busybox ifconfig lo 127.0.0.1 up
# ip=<client>:<server>:<gateway>:<netmask>:<hostname>:<device>:<autoconf>, as the kernel's
# own IP autoconfiguration reads it (Documentation/admin-guide/nfs/nfsroot.rst).
for word in $(busybox cat /proc/cmdline); do
    case "$word" in
    ip=*)
        old_ifs=$IFS
        IFS=:
        set -- ${{word#ip=}}
        IFS=$old_ifs
        addr=$1 gw=$3 mask=${{4:-255.255.255.0}} host=$5 dev=${{6:-eth0}}
        busybox ifconfig "$dev" "$addr" netmask "$mask" up
        [ -n "$gw" ] && busybox route add default gw "$gw"
        [ -n "$host" ] && busybox hostname "$host"
        echo "tinyx: $dev $addr netmask $mask"
        ;;
    esac
done
echo "{APP_START_MARKER}: {command_echo}"
{command}
echo "tinyx: app exited with status $?"
busybox sync
busybox reboot -f
"#,
        command_echo = command.replace(['"', '$', '`', '\\'], "_"),
    )
}

/// The first word of a shell command (the program it runs).
fn program_of(command: &str) -> String {
    command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .unwrap_or("")
        .to_string()
}

/// `program` as the image's PATH would find it (or a path that exists in `root`).
fn find_program(root: &Path, program: &str) -> bool {
    if program.starts_with('/') {
        return root.join(program.trim_start_matches('/')).exists();
    }
    [
        "usr/local/sbin",
        "usr/local/bin",
        "usr/sbin",
        "usr/bin",
        "sbin",
        "bin",
    ]
    .iter()
    .any(|d| root.join(d).join(program).exists())
}

/// Bytes of the regular files under `dir` (symlinks and directories count nothing).
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Builds (or takes from the cache) the image of `spec`.
pub fn build_image(spec: &ImageSpec) -> Result<ImageReport, ImageError> {
    if spec.packages.is_empty() {
        return Err(ImageError::NoPackages);
    }
    let mut roots = spec.packages.clone();
    // base-passwd: Debian's fixed users and groups (root, daemon, www-data, nogroup, adm…).
    if !roots.iter().any(|r| r == "base-passwd") {
        roots.push("base-passwd".into());
    }
    let packages = debian::resolve(&roots)?;
    let busybox = std::fs::read(BUSYBOX).map_err(io_err(Path::new(BUSYBOX)))?;
    let command = spec.run.clone().unwrap_or_else(|| spec.packages[0].clone());
    let key = {
        let listing: String = packages
            .iter()
            .map(|p| format!("{}={}\n", p.name, p.version))
            .collect();
        let port = spec.port.map(|p| p.to_string()).unwrap_or_default();
        cache::content_hash(&[
            RECIPE.as_bytes(),
            listing.as_bytes(),
            command.as_bytes(),
            port.as_bytes(),
            if spec.rootfs { b"ext4" } else { b"cpio" },
            app_init(&command).as_bytes(),
            configure::STUBS.as_bytes(),
            trim::RULES_VERSION.as_bytes(),
            &busybox,
            env!("CARGO_PKG_VERSION").as_bytes(),
        ])
    };
    let dir = cache::tinyx_dir()?;
    let entry = dir.join(format!("app-{key}"));
    if entry.join("report.txt").is_file() {
        return ImageReport::load(&entry);
    }
    // Its own lock (the kernel builds hold the cache-wide one for minutes): app builds
    // share the .deb directory and their entries.
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(io_err(&debs))?;
    let _lock = cache::lock(&debs)?;
    if entry.join("report.txt").is_file() {
        return ImageReport::load(&entry);
    }
    let staging = Staging(cache::staging_dir(&entry)?);
    let report = assemble(
        spec, &packages, &command, &busybox, &dir, &staging.0, &entry,
    )?;
    cache::publish(&staging.0, &entry)?;
    Ok(report)
}

/// Removes a staging directory unless it was published (renamed away).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    spec: &ImageSpec,
    packages: &[Package],
    command: &str,
    busybox: &[u8],
    cache_dir: &Path,
    staging: &Path,
    entry: &Path,
) -> Result<ImageReport, ImageError> {
    let debs = debian::download(packages, &cache_dir.join("debs"))?;
    let root = staging.join("rootfs");
    let control = staging.join("control");
    for (p, deb) in packages.iter().zip(&debs) {
        debian::unpack(deb, &root, &control.join(&p.name))?;
    }
    let names: Vec<String> = packages.iter().map(|p| p.name.clone()).collect();
    configure::configure(&root, &control, &names, busybox)?;
    let unpacked_bytes = tree_bytes(&root);
    trim::trim(&root).map_err(|source| ImageError::Io {
        path: root.clone(),
        source,
    })?;
    let trimmed_bytes = tree_bytes(&root);
    install_init(&root, command, busybox)?;

    let program = program_of(command);
    if !find_program(&root, &program) {
        return Err(ImageError::ProgramMissing {
            program,
            packages: names.join(" "),
        });
    }
    smoke_run(&root, command, spec.port)?;

    let initramfs = staging.join("initramfs.cpio.gz");
    write_initramfs(&root, &initramfs)?;
    if spec.rootfs {
        write_ext4(&root, &staging.join("rootfs.ext4"), trimmed_bytes)?;
    }
    let report = ImageReport {
        entry: entry.to_path_buf(),
        packages: packages
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect(),
        installed_bytes: packages.iter().map(|p| p.installed_kib * 1024).sum(),
        unpacked_bytes,
        trimmed_bytes,
        initramfs_bytes: std::fs::metadata(&initramfs).map_or(0, |m| m.len()),
        command: command.to_string(),
    };
    let report_path = staging.join("report.txt");
    std::fs::write(&report_path, report.to_text()).map_err(io_err(&report_path))?;
    Ok(report)
}

/// Runs the application briefly on the build host (chroot, private network): an application
/// that exits at once, or never listens on `port`, fails the build.
fn smoke_run(root: &Path, command: &str, port: Option<u16>) -> Result<(), ImageError> {
    let outcome = trial::run(&trial::Trial {
        root,
        command,
        port,
        check: None,
        trace: None,
        seconds: if port.is_some() {
            LISTEN_SECONDS
        } else {
            SMOKE_SECONDS
        },
    })?;
    match outcome {
        TrialOutcome::Exited { status, output } => Err(ImageError::ExitedAtOnce { status, output }),
        TrialOutcome::NotReady { output } => Err(ImageError::NotListening {
            port: port.unwrap_or(0),
            seconds: LISTEN_SECONDS,
            output,
        }),
        TrialOutcome::Ready { .. } => Ok(()),
    }
}

/// `/init`, busybox at /bin/busybox, its applets where no package put a file, the mount
/// points, and the directories a server expects under /run and /var.
pub fn install_init(root: &Path, command: &str, busybox: &[u8]) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let mk = |rel: &str, mode: u32| -> Result<(), ImageError> {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(&p))?;
        }
        Ok(())
    };
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "etc",
        "run",
        "run/lock",
        "var/log",
        "var/lib",
        "var/cache",
        "usr/sbin",
        "usr/bin",
    ] {
        mk(d, 0o755)?;
    }
    mk("tmp", 0o1777)?;
    mk("var/tmp", 0o1777)?;
    mk("root", 0o700)?;
    let link = |target: &str, rel: &str| -> Result<(), ImageError> {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink(target, &p).map_err(io_err(&p))?;
        }
        Ok(())
    };
    link("/run", "var/run")?;
    link("/run/lock", "var/lock")?;
    let hosts = root.join("etc/hosts");
    if !hosts.exists() {
        std::fs::write(&hosts, "127.0.0.1\tlocalhost\n::1\tlocalhost\n").map_err(io_err(&hosts))?;
    }
    let bb = root.join("bin/busybox");
    std::fs::write(&bb, busybox).map_err(io_err(&bb))?;
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755)).map_err(io_err(&bb))?;
    for applet in APPLETS {
        link("busybox", &format!("bin/{applet}"))?;
    }
    let init = root.join("init");
    std::fs::write(&init, app_init(command)).map_err(io_err(&init))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(&init))?;
    Ok(())
}

/// Writes the tree at `root` as a gzip newc cpio, with owners and modes as they are on disk,
/// plus `/dev/console` (the kernel opens it before `/init` runs). Written under a temporary
/// name and renamed.
pub fn write_initramfs(root: &Path, out: &Path) -> Result<(), ImageError> {
    let tmp = out.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::best());
    let mut w = CpioWriter::new(gz);
    let arch = |path: &str, r: Result<(), CpioError>| {
        r.map_err(|source| ImageError::Archive {
            path: path.to_string(),
            source,
        })
    };
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_err(&dir))?;
        children.sort();
        for child in children.into_iter().rev() {
            let name = child
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dest = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(&child).map_err(io_err(&child))?;
            w.set_owner(meta.uid(), meta.gid());
            let perm = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&child).map_err(io_err(&child))?;
                arch(&dest, w.add_symlink(&dest, &target.to_string_lossy()))?;
            } else if meta.is_dir() {
                arch(&dest, w.add_dir(&dest, perm))?;
                stack.push((child, dest));
            } else if meta.is_file() {
                let data = std::fs::read(&child).map_err(io_err(&child))?;
                arch(&dest, w.add_file(&dest, perm, &data))?;
            }
        }
    }
    w.set_owner(0, 0);
    arch("dev/console", w.add_char_device("dev/console", 0o600, 5, 1))?;
    let gz = w.finish().map_err(|source| ImageError::Archive {
        path: "TRAILER".into(),
        source,
    })?;
    let mut buf = gz.finish().map_err(io_err(&tmp))?;
    buf.flush().map_err(io_err(&tmp))?;
    drop(buf);
    std::fs::rename(&tmp, out).map_err(io_err(out))
}

/// An ext4 image of the tree (`mkfs.ext4 -d`, owners kept), with room to spare for logs.
fn write_ext4(root: &Path, out: &Path, bytes: u64) -> Result<(), ImageError> {
    let mib = (bytes * 3 / 2) / (1 << 20) + 32;
    let result = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(root)
        .arg(out)
        .arg(format!("{mib}M"))
        .output()
        .map_err(io_err(Path::new("mkfs.ext4")))?;
    if !result.status.success() {
        return Err(ImageError::Mkfs {
            path: out.to_path_buf(),
            detail: String::from_utf8_lossy(&result.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_configures_ip_from_the_command_line_and_runs_the_command() {
        let init = app_init("nginx -g 'daemon off;'");
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains("\nnginx -g 'daemon off;'\n"), "{init}");
        assert!(init.contains("ip=*)"));
        assert!(init.contains("busybox reboot -f"));
        assert!(init.contains("devmem 0xd0000000 8 123"));
    }

    #[test]
    fn the_program_is_the_first_word_that_is_not_an_assignment() {
        assert_eq!(program_of("FOO=1 redis-server --port 1"), "redis-server");
        assert_eq!(program_of("nginx -g 'daemon off;'"), "nginx");
    }

    #[test]
    fn tree_written_as_cpio_keeps_owners_modes_and_links() {
        use crate::cpio::CpioReader;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/x")).unwrap();
        std::fs::write(root.join("etc/x/conf"), "c").unwrap();
        std::os::unix::fs::symlink("x/conf", root.join("etc/link")).unwrap();
        let out = dir.path().join("i.cpio.gz");
        write_initramfs(&root, &out).unwrap();
        let entries = CpioReader::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&out).unwrap(),
        ))
        .read_all()
        .unwrap();
        let find = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert_eq!(find("etc/x/conf").data, b"c");
        assert!(find("etc/link").is_symlink());
        assert!(find("dev/console").is_char_device());
        assert!(!out.with_extension("tmp").exists());
    }
}
