//! Subscribers of the VMM thread's event-manager loop that belong to the VMM itself: console
//! input (host stdin → guest UART) and the VM-exit doorbells (vCPU exits, and the devices a
//! guest ends the VM with: i8042 reset, ACPI power-off and reset registers, pvpanic).

use crate::exit::{VmExit, VmExitSignal};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;
use wisp_devices::serial::SerialConsole;

/// Feeds host input to the guest's UART.
pub struct ConsoleInput {
    input: File,
    serial: Arc<Mutex<SerialConsole>>,
}

impl ConsoleInput {
    pub fn new(input: File, serial: Arc<Mutex<SerialConsole>>) -> Self {
        ConsoleInput { input, serial }
    }
}

impl MutEventSubscriber for ConsoleInput {
    fn init(&mut self, ops: &mut EventOps) {
        // A regular file or /dev/null cannot be polled: then the guest simply gets no input.
        if let Err(e) = ops.add(Events::new(&self.input, EventSet::IN)) {
            log::debug!("console input not pollable, guest gets no input: {e}");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let n = if events.event_set().contains(EventSet::IN) {
            self.input.read(&mut buf).unwrap_or(0)
        } else {
            0
        };
        if n == 0 {
            // EOF or hang-up: stop polling, or epoll would report it forever.
            let _ = ops.remove(events);
            return;
        }
        if let Ok(mut serial) = self.serial.lock() {
            if let Err(e) = serial.enqueue_input(&buf[..n]) {
                log::warn!("console input dropped: {e}");
            }
        }
    }
}

/// One device's way of ending the VM: the eventfd it writes, and the exit that means.
pub struct Doorbell {
    pub fd: EventFd,
    pub exit: VmExit,
}

/// Wakes the loop when a vCPU reports an exit or a device rang one of its doorbells (the
/// i8042 or ACPI reset, ACPI power-off, pvpanic, the legacy console watch's halt).
pub struct ExitDoorbells {
    exit: VmExitSignal,
    bells: Vec<Doorbell>,
}

impl ExitDoorbells {
    pub fn new(exit: VmExitSignal, bells: Vec<Doorbell>) -> Self {
        ExitDoorbells { exit, bells }
    }
}

impl MutEventSubscriber for ExitDoorbells {
    fn init(&mut self, ops: &mut EventOps) {
        let fds = std::iter::once(self.exit.eventfd()).chain(self.bells.iter().map(|b| &b.fd));
        for fd in fds {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("cannot watch the VM exit doorbell: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match self.bells.iter().find(|b| b.fd.as_raw_fd() == events.fd()) {
            Some(bell) => {
                let _ = bell.fd.read();
                self.exit.send(bell.exit.clone());
            }
            None => {
                // The reason waits in the signal's slot; the VMM loop takes it after this round.
                let _ = self.exit.eventfd().read();
            }
        }
    }
}
