//! The KVM half of a snapshot: each vCPU's registers, special registers, XSAVE area (FPU,
//! SSE, AVX), XCRs, debug registers, MSRs (every one KVM lists that reads back), LAPIC, MP
//! state and pending events; and the VM's in-kernel irqchip (PIC master and slave, IOAPIC),
//! PIT and KVM clock. Saved on the vCPU's own thread while it is paused, restored before the
//! vCPU thread is launched. Restore order follows the dependencies KVM documents: MP state
//! and registers first, LAPIC before MSRs (the TSC deadline MSR needs the LAPIC mode), events
//! last (they may inject into the restored state).

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum KvmStateError {
    #[error("{what} failed: {source}")]
    Ioctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot build an MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
}

fn ioctl(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> KvmStateError {
    move |source| KvmStateError::Ioctl { what, source }
}

/// One MSR: index and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msr {
    pub index: u32,
    pub data: u64,
}

/// One vCPU's architectural state.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub vcpu_events: kvm_vcpu_events,
    pub msrs: Vec<Msr>,
    /// The TSC frequency the guest saw (kHz); 0 when KVM could not say.
    pub tsc_khz: u32,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("msrs", &self.msrs.len())
            .finish_non_exhaustive()
    }
}

/// The VM-wide interrupt controllers and clocks.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmKvmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for VmKvmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmKvmState")
            .field("clock", &self.clock.clock)
            .finish_non_exhaustive()
    }
}

/// The MSR indices a snapshot saves: every one KVM lists (KVM_GET_MSR_INDEX_LIST).
pub fn msr_index_list(kvm: &Kvm) -> Result<Vec<u32>, KvmStateError> {
    Ok(kvm
        .get_msr_index_list()
        .map_err(ioctl("KVM_GET_MSR_INDEX_LIST"))?
        .as_slice()
        .to_vec())
}

fn msrs_of(entries: &[kvm_msr_entry]) -> Result<Msrs, KvmStateError> {
    Msrs::from_entries(entries).map_err(KvmStateError::MsrList)
}

/// Reads `indices`; KVM stops a KVM_GET_MSRS at the first MSR it cannot read, so that one is
/// left out (logged) and the read goes on after it.
fn read_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<Msr>, KvmStateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = msrs_of(&entries)?;
        let read = fd.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        out.extend(msrs.as_slice()[..read].iter().map(|e| Msr {
            index: e.index,
            data: e.data,
        }));
        if read < chunk.len() {
            log::debug!("MSR {:#x} does not read back: not saved", chunk[read]);
        }
        rest = &rest[(read + 1).min(rest.len())..];
    }
    Ok(out)
}

/// Saves a paused vCPU's state (on its own thread).
pub fn save_vcpu(fd: &VcpuFd, msr_indices: &[u32]) -> Result<VcpuState, KvmStateError> {
    Ok(VcpuState {
        regs: fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
        sregs: fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
        xsave: fd.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?,
        xcrs: fd.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?,
        debug_regs: fd.get_debug_regs().map_err(ioctl("KVM_GET_DEBUGREGS"))?,
        lapic: fd.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?,
        mp_state: fd.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?,
        vcpu_events: fd.get_vcpu_events().map_err(ioctl("KVM_GET_VCPU_EVENTS"))?,
        msrs: read_msrs(fd, msr_indices)?,
        tsc_khz: fd.get_tsc_khz().unwrap_or(0),
    })
}

/// Puts a vCPU (CPUID already set, thread not launched) into `state`.
pub fn restore_vcpu(fd: &VcpuFd, state: &VcpuState) -> Result<(), KvmStateError> {
    if state.tsc_khz != 0 {
        // Same host in practice; a host that cannot scale keeps its own rate.
        if let Err(e) = fd.set_tsc_khz(state.tsc_khz) {
            log::debug!("KVM_SET_TSC_KHZ {} failed: {e}", state.tsc_khz);
        }
    }
    fd.set_mp_state(state.mp_state)
        .map_err(ioctl("KVM_SET_MP_STATE"))?;
    fd.set_regs(&state.regs).map_err(ioctl("KVM_SET_REGS"))?;
    fd.set_sregs(&state.sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    // SAFETY: `xsave` is a plain kvm_xsave read by KVM_GET_XSAVE (4 KiB region, no
    // extended area): KVM_SET_XSAVE reads exactly that struct.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(ioctl("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debug_regs)
        .map_err(ioctl("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
    for chunk in state.msrs.chunks(KVM_MAX_MSR_ENTRIES) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|m| kvm_msr_entry {
                index: m.index,
                data: m.data,
                ..Default::default()
            })
            .collect();
        let written = fd
            .set_msrs(&msrs_of(&entries)?)
            .map_err(ioctl("KVM_SET_MSRS"))?;
        if written != entries.len() {
            return Err(KvmStateError::Ioctl {
                what: "KVM_SET_MSRS",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
    }
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, KvmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(ioctl("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

/// Saves the VM's irqchip, PIT and clock (vCPUs paused).
pub fn save_vm(vm: &VmFd) -> Result<VmKvmState, KvmStateError> {
    Ok(VmKvmState {
        pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
        pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
        ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
        pit: vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?,
        clock: vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?,
    })
}

/// Puts the VM's irqchip, PIT and clock into `state`. The clock goes on from where it was:
/// the guest sees no jump over the time the snapshot sat on disk (as Firecracker).
pub fn restore_vm(vm: &VmFd, state: &VmKvmState) -> Result<(), KvmStateError> {
    vm.set_pit2(&state.pit).map_err(ioctl("KVM_SET_PIT2"))?;
    let mut clock = state.clock;
    // TSC_STABLE is an output of KVM_GET_CLOCK; REALTIME would make KVM add the time spent
    // on disk. Neither is passed back.
    clock.flags = 0;
    vm.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))?;
    for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
        vm.set_irqchip(chip).map_err(ioctl("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}
