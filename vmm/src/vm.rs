//! The KVM VM: its fd, the in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT, and guest RAM
//! registered as KVM memory slots (KVM maps it with EPT/NPT).

use crate::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVMIO, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::thread::JoinHandle;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

pub mod teardown;

ioctl_iow_nr!(KVM_CREATE_PIT2, KVMIO, 0x77, kvm_pit_config);

/// Stack of the thread that creates the PIT: it makes one ioctl.
const PIT_THREAD_STACK: usize = 64 * 1024;

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
    #[error("cannot start the thread that creates the PIT: {0}")]
    PitThread(#[source] std::io::Error),
    #[error("the thread that creates the PIT panicked")]
    PitThreadPanicked,
    #[error("cannot read KVM's dirty page log: {0}")]
    DirtyLog(#[source] kvm_ioctls::Error),
}

/// A KVM VM with its interrupt controllers and memory.
pub struct Vm {
    kvm: Kvm,
    /// Closed on drop, unless a teardown helper takes it over (`teardown`).
    fd: ManuallyDrop<VmFd>,
    /// KVM_MEM_LOG_DIRTY_PAGES on every slot (`machine-config.track_dirty_pages`).
    dirty_log: bool,
    /// KVM_CREATE_PIT2, running on its own thread (`with_memory`) until `finish_setup` or
    /// `Drop` joins it.
    pit: Option<JoinHandle<Result<(), kvm_ioctls::Error>>>,
    /// Set when the dirty log was last emptied with guest memory matching a memory file on
    /// disk (a snapshot was written, or this VM restored from one): only then do "the pages
    /// written since" make a diff that can be laid over that file. It holds what the
    /// snapshot code needs to tell whether the VMM itself wrote guest memory since (the
    /// virtio queues' used positions then), as KVM's log only sees the guest's writes.
    dirty_base: Mutex<Option<Vec<u16>>>,
}

impl Vm {
    /// Opens /dev/kvm and creates the VM, registers `mem` as its memory slots, then creates
    /// the in-kernel irqchip and starts creating the PIT — in that order: on this host's KVM a
    /// slot registered after KVM_CREATE_IRQCHIP costs 4.5–8 ms, before it ~0.1 ms
    /// (docs/design.md §3). KVM_CREATE_PIT2 starts a kernel thread, which takes milliseconds
    /// on a busy host; nothing before the first guest entry needs the PIT (vCPUs need only the
    /// irqchip), so it runs on a thread of its own beside the rest of the setup, and
    /// `finish_setup` waits for it before any vCPU enters the guest.
    pub fn with_memory(mem: &GuestMemoryMmap) -> Result<Self, VmError> {
        Vm::with_memory_logged(mem, false)
    }

    /// As `with_memory`; with `dirty_log` KVM records which pages the guest writes
    /// (KVM_MEM_LOG_DIRTY_PAGES), for diff snapshots, read with `take_dirty_pages`.
    pub fn with_memory_logged(mem: &GuestMemoryMmap, dirty_log: bool) -> Result<Self, VmError> {
        let mut vm = Vm::create()?;
        vm.dirty_log = dirty_log;
        vm.register_memory(mem)?;
        vm.create_irqchip()?;
        vm.pit = Some(vm.spawn_pit()?);
        Ok(vm)
    }

    /// Waits for the setup still running beside the caller (the PIT); idempotent. Call it
    /// before any vCPU first enters the guest.
    pub fn finish_setup(&mut self) -> Result<(), VmError> {
        let Some(pit) = self.pit.take() else {
            return Ok(());
        };
        pit.join()
            .map_err(|_| VmError::PitThreadPanicked)?
            .map_err(|source| VmError::Setup {
                what: "KVM_CREATE_PIT2",
                source,
            })
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
            fd: ManuallyDrop::new(fd),
            dirty_log: false,
            pit: None,
            dirty_base: Mutex::new(None),
        })
    }

    fn create_irqchip(&self) -> Result<(), VmError> {
        self.fd.create_irq_chip().map_err(|source| VmError::Setup {
            what: "KVM_CREATE_IRQCHIP",
            source,
        })
    }

    /// Starts KVM_CREATE_PIT2 on its own thread, on this VM's fd (joined before the fd can
    /// close: `finish_setup` or `Drop`).
    fn spawn_pit(&self) -> Result<JoinHandle<Result<(), kvm_ioctls::Error>>, VmError> {
        let fd: RawFd = self.fd.as_raw_fd();
        std::thread::Builder::new()
            .name("kvm-pit".into())
            .stack_size(PIT_THREAD_STACK)
            .spawn(move || {
                let pit = kvm_pit_config {
                    // The speaker port (0x61) is emulated as a dummy by KVM.
                    flags: KVM_PIT_SPEAKER_DUMMY,
                    ..Default::default()
                };
                let vm = VmIoctlFd(fd);
                // SAFETY: `fd` is the VM fd, open until this thread is joined (`Vm` joins it in
                // `finish_setup` or `Drop` before its `VmFd` closes); KVM_CREATE_PIT2 reads one
                // `kvm_pit_config`, which lives across the call.
                let rc = unsafe { ioctl_with_ref(&vm, KVM_CREATE_PIT2(), &pit) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(kvm_ioctls::Error::last())
                }
            })
            .map_err(VmError::PitThread)
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

impl Drop for Vm {
    fn drop(&mut self) {
        // The PIT thread uses our fd by number: it must be done before the fd closes.
        if let Err(e) = self.finish_setup() {
            log::debug!("{e}");
        }
        if teardown::handed_off() {
            // The helper's death closes it, and runs the kernel's VM teardown (teardown.rs).
            return;
        }
        // SAFETY: dropped exactly once, here; `self.fd` is not used after this.
        unsafe { ManuallyDrop::drop(&mut self.fd) };
    }
}

/// The VM fd by number, for the PIT thread's one ioctl (it must not own, hence close, it).
struct VmIoctlFd(RawFd);

impl AsRawFd for VmIoctlFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
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
