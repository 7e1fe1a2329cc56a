//! How a VM ends, and how a vCPU thread tells the VMM thread about it.

use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::EventFd;

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset the machine (i8042 pulse, ACPI reset register, KVM system event): a
    /// clean stop.
    Reset,
    /// The guest powered the machine off (ACPI PM1 control register, S5): a clean stop.
    PowerOff,
    /// The guest halted its only way out (KVM_EXIT_HLT reached user space), or, for a legacy
    /// guest watched on its console, Linux said it halted.
    Halted,
    /// The guest kernel panicked: it told pvpanic (then or before a reset), or, for a legacy
    /// guest watched on its console, it reset after Linux printed its panic banner.
    GuestPanic,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { vcpu: u8, rip: String },
    /// The host stopped the VM (API or control plane).
    Stopped,
    /// Anything else that stopped a vCPU.
    Error(String),
}

impl VmExit {
    /// Whether the guest ended as it meant to.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            VmExit::Reset | VmExit::PowerOff | VmExit::Halted | VmExit::Stopped
        )
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Reset => write!(f, "guest reset"),
            VmExit::PowerOff => write!(f, "guest powered off"),
            VmExit::Halted => write!(f, "guest halted"),
            VmExit::GuestPanic => write!(f, "guest kernel panicked"),
            VmExit::Stopped => write!(f, "stopped by the host"),
            VmExit::TripleFault { vcpu, rip } => {
                write!(
                    f,
                    "guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU {vcpu} at RIP {rip}"
                )
            }
            VmExit::Error(msg) => write!(f, "{msg}"),
        }
    }
}

/// The first reported exit wins; the eventfd wakes the VMM thread's event loop.
#[derive(Clone)]
pub struct VmExitSignal {
    slot: Arc<Mutex<Option<VmExit>>>,
    evt: Arc<EventFd>,
}

impl VmExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(VmExitSignal {
            slot: Arc::new(Mutex::new(None)),
            evt: Arc::new(EventFd::new(libc::EFD_NONBLOCK)?),
        })
    }

    pub fn send(&self, exit: VmExit) {
        if let Ok(mut slot) = self.slot.lock() {
            slot.get_or_insert(exit);
        }
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot signal the VM exit: {e}");
        }
    }

    pub fn take(&self) -> Option<VmExit> {
        self.slot.lock().ok().and_then(|mut s| s.take())
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}
