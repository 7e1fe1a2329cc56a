//! The jail on disk, `<base>/<exec name>/<id>/root`: the only files the VMM will ever see.
//!
//! It holds a private copy of the VMM binary (a copy, not a link, so no two VMs share the
//! binary's page-cache pages or could alter each other's), the device nodes a VM needs
//! (/dev/kvm, /dev/net/tun) owned by the VM's uid, and empty mount points for `--bind`. The
//! jailer creates the `<id>` directory itself and refuses one that exists, so nothing a
//! previous run (or another user) planted there is trusted, and removing it on the way out
//! removes only what this run made.

use crate::cli::JailSpec;
use crate::error::JailError;
use crate::sys;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The device nodes made in the jail: (host node, path inside the jail, required).
const DEVICES: [(&str, &str, bool); 2] = [
    ("/dev/kvm", "dev/kvm", true),
    ("/dev/net/tun", "dev/net/tun", false),
];

/// Builds the jail directory; on failure removes whatever it created.
pub fn create(spec: &JailSpec) -> Result<(), JailError> {
    let holder = spec.base.join(&spec.exec_name);
    fs::create_dir_all(&holder).map_err(JailError::path("create the jail base", &holder))?;
    if sys::is_nodev(&holder).map_err(JailError::path("stat the jail base", &holder))? {
        return Err(JailError::NodevBase(holder));
    }
    let jail = spec.jail_dir();
    match fs::create_dir(&jail) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(JailError::JailExists(jail))
        }
        other => other.map_err(JailError::path("create the jail", &jail))?,
    }
    fill(spec).inspect_err(|_| remove(spec))
}

fn fill(spec: &JailSpec) -> Result<(), JailError> {
    let root = spec.root();
    fs::create_dir(&root).map_err(JailError::path("create the jail root", &root))?;
    let exec = root.join(&spec.exec_name);
    fs::copy(&spec.exec_file, &exec).map_err(JailError::path("copy the exec file to", &exec))?;
    fs::set_permissions(&exec, fs::Permissions::from_mode(0o755))
        .map_err(JailError::path("set the mode of", &exec))?;
    for (host, inner, required) in DEVICES {
        make_device(spec, Path::new(host), &root.join(inner), required)?;
    }
    for bind in &spec.binds {
        let target = root.join(&bind.target);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir)
                .map_err(JailError::path("create the mount point's directory", dir))?;
        }
        let made = if bind.source.is_dir() {
            fs::create_dir(&target)
        } else {
            fs::File::create(&target).map(drop)
        };
        made.map_err(JailError::path("create the mount point", &target))?;
    }
    // The VMM's own directory: it creates its API socket and any other file it owns here.
    sys::lchown(&root, spec.uid, spec.gid).map_err(JailError::path("chown", &root))?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
        .map_err(JailError::path("set the mode of", &root))
}

/// A character device node at `node` with the host `source`'s numbers, usable only by the VM's
/// uid. A missing optional device (no tun driver) is left out.
fn make_device(
    spec: &JailSpec,
    source: &Path,
    node: &Path,
    required: bool,
) -> Result<(), JailError> {
    let meta = match fs::metadata(source) {
        Err(e) if !required && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other.map_err(JailError::path("stat the host device", source))?,
    };
    if !meta.file_type().is_char_device() {
        return Err(JailError::path("use the host device", source)(
            io::Error::new(io::ErrorKind::InvalidInput, "not a character device"),
        ));
    }
    if let Some(dir) = node.parent() {
        fs::create_dir_all(dir).map_err(JailError::path("create", dir))?;
    }
    sys::mknod_char(node, 0o600, meta.rdev()).map_err(JailError::path("mknod", node))?;
    sys::lchown(node, spec.uid, spec.gid).map_err(JailError::path("chown", node))
}

/// Removes the whole `<id>` directory; failures are reported (nothing is left to undo).
pub fn remove(spec: &JailSpec) {
    let jail = spec.jail_dir();
    if let Err(e) = fs::remove_dir_all(&jail) {
        report!(
            "wisp-jailer: warning: cannot remove the jail {}: {e}",
            jail.display()
        );
    }
}
