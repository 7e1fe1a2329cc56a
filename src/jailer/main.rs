//! `wisp-jailer`: runs one Wisp VMM process in a jail, the way Firecracker's jailer runs
//! Firecracker: its own root directory (pivot_root in a new mount namespace), optional PID and
//! network namespaces, a per-VM cgroup, resource limits, an unprivileged uid and gid with no
//! capabilities and `no_new_privs`, and no descriptor it was not meant to have.
//!
//! The jailer forks: the child enters the jail and execs the VMM; the parent stays outside,
//! as a supervisor, to forward signals and, when the VM ends, to remove the jail directory
//! and the cgroup (with `--daemonize` the parent returns at once and that is the caller's
//! job). Usage and the threat each step answers: docs/jailer.md.

/// Like `eprintln!`, but a closed stderr is not worth a panic.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cgroup;
mod cli;
mod enter;
mod error;
mod exec_file;
mod jail_dir;
mod supervise;
mod sys;

use clap::Parser;
use cli::{JailSpec, JailerArgs};
use error::JailError;

/// Exit code when the jailer itself fails (the VM's own code is passed through otherwise).
const EXIT_JAILER_ERROR: i32 = 1;

fn main() {
    let args = JailerArgs::parse();
    // First of all, before the jailer opens anything of its own: whatever the caller leaked
    // to us must not reach the VMM.
    let code = match close_inherited_fds(&args.keep_fds)
        .and_then(|()| JailSpec::try_from(args))
        .and_then(|spec| supervise::run(&spec))
    {
        Ok(code) => code,
        Err(e) => {
            report!("wisp-jailer: error: {e}");
            EXIT_JAILER_ERROR
        }
    };
    std::process::exit(code);
}

/// Closes every descriptor above 2 except the ones in `keep`.
fn close_inherited_fds(keep: &[i32]) -> Result<(), JailError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for fd in keep {
        if fd > first {
            sys::close_range(first, fd - 1)
                .map_err(JailError::step("close inherited descriptors"))?;
        }
        first = fd + 1;
    }
    sys::close_range(first, u32::MAX).map_err(JailError::step("close inherited descriptors"))
}
