//! wispd's jailed shells (`wispd --jail`, docs/jailer.md "Running wispd's shells jailed"): each
//! shell is started through `wisp-jailer` in a jail of its own, prepared with the shell, and the
//! files a create request names are placed in that jail before the doorbell rings. Paths under
//! a `--jail-bind` directory are rewritten to where the bind shows them; any other file is
//! hard-linked into the shell's root, and the page gets the jail path. A virtio-fs share's
//! vhost-user socket is placed the same way: a link to a bound Unix socket's inode reaches the
//! same listener (virtiofsd), so the jailed shell connects to it as `/fs-<id>.sock`; the socket
//! must be writable by the jail's uid or gid (`virtiofsd --socket-group`). Paths the VMM would
//! create on the host (vsock socket, logger, metrics) are refused: inside a jail they would not
//! be where the client asked.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use wisp_api::VmConfig;

/// How wispd jails its shells (command-line options, passed on to `wisp-jailer`).
#[derive(Clone, Debug)]
pub struct JailSettings {
    pub jailer: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub base: PathBuf,
    /// `SRC:DST[:ro]`, as the jailer takes them.
    pub binds: Vec<String>,
    /// `FILE=VALUE` cgroup limits.
    pub cgroups: Vec<String>,
    pub parent_cgroup: Option<String>,
    /// `RESOURCE=N` limits.
    pub resource_limits: Vec<String>,
    pub netns: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{what} {}: a jailed shell needs an absolute path", path.display())]
    Relative { what: String, path: PathBuf },
    #[error("{what} {} has no file name", path.display())]
    NoName { what: String, path: PathBuf },
    #[error(
        "cannot link {what} {} into the shell's jail: {source}{hint}",
        path.display(),
        hint = if source.raw_os_error() == Some(libc::EXDEV) {
            " (hard links cannot cross filesystems: keep it on the jail base's filesystem, \
              or under a --jail-bind directory)"
        } else {
            ""
        }
    )]
    Link {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not supported for jailed shells: the VMM would create it inside its jail")]
    Created(&'static str),
}

impl JailSettings {
    /// `<base>/<wisp's file name>/<tag>`, as the jailer builds it.
    pub fn jail_dir(&self, wisp: &Path, tag: &str) -> PathBuf {
        let name = wisp.file_name().unwrap_or(wisp.as_os_str());
        self.base.join(name).join(tag)
    }

    /// The jailer's arguments up to (not including) `--`.
    pub fn jailer_args(&self, wisp: &Path, tag: &str, keep: &[i32]) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |flag: &str, value: OsString| {
            args.push(flag.into());
            args.push(value);
        };
        push("--id", tag.into());
        push("--exec-file", wisp.into());
        push("--uid", self.uid.to_string().into());
        push("--gid", self.gid.to_string().into());
        push("--chroot-base-dir", self.base.clone().into());
        for fd in keep {
            push("--keep-fd", fd.to_string().into());
        }
        for b in &self.binds {
            push("--bind", b.into());
        }
        for c in &self.cgroups {
            push("--cgroup", c.into());
        }
        if let Some(p) = &self.parent_cgroup {
            push("--parent-cgroup", p.into());
        }
        for r in &self.resource_limits {
            push("--resource-limit", r.into());
        }
        if let Some(ns) = &self.netns {
            push("--netns", ns.clone().into());
        }
        args
    }

    /// Removes the jail directories a wispd that died left behind (`shell-<its pid>-<n>`: its
    /// shells died with it, their jailers killed before they could clean up). Only those of a
    /// pid that no longer exists: another wispd's live jails, or ours, are never touched.
    pub fn remove_leftovers(&self, wisp: &Path, own_pid: u32) {
        let Some(dir) = self.jail_dir(wisp, "x").parent().map(Path::to_path_buf) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = leftover_pid(&name.to_string_lossy()) else {
                continue;
            };
            if pid == own_pid || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => log::info!(
                    "wispd: removed {}, left by a wispd that died",
                    entry.path().display()
                ),
                Err(e) => log::warn!("wispd: cannot remove {}: {e}", entry.path().display()),
            }
        }
    }

    /// Where host path `path` appears inside a jail through a `--jail-bind`, if it does.
    fn bound(&self, path: &Path) -> Option<PathBuf> {
        self.binds.iter().find_map(|b| {
            let mut parts = b.splitn(3, ':');
            let (src, dst) = (parts.next()?, parts.next()?);
            let rest = path.strip_prefix(src).ok()?;
            // Only plain components below the bind: `..` would climb out of it.
            let plain = rest.components().all(|c| matches!(c, Component::Normal(_)));
            plain.then(|| Path::new(dst).join(rest))
        })
    }

    /// `config` as the jailed shell whose root is `root` must see it: every host file it names
    /// reachable inside the jail (bound, or hard-linked in now) and named by its jail path.
    pub fn place_files(&self, config: &VmConfig, root: &Path) -> Result<VmConfig, JailError> {
        let mut config = config.clone();
        if config.vsock.is_some() {
            return Err(JailError::Created("vsock (its uds_path)"));
        }
        if config.logger.is_some() {
            return Err(JailError::Created("logger (its log_path)"));
        }
        if config.metrics.is_some() {
            return Err(JailError::Created("metrics (its metrics_path)"));
        }
        if let Some(boot) = &mut config.boot_source {
            boot.kernel_image_path = self.place(&boot.kernel_image_path, root, "kernel")?;
            if let Some(initrd) = &boot.initrd_path {
                boot.initrd_path = Some(self.place(initrd, root, "initrd")?);
            }
        }
        for drive in &mut config.drives {
            let name = format!("drive-{}", sanitize(&drive.drive_id));
            drive.path_on_host = self.place(&drive.path_on_host, root, &name)?;
        }
        for fs in &mut config.fs {
            let name = format!("fs-{}.sock", sanitize(&fs.fs_id));
            fs.socket = self.place(&fs.socket, root, &name)?;
        }
        Ok(config)
    }

    /// One file: its path under a bind, or a hard link `/<name>` in the root.
    fn place(&self, path: &Path, root: &Path, name: &str) -> Result<PathBuf, JailError> {
        let what = name.to_string();
        if !path.is_absolute() {
            let path = path.to_path_buf();
            return Err(JailError::Relative { what, path });
        }
        if let Some(inside) = self.bound(path) {
            return Ok(inside);
        }
        if path.file_name().is_none() {
            let path = path.to_path_buf();
            return Err(JailError::NoName { what, path });
        }
        // linkat without AT_SYMLINK_FOLLOW: a symbolic link is linked as the link itself, which
        // inside the jail leads nowhere and is refused by the shell (no host path is followed).
        std::fs::hard_link(path, root.join(name)).map_err(|source| JailError::Link {
            what,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Path::new("/").join(name))
    }
}

/// The wispd pid in a jail directory's name `shell-<pid>-<n>`, if it is one.
fn leftover_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix("shell-")?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// A drive id as a file name: letters, digits, '-' and '_' kept, the rest '_'.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(binds: &[&str]) -> JailSettings {
        JailSettings {
            jailer: "/bin/wisp-jailer".into(),
            uid: 1,
            gid: 1,
            base: "/srv/j".into(),
            binds: binds.iter().map(|b| b.to_string()).collect(),
            cgroups: vec![],
            parent_cgroup: None,
            resource_limits: vec![],
            netns: None,
        }
    }

    #[test]
    fn paths_under_a_bind_are_rewritten_and_never_climb_out() {
        let s = settings(&["/var/lib/k:/kernels:ro", "/lib64:/lib64:ro"]);
        assert_eq!(
            s.bound(Path::new("/var/lib/k/vmlinux")),
            Some(PathBuf::from("/kernels/vmlinux"))
        );
        assert_eq!(s.bound(Path::new("/var/lib/k/../../etc/shadow")), None);
        assert_eq!(s.bound(Path::new("/var/lib/kx/vmlinux")), None);
    }

    #[test]
    fn the_jail_dir_is_the_jailers() {
        let s = settings(&[]);
        assert_eq!(
            s.jail_dir(Path::new("/usr/bin/wisp"), "shell-1-2"),
            PathBuf::from("/srv/j/wisp/shell-1-2")
        );
    }

    #[test]
    fn only_shell_jails_name_a_wispd_pid() {
        assert_eq!(leftover_pid("shell-4242-17"), Some(4242));
        assert_eq!(leftover_pid("shell-4242"), None);
        assert_eq!(leftover_pid("vm1"), None);
        assert_eq!(leftover_pid("shell-x-1"), None);
    }

    #[test]
    fn fs_sockets_are_linked_into_the_root_and_renamed() {
        use std::os::unix::fs::FileTypeExt;
        let dir = std::env::temp_dir().join(format!("wispd-jail-fs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let socket = dir.join("vfs.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let mut config = VmConfig::default();
        config.fs.push(wisp_api::Fs {
            fs_id: "root/fs".into(),
            tag: "t".into(),
            socket: socket.clone(),
            num_queues: 1,
            queue_size: 1024,
        });
        let placed = settings(&[]).place_files(&config, &root).unwrap();
        assert_eq!(placed.fs[0].socket, PathBuf::from("/fs-root_fs.sock"));
        let link = root.join("fs-root_fs.sock");
        assert!(std::fs::metadata(&link).unwrap().file_type().is_socket());
        // A connection through the link reaches the listener bound at the original path.
        let _client = std::os::unix::net::UnixStream::connect(&link).unwrap();
        listener.accept().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn drive_ids_become_plain_names() {
        assert_eq!(sanitize("root/../x"), "root____x");
    }
}
