//! The forked child's way into the jail, in the order that keeps each step possible: what
//! needs the host's view (cgroup files, the netns handle, bind sources) comes before
//! pivot_root, what needs privilege comes before the uid drop, and the exec comes last.
//!
//! What each step protects against is in docs/jailer.md.

use crate::cgroup::{self, VmCgroup};
use crate::cli::JailSpec;
use crate::error::JailError;
use crate::sys::{self, SavedMask};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// What the parent opened for the child before forking.
pub struct Handles {
    /// The network namespace to join.
    pub netns: Option<File>,
    /// /dev/null, for `--daemonize`.
    pub dev_null: Option<File>,
}

/// Enters the jail and execs the VMM; returns only on failure. `supervisor` is the jailer
/// that forked this child, `mask` the signal mask to exec with.
pub fn enter(
    spec: &JailSpec,
    cgroups: &[VmCgroup],
    handles: &Handles,
    supervisor: libc::pid_t,
    mask: &SavedMask,
) -> JailError {
    match prepare(spec, cgroups, handles, supervisor, mask) {
        Ok(()) => exec(spec),
        Err(e) => e,
    }
}

fn prepare(
    spec: &JailSpec,
    cgroups: &[VmCgroup],
    handles: &Handles,
    supervisor: libc::pid_t,
    mask: &SavedMask,
) -> Result<(), JailError> {
    cgroup::join(cgroups)?;
    if let (Some(netns), Some(path)) = (&handles.netns, &spec.netns) {
        sys::setns(netns.as_raw_fd(), libc::CLONE_NEWNET)
            .map_err(JailError::path("join the network namespace", path))?;
    }
    pivot_into(spec)?;
    for limit in &spec.rlimits {
        sys::setrlimit(limit.resource, limit.value).map_err(JailError::step(format!(
            "set the {} limit to {}",
            limit.name, limit.value
        )))?;
    }
    if let Some(null) = &handles.dev_null {
        sys::setsid().map_err(JailError::step("start a new session"))?;
        for fd in 0..=2 {
            sys::dup2(null.as_raw_fd(), fd)
                .map_err(JailError::step("redirect stdio to /dev/null"))?;
        }
    }
    for &fd in &spec.keep_fds {
        sys::keep_on_exec(fd).map_err(JailError::step(format!("keep descriptor {fd} open")))?;
    }
    drop_privileges(spec)?;
    // The parent-death signal only covers a parent alive when it was set: one killed before
    // that (not visible from a new PID namespace, whose parent pid reads 0) means stop here.
    if !spec.daemonize && !spec.new_pid_ns && sys::getppid() != supervisor {
        return Err(JailError::Child(
            "the jailer ended before the VM started".into(),
        ));
    }
    sys::set_forwarded_handlers(false).map_err(JailError::step("reset the signal handlers"))?;
    sys::restore_signal_mask(mask).map_err(JailError::step("unblock signals"))
}

/// A new mount namespace whose root is the jail root, with the host's root detached.
fn pivot_into(spec: &JailSpec) -> Result<(), JailError> {
    let root = spec.root();
    sys::unshare(libc::CLONE_NEWNS).map_err(JailError::step("unshare the mount namespace"))?;
    // Private: nothing mounted in the jail propagates to the host, and nothing mounted on the
    // host later appears in the jail.
    sys::mount(None, Path::new("/"), None, libc::MS_PRIVATE | libc::MS_REC)
        .map_err(JailError::step("make the mounts private"))?;
    // pivot_root needs the new root to be a mount point; nosuid: no set-uid file in the jail
    // gives anything back.
    sys::mount(Some(&root), &root, None, libc::MS_BIND | libc::MS_REC)
        .map_err(JailError::path("bind-mount the jail root", &root))?;
    sys::mount(
        None,
        &root,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID,
    )
    .map_err(JailError::path("remount nosuid", &root))?;
    for bind in &spec.binds {
        let target = root.join(&bind.target);
        sys::mount(
            Some(&bind.source),
            &target,
            None,
            libc::MS_BIND | libc::MS_REC,
        )
        .map_err(JailError::path("bind-mount into the jail", &target))?;
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
        if bind.read_only {
            flags |= libc::MS_RDONLY;
        }
        sys::mount(None, &target, None, flags).map_err(JailError::path("remount", &target))?;
    }
    sys::chdir(&root).map_err(JailError::path("chdir to", &root))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one, and the detach below
    // takes it away, so no directory for it is needed (pivot_root(2), NOTES).
    sys::pivot_root(Path::new("."), Path::new("."))
        .map_err(JailError::path("pivot_root into", &root))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)
        .map_err(JailError::step("detach the host's root"))?;
    sys::chdir(Path::new("/")).map_err(JailError::step("chdir to the new root"))
}

/// The VM's uid and gid, no supplementary groups, no capabilities in any set, and no way to
/// gain privileges again (no_new_privs: set-uid binaries and file capabilities do nothing).
fn drop_privileges(spec: &JailSpec) -> Result<(), JailError> {
    sys::clear_groups().map_err(JailError::step("clear the supplementary groups"))?;
    sys::setresgid(spec.gid).map_err(JailError::step(format!("set gid {}", spec.gid)))?;
    // The bounding set limits what any later exec could regain; dropping needs CAP_SETPCAP,
    // so before the uid changes. EINVAL marks the end of the capabilities this kernel knows.
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 => break,
            Err(e) => {
                return Err(JailError::step(format!(
                    "drop capability {cap} from the bounding set"
                ))(e))
            }
        }
    }
    sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )
    .map_err(JailError::step("clear the ambient capabilities"))?;
    // From root to a non-root uid the kernel clears the permitted and effective sets.
    sys::setresuid(spec.uid).map_err(JailError::step(format!("set uid {}", spec.uid)))?;
    // The inheritable set survives setresuid; empty it too.
    sys::clear_capabilities().map_err(JailError::step("clear the capability sets"))?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(JailError::step("set no_new_privs"))?;
    // Cleared by the uid change, so set here: if the supervising jailer dies, so does the VM,
    // rather than living on unsupervised with its cgroup and jail never removed.
    if !spec.daemonize {
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
            .map_err(JailError::step("set the parent-death signal"))?;
    }
    Ok(())
}

/// Execs `/<exec name>` with the arguments after `--`, in an environment holding only
/// `WISP_LOG` (when set): nothing else of the caller's environment reaches the VMM.
fn exec(spec: &JailSpec) -> JailError {
    let path = Path::new("/").join(&spec.exec_name);
    let mut args = Vec::with_capacity(spec.exec_args.len() + 1);
    for arg in std::iter::once(path.as_os_str()).chain(spec.exec_args.iter().map(|a| a.as_os_str()))
    {
        match sys::c_str(arg) {
            Ok(arg) => args.push(arg),
            Err(e) => return JailError::step("pass an argument containing NUL")(e),
        }
    }
    let env: Vec<CString> = std::env::var("WISP_LOG")
        .ok()
        .and_then(|level| CString::new(format!("WISP_LOG={level}")).ok())
        .into_iter()
        .collect();
    match sys::c_path(&path) {
        Ok(c_path) => JailError::path("exec", path)(sys::execve(&c_path, &args, &env)),
        Err(e) => JailError::path("exec", path)(e),
    }
}
