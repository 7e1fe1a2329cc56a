//! Pausing and resuming vCPU threads, and the first-entry timestamp.
//!
//! A vCPU sits in KVM_RUN most of the time; to pause it we set `paused`, then kick its thread
//! with a signal (KVM_RUN returns EINTR) until every running vCPU has parked on the condvar. A
//! kick that lands just before KVM_RUN would be lost, hence the repeat until all are parked.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Real-time signal used to kick vCPU threads out of KVM_RUN.
fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("vCPUs did not pause within {0:?}")]
    PauseTimeout(Duration),
}

/// Installs the (empty) kick handler; its only job is to make KVM_RUN return EINTR.
pub fn install_kick_handler() -> Result<(), ControlError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(ControlError::Signal)
}

/// Called on the boot vCPU's thread just before it first enters the guest.
pub type FirstEntryHook = Box<dyn FnOnce(Instant) + Send>;

#[derive(Default)]
struct Shared {
    paused: AtomicBool,
    parked: AtomicUsize,
    lock: Mutex<()>,
    resumed: Condvar,
    on_first_entry: Mutex<Option<FirstEntryHook>>,
}

/// Shared between the VMM thread and the vCPU threads.
#[derive(Clone, Default)]
pub struct VcpuControl {
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<libc::pthread_t>>>,
}

impl VcpuControl {
    /// Called by a vCPU thread before each KVM_RUN: parks while paused.
    pub fn wait_if_paused(&self) {
        if !self.shared.paused.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut guard) = self.shared.lock.lock() else {
            return;
        };
        self.shared.parked.fetch_add(1, Ordering::AcqRel);
        while self.shared.paused.load(Ordering::Acquire) {
            guard = match self.shared.resumed.wait(guard) {
                Ok(g) => g,
                Err(_) => break,
            };
        }
        self.shared.parked.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records the moment the boot vCPU first enters the guest.
    pub fn mark_first_entry(&self) {
        let now = Instant::now();
        let hook = self
            .shared
            .on_first_entry
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(hook) = hook {
            hook(now);
        }
    }

    /// Runs `hook` when the boot vCPU first enters the guest.
    pub fn on_first_entry(&self, hook: FirstEntryHook) {
        if let Ok(mut h) = self.shared.on_first_entry.lock() {
            *h = Some(hook);
        }
    }

    pub fn register_thread(&self, handle: &JoinHandle<()>) {
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(handle.as_pthread_t());
        }
    }

    fn kick_all(&self) {
        if let Ok(threads) = self.threads.lock() {
            for t in threads.iter() {
                // SAFETY: `t` is a live vCPU thread (they run until the process exits) and the
                // kick signal has a handler installed, so delivery only interrupts KVM_RUN.
                unsafe { libc::pthread_kill(*t, kick_signal()) };
            }
        }
    }

    /// Stops all vCPUs; returns once each is parked (or errors after `timeout`).
    pub fn pause(&self, timeout: Duration) -> Result<(), ControlError> {
        self.shared.paused.store(true, Ordering::Release);
        let want = self.threads.lock().map(|t| t.len()).unwrap_or(0);
        let deadline = Instant::now() + timeout;
        while self.shared.parked.load(Ordering::Acquire) < want {
            if Instant::now() >= deadline {
                return Err(ControlError::PauseTimeout(timeout));
            }
            self.kick_all();
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    pub fn resume(&self) {
        let _guard = self.shared.lock.lock();
        self.shared.paused.store(false, Ordering::Release);
        self.shared.resumed.notify_all();
    }
}
