//! Kicking a vCPU thread out of KVM_RUN, without a lost-wake-up race.
//!
//! The owner sends a `VcpuEvent` to the thread, then kicks it with a real-time signal. The
//! signal handler sets `immediate_exit` in the thread's own `kvm_run` page (found through a
//! thread-local pointer): a kick that lands while the guest runs makes KVM_RUN return EINTR,
//! and a kick that lands just before the thread enters KVM_RUN makes that KVM_RUN return
//! EINTR at once, so no kick is ever lost and none needs repeating (KVM API, "immediate_exit";
//! Firecracker's vCPU kick works the same way). The thread clears the flag after each EINTR.

use std::cell::Cell;
use std::time::Instant;

/// Real-time signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

thread_local! {
    /// This thread's `kvm_run` page while it runs a vCPU, else null. Const-initialised and
    /// without a destructor, so the signal handler can read it.
    static KVM_RUN: Cell<*mut kvm_bindings::kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer was set by this very thread (`RunPageGuard::new`) from its
        // vCPU's `kvm_run` mapping and is cleared before that mapping can go away; the handler
        // runs on the same thread, so the mapping is live. A volatile byte store is all KVM
        // needs to see the flag on the next entry.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// Installs the kick handler (idempotent); its only job is to set `immediate_exit`.
pub fn install_kick_handler() -> Result<(), ControlError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(ControlError::Signal)
}

/// Publishes a vCPU's `kvm_run` page to this thread's kick handler for as long as it lives.
pub struct RunPageGuard(());

impl RunPageGuard {
    /// `run` must stay mapped until the guard is dropped (the vCPU fd outlives the guard on the
    /// vCPU thread's stack).
    pub fn new(run: &mut kvm_bindings::kvm_run) -> RunPageGuard {
        KVM_RUN.with(|r| r.set(run as *mut _));
        RunPageGuard(())
    }
}

impl Drop for RunPageGuard {
    fn drop(&mut self) {
        KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
    }
}

/// Called on the boot vCPU's thread just before it first enters the guest.
pub type FirstEntryHook = Box<dyn FnOnce(Instant) + Send>;
