//! What each kind of thread may do: the syscall lists behind the filters, with why each entry
//! is there. docs/seccomp.md lists the same, and a test keeps the two in step.
//!
//! Arguments are checked where the kernel's interface makes it meaningful: `ioctl` by request
//! number, `fcntl` by command, `mmap`/`mprotect` never with `PROT_EXEC` (nothing in Wisp maps
//! code after start-up), `socket` for Unix sockets only, `tgkill` for the vCPU kick and
//! `abort()`'s SIGABRT only. Paths cannot be checked by seccomp (the kernel sees a pointer);
//! the VMM thread's `openat` is confined by the jail, not by its filter.

use crate::ioctls::{self, Ioctl};
use crate::rules::{sys, Allowed, SyscallList};
use crate::snapshot_ioctls::{VCPU_SAVE_IOCTLS, VMM_SAVE_IOCTLS};
use crate::ThreadKind;
use seccompiler::BackendError;

/// What the filters need to know about the process they are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterParams {
    /// The signal the VMM thread sends to kick a vCPU out of KVM_RUN.
    pub kick_signal: i32,
}

/// The allowed syscalls of one thread kind, merged and in number order.
pub fn allowed(kind: ThreadKind, params: &FilterParams) -> Result<Vec<Allowed>, BackendError> {
    let mut list = SyscallList::default();
    runtime(&mut list)?;
    match kind {
        ThreadKind::Vmm => vmm(&mut list, params)?,
        ThreadKind::Api => api(&mut list),
        ThreadKind::Vcpu => vcpu(&mut list)?,
        ThreadKind::Wispd => wispd(&mut list)?,
    }
    Ok(list.merged())
}

/// What every Rust thread of ours needs from glibc and std once it runs.
fn runtime(list: &mut SyscallList) -> Result<(), BackendError> {
    list.allow(&[
        // malloc: arenas, trimming, large blocks, realloc of large blocks.
        sys!(SYS_brk),
        sys!(SYS_madvise),
        sys!(SYS_munmap),
        sys!(SYS_mremap),
        // Locks, channels, condition variables, thread join.
        sys!(SYS_futex),
        sys!(SYS_sched_yield),
        // Instant/SystemTime when the vDSO cannot answer.
        sys!(SYS_clock_gettime),
        // std's HashMap seeds (once per thread), request ids.
        sys!(SYS_getrandom),
        // Log lines carry the pid; abort() and pthread_kill() use getpid/gettid.
        sys!(SYS_getpid),
        sys!(SYS_gettid),
        // Log lines and eventfd doorbells.
        sys!(SYS_write),
        // Dropping file descriptors.
        sys!(SYS_close),
        // Signal delivery (the vCPU kick, SIGABRT) and thread exit, which tears down the
        // thread's alternate signal stack.
        sys!(SYS_rt_sigprocmask),
        sys!(SYS_rt_sigreturn),
        sys!(SYS_sigaltstack),
        sys!(SYS_exit),
        sys!(SYS_exit_group),
    ]);
    // Memory: never executable.
    let exec = libc::PROT_EXEC as u64;
    list.allow_without_bits(sys!(SYS_mmap), 2, exec)?;
    list.allow_without_bits(sys!(SYS_mprotect), 2, exec)?;
    // std checks in debug builds that a file descriptor it drops is open (F_GETFD).
    list.allow_arg(sys!(SYS_fcntl), 1, &[libc::F_GETFD as u64])?;
    // abort() (a panic in a release build) raises SIGABRT on its own thread.
    list.allow_arg(sys!(SYS_tgkill), 2, &[libc::SIGABRT as u64])
}

/// The ioctls of the VMM thread once the VM runs.
pub const VMM_IOCTLS: &[Ioctl] = &[
    ioctls::KVM_SET_USER_MEMORY_REGION,
    ioctls::FIONBIO,
    ioctls::TCGETS,
    ioctls::TCSETS,
];

/// The VMM thread once the VM runs: the event loop serving devices, the API channel and the
/// control page, pause/resume, metrics, drive updates and the teardown.
fn vmm(list: &mut SyscallList, params: &FilterParams) -> Result<(), BackendError> {
    list.allow(&[
        // The event loop.
        sys!(SYS_epoll_ctl),
        sys!(SYS_epoll_pwait),
        sys!(SYS_epoll_wait),
        // Eventfds, timerfd, console input, tap frames, block requests.
        sys!(SYS_read),
        sys!(SYS_readv),
        sys!(SYS_writev),
        sys!(SYS_pread64),
        sys!(SYS_preadv),
        sys!(SYS_pwrite64),
        sys!(SYS_pwritev),
        // virtio-blk flush.
        sys!(SYS_fdatasync),
        sys!(SYS_fsync),
        // FlushMetrics appends to the metrics file; PATCH /drives opens the new backing file
        // and reads its size (statx; fstat where the kernel has no statx). Host paths are
        // resolved by wisp-hostfs without symbolic links (openat2 RESOLVE_NO_SYMLINKS), the
        // last component checked with fstatat before it is opened.
        sys!(SYS_openat),
        sys!(SYS_openat2),
        sys!(SYS_newfstatat),
        sys!(SYS_statx),
        sys!(SYS_fstat),
        // ...and a block device's size is found by seeking to its end.
        sys!(SYS_lseek),
        // vsock: host connections accepted on the Unix socket, guest connections to
        // `<uds>_<port>`, half-close and stream I/O.
        sys!(SYS_accept4),
        sys!(SYS_connect),
        sys!(SYS_recvfrom),
        sys!(SYS_sendto),
        sys!(SYS_shutdown),
        // virtio-fs: vhost-user messages to the backend when the driver starts or resets the
        // device (ring fds travel as SCM_RIGHTS).
        sys!(SYS_sendmsg),
        sys!(SYS_recvmsg),
        // Rate limiters re-arm their timerfd when a bucket runs dry.
        sys!(SYS_timerfd_settime),
        // Teardown removes the API socket and the vsock socket (wisp-hostfs: unlinkat in
        // the socket's directory, after checking it is still the inode it bound).
        sys!(SYS_unlink),
        sys!(SYS_unlinkat),
        // A snapshot's memory file holds only the pages the guest touched (mincore).
        sys!(SYS_mincore),
    ]);
    list.allow_arg(sys!(SYS_socket), 0, &[libc::AF_UNIX as u64])?;
    list.allow_arg(
        sys!(SYS_fcntl),
        1,
        &[libc::F_GETFL as u64, libc::F_SETFL as u64],
    )?;
    // Kicking vCPUs out of KVM_RUN (pause, resume, stop).
    let kick = u64::try_from(params.kick_signal).unwrap_or(u64::MAX);
    list.allow_arg(sys!(SYS_tgkill), 2, &[kick])?;
    let ioctls: Vec<Ioctl> = VMM_IOCTLS.iter().chain(VMM_SAVE_IOCTLS).copied().collect();
    list.allow_ioctls(&ioctls)
}

/// The API thread: hyper on a current-thread tokio runtime, accepting on a socket that was
/// bound before the thread started. It reaches the VMM only through the API channel.
fn api(list: &mut SyscallList) {
    list.allow(&[
        // tokio's reactor.
        sys!(SYS_epoll_ctl),
        sys!(SYS_epoll_pwait),
        sys!(SYS_epoll_wait),
        // Clients: accept (non-blocking, close-on-exec in one call), read, answer, close.
        sys!(SYS_accept4),
        sys!(SYS_read),
        sys!(SYS_recvfrom),
        sys!(SYS_writev),
        sys!(SYS_sendto),
        sys!(SYS_shutdown),
    ]);
}

/// The ioctls of a vCPU thread.
pub const VCPU_IOCTLS: &[Ioctl] = &[ioctls::KVM_RUN, ioctls::KVM_GET_REGS];

/// A vCPU thread: KVM_RUN and the device handlers of the MMIO and port-I/O exits, which
/// write the console and ring eventfds (all `write`, in `runtime`).
fn vcpu(list: &mut SyscallList) -> Result<(), BackendError> {
    let ioctls: Vec<Ioctl> = VCPU_IOCTLS
        .iter()
        .chain(VCPU_SAVE_IOCTLS)
        .copied()
        .collect();
    list.allow_ioctls(&ioctls)
}

/// `wispd`'s thread once it serves: its event loop (clients, shells' doorbells and pidfds, the
/// signalfd, the spawner's socket), control pages, shells' consoles, jails' files, and its
/// exit. It never executes anything: shells are started by its spawner process, forked before
/// this filter goes on. No ioctl at all.
fn wispd(list: &mut SyscallList) -> Result<(), BackendError> {
    list.allow(&[
        // The event loop.
        sys!(SYS_epoll_ctl),
        sys!(SYS_epoll_pwait),
        sys!(SYS_epoll_wait),
        // Clients: accept, requests and answers; the spawner's replies and jobs (a spawn
        // carries the shell's page and doorbells as SCM_RIGHTS), and its end at shutdown.
        sys!(SYS_accept4),
        sys!(SYS_recvfrom),
        sys!(SYS_sendto),
        sys!(SYS_sendmsg),
        sys!(SYS_shutdown),
        // The signalfd, the shells' ack eventfds; a console's tail.
        sys!(SYS_read),
        sys!(SYS_pread64),
        // A shell's control page: a sealed memfd of fixed size, mapped shared; its doorbells.
        sys!(SYS_memfd_create),
        sys!(SYS_ftruncate),
        sys!(SYS_eventfd2),
        // Shells: held by pidfds, signalled through them, reaped (waitid on the pidfd; wait4
        // for one whose pidfd could not be opened, and for the spawner at exit); `Drop` waits
        // for a killed one with poll.
        sys!(SYS_pidfd_open),
        sys!(SYS_pidfd_send_signal),
        sys!(SYS_waitid),
        sys!(SYS_wait4),
        sys!(SYS_kill),
        sys!(SYS_poll),
        // ...a poll a signal interrupted (SIGCHLD under a tracer) resumes through this.
        sys!(SYS_restart_syscall),
        // Create requests are checked like every front end's (wisp-hostfs opens the kernel and
        // the drives with openat2 RESOLVE_NO_SYMLINKS and checks their type); drives are compared
        // by their canonical paths (realpath: readlink per component, getcwd for a relative one).
        sys!(SYS_openat2),
        sys!(SYS_readlink),
        sys!(SYS_getcwd),
        // A shell's console (opened without following links, checked to be a regular file),
        // a jail's files hard-linked in at create, and wispd's own socket and run directory
        // removed at exit (the socket only if it is still the inode wispd bound).
        sys!(SYS_openat),
        sys!(SYS_newfstatat),
        sys!(SYS_statx),
        sys!(SYS_linkat),
        sys!(SYS_unlink),
        sys!(SYS_unlinkat),
        sys!(SYS_rmdir),
        sys!(SYS_getdents64),
    ]);
    // `wisp ctl restore|clone`: wispd sends `PUT /snapshot/load` to each chosen shell's own
    // REST socket, with send and receive timeouts. Unix sockets only; no bind or listen.
    list.allow(&[sys!(SYS_connect)]);
    list.allow_arg(sys!(SYS_socket), 0, &[libc::AF_UNIX as u64])?;
    list.allow_arg(
        sys!(SYS_setsockopt),
        2,
        &[libc::SO_RCVTIMEO as u64, libc::SO_SNDTIMEO as u64],
    )?;
    // Sealing the control page (F_ADD_SEALS), non-blocking descriptors, and the directory
    // stream of a jail directory removed by wispd itself (glibc's fdopendir sets FD_CLOEXEC).
    list.allow_arg(
        sys!(SYS_fcntl),
        1,
        &[
            libc::F_ADD_SEALS as u64,
            libc::F_SETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
        ],
    )
}
