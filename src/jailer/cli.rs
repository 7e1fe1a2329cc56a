//! `wisp-jailer`'s command line (Firecracker's jailer flags, where they mean the same thing)
//! and its validation into a [`JailSpec`]: every input is checked before anything is created,
//! so bad input changes nothing on the host.

use crate::cgroup::Limit;
use crate::error::JailError;
use clap::Parser;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Default parent of the per-exec jail directories.
pub const DEFAULT_BASE: &str = "/srv/wisp-jail";
/// Default parent cgroup of the per-VM cgroups.
pub const DEFAULT_PARENT_CGROUP: &str = "wisp";

#[derive(Parser, Debug)]
#[command(
    name = "wisp-jailer",
    version,
    about = "Run one Wisp VMM process in a jail: its own root, namespaces, cgroup, an unprivileged uid with no capabilities",
    after_help = "Arguments after `--` go to the exec file. Paths in them (kernel, disks, sockets) are seen from inside the jail."
)]
pub struct JailerArgs {
    /// The VM's id: 1 to 64 letters, digits and '-'; names the jail and the cgroup.
    #[arg(long)]
    pub id: String,
    /// The VMM binary, copied into the jail (a static build needs nothing else in the jail).
    #[arg(long)]
    pub exec_file: PathBuf,
    /// The uid the VMM runs as (not 0).
    #[arg(long)]
    pub uid: u32,
    /// The gid the VMM runs as (not 0).
    #[arg(long)]
    pub gid: u32,
    /// Where jails are built: <BASE>/<exec file name>/<id>/root.
    #[arg(long, default_value = DEFAULT_BASE)]
    pub chroot_base_dir: PathBuf,
    /// Join this network namespace (e.g. /var/run/netns/NAME, where the VM's taps are).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Run the VMM as PID 1 of a new PID namespace.
    #[arg(long)]
    pub new_pid_ns: bool,
    /// A cgroup limit, FILE=VALUE with cgroup v2 names: cpu.max, memory.max, pids.max (repeatable).
    #[arg(long = "cgroup", value_name = "FILE=VALUE")]
    pub cgroups: Vec<String>,
    /// The per-VM cgroup's parent, inside each hierarchy.
    #[arg(long, default_value = DEFAULT_PARENT_CGROUP)]
    pub parent_cgroup: String,
    /// A resource limit, no-file=N or fsize=BYTES (repeatable).
    #[arg(long = "resource-limit", value_name = "RESOURCE=N")]
    pub resource_limits: Vec<String>,
    /// Bind-mount a host file or directory into the jail: SRC:DST[:ro], DST inside the jail.
    #[arg(long = "bind", value_name = "SRC:DST[:ro]")]
    pub binds: Vec<String>,
    /// Keep this inherited descriptor open for the VMM (repeatable; 0-2 are always kept).
    #[arg(long = "keep-fd", value_name = "FD")]
    pub keep_fds: Vec<i32>,
    /// Detach: new session, stdio on /dev/null, the jailer returns once the VMM runs; the
    /// caller then removes the jail and the cgroup when the VM ends.
    #[arg(long)]
    pub daemonize: bool,
    /// Arguments for the exec file.
    #[arg(last = true)]
    pub exec_args: Vec<OsString>,
}

/// A bind mount into the jail.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    /// Relative to the jail root, only normal components.
    pub target: PathBuf,
    pub read_only: bool,
}

/// A `--resource-limit`, soft and hard limit alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimit {
    /// As given on the command line (`no-file`), for messages.
    pub name: &'static str,
    pub resource: libc::__rlimit_resource_t,
    pub value: u64,
}

/// The checked request.
#[derive(Debug)]
pub struct JailSpec {
    pub id: String,
    pub exec_file: PathBuf,
    /// The exec file's name: the jail's middle directory and the binary's name inside.
    pub exec_name: OsString,
    pub uid: u32,
    pub gid: u32,
    pub base: PathBuf,
    pub netns: Option<PathBuf>,
    pub new_pid_ns: bool,
    pub limits: Vec<Limit>,
    pub parent_cgroup: PathBuf,
    pub rlimits: Vec<ResourceLimit>,
    pub binds: Vec<Bind>,
    pub keep_fds: Vec<i32>,
    pub daemonize: bool,
    pub exec_args: Vec<OsString>,
}

impl JailSpec {
    /// `<base>/<exec name>/<id>`: everything of this VM's on disk.
    pub fn jail_dir(&self) -> PathBuf {
        self.base.join(&self.exec_name).join(&self.id)
    }

    /// The directory the VMM sees as `/`.
    pub fn root(&self) -> PathBuf {
        self.jail_dir().join("root")
    }

    /// Where the VMM's host pid is written once it runs (outside its root).
    pub fn pid_file(&self) -> PathBuf {
        let mut name = self.exec_name.clone();
        name.push(".pid");
        self.jail_dir().join(name)
    }
}

impl TryFrom<JailerArgs> for JailSpec {
    type Error = JailError;

    fn try_from(args: JailerArgs) -> Result<JailSpec, JailError> {
        let id_ok = (1..=64).contains(&args.id.len())
            && args
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !id_ok {
            return Err(JailError::BadId(args.id));
        }
        if args.uid == 0 || args.gid == 0 {
            return Err(JailError::RootIds);
        }
        if !args.chroot_base_dir.is_absolute() {
            return Err(JailError::RelativeBase(args.chroot_base_dir));
        }
        let parent_cgroup = inner_path(&args.parent_cgroup).ok_or(JailError::BadCgroup(
            args.parent_cgroup.clone(),
            "--parent-cgroup must be a plain relative path",
        ))?;
        let limits = args
            .cgroups
            .iter()
            .map(|c| Limit::parse(c))
            .collect::<Result<_, _>>()?;
        let rlimits = args
            .resource_limits
            .iter()
            .map(|r| parse_rlimit(r))
            .collect::<Result<_, _>>()?;
        let binds: Vec<Bind> = args
            .binds
            .iter()
            .map(|b| parse_bind(b))
            .collect::<Result<_, _>>()?;
        let exec_name = crate::exec_file::check(&args.exec_file, &binds)?;
        for &fd in &args.keep_fds {
            // Only descriptors the caller really passed: fcntl fails on a closed one.
            if fd <= 2 || !Path::new(&format!("/proc/self/fd/{fd}")).exists() {
                return Err(JailError::BadKeepFd(fd));
            }
        }
        Ok(JailSpec {
            id: args.id,
            exec_file: args.exec_file,
            exec_name,
            uid: args.uid,
            gid: args.gid,
            base: args.chroot_base_dir,
            netns: args.netns,
            new_pid_ns: args.new_pid_ns,
            limits,
            parent_cgroup,
            rlimits,
            binds,
            keep_fds: args.keep_fds,
            daemonize: args.daemonize,
            exec_args: args.exec_args,
        })
    }
}

/// `path` (a leading '/' allowed) as a relative path of normal components only: nothing in it
/// can climb out of the directory it is joined to.
fn inner_path(path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    let normal = rel.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && rel.components().next().is_some()).then(|| rel.to_path_buf())
}

/// `no-file=N` or `fsize=N`.
fn parse_rlimit(spec: &str) -> Result<ResourceLimit, JailError> {
    let bad = |why| JailError::BadLimit(spec.to_string(), why);
    let (name, value) = spec.split_once('=').ok_or(bad("expected RESOURCE=N"))?;
    let (name, resource) = match name {
        "no-file" => ("no-file", libc::RLIMIT_NOFILE),
        "fsize" => ("fsize", libc::RLIMIT_FSIZE),
        _ => return Err(bad("known resources are no-file and fsize")),
    };
    let value = value
        .parse()
        .map_err(|_| bad("the limit must be a number"))?;
    Ok(ResourceLimit {
        name,
        resource,
        value,
    })
}

/// `SRC:DST[:ro]`.
fn parse_bind(spec: &str) -> Result<Bind, JailError> {
    let bad = |why| JailError::BadBind(spec.to_string(), why);
    let mut parts = spec.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad("expected SRC:DST[:ro]"));
    };
    let read_only = match parts.next() {
        None => false,
        Some("ro") => true,
        Some(_) => return Err(bad("the only option is ro")),
    };
    if parts.next().is_some() {
        return Err(bad("expected SRC:DST[:ro]"));
    }
    let source = PathBuf::from(source);
    if !source.is_absolute() {
        return Err(bad("SRC must be an absolute host path"));
    }
    if !source.exists() {
        return Err(bad("SRC does not exist"));
    }
    let target =
        inner_path(target).ok_or(bad("DST must name a path inside the jail, without '..'"))?;
    Ok(Bind {
        source,
        target,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_paths_cannot_climb_out() {
        assert_eq!(inner_path("/kernel"), Some(PathBuf::from("kernel")));
        assert_eq!(inner_path("a/b"), Some(PathBuf::from("a/b")));
        assert_eq!(inner_path("../etc"), None);
        assert_eq!(inner_path("a/../../b"), None);
        assert_eq!(inner_path("/"), None);
        assert_eq!(inner_path(""), None);
    }

    #[test]
    fn resource_limits_parse_and_unknown_ones_are_refused() {
        assert_eq!(
            parse_rlimit("no-file=64")
                .ok()
                .map(|l| (l.resource, l.value)),
            Some((libc::RLIMIT_NOFILE, 64))
        );
        assert_eq!(
            parse_rlimit("fsize=1").ok().map(|l| (l.resource, l.value)),
            Some((libc::RLIMIT_FSIZE, 1))
        );
        assert!(parse_rlimit("nproc=5").is_err());
        assert!(parse_rlimit("no-file=lots").is_err());
        assert!(parse_rlimit("no-file").is_err());
    }

    #[test]
    fn binds_need_an_absolute_existing_source_and_an_inner_target() {
        let b = parse_bind("/:/host:ro").ok();
        assert!(b
            .as_ref()
            .is_some_and(|b| b.read_only && b.target == Path::new("host")));
        assert!(parse_bind("relative:/x").is_err());
        assert!(parse_bind("/:../x").is_err());
        assert!(parse_bind("/:/x:rw").is_err());
        assert!(parse_bind("/nonexistent-wisp-path:/x").is_err());
    }
}
