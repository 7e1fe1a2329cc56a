//! The KVM VM: its fd, the in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT, and guest RAM
//! registered as KVM memory slots (KVM maps it with EPT/NPT).

use crate::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use std::sync::Mutex;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmApiVersion(i32),
    #[error("cannot create the KVM VM: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot set up the KVM VM ({what}): {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot register guest memory with KVM: {0}")]
    SetMemory(#[source] kvm_ioctls::Error),
    #[error("cannot read KVM's dirty page log: {0}")]
    DirtyLog(#[source] kvm_ioctls::Error),
}

/// A KVM VM with its interrupt controllers and memory.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    /// KVM_MEM_LOG_DIRTY_PAGES on every slot (`machine-config.track_dirty_pages`).
    dirty_log: bool,
    /// Set when the dirty log was last emptied with guest memory matching a memory file on
    /// disk (a snapshot was written, or this VM restored from one): only then do "the pages
    /// written since" make a diff that can be laid over that file. It holds what the
    /// snapshot code needs to tell whether the VMM itself wrote guest memory since (the
    /// virtio queues' used positions then), as KVM's log only sees the guest's writes.
    dirty_base: Mutex<Option<Vec<u16>>>,
}

impl Vm {
    /// Opens /dev/kvm and creates the VM, registers `mem` as its memory slots, then creates
    /// the in-kernel irqchip and PIT — in that order: on this host's KVM a slot registered
    /// after KVM_CREATE_IRQCHIP costs 4.5–8 ms, before it ~0.1 ms (docs/design.md §3).
    pub fn with_memory(mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        Vm::with_memory_logged(mem, false)
    }

    /// As `with_memory`; with `dirty_log` KVM records which pages the guest writes
    /// (KVM_MEM_LOG_DIRTY_PAGES), for diff snapshots, read with `take_dirty_pages`.
    pub fn with_memory_logged(mem: &GuestMemoryMmap, dirty_log: bool) -> Result<Self, VmError> {
        let mut vm = Vm::create()?;
        vm.dirty_log = dirty_log;
        vm.register_memory(mem)?;
        vm.create_irqchip_and_pit()?;
        Ok(vm)
    }

    /// Opens /dev/kvm and creates the VM (no memory, no irqchip yet).
    fn create() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(VmError::KvmApiVersion(version));
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        let setup = |what| move |source| VmError::Setup { what, source };
        fd.set_tss_address(KVM_TSS_ADDRESS)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(setup("KVM_SET_IDENTITY_MAP_ADDR"))?;
        Ok(Vm {
            kvm,
            fd,
            dirty_log: false,
            dirty_base: Mutex::new(None),
        })
    }

    fn create_irqchip_and_pit(&self) -> Result<(), VmError> {
        let setup = |what| move |source| VmError::Setup { what, source };
        self.fd
            .create_irq_chip()
            .map_err(setup("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            // The speaker port (0x61) is emulated as a dummy by KVM.
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(setup("KVM_CREATE_PIT2"))
    }

    /// Registers every region of `mem` as a KVM memory slot.
    fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::SetMemory(kvm_ioctls::Error::new(libc::EFAULT)))?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: if self.dirty_log {
                    kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the VMM keeps alive
            // for as long as the VM exists; KVM only accesses it while the VM runs.
            unsafe { self.fd.set_user_memory_region(desc) }.map_err(VmError::SetMemory)?;
        }
        Ok(())
    }

    /// Removes every slot `register_memory` made for `mem` (a slot of size 0 deletes it, KVM
    /// API). Called after the vCPUs are joined and before the mapping may go away.
    pub fn unregister_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: 0,
                userspace_addr: 0,
                flags: 0,
            };
            // SAFETY: deleting a slot hands KVM no memory; afterwards KVM no longer refers to
            // the region it had.
            unsafe { self.fd.set_user_memory_region(desc) }.map_err(VmError::SetMemory)?;
        }
        Ok(())
    }

    /// Whether the slots log dirty pages.
    pub fn dirty_log(&self) -> bool {
        self.dirty_log
    }

    /// How many pages the guest wrote since the last read of the log (which this clears).
    /// Fails unless the slots were registered with `dirty_log`.
    pub fn take_dirty_pages(&self, mem: &GuestMemoryMmap) -> Result<u64, VmError> {
        Ok(self
            .take_dirty_bitmaps(mem)?
            .iter()
            .flatten()
            .map(|w| u64::from(w.count_ones()))
            .sum())
    }

    /// The pages the guest wrote since the last read of the log, one bitmap per region of
    /// `mem` in order (bit `i` of word `w`: page `64 * w + i` of the region), read with
    /// KVM_GET_DIRTY_LOG, which also clears the log. Fails unless the slots were registered
    /// with `dirty_log`. Writes the VMM makes itself (virtio devices) are not in it.
    pub fn take_dirty_bitmaps(&self, mem: &GuestMemoryMmap) -> Result<Vec<Vec<u64>>, VmError> {
        mem.iter()
            .enumerate()
            .map(|(slot, region)| {
                let size = usize::try_from(region.len()).unwrap_or(usize::MAX);
                self.fd
                    .get_dirty_log(slot as u32, size)
                    .map_err(VmError::DirtyLog)
            })
            .collect()
    }

    /// Records that guest memory now matches a memory file (`Some`, with the snapshot
    /// code's record of the devices then; the log emptied at that point) or no longer has a
    /// base (`None`).
    pub fn set_dirty_base(&self, base: Option<Vec<u16>>) {
        if let Ok(mut slot) = self.dirty_base.lock() {
            *slot = base;
        }
    }

    /// The record `set_dirty_base` last kept, if guest memory has a base.
    pub fn dirty_base(&self) -> Option<Vec<u16>> {
        self.dirty_base.lock().ok().and_then(|b| b.clone())
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    /// `track_dirty_pages`: the slots are registered with KVM_MEM_LOG_DIRTY_PAGES, so
    /// KVM_GET_DIRTY_LOG answers for them (KVM refuses it on a slot without the flag).
    #[test]
    fn dirty_logging_is_on_only_when_asked() {
        let mem = create_guest_memory(16).unwrap();
        let logged = Vm::with_memory_logged(&mem, true).unwrap();
        assert!(logged.dirty_log());
        assert_eq!(logged.take_dirty_pages(&mem).unwrap(), 0, "nothing ran yet");
        let plain = Vm::with_memory(&mem).unwrap();
        assert!(plain.take_dirty_pages(&mem).is_err());
    }
}
