//! vCPUs: boot configuration (CPUID, MSRs, registers, FPU, LAPIC) and the KVM_RUN loop, one
//! thread each (`vcpu_thread`). Port and MMIO exits go to the device buses; the loop returns the
//! exit that ends the VM, or `None` when its owner told it to finish.

use crate::exit::VmExit;
use crate::vcpu_control::{FirstEntryHook, RunPageGuard};
use crate::vcpu_thread::{VcpuEvent, VcpuResponse};
use crate::x86_64::cpuid::filter_cpuid;
use crate::x86_64::msr::{boot_msrs, MsrError};
use crate::x86_64::regs::{boot_fpu, boot_regs, set_lint, setup_sregs, EntryMode, RegsError};
use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use vm_device::bus::{MmioAddress, PioAddress};
use vm_device::device_manager::{IoManager, MmioManager, PioManager};
use vm_memory::GuestMemoryMmap;

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {id}: {source}")]
    Create {
        id: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot configure vCPU {id}: {what} failed: {source}")]
    Configure {
        id: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot configure vCPU {id}: {source}")]
    Msrs {
        id: u8,
        #[source]
        source: MsrError,
    },
    #[error("cannot configure vCPU {id}: {source}")]
    Regs {
        id: u8,
        #[source]
        source: RegsError,
    },
    #[error("cannot start the thread of vCPU {id}: {source}")]
    Spawn {
        id: u8,
        #[source]
        source: std::io::Error,
    },
}

/// Where and how the boot vCPU enters the guest.
#[derive(Clone, Copy, Debug)]
pub struct BootEntry {
    pub mode: EntryMode,
    pub entry: u64,
    /// Zero page (64-bit Linux protocol) or `hvm_start_info` (PVH).
    pub boot_info: u64,
}

pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    /// The vCPU count CPUID was last set up for.
    configured_for: Option<u8>,
}

impl Vcpu {
    pub fn new(vm: &VmFd, id: u8) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|source| VcpuError::Create { id, source })?;
        Ok(Vcpu {
            id,
            fd,
            configured_for: None,
        })
    }

    /// Sets CPUID (for a guest of `count` vCPUs), MSRs, FPU and LAPIC. Needs no guest, so a
    /// prepared shell does it ahead of time; a guest of another size redoes it.
    pub fn configure_cpu(&mut self, supported_cpuid: &CpuId, count: u8) -> Result<(), VcpuError> {
        if self.configured_for == Some(count) {
            return Ok(());
        }
        let id = self.id;
        let kvm_err = |what| move |source| VcpuError::Configure { id, what, source };
        let mut cpuid = supported_cpuid.clone();
        filter_cpuid(&mut cpuid, id, count);
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;
        let msrs = boot_msrs().map_err(|source| VcpuError::Msrs { id, source })?;
        let written = self.fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if written != msrs.as_slice().len() {
            log::debug!(
                "vCPU {id}: KVM accepted {written} of {} boot MSRs",
                msrs.as_slice().len()
            );
        }
        self.fd
            .set_fpu(&boot_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;
        let mut lapic = self.fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        set_lint(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        self.configured_for = Some(count);
        Ok(())
    }

    /// Points the boot vCPU at the kernel's entry. Application processors stay in
    /// wait-for-SIPI: the guest starts them (INIT/SIPI).
    pub fn set_boot_entry(&self, mem: &GuestMemoryMmap, boot: BootEntry) -> Result<(), VcpuError> {
        let id = self.id;
        let kvm_err = |what| move |source| VcpuError::Configure { id, what, source };
        {
            let mut sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
            setup_sregs(mem, boot.mode, &mut sregs)
                .map_err(|source| VcpuError::Regs { id, source })?;
            self.fd
                .set_sregs(&sregs)
                .map_err(kvm_err("KVM_SET_SREGS"))?;
            self.fd
                .set_regs(&boot_regs(boot.mode, boot.entry, boot.boot_info))
                .map_err(kvm_err("KVM_SET_REGS"))?;
        }
        Ok(())
    }

    /// The KVM vCPU, for restoring a snapshot's state before the thread is launched.
    pub(crate) fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn rip(&self) -> String {
        self.fd
            .get_regs()
            .map(|r| format!("{:#x}", r.rip))
            .unwrap_or_else(|_| "unknown".into())
    }

    /// Runs the vCPU until the guest ends the VM (`Some(exit)`) or the owner sends
    /// `VcpuEvent::Finish` (`None`). Events are read before every entry; the owner kicks the
    /// thread after sending one, which makes a running or about-to-run KVM_RUN return EINTR.
    pub(crate) fn run_loop(
        mut self,
        io: &IoManager,
        events: &Receiver<VcpuEvent>,
        responses: &Sender<VcpuResponse>,
        first_entry: Option<FirstEntryHook>,
    ) -> Option<VmExit> {
        let _run_page = RunPageGuard::new(self.fd.get_kvm_run());
        if let Some(hook) = first_entry {
            hook(std::time::Instant::now());
        }
        loop {
            if !handle_events(&self.fd, events, responses) {
                return None;
            }
            match self.fd.run() {
                Ok(VcpuExit::IoIn(port, data)) => {
                    log::trace!("vCPU {}: in {port:#x}", self.id);
                    if io.pio_read(PioAddress(port), data).is_err() {
                        // Nothing decodes this port: the bus floats high, as on a PC.
                        data.fill(0xff);
                    }
                }
                Ok(VcpuExit::IoOut(port, data)) => {
                    log::trace!("vCPU {}: out {port:#x} {data:x?}", self.id);
                    let _ = io.pio_write(PioAddress(port), data);
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if io.mmio_read(MmioAddress(addr), data).is_err() {
                        data.fill(0xff);
                    }
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    let _ = io.mmio_write(MmioAddress(addr), data);
                }
                Ok(VcpuExit::Hlt) => return Some(VmExit::Halted),
                Ok(VcpuExit::Shutdown) => {
                    return Some(VmExit::TripleFault {
                        vcpu: self.id,
                        rip: self.rip(),
                    })
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    return Some(match kind {
                        kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN
                        | kvm_bindings::KVM_SYSTEM_EVENT_RESET => VmExit::Reset,
                        other => VmExit::Error(format!(
                            "vCPU {}: KVM system event {other} at RIP {}",
                            self.id,
                            self.rip()
                        )),
                    })
                }
                Ok(VcpuExit::InternalError) => {
                    return Some(VmExit::Error(format!(
                        "vCPU {}: KVM internal error (KVM_EXIT_INTERNAL_ERROR) at RIP {}",
                        self.id,
                        self.rip()
                    )))
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Some(VmExit::Error(format!(
                        "vCPU {}: KVM entry failed (hardware reason {reason:#x} on host CPU {cpu}) at RIP {}",
                        self.id,
                        self.rip()
                    )))
                }
                Ok(other) => {
                    let what = format!("{other:?}");
                    return Some(VmExit::Error(format!(
                        "vCPU {}: unexpected KVM exit {what} at RIP {}",
                        self.id,
                        self.rip()
                    )));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // A kick: clear the flag its handler set, then look at the events.
                    self.fd.set_kvm_immediate_exit(0);
                }
                Err(e) => {
                    return Some(VmExit::Error(format!(
                        "vCPU {}: KVM_RUN failed: {e}",
                        self.id
                    )))
                }
            }
        }
    }
}

/// Takes every pending event; while paused, waits for the next one. Returns false when the
/// vCPU must finish (told so, or its owner is gone).
fn handle_events(
    fd: &VcpuFd,
    events: &Receiver<VcpuEvent>,
    responses: &Sender<VcpuResponse>,
) -> bool {
    let mut paused = false;
    loop {
        let event = if paused {
            match events.recv() {
                Ok(e) => e,
                Err(_) => return false,
            }
        } else {
            match events.try_recv() {
                Ok(e) => e,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        };
        match event {
            VcpuEvent::Pause => {
                paused = true;
                // The owner may have given up waiting; nothing to do about it here.
                let _ = responses.send(VcpuResponse::Paused);
            }
            VcpuEvent::Resume => {
                paused = false;
                let _ = responses.send(VcpuResponse::Resumed);
            }
            VcpuEvent::Finish => return false,
            VcpuEvent::SaveState(msrs) => {
                // Only a paused vCPU has a state that stays put while it is read.
                let saved = if paused {
                    crate::snapshot::kvm_state::save_vcpu(fd, &msrs).map_err(|e| e.to_string())
                } else {
                    Err("the vCPU is not paused".to_string())
                };
                let _ = responses.send(VcpuResponse::Saved(Box::new(saved)));
            }
        }
    }
}
