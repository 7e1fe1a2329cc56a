//! Configuring unpacked packages as dpkg would: each package's `preinst install` and then
//! `postinst configure`, in dependency order, run in a chroot of the image tree with busybox
//! and stand-ins for the system tools they call (scripts/maint-stubs.sh). What the scripts do
//! that an image needs happens for real inside the tree: system users and groups
//! (`adduser --system` → /etc/passwd, /etc/group), directories under /var and /run, owners
//! and modes, default configuration links (nginx's sites-enabled/default) and files.
//!
//! Running a script changes only the image tree. It needs root (chroot, chown); a script that
//! fails is reported as a warning naming the package, since the stand-ins cannot do
//! everything (services, alternatives, debconf questions).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stand-ins, installed under every name of [`STUB_NAMES`].
pub const STUBS: &str = include_str!("../scripts/maint-stubs.sh");

const STUB_NAMES: &[&str] = &[
    "adduser",
    "addgroup",
    "useradd",
    "groupadd",
    "getent",
    "dpkg-statoverride",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    "invoke-rc.d",
    "update-rc.d",
    "systemctl",
    "service",
    "dpkg-maintscript-helper",
    "dpkg-trigger",
    "dpkg-divert",
    "dpkg",
    "update-alternatives",
    "ldconfig",
    "ucf",
    "ucfr",
];

/// debconf's shell library would start the perl frontend; the stand-in answers every
/// question with its default (empty) and succeeds.
const CONFMODULE_STUB: &str = "# tinyx: debconf stand-in (no frontend in an image build)
db_get() { RET=''; return 0; }
for _f in db_set db_input db_go db_stop db_fset db_fget db_register db_unregister db_subst \\
    db_purge db_version db_capb db_title db_settitle db_reset db_metaget db_beginblock \\
    db_endblock db_x_loadtemplatefile db_clear db_progress db_info db_data; do
    eval \"$_f() { RET=''; return 0; }\"
done
";

/// How long one maintainer script may run.
const SCRIPT_TIMEOUT_S: u32 = 120;

/// Where the build's tools live inside the tree while scripts run (removed afterwards).
const TOOLS: &str = ".tinyx-configure";

/// Errors configuring packages.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("building an application image runs the packages' maintainer scripts in a chroot and gives files their owners: it needs root")]
    NeedRoot,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigureError + '_ {
    move |source| ConfigureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// True when this process runs as root (the owner of its own /proc entry).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs the maintainer scripts found in `control/<package>/` for `packages` (dependency
/// order) inside `root`. Returns one warning per script that failed.
pub fn configure(
    root: &Path,
    control: &Path,
    packages: &[String],
    busybox: &[u8],
) -> Result<Vec<String>, ConfigureError> {
    if !is_root() {
        return Err(ConfigureError::NeedRoot);
    }
    seed_users(root)?;
    let tools = root.join(TOOLS);
    let result = prepare_tools(root, &tools, busybox).and_then(|confmodule| {
        let warnings = run_scripts(root, control, packages);
        restore_confmodule(root, confmodule)?;
        warnings
    });
    let _ = std::fs::remove_dir_all(&tools);
    // The image gets its /dev from devtmpfs at boot.
    let _ = std::fs::remove_file(root.join("dev/null"));
    let warnings = result?;
    for w in &warnings {
        eprintln!("tinyx: warning: {w}");
    }
    Ok(warnings)
}

/// /etc/passwd and /etc/group from base-passwd's masters, as its postinst would on a new
/// system.
fn seed_users(root: &Path) -> Result<(), ConfigureError> {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(io_err(&etc))?;
    for db in ["passwd", "group"] {
        let to = etc.join(db);
        if to.exists() {
            continue;
        }
        let master = root.join(format!("usr/share/base-passwd/{db}.master"));
        let text = std::fs::read_to_string(&master).unwrap_or_else(|_| {
            if db == "passwd" {
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".into()
            } else {
                "root:x:0:\nadm:x:4:\nnogroup:x:65534:\n".into()
            }
        });
        // The masters leave passwords as "*"; "x" points at a shadow file no one reads.
        std::fs::write(&to, text.replace(":*:", ":x:")).map_err(io_err(&to))?;
    }
    Ok(())
}

/// Busybox with all its applets and the stand-ins under `tools`; debconf's confmodule swapped
/// for the stand-in. Returns where the original confmodule was saved, if there was one.
fn prepare_tools(
    root: &Path,
    tools: &Path,
    busybox: &[u8],
) -> Result<Option<PathBuf>, ConfigureError> {
    use std::os::unix::fs::PermissionsExt;
    let bin = tools.join("bin");
    let stubs = tools.join("stubs");
    for d in [&bin, &stubs, &tools.join("scripts")] {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let exe = |p: &Path, data: &[u8]| -> Result<(), ConfigureError> {
        std::fs::write(p, data).map_err(io_err(p))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(io_err(p))
    };
    let bb = bin.join("busybox");
    exe(&bb, busybox)?;
    let list = Command::new(crate::initramfs::BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|source| ConfigureError::Spawn {
            program: crate::initramfs::BUSYBOX.into(),
            source,
        })?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
    }
    // The tree has no /bin/sh of its own yet: the stand-ins run under the build's busybox.
    let stub = stubs.join("tinyx-stub");
    let text = STUBS.replacen("#!/bin/sh", &format!("#!/{TOOLS}/bin/sh"), 1);
    exe(&stub, text.as_bytes())?;
    // Scripts redirect to /dev/null and make temporary files.
    let null = root.join("dev/null");
    if !null.exists() {
        let dev = root.join("dev");
        std::fs::create_dir_all(&dev).map_err(io_err(&dev))?;
        let made = Command::new("mknod")
            .args(["-m", "666"])
            .arg(&null)
            .args(["c", "1", "3"])
            .status()
            .map_err(|source| ConfigureError::Spawn {
                program: "mknod".into(),
                source,
            })?;
        if !made.success() {
            return Err(ConfigureError::Io {
                path: null,
                source: std::io::Error::other(format!("mknod {made}")),
            });
        }
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(io_err(&tmp))?;
    for name in STUB_NAMES {
        let _ = std::os::unix::fs::symlink("tinyx-stub", stubs.join(name));
    }
    let confmodule = root.join("usr/share/debconf/confmodule");
    let saved = if confmodule.exists() {
        let saved = tools.join("confmodule.orig");
        std::fs::rename(&confmodule, &saved).map_err(io_err(&confmodule))?;
        Some(saved)
    } else {
        None
    };
    if let Some(dir) = confmodule.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::write(&confmodule, CONFMODULE_STUB).map_err(io_err(&confmodule))?;
    Ok(saved)
}

fn restore_confmodule(root: &Path, saved: Option<PathBuf>) -> Result<(), ConfigureError> {
    let confmodule = root.join("usr/share/debconf/confmodule");
    match saved {
        Some(saved) => std::fs::rename(&saved, &confmodule).map_err(io_err(&confmodule)),
        None => {
            let _ = std::fs::remove_file(&confmodule);
            // Remove the directories made for the stand-in if nothing else is there.
            let _ = std::fs::remove_dir(root.join("usr/share/debconf"));
            Ok(())
        }
    }
}

/// Every package's `preinst install`, then every `postinst configure` (empty old version: a
/// fresh install), in order.
fn run_scripts(
    root: &Path,
    control: &Path,
    packages: &[String],
) -> Result<Vec<String>, ConfigureError> {
    let mut warnings = Vec::new();
    for (script, action) in [("preinst", "install"), ("postinst", "configure")] {
        for pkg in packages {
            let src = control.join(pkg).join(script);
            if !src.is_file() {
                continue;
            }
            let inside = format!("/{TOOLS}/scripts/{pkg}.{script}");
            let dst = root.join(inside.trim_start_matches('/'));
            std::fs::copy(&src, &dst).map_err(io_err(&dst))?;
            let out = Command::new("timeout")
                .arg(SCRIPT_TIMEOUT_S.to_string())
                .arg("chroot")
                .arg(root)
                .arg(format!("/{TOOLS}/bin/busybox"))
                .args(["sh", &inside, action, ""])
                .env_clear()
                .env(
                    "PATH",
                    format!(
                        "/{TOOLS}/stubs:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:\
                         /sbin:/bin:/{TOOLS}/bin"
                    ),
                )
                .env("DPKG_MAINTSCRIPT_PACKAGE", pkg)
                .env("DPKG_MAINTSCRIPT_NAME", script)
                .env("DPKG_ROOT", "")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .env("HOME", "/root")
                .current_dir("/")
                .output()
                .map_err(|source| ConfigureError::Spawn {
                    program: "chroot".into(),
                    source,
                })?;
            log::info!("{pkg} {script} {action}: {}", out.status);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                warnings.push(format!(
                    "{pkg}'s {script} {action} failed ({}) with the stand-in tools: {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
        }
    }
    Ok(warnings)
}
