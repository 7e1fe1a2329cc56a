//! `PreparedVm`: the expensive, configuration-independent half of creating a VM — /dev/kvm, the
//! VM fd, irqchip and PIT, guest memory mapped and registered, vCPU fds with their CPU state and
//! parked threads, the legacy devices and the VMM loop.
//! LightVM's split toolstack does this ahead of time (docs/design.md §5): a prepared shell then only
//! has to load the guest and start it.

use crate::device_manager::{DeviceManager, DeviceManagerError};
use crate::layout::{
    BOOT_GDT_START, CMDLINE_START, EBDA_START, PDE_START, PDPTE_START, PML4_START, PVH_INFO_START,
    ZERO_PAGE_START,
};
use crate::legacy_devices::{LegacyDeviceError, LegacyDevices};
use crate::memory::MemoryError;
use crate::memory_backing::{create_backed_guest_memory, BackingError};
use crate::memory_shared::{create_shared_guest_memory, SharedMemoryError};
use crate::vcpu::{Vcpu, VcpuError};
use crate::vcpu_control::{install_kick_handler, ControlError};
use crate::vcpu_thread::VcpuThread;
use crate::vm::{Vm, VmError};
use crate::x86_64::mptable::MAX_CPUS;
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use wisp_api::HugePages;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("vcpu_count must be between 1 and {max}, not {got}")]
    VcpuCount { got: u8, max: u8 },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Backing(#[from] BackingError),
    #[error(transparent)]
    SharedMemory(#[from] SharedMemoryError),
    #[error("huge_pages 2M and shared guest memory (mem_shared or a virtio-fs device) cannot be combined")]
    SharedHugePages,
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot query KVM's supported CPUID: {0}")]
    Cpuid(#[source] kvm_ioctls::Error),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Devices(#[from] DeviceManagerError),
    #[error(transparent)]
    Legacy(#[from] LegacyDeviceError),
}

/// Touches the low pages every boot writes (GDT, PVH start info, zero page, page tables,
/// command line, MP table), so their first-touch page faults happen while preparing rather
/// than on the create path. A dozen pages: a few tens of KiB per shell.
fn prefault_boot_pages(mem: &GuestMemoryMmap) {
    for addr in [
        BOOT_GDT_START,
        PVH_INFO_START,
        ZERO_PAGE_START,
        PML4_START,
        PDPTE_START,
        PDE_START,
        CMDLINE_START,
        EBDA_START,
    ] {
        // Writing zero changes nothing the guest could see; a failure only costs the fault later.
        let _ = mem.write_obj(0u8, GuestAddress(addr));
    }
}

/// A VM shell: everything a guest needs except the guest.
pub struct PreparedVm {
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) threads: Vec<VcpuThread>,
    pub(crate) devices: DeviceManager,
    pub(crate) legacy: LegacyDevices,
    pub(crate) supported_cpuid: CpuId,
    pub(crate) vm: Vm,
    pub(crate) mem: GuestMemoryMmap,
    mem_mib: u32,
    /// Guest RAM is a memfd a vhost-user backend can map (`--mem-shared`).
    mem_shared: bool,
}

impl PreparedVm {
    /// Creates a shell able to host guests of up to `mem_mib` MiB and `vcpus` vCPUs.
    pub fn prepare(mem_mib: u32, vcpus: u8) -> Result<PreparedVm, PrepareError> {
        PreparedVm::prepare_with(mem_mib, vcpus, false)
    }

    /// [`PreparedVm::prepare`], with guest RAM in a sealed memfd when `mem_shared` (for
    /// vhost-user devices), anonymous otherwise.
    pub fn prepare_with(
        mem_mib: u32,
        vcpus: u8,
        mem_shared: bool,
    ) -> Result<PreparedVm, PrepareError> {
        PreparedVm::prepare_backed(mem_mib, vcpus, HugePages::None, false, mem_shared)
    }

    /// As `prepare`, with guest memory backed as `huge` asks and, with `dirty_log`, KVM
    /// dirty-page logging on its slots (`machine-config.huge_pages`, `track_dirty_pages`);
    /// with `mem_shared`, guest RAM is a sealed memfd (for vhost-user devices).
    pub fn prepare_backed(
        mem_mib: u32,
        vcpus: u8,
        huge: HugePages,
        dirty_log: bool,
        mem_shared: bool,
    ) -> Result<PreparedVm, PrepareError> {
        if vcpus == 0 || vcpus > MAX_CPUS {
            return Err(PrepareError::VcpuCount {
                got: vcpus,
                max: MAX_CPUS,
            });
        }
        let mem = match (mem_shared, huge) {
            (true, HugePages::Huge2M) => return Err(PrepareError::SharedHugePages),
            (true, _) => create_shared_guest_memory(mem_mib)?,
            (false, huge) => create_backed_guest_memory(mem_mib, huge)?,
        };
        let vm = Vm::with_memory_logged(&mem, dirty_log)?;
        let supported_cpuid = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(PrepareError::Cpuid)?;
        let count = vcpus;
        let mut vcpus = (0..count)
            .map(|id| Vcpu::new(vm.fd(), id))
            .collect::<Result<Vec<_>, _>>()?;
        for vcpu in vcpus.iter_mut() {
            vcpu.configure_cpu(&supported_cpuid, count)?;
        }
        install_kick_handler()?;
        let threads = (0..count)
            .map(VcpuThread::spawn)
            .collect::<Result<Vec<_>, _>>()?;
        prefault_boot_pages(&mem);
        let mut devices = DeviceManager::new()?;
        let legacy = LegacyDevices::new(vm.fd(), &mut devices)?;
        Ok(PreparedVm {
            vcpus,
            threads,
            devices,
            legacy,
            supported_cpuid,
            vm,
            mem,
            mem_mib,
            mem_shared,
        })
    }

    /// The most memory (MiB) a guest in this shell can have.
    pub fn mem_mib(&self) -> u32 {
        self.mem_mib
    }

    /// Whether guest RAM is shared (a memfd), as vhost-user devices need.
    pub fn mem_shared(&self) -> bool {
        self.mem_shared
    }

    /// The most vCPUs a guest in this shell can have.
    pub fn vcpu_count(&self) -> u8 {
        u8::try_from(self.vcpus.len()).unwrap_or(u8::MAX)
    }
}
