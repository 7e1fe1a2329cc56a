//! Everything that can stop the jailer, each naming the step that failed and what it acted on
//! ("cannot pivot_root into /srv/wisp-jail/wisp/vm1/root: Invalid argument"), so one line on
//! stderr is enough to act on.

use std::io;
use std::path::PathBuf;

/// A failed jailer step. Messages print the OS error themselves (the jailer's only consumer is
/// its one-line report), so no variant also exposes it as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("invalid --id {0:?}: use 1 to 64 letters, digits and '-'")]
    BadId(String),
    #[error("--uid 0 and --gid 0 are refused: a jailed VMM must not run as root")]
    RootIds,
    #[error("the exec file {path} is unusable: {err}")]
    ExecFile { path: PathBuf, err: io::Error },
    #[error("the exec file {0} is not an executable regular file")]
    ExecNotExecutable(PathBuf),
    #[error("the exec file {path} is dynamically linked and the jail has no {loader}: use a static build (-C target-feature=+crt-static) or --bind its loader and libraries")]
    DynamicExec { path: PathBuf, loader: PathBuf },
    #[error("--chroot-base-dir {0} must be an absolute path")]
    RelativeBase(PathBuf),
    #[error(
        "the jail {0} already exists: another VM has this id, or a crashed run left it (remove it)"
    )]
    JailExists(PathBuf),
    #[error("the jail base {0} is on a nodev mount: /dev/kvm inside the jail would not open")]
    NodevBase(PathBuf),
    #[error("invalid --cgroup {0:?}: {1}")]
    BadCgroup(String, &'static str),
    #[error("no cgroup hierarchy on this host has the {0} controller (see /proc/self/mounts)")]
    NoController(String),
    #[error("the cgroup {0} already exists: another VM has this id, or a crashed run left it (rmdir it)")]
    CgroupExists(PathBuf),
    #[error("invalid --resource-limit {0:?}: {1}")]
    BadLimit(String, &'static str),
    #[error("invalid --bind {0:?}: {1}")]
    BadBind(String, &'static str),
    #[error("invalid --keep-fd {0}: only descriptors above 2 that are open can be kept")]
    BadKeepFd(i32),
    /// A step on a path failed: "cannot {step} {path}: {err}".
    #[error("cannot {step} {path}: {err}")]
    Path {
        step: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// A step on no particular path failed: "cannot {step}: {err}".
    #[error("cannot {step}: {err}")]
    Step { step: String, err: io::Error },
    /// The jailed child failed before its exec and sent this report.
    #[error("{0}")]
    Child(String),
}

impl JailError {
    /// A failed step on `path`.
    pub fn path(step: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |err| JailError::Path { step, path, err }
    }

    /// A failed step on no particular path.
    pub fn step(step: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let step = step.into();
        move |err| JailError::Step { step, err }
    }
}
