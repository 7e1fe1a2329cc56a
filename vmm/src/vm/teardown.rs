//! Handing the VM's kernel teardown to a helper process, so a one-VM process (`wisp run`) can
//! exit — and its parent learn the outcome — before the kernel has destroyed the VM.
//!
//! Closing the last fd of a KVM VM runs the kernel's VM teardown (kvm_destroy_vm: the PIT's
//! kernel thread, SRCU grace periods, the VM's page tables), 15–30 ms under kvm_pvm here, in
//! the closing process — before its exit status reaches its parent. `hand_off` starts a helper
//! process that shares our fd table and address space (`clone(CLONE_FILES | CLONE_VM)`), sleeps
//! with every signal blocked, and is killed by the kernel when our thread that made it exits
//! (`PR_SET_PDEATHSIG`). From then on `Vm` leaves its fd open when dropped: our exit only drops
//! our references to the shared fd table and memory, and the helper's death closes the fds and
//! frees the memory — the teardown runs there, after our parent has our exit status. The
//! guest's console pipe closes with the helper's other fds, after the teardown: a reader that
//! waits for the end of the console sees the process fully gone.
//!
//! The helper runs no Rust: raw syscalls only, on its own stack. With every signal blocked it
//! never returns to user space, so nothing a compromised VMM writes into the shared memory can
//! run there.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a helper holds the fd table: `Vm` then leaves its fd to it.
static HANDED_OFF: AtomicBool = AtomicBool::new(false);

/// The helper's stack: it makes four syscalls.
const HELPER_STACK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("cannot map the teardown helper's stack: {0}")]
    Stack(#[source] std::io::Error),
    #[error("cannot start the teardown helper: {0}")]
    Clone(#[source] std::io::Error),
}

/// Whether VM fds are left open for the helper (see the module docs).
pub(crate) fn handed_off() -> bool {
    HANDED_OFF.load(Ordering::Acquire)
}

/// Starts the helper (once per process; later calls do nothing). Call it from the thread that
/// lives until the process exits (the main thread), before a seccomp filter that forbids
/// `clone` is installed. For processes that end when their one VM ends: a long-lived process
/// would keep every VM it ever ran alive until it exits.
pub fn hand_off() -> Result<(), TeardownError> {
    if handed_off() {
        return Ok(());
    }
    // SAFETY: a fresh private anonymous mapping at an address the kernel chooses; it is never
    // unmapped (the helper runs on it until the process ends).
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            HELPER_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(TeardownError::Stack(std::io::Error::last_os_error()));
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let top = stack.cast::<u8>().wrapping_add(HELPER_STACK).cast();
    // SAFETY: `helper` only makes raw syscalls on its own stack (`top`, in the mapping above)
    // and never returns to Rust code; `parent` is passed by value through the pointer
    // argument. CLONE_VM | CLONE_FILES share our memory and fd table; SIGCHLD makes it an
    // ordinary child for whoever reaps it.
    let pid = unsafe {
        libc::clone(
            helper,
            top,
            libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD,
            parent as isize as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(TeardownError::Clone(std::io::Error::last_os_error()));
    }
    HANDED_OFF.store(true, Ordering::Release);
    Ok(())
}

/// The helper: blocks every signal, asks to be killed when its parent thread exits, and sleeps.
/// Only raw syscalls (no libc wrappers: they would set errno in our thread's TLS, which the
/// helper shares).
extern "C" fn helper(arg: *mut libc::c_void) -> libc::c_int {
    let parent = arg as isize as libc::pid_t;
    let all: u64 = !0;
    // SAFETY: raw syscalls with valid arguments: a full signal mask from our stack (8 bytes, the
    // kernel's sigset size on x86_64), prctl/getppid/pause/exit take no pointers.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        );
        // The parent may have gone before the request: then there is nothing to wait for.
        if libc::syscall(libc::SYS_getppid) as libc::pid_t == parent {
            loop {
                libc::syscall(libc::SYS_pause);
            }
        }
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}
