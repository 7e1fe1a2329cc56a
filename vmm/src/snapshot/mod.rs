//! Snapshots (docs/design.md §10, docs/snapshot-format.md): a paused microVM is written as a
//! VM state file (versioned, checksummed: `format`) and a memory file (`memory_file`); a
//! restore builds a VM shell of the same size, maps the memory file `MAP_PRIVATE` over its
//! RAM, reattaches the devices from the saved configuration (same order, so same slots and
//! IRQs) and puts every device, vCPU and the VM's irqchip/PIT/clock back into its saved state.
//!
//! A restore can go into any prepared shell at least as large as the snapshot's guest, which
//! is how wispd restores and clones in well under a millisecond of VMM work: the shell already
//! has its KVM VM, memory slots, vCPUs and threads.
//!
//! Every check that needs no KVM (state file, memory file size, configuration, devices that
//! cannot be snapshotted) runs before anything changes.

pub mod format;
pub mod kvm_state;
pub mod memory_file;
mod restore;
pub mod state;

use crate::microvm::{MicroVm, VCPU_ACK_TIMEOUT};
use kvm_state::KvmStateError;
use memory_file::MemoryFileError;
pub use restore::{restore, RestoreOptions};
use state::{DevicesState, MicroVmState, VirtioState};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use wisp_api::VmConfig;
use wisp_devices::virtio::{device_id, Balloon};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Format(#[from] format::FormatError),
    #[error(transparent)]
    MemoryFile(#[from] MemoryFileError),
    #[error("KVM state: {0}")]
    Kvm(#[from] KvmStateError),
    #[error(transparent)]
    Vcpus(#[from] crate::vcpu_thread::VcpuThreadError),
    #[error("the {0} lock is poisoned")]
    Poisoned(&'static str),
    #[error(
        "a {kind} device ({id}) cannot be snapshotted; only block, net, vsock, rng and balloon \
         can (a vhost-user backend's state is not Wisp's to save)"
    )]
    Unsupported { kind: String, id: String },
    #[error("the snapshot's configuration: {0}")]
    Config(String),
    #[error("{what}: {reason}")]
    Device { what: String, reason: String },
    #[error(transparent)]
    Build(#[from] crate::microvm::MicroVmError),
    #[error("the snapshot's guest ({want}) does not fit this VM shell ({have})")]
    DoesNotFitShell { want: String, have: String },
    #[error(
        "a Diff snapshot needs KVM's dirty page log: start the VM with \
         machine-config.track_dirty_pages (or load it with track_dirty_pages)"
    )]
    NoDirtyLog,
    #[error(
        "a Diff snapshot needs a base: take a Full snapshot of this VM first (or restore it \
         from one); the diff holds the pages written since"
    )]
    NoDiffBase,
    #[error("cannot read the dirty page log: {0}")]
    DirtyLog(String),
    #[error(
        "a virtio device used guest memory since the base snapshot, and the VMM's own writes \
         are not in KVM's dirty log: take a Full snapshot"
    )]
    DevicesWrote,
}

fn dirty_log_err(e: crate::vm::VmError) -> SnapshotError {
    SnapshotError::DirtyLog(e.to_string())
}

/// How far each virtio queue's device has got (its next used index), devices in order. The
/// VMM's own writes into guest memory (a device filling a buffer) are not in KVM's dirty
/// log, but each ends with a used buffer: unchanged positions mean the devices wrote nothing.
pub(crate) fn used_positions(devices: &DevicesState) -> Vec<u16> {
    devices
        .virtio
        .iter()
        .flat_map(|v| v.transport.queues.iter().map(|q| q.next_used))
        .collect()
}

/// Sets the bits of `dirty` (per region of `mem`, a bit per page) for guest-physical
/// `[gpa, gpa + len)`; addresses outside RAM are ignored.
fn mark_dirty(mem: &GuestMemoryMmap, dirty: &mut [Vec<u64>], gpa: u64, len: u64) {
    const PAGE: u64 = 4096;
    let mut page = gpa / PAGE * PAGE;
    while page < gpa.saturating_add(len) {
        let found = mem.iter().enumerate().find(|(_, r)| {
            let start = r.start_addr().raw_value();
            page >= start && page - start < r.len()
        });
        if let Some((i, r)) = found {
            let n = ((page - r.start_addr().raw_value()) / PAGE) as usize;
            if let Some(word) = dirty.get_mut(i).and_then(|b| b.get_mut(n / 64)) {
                *word |= 1 << (n % 64);
            }
        }
        page += PAGE;
    }
}

/// A snapshot kept as a directory (`wisp run --restore DIR`, `wisp ctl`): the VM state file
/// `vm.state` and the memory file `vm.mem`.
#[derive(Clone, Debug)]
pub struct SnapshotDir(std::path::PathBuf);

impl SnapshotDir {
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        SnapshotDir(dir.into())
    }

    pub fn state(&self) -> std::path::PathBuf {
        self.0.join("vm.state")
    }

    pub fn memory(&self) -> std::path::PathBuf {
        self.0.join("vm.mem")
    }
}

/// What `create` wrote and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotInfo {
    /// Bytes of the VM state file.
    pub state_bytes: u64,
    /// Bytes of guest memory actually written (zero pages are holes in the file).
    pub memory_bytes_written: u64,
    pub elapsed: Duration,
}

/// Device types whose state a snapshot captures completely.
fn snapshot_supported(device_type: u32) -> bool {
    matches!(
        device_type,
        device_id::BLOCK | device_id::NET | device_id::VSOCK | device_id::RNG | device_id::BALLOON
    )
}

/// Full: all of guest memory; Diff: the pages the guest wrote since the last snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Full,
    Diff,
}

/// Writes a paused `vm` described by `config` to `state_path` and `mem_path`. With dirty
/// logging on, a Full snapshot also empties the log, so the next Diff holds what changed
/// since it.
pub fn create(
    vm: &MicroVm,
    config: &VmConfig,
    state_path: &Path,
    mem_path: &Path,
    kind: Kind,
) -> Result<SnapshotInfo, SnapshotError> {
    let start = Instant::now();
    let base = match kind {
        Kind::Diff if !vm.vm.dirty_log() => return Err(SnapshotError::NoDirtyLog),
        Kind::Diff => Some(vm.vm.dirty_base().ok_or(SnapshotError::NoDiffBase)?),
        Kind::Full => None,
    };
    let state = save(vm, config)?;
    let used = used_positions(&state.devices);
    if let Some(base) = base {
        if base != used {
            return Err(SnapshotError::DevicesWrote);
        }
    }
    let memory_bytes_written = match kind {
        Kind::Full => {
            if vm.vm.dirty_log() {
                vm.vm.set_dirty_base(None);
                vm.vm.take_dirty_bitmaps(&vm.mem).map_err(dirty_log_err)?;
            }
            let anonymous = !vm.memory_from_file;
            memory_file::write_memory(&vm.mem, mem_path, anonymous)?
        }
        Kind::Diff => {
            // Once the log is read, a failed write loses what it held: no diff can follow
            // until a Full snapshot is taken again.
            vm.vm.set_dirty_base(None);
            let mut dirty = vm.vm.take_dirty_bitmaps(&vm.mem).map_err(dirty_log_err)?;
            // A device may write its used ring's event word without using a buffer.
            for v in &state.devices.virtio {
                for q in v.transport.queues.iter().filter(|q| q.ready) {
                    let len = 6 + 8 * u64::from(q.size) + 2;
                    mark_dirty(&vm.mem, &mut dirty, q.used_ring, len);
                }
            }
            memory_file::write_diff(&vm.mem, &dirty, mem_path)?
        }
    };
    let state_bytes = format::write_file(state_path, &state)?;
    if vm.vm.dirty_log() {
        vm.vm.set_dirty_base(Some(used));
    }
    Ok(SnapshotInfo {
        state_bytes,
        memory_bytes_written,
        elapsed: start.elapsed(),
    })
}

/// The whole state of a paused `vm` (memory aside).
pub fn save(vm: &MicroVm, config: &VmConfig) -> Result<MicroVmState, SnapshotError> {
    let mut virtio = Vec::with_capacity(vm.virtio.len());
    for handle in &vm.virtio {
        let mut t = handle
            .transport
            .lock()
            .map_err(|_| SnapshotError::Poisoned("virtio transport"))?;
        if !snapshot_supported(t.device_type()) {
            return Err(SnapshotError::Unsupported {
                kind: handle.kind.to_string(),
                id: handle.id.clone(),
            });
        }
        virtio.push(VirtioState {
            kind: handle.kind.to_string(),
            id: handle.id.clone(),
            transport: t.save_state(),
            balloon: t.device_mut::<Balloon>().map(|b| b.save_state()),
        });
    }
    let config_json =
        serde_json::to_string(config).map_err(|e| SnapshotError::Config(e.to_string()))?;
    let msrs = Arc::new(kvm_state::msr_index_list(vm.vm.kvm())?);
    let vcpus = vm.vcpus.save_states(msrs, VCPU_ACK_TIMEOUT)?;
    let kvm_vm = kvm_state::save_vm(vm.vm.fd())?;
    let poisoned = SnapshotError::Poisoned;
    let devices = DevicesState {
        serial: vm
            .serial
            .lock()
            .map_err(|_| poisoned("serial"))?
            .save_state(),
        i8042: vm.i8042.lock().map_err(|_| poisoned("i8042"))?.save_state(),
        acpi_pm: vm
            .acpi_pm
            .lock()
            .map_err(|_| poisoned("ACPI PM"))?
            .save_state(),
        panicked: vm.panicked.load(std::sync::atomic::Ordering::Acquire),
        sysctl: vm.sysctl.get(),
        generation: vm.generation.get(),
        virtio,
    };
    Ok(MicroVmState {
        config_json,
        mem_mib: config.machine_config.mem_size_mib,
        vcpus,
        vm: kvm_vm,
        devices,
    })
}

/// Reads a state file and parses its configuration; nothing else is touched.
pub fn load_state(path: &Path) -> Result<(MicroVmState, VmConfig), SnapshotError> {
    let state: MicroVmState = format::read_file(path)?;
    let config: VmConfig = serde_json::from_str(&state.config_json)
        .map_err(|e| SnapshotError::Config(e.to_string()))?;
    if config.machine_config.mem_size_mib != state.mem_mib
        || usize::from(config.machine_config.vcpu_count) != state.vcpus.len()
    {
        return Err(SnapshotError::Config(format!(
            "{} MiB and {} vCPUs configured, {} MiB and {} vCPU states saved",
            config.machine_config.mem_size_mib,
            config.machine_config.vcpu_count,
            state.mem_mib,
            state.vcpus.len()
        )));
    }
    Ok((state, config))
}

/// A fresh VM generation for a restored VM (never 0, which means "booted").
pub fn new_generation() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if got == 8 {
        u64::from_le_bytes(bytes)
    } else {
        // No entropy source: the time still differs between restores.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    };
    random.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    #[test]
    fn a_range_marks_every_page_it_touches_in_its_region() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(1 << 32), 1 << 20),
        ])
        .unwrap();
        let mut dirty = vec![vec![0u64; 4]; 2];
        // From the last 2 bytes of page 2 into page 3; then page 65 of the second region.
        mark_dirty(&mem, &mut dirty, 0x2ffe, 4);
        mark_dirty(&mem, &mut dirty, (1 << 32) + 65 * 4096, 1);
        // Outside RAM: nothing.
        mark_dirty(&mem, &mut dirty, 1 << 31, 4096);
        assert_eq!(dirty[0], vec![0b1100, 0, 0, 0]);
        assert_eq!(dirty[1], vec![0, 0b10, 0, 0]);
    }
}
