//! The jailer's outer half: build the jail and the cgroup, fork the child that enters them,
//! learn whether its exec worked, then supervise the VM and clean up after it.

use crate::cgroup::{self, VmCgroup};
use crate::cli::JailSpec;
use crate::enter::{self, Handles};
use crate::error::JailError;
use crate::{jail_dir, sys};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

/// Runs the VM in its jail; returns the exit code to leave with (the VM's).
pub fn run(spec: &JailSpec) -> Result<i32, JailError> {
    // Everything that can fail on bad input is checked before anything is created.
    let cgroups = cgroup::plan(&spec.limits, &spec.parent_cgroup, &spec.id)?;
    let handles = Handles {
        netns: spec
            .netns
            .as_ref()
            .map(|path| {
                File::open(path).map_err(JailError::path("open the network namespace", path))
            })
            .transpose()?,
        dev_null: spec
            .daemonize
            .then(|| File::options().read(true).write(true).open("/dev/null"))
            .transpose()
            .map_err(JailError::path("open", "/dev/null"))?,
    };
    jail_dir::create(spec)?;
    if let Err(e) = cgroup::create(&cgroups) {
        jail_dir::remove(spec);
        return Err(e);
    }
    let result = start(spec, &cgroups, &handles);
    match result {
        // The VM now runs on its own; the caller removes the jail and the cgroup.
        Ok(_) if spec.daemonize => Ok(0),
        Ok(pid) => {
            let status = sys::wait_for(pid).map_err(JailError::step("wait for the VM"));
            clean_up(spec, &cgroups);
            let status = status?;
            Ok(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            })
        }
        Err(e) => {
            clean_up(spec, &cgroups);
            Err(e)
        }
    }
}

/// Forks the child into the jail; returns its pid once its exec succeeded.
fn start(
    spec: &JailSpec,
    cgroups: &[VmCgroup],
    handles: &Handles,
) -> Result<libc::pid_t, JailError> {
    // The child reports a failure on this pipe; the exec closes it (close-on-exec), so an
    // empty read means the VMM is running.
    let (mut report, report_tx) = sys::pipe_cloexec().map_err(JailError::step("create a pipe"))?;
    if spec.new_pid_ns {
        // Takes effect for the children forked from now on: the VMM becomes PID 1 there.
        sys::unshare(libc::CLONE_NEWPID).map_err(JailError::step("unshare the PID namespace"))?;
    }
    // A signal for the VM that arrives while the child is on its way in stays pending, and is
    // forwarded (or, in the child, acted on) once there is someone to act.
    let mask = sys::block_forwarded_signals().map_err(JailError::step("block signals"))?;
    sys::set_forwarded_handlers(true).map_err(JailError::step("install the signal forwarders"))?;
    let supervisor = sys::getpid();
    let (pid, joined) = fork_into(cgroups)?;
    if pid == 0 {
        drop(report);
        let to_join = if joined { &[][..] } else { cgroups };
        let error = enter::enter(spec, to_join, handles, supervisor, &mask);
        let mut report_tx = report_tx;
        let _ = report_tx.write_all(error.to_string().as_bytes());
        sys::exit_now(1);
    }
    drop(report_tx);
    // The kept descriptors are the VM's now: a supervisor holding them too would, say, keep a
    // socket's peer from ever seeing the VM close it.
    for fd in spec
        .keep_fds
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
    {
        let _ = sys::close_range(fd, fd);
    }
    sys::forward_to(pid, spec.new_pid_ns.then_some(libc::SIGKILL));
    sys::restore_signal_mask(&mask).map_err(JailError::step("unblock signals"))?;
    let mut message = String::new();
    let read = report.read_to_string(&mut message);
    if read.is_err() || !message.is_empty() {
        let _ = sys::wait_for(pid);
        return Err(match read {
            Err(e) => JailError::step("read the jailed child's report")(e),
            Ok(_) => JailError::Child(message),
        });
    }
    let pid_file = spec.pid_file();
    if let Err(e) = std::fs::write(&pid_file, format!("{pid}\n")) {
        // A VM nobody can find is not left running.
        let _ = sys::kill(pid, libc::SIGKILL);
        let _ = sys::wait_for(pid);
        return Err(JailError::path("write the pid file", pid_file)(e));
    }
    Ok(pid)
}

/// Forks the child, straight into its cgroup where the host allows (cgroup v2, Linux 5.7);
/// returns the pid (0 in the child) and whether the child is in its cgroup already.
fn fork_into(cgroups: &[VmCgroup]) -> Result<(libc::pid_t, bool), JailError> {
    if let Some(dir) = cgroup::fork_target(cgroups) {
        let cgroup = File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(JailError::path("open the cgroup", dir))?;
        match sys::fork_into_cgroup(&cgroup) {
            Ok(pid) => return Ok((pid, true)),
            // A kernel without clone3 or CLONE_INTO_CGROUP: fork, and the child joins.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                ) => {}
            Err(e) => return Err(JailError::path("fork into the cgroup", dir)(e)),
        }
    }
    let pid = sys::fork().map_err(JailError::step("fork"))?;
    Ok((pid, false))
}

fn clean_up(spec: &JailSpec, cgroups: &[VmCgroup]) {
    cgroup::remove(cgroups);
    jail_dir::remove(spec);
}
