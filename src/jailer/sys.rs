//! The system calls the jailer makes, each wrapped once: a C string in, an `io::Result` out.
//!
//! Every `unsafe` block of the jailer lives here, at the FFI edge. None of these calls touch
//! memory the kernel keeps after it returns, so soundness rests on passing valid,
//! NUL-terminated strings and correctly sized structures, which each wrapper does.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `path` as a C string; a NUL inside a path is an invalid argument, not a panic.
pub fn c_path(path: &Path) -> io::Result<CString> {
    c_str(path.as_os_str())
}

/// `s` as a C string.
pub fn c_str(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Turns a libc "-1 and errno" return into an error.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// mount(2). `source`/`fstype` may be absent (remounts, propagation changes).
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let source = source.map(c_path).transpose()?;
    let target = c_path(target)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NUL-terminated and outlives the call, or null where mount(2)
    // allows it (source and fstype for remounts and propagation changes; data is unused).
    let ret = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), CStr::as_ptr),
            flags,
            std::ptr::null(),
        )
    };
    check(ret.into()).map(drop)
}

/// umount2(2).
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = c_path(target)?;
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }.into()).map(drop)
}

/// pivot_root(2), which libc does not wrap.
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = c_path(new_root)?;
    let put_old = c_path(put_old)?;
    // SAFETY: two valid NUL-terminated paths, the syscall's only arguments.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// unshare(2).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain flags, no pointers.
    check(unsafe { libc::unshare(flags) }.into()).map(drop)
}

/// setns(2) on an open namespace file.
pub fn setns(fd: libc::c_int, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: a file descriptor and flags; the kernel checks the fd.
    check(unsafe { libc::setns(fd, nstype) }.into()).map(drop)
}

/// mknod(2) of a character device.
pub fn mknod_char(path: &Path, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: a valid NUL-terminated path and plain numbers.
    check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, rdev) }.into()).map(drop)
}

/// lchown(2): never follows a symlink, so a link planted in the jail cannot redirect it.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: a valid NUL-terminated path and plain numbers.
    check(unsafe { libc::lchown(path.as_ptr(), uid, gid) }.into()).map(drop)
}

/// Whether the filesystem holding `path` is mounted `nodev` (device nodes on it do not open).
pub fn is_nodev(path: &Path) -> io::Result<bool> {
    let path = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `st` is a correctly sized, writable statvfs; the path is NUL-terminated.
    check(unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) }.into())?;
    // SAFETY: statvfs succeeded, so it filled `st` (and zeroed memory is a valid statvfs).
    let st = unsafe { st.assume_init() };
    Ok(st.f_flag & libc::ST_NODEV != 0)
}

/// chdir(2).
pub fn chdir(path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::chdir(path.as_ptr()) }.into()).map(drop)
}

/// close_range(2) over `first..=last` (Linux 5.9).
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: plain numbers; closing descriptors this process owns and nothing else uses
    // (the jailer is single-threaded and has opened nothing yet).
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) }).map(drop)
}

/// setrlimit(2) with the soft and hard limit both `value`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: a valid rlimit read by the kernel during the call.
    check(unsafe { libc::setrlimit(resource, &limit) }.into()).map(drop)
}

/// setgroups(2) with an empty list: no supplementary groups.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: a zero-length list; the pointer is not read.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }.into()).map(drop)
}

/// setresgid(2) with all three ids `gid`.
pub fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: plain numbers.
    check(unsafe { libc::setresgid(gid, gid, gid) }.into()).map(drop)
}

/// setresuid(2) with all three ids `uid`.
pub fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: plain numbers.
    check(unsafe { libc::setresuid(uid, uid, uid) }.into()).map(drop)
}

/// prctl(2) with numeric arguments only.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here (capability bounding set, ambient set, no_new_privs,
    // parent-death signal) take numbers, not pointers.
    check(unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) }.into())
        .map(drop)
}

/// capset(2) with empty effective, permitted and inheritable sets for this process.
pub fn clear_capabilities() -> io::Result<()> {
    // The kernel's struct __user_cap_header_struct / __user_cap_data_struct (linux/capability.h);
    // version 3 takes two data structs (capabilities 0-31 and 32-63).
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the kernel's layout for version 3 (two data entries) and
    // live across the call; pid 0 is this thread.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

/// fork(2): `Ok(0)` in the child, the child's pid in the parent.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the jailer is single-threaded when it forks, so the child's copy of the address
    // space has no lock held by another thread.
    let pid = unsafe { libc::fork() };
    check(pid.into()).map(|_| pid)
}

/// fork(2) straight into the cgroup v2 directory open at `cgroup` (clone3 with
/// `CLONE_INTO_CGROUP`, Linux 5.7): no migration afterwards, so none of the cgroup-wide lock
/// (and RCU grace period) that writing `cgroup.procs` takes. `Ok(0)` in the child.
pub fn fork_into_cgroup(cgroup: &std::fs::File) -> io::Result<libc::pid_t> {
    use std::os::fd::AsRawFd;
    /// linux/sched.h `struct clone_args`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let fd =
        u64::try_from(cgroup.as_raw_fd()).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: fd,
    };
    // SAFETY: `args` matches the kernel's clone_args layout for the size passed and lives
    // across the call. Without CLONE_VM and with no stack given, clone3 duplicates the process
    // as fork(2) does, the child resuming here on its own copy of the stack; the jailer is
    // single-threaded, so no lock is held by another thread in the child's copy.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let pid = check(ret)?;
    libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// getpid(2).
pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// kill(2).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain numbers.
    check(unsafe { libc::kill(pid, sig) }.into()).map(drop)
}

/// setsid(2).
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }.into()).map(drop)
}

/// dup2(2).
pub fn dup2(old: libc::c_int, new: libc::c_int) -> io::Result<()> {
    // SAFETY: two descriptor numbers; the kernel checks them.
    check(unsafe { libc::dup2(old, new) }.into()).map(drop)
}

/// A pipe whose both ends close on exec: (read end, write end).
pub fn pipe_cloexec() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2(2) requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nothing else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// Clears FD_CLOEXEC on `fd`, so it survives the exec (`--keep-fd`).
pub fn keep_on_exec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number with integer arguments.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) }.into())?;
    let flags = (flags as libc::c_int) & !libc::FD_CLOEXEC;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) }.into()).map(drop)
}

/// waitpid(2) for `pid`, retried on EINTR (a forwarded signal interrupts it).
pub fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a writable int.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The pid signal handlers forward to (0: none yet).
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// The signal sent instead of the one received (0: the same one).
static FORWARD_AS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    use std::sync::atomic::Ordering::Relaxed;
    let pid = FORWARD_TO.load(Relaxed);
    let as_sig = FORWARD_AS.load(Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe and takes plain numbers.
        unsafe { libc::kill(pid, if as_sig == 0 { sig } else { as_sig }) };
    }
}

/// The signals the supervising jailer forwards to its VM.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// A signal mask saved by [`block_forwarded_signals`].
pub struct SavedMask(libc::sigset_t);

/// Blocks the forwarded signals (one arriving meanwhile stays pending) and returns the mask
/// to restore: across the fork, until the parent knows whom to forward to and the child has
/// put their default actions back.
pub fn block_forwarded_signals() -> io::Result<SavedMask> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it fully.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in FORWARDED {
        // SAFETY: `set` is initialised; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    // SAFETY: valid sigset_t pointers; the process is single-threaded.
    let rc = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
    check(rc.into())?;
    Ok(SavedMask(old))
}

/// Restores a mask saved by [`block_forwarded_signals`]: a pending signal is delivered now.
pub fn restore_signal_mask(mask: &SavedMask) -> io::Result<()> {
    // SAFETY: a valid sigset_t saved earlier; the old mask is not wanted.
    let rc = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) };
    check(rc.into()).map(drop)
}

/// Sets the forwarded signals' handlers: [`forward`] in the supervisor, the default action in
/// the child about to exec (so a signal pending since the fork ends it, as it would the VMM).
pub fn set_forwarded_handlers(forwarding: bool) -> io::Result<()> {
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the handler only calls
        // async-signal-safe functions and reads atomics.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = if forwarding {
            forward as extern "C" fn(libc::c_int) as libc::sighandler_t
        } else {
            libc::SIG_DFL
        };
        // SAFETY: a fully initialised sigaction; the old action is not wanted.
        check(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) }.into())?;
    }
    Ok(())
}

/// From now on the forwarded signals go to `pid` (as `as_sig` when given).
pub fn forward_to(pid: libc::pid_t, as_sig: Option<libc::c_int>) {
    use std::sync::atomic::Ordering::Relaxed;
    FORWARD_AS.store(as_sig.unwrap_or(0), Relaxed);
    FORWARD_TO.store(pid, Relaxed);
}

/// getppid(2).
pub fn getppid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getppid() }
}

/// execve(2): replaces the process, so it only ever returns an error.
pub fn execve(path: &CStr, args: &[CString], env: &[CString]) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: path and every argument and environment string are NUL-terminated and outlive
    // the call; both arrays end with a null pointer.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// _exit(2): leaves a forked child without running the parent's exit handlers.
pub fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: ends the process; nothing runs afterwards.
    unsafe { libc::_exit(code) }
}
