//! The VMM thread: one event-manager loop that serves the front ends (the REST channel, a
//! control page's doorbell), the periodic metrics timer and, once the VM starts, its devices —
//! all feeding one `Controller`.
//!
//! Subscribers reach the controller through `Arc<Mutex<…>>`; the lock is only taken inside
//! one subscriber's `process` at a time (the loop is single-threaded), so it is never
//! contended on the VMM thread. The loop adds what the controller produced (the VM's device
//! subscribers after a start) between rounds, and stops once the controller has an outcome.

use crate::controller::{Controller, Outcome};
use crate::microvm::Subscriber;
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use vmm_sys_util::timerfd::TimerFd;
use wisp_api::ApiReceiver;

/// How often a running VM appends a metrics line on its own (Firecracker's period), besides
/// FlushMetrics and the last line at exit.
pub const METRICS_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum VmmLoopError {
    #[error("cannot set up the VMM event loop: {0}")]
    Create(#[source] event_manager::Error),
    #[error("VMM event loop failed: {0}")]
    Run(#[source] event_manager::Error),
    #[error("the controller lock is poisoned")]
    Poisoned,
    /// The VM is not served unfiltered: it is torn down instead.
    #[error(transparent)]
    Seccomp(wisp_seccomp::SeccompError),
}

/// The controller as the loop and its front-end subscribers share it.
pub type SharedController = Arc<Mutex<Controller>>;

/// Locks the controller; a poisoned lock means a front end panicked mid-action, and the
/// state it left is still the controller's own, so carry on with it.
pub fn lock(controller: &SharedController) -> MutexGuard<'_, Controller> {
    controller.lock().unwrap_or_else(|p| p.into_inner())
}

/// The VMM thread's loop around one controller.
pub struct VmmLoop {
    events: EventManager<Subscriber>,
    controller: SharedController,
}

impl VmmLoop {
    pub fn new(controller: Controller) -> Result<VmmLoop, VmmLoopError> {
        Ok(VmmLoop {
            events: EventManager::new().map_err(VmmLoopError::Create)?,
            controller: Arc::new(Mutex::new(controller)),
        })
    }

    /// The controller, for front ends that act on it from this thread's subscribers.
    pub fn controller(&self) -> SharedController {
        self.controller.clone()
    }

    /// Adds a front end (or any other subscriber) to the loop.
    pub fn add_subscriber(&mut self, subscriber: Subscriber) {
        self.events.add_subscriber(subscriber);
    }

    /// Serves until the controller has an outcome, then tears the VM down (vCPUs joined,
    /// memory slots removed) and returns the outcome.
    ///
    /// Once the VM runs, and before the loop serves any of its devices, this thread installs
    /// the VMM seccomp filter (docs/seccomp.md): building the VM needed more than serving it.
    pub fn run(mut self) -> Result<Outcome, VmmLoopError> {
        let mut filtered = false;
        loop {
            let (new, timer, outcome, running) = {
                let mut c = lock(&self.controller);
                c.check_exit();
                (
                    c.take_new_subscribers(),
                    c.take_metrics_timer_wanted(),
                    c.outcome().cloned(),
                    c.vm().is_some(),
                )
            };
            for subscriber in new {
                self.events.add_subscriber(subscriber);
            }
            if timer {
                match MetricsTimer::new(self.controller.clone()) {
                    Ok(t) => {
                        self.events.add_subscriber(Arc::new(Mutex::new(t)));
                    }
                    Err(e) => log::warn!("no periodic metrics: {e}"),
                }
            }
            if let Some(outcome) = outcome {
                lock(&self.controller).release_vm();
                return Ok(outcome);
            }
            if running && !filtered {
                if let Err(e) = wisp_seccomp::enter(wisp_seccomp::ThreadKind::Vmm) {
                    lock(&self.controller).release_vm();
                    return Err(VmmLoopError::Seccomp(e));
                }
                filtered = true;
            }
            self.events.run().map_err(VmmLoopError::Run)?;
        }
    }
}

/// The REST API's requests, answered by the controller.
pub struct ApiFrontEnd {
    receiver: ApiReceiver,
    controller: SharedController,
}

impl ApiFrontEnd {
    pub fn new(receiver: ApiReceiver, controller: SharedController) -> Self {
        ApiFrontEnd {
            receiver,
            controller,
        }
    }
}

impl MutEventSubscriber for ApiFrontEnd {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.receiver.wake_fd(), EventSet::IN)) {
            log::error!("cannot serve the API: {e}");
        }
    }

    fn process(&mut self, _events: Events, ops: &mut EventOps) {
        let requests = self.receiver.drain();
        if requests.is_empty() && self.receiver.is_closed() {
            // The server is gone: nobody can reach this VMM through it any more, and a VM that
            // was never started never will be.
            let _ = ops.remove(Events::new(self.receiver.wake_fd(), EventSet::IN));
            let mut controller = lock(&self.controller);
            if controller.state() == wisp_api::VmState::NotStarted {
                controller.finish(Outcome::NothingToRun);
            }
            return;
        }
        let mut controller = lock(&self.controller);
        for request in requests {
            let result = controller.handle(&request.request_id, request.action);
            request.reply.send(result);
        }
    }
}

impl Drop for ApiFrontEnd {
    /// The loop has ended: requests that were already queued still get their answer from the
    /// controller (the state says the VM ended; actions are refused), not a dropped reply.
    fn drop(&mut self) {
        let mut controller = lock(&self.controller);
        for request in self.receiver.drain() {
            let result = controller.handle(&request.request_id, request.action);
            request.reply.send(result);
        }
    }
}

/// Appends a metrics line every [`METRICS_PERIOD`] while the VM runs.
struct MetricsTimer {
    timer: TimerFd,
    controller: SharedController,
}

impl MetricsTimer {
    fn new(controller: SharedController) -> std::io::Result<MetricsTimer> {
        let mut timer = TimerFd::new()?;
        timer.reset(METRICS_PERIOD, Some(METRICS_PERIOD))?;
        Ok(MetricsTimer { timer, controller })
    }
}

impl MutEventSubscriber for MetricsTimer {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.timer, EventSet::IN)) {
            log::warn!("no periodic metrics: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() != self.timer.as_raw_fd() {
            return;
        }
        if let Err(e) = self.timer.wait() {
            log::warn!("metrics timer: {e}");
        }
        lock(&self.controller).flush_metrics_periodic();
    }
}
