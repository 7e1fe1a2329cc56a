//! wispd's spawner: a small process forked at start-up, before wispd's seccomp filter goes on,
//! that starts the shells. A seccomp filter is inherited across `fork` and `execve` and can
//! never be removed, so a filtered wispd could only start shells as narrow as itself; the
//! spawner stays unfiltered and wispd, which reads client input, is filtered.
//!
//! It is also the only part of wispd that can execute anything, and it takes typed jobs only
//! (a shell's id, memory, vCPUs and memory kind, with its control page and doorbells as descriptors): it
//! builds every argument itself from the settings it was forked with, so a wispd driven off the
//! rails by a client could only start more shells, never run another program.
//!
//! Shells are cloned with `CLONE_PARENT`: they are wispd's children, not the spawner's, so wispd
//! holds their pidfds, reaps them, and is the parent their `PR_SET_PDEATHSIG` watches.

use crate::shell_process::{ShellPlan, ShellShape, SHELL_FDS};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// One job: kind, vCPUs, flags, padding, MiB, shell id (little-endian).
pub const JOB_LEN: usize = 16;
pub const JOB_SPAWN: u8 = 1;
pub const JOB_REMOVE: u8 = 2;
/// Flag: the shell's guest RAM is a memfd (`wisp shell --mem-shared`).
const FLAG_MEM_SHARED: u8 = 1;
/// A reply: shell id, pid (0: none), then the error text (empty: started).
pub const REPLY_HEAD: usize = 12;
pub const REPLY_MAX: usize = 1024;

pub fn encode_job(kind: u8, id: u64, shape: ShellShape) -> [u8; JOB_LEN] {
    let mut job = [0u8; JOB_LEN];
    job[0] = kind;
    job[1] = shape.vcpus;
    if shape.mem_shared {
        job[2] |= FLAG_MEM_SHARED;
    }
    job[4..8].copy_from_slice(&shape.mem_mib.to_le_bytes());
    job[8..16].copy_from_slice(&id.to_le_bytes());
    job
}

fn decode_job(job: &[u8; JOB_LEN]) -> (u8, u64, ShellShape) {
    let mut mem = [0u8; 4];
    mem.copy_from_slice(&job[4..8]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&job[8..16]);
    let shape = ShellShape {
        mem_mib: u32::from_le_bytes(mem),
        vcpus: job[1],
        mem_shared: job[2] & FLAG_MEM_SHARED != 0,
    };
    (job[0], u64::from_le_bytes(id), shape)
}

/// The spawner's half, in wispd's child: serves jobs until wispd closes its end, then exits.
pub fn serve(sock: UnixDatagram, plan: ShellPlan, wispd: libc::pid_t) -> ! {
    // SAFETY: prctl/getppid take no pointers but the name, a NUL-terminated literal.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 || libc::getppid() != wispd {
            libc::_exit(0);
        }
        // So that ps tells it from wispd.
        libc::prctl(libc::PR_SET_NAME, c"wispd-spawner".as_ptr());
    }
    if let Some(jail) = &plan.jail {
        jail.remove_leftovers(&plan.wisp, wispd as u32);
    }
    let devnull = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            log::error!("wispd spawner: cannot open /dev/null: {e}");
            // SAFETY: ends this process without running wispd's exit paths.
            unsafe { libc::_exit(1) }
        }
    };
    loop {
        let mut job = [0u8; JOB_LEN];
        let mut fds = [-1 as RawFd; 4];
        let mut iov = [libc::iovec {
            iov_base: job.as_mut_ptr().cast(),
            iov_len: JOB_LEN,
        }];
        // SAFETY: the kernel writes at most JOB_LEN bytes into `job`, which `iov` points to; the
        // descriptors received are new in this process and owned below.
        let received = unsafe { sock.recv_with_fds(&mut iov, &mut fds) };
        let (n, nfds) = match received {
            Ok((n, nfds)) => (n, nfds),
            Err(e) if e.errno() == libc::EINTR => continue,
            Err(_) => break,
        };
        // SAFETY: recv_with_fds gave us these `nfds` descriptors, owned by nobody else.
        let owned: Vec<OwnedFd> = fds[..nfds]
            .iter()
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .collect();
        // Received without close-on-exec: no shell but this one's may inherit them (the child
        // gets its own copies as 3, 4 and 5).
        for fd in &owned {
            // SAFETY: F_SETFD on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        if n == 0 {
            break;
        }
        if n != JOB_LEN {
            continue;
        }
        let (kind, id, shape) = decode_job(&job);
        match kind {
            JOB_SPAWN => {
                let (pid, err) = match spawn(&plan, id, shape, &owned, &devnull, wispd) {
                    Ok(pid) => (pid, String::new()),
                    Err((pid, e)) => (pid, e),
                };
                drop(owned);
                let mut reply = Vec::with_capacity(REPLY_HEAD + err.len());
                reply.extend_from_slice(&id.to_le_bytes());
                reply.extend_from_slice(&pid.to_le_bytes());
                reply.extend_from_slice(&err.as_bytes()[..err.len().min(REPLY_MAX - REPLY_HEAD)]);
                if sock.send(&reply).is_err() {
                    break;
                }
            }
            JOB_REMOVE => plan.files(id).remove(),
            _ => {}
        }
    }
    // SAFETY: ends this process without running wispd's exit paths (nothing to flush).
    unsafe { libc::_exit(0) }
}

fn cstring(s: impl AsRef<std::ffi::OsStr>) -> Result<CString, String> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| "an argument holds a NUL byte".to_string())
}

/// Starts shell `id`: returns its pid, or the pid (0 if none) and why it did not start.
fn spawn(
    plan: &ShellPlan,
    id: u64,
    shape: ShellShape,
    fds: &[OwnedFd],
    devnull: &OwnedFd,
    wispd: libc::pid_t,
) -> Result<u32, (u32, String)> {
    if fds.len() != SHELL_FDS.len() {
        return Err((0, "wispd sent no control page".into()));
    }
    let files = plan.files(id);
    files.create_console().map_err(|e| (0, e))?;
    let (program, args) = plan.command(id, shape);
    let program = cstring(&program).map_err(|e| (0, e))?;
    let mut argv = vec![program.clone()];
    for a in &args {
        argv.push(cstring(a).map_err(|e| (0, e))?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // Above the numbers the child dup2s onto, so no dup2 overwrites a source not yet moved.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| dup_high(fd.as_raw_fd()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| (0, format!("cannot pass the control page: {e}")))?;
    let src: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();
    // Files the shell makes (its API socket) are private. A jailer builds its jail with the
    // modes it means (a 0755 binary the VM's uid executes), which a umask of 077 would strip;
    // the shell's files then sit in the jail root, 0700 and the VM's own.
    let umask = if plan.jail.is_some() { 0o022 } else { 0o077 };
    // The child reports a failed exec (its errno) on this close-on-exec pipe; EOF means exec'd.
    let mut pipe = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into `pipe`.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err((0, format!("cannot start the shell: pipe: {e}")));
    }
    // SAFETY: pipe2 returned two fresh descriptors owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), pipe[1]) };
    // SAFETY: clone with CLONE_PARENT and no new stack behaves like fork, except that the child's
    // parent is wispd. This process is single-threaded, and the child only makes async-signal-safe
    // calls on memory prepared above before it execs or exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_PARENT as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: the child; see above. Nothing here allocates or takes a lock.
        unsafe {
            child(
                &src,
                devnull.as_raw_fd(),
                write_end,
                (wispd, umask),
                &program,
                (&argv_ptrs, &env_ptrs),
            )
        }
    }
    // SAFETY: the parent's copy of the write end, not used again.
    unsafe { libc::close(write_end) };
    drop(high);
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        files.remove();
        return Err((0, format!("cannot start {}: {e}", plan.program().display())));
    }
    let pid = pid as u32;
    let mut errno = [0u8; 4];
    let n = loop {
        // SAFETY: reads at most 4 bytes into `errno`.
        let n = unsafe { libc::read(read_end.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n == 4 {
        let e = std::io::Error::from_raw_os_error(i32::from_le_bytes(errno));
        files.remove();
        return Err((
            pid,
            format!("cannot start {}: {e}", plan.program().display()),
        ));
    }
    Ok(pid)
}

/// The cloned child: fds in place, a clean signal mask, death with wispd, then exec.
///
/// # Safety
/// Only in the child of `clone` above; every pointer is into memory prepared before it.
unsafe fn child(
    src: &[RawFd],
    devnull: RawFd,
    report: RawFd,
    (wispd, umask): (libc::pid_t, libc::mode_t),
    program: &CString,
    (argv, env): (&[*const libc::c_char], &[*const libc::c_char]),
) -> ! {
    let fail = |report: RawFd| -> ! {
        // SAFETY: errno location and write/_exit are async-signal-safe.
        unsafe {
            let e = *libc::__errno_location();
            libc::write(report, e.to_le_bytes().as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    // SAFETY: async-signal-safe calls on descriptors and memory valid in this child.
    unsafe {
        for (from, to) in src.iter().zip(SHELL_FDS) {
            if libc::dup2(*from, to) < 0 {
                fail(report);
            }
        }
        if libc::dup2(devnull, 0) < 0 || libc::dup2(devnull, 1) < 0 {
            fail(report);
        }
        libc::umask(umask);
        // wispd blocks SIGTERM/SIGINT for its signalfd; the shell must not inherit that.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Shells must not outlive wispd: the kernel kills them when it dies. If wispd died
        // before this line, no signal will come: give up now.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            fail(report);
        }
        if libc::getppid() != wispd {
            *libc::__errno_location() = libc::ESRCH;
            fail(report);
        }
        libc::execve(program.as_ptr(), argv.as_ptr(), env.as_ptr());
        fail(report)
    }
}

/// Duplicates `fd` above the fd numbers the child will use, close-on-exec.
fn dup_high(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid fd we hold; the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip() {
        for mem_shared in [false, true] {
            let shape = ShellShape {
                mem_mib: 512,
                vcpus: 3,
                mem_shared,
            };
            let job = encode_job(JOB_SPAWN, 1 << 40 | 7, shape);
            assert_eq!(decode_job(&job), (JOB_SPAWN, 1 << 40 | 7, shape));
        }
    }
}
