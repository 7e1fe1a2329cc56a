//! `EventFdTrigger`: lets vm-superio devices raise an interrupt or an event by writing an
//! `EventFd` that the VMM has wired to a KVM irqfd (or to its event loop).

use std::io;
use std::ops::Deref;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

/// An `EventFd` that vm-superio can trigger.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    pub fn new(evt: EventFd) -> Self {
        EventFdTrigger(evt)
    }

    /// A second handle on the same eventfd (for the VMM to register with KVM or poll).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(EventFdTrigger(self.0.try_clone()?))
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl Deref for EventFdTrigger {
    type Target = EventFd;

    fn deref(&self) -> &EventFd {
        &self.0
    }
}
