//! Restore: a snapshot put into a prepared VM shell. The shell's KVM VM, memory slots, vCPUs
//! and threads are reused as they are; the memory file is mapped over its RAM; the devices
//! are attached again from the saved configuration (which reopens disks, taps and the vsock
//! socket) and given their saved state; then the VM's and each vCPU's KVM state are set.
//! The guest's kernel, command line and boot tables are already in its memory: nothing is
//! loaded.

use super::kvm_state;
use super::memory_file::MemoryFile;
use super::state::MicroVmState;
use super::{snapshot_supported, SnapshotError};
use crate::legacy_devices::LegacyDevices;
use crate::loader;
use crate::memory::ram_ranges;
use crate::microvm::{add_noxs_page, MicroVm, MicroVmError};
use crate::prepared::PreparedVm;
use crate::vcpu::Vcpu;
use crate::vcpu_thread::Vcpus;
use crate::virtio_devices::{attach_virtio_devices, subscribers};
use std::sync::atomic::Ordering;
use wisp_api::VmConfig;
use wisp_devices::noxs_page::Sysctl;
use wisp_devices::virtio::{device_id, Balloon, Vsock};

/// How the restored VM differs from the one saved.
#[derive(Clone, Copy, Debug)]
pub struct RestoreOptions {
    /// The VM generation the noxs page shows the restored guest (non-zero; each clone of one
    /// snapshot gets its own).
    pub generation: u64,
}

fn device_err(what: impl Into<String>) -> impl FnOnce(String) -> SnapshotError {
    let what = what.into();
    move |reason| SnapshotError::Device { what, reason }
}

/// Restores `state` (whose configuration is `config`, memory `mem_file`) into `shell`.
pub fn restore(
    shell: PreparedVm,
    state: &MicroVmState,
    config: &VmConfig,
    mem_file: &MemoryFile,
    options: RestoreOptions,
) -> Result<MicroVm, SnapshotError> {
    let count = state.vcpus.len();
    let vcpu_count = u8::try_from(count).unwrap_or(u8::MAX);
    if shell.mem_mib() < state.mem_mib || usize::from(shell.vcpu_count()) < count {
        return Err(SnapshotError::DoesNotFitShell {
            want: format!("{} MiB and {count} vCPUs", state.mem_mib),
            have: format!("{} MiB and {} vCPUs", shell.mem_mib(), shell.vcpu_count()),
        });
    }
    if let Some(v) = state
        .devices
        .virtio
        .iter()
        .find(|v| !snapshot_supported(v.transport.device_type))
    {
        return Err(SnapshotError::Unsupported {
            kind: v.kind.clone(),
            id: v.id.clone(),
        });
    }
    // Phase times for the debug log (where a restore's ~0.2 ms goes).
    let started = std::time::Instant::now();
    mem_file.map_over(&shell.mem, &ram_ranges(state.mem_mib))?;
    let mapped = started.elapsed();
    if shell.vm.dirty_log() {
        // Guest memory is the memory file now: a later Diff snapshot is laid over it.
        shell
            .vm
            .take_dirty_bitmaps(&shell.mem)
            .map_err(|e| SnapshotError::DirtyLog(e.to_string()))?;
        shell
            .vm
            .set_dirty_base(Some(super::used_positions(&state.devices)));
    }

    let PreparedVm {
        vcpus,
        threads,
        mut devices,
        legacy,
        supported_cpuid,
        mut vm,
        mem,
        ..
    } = shell;
    let LegacyDevices {
        serial,
        i8042,
        boot_timer,
        acpi_pm,
        watch,
        exit,
        doorbells,
    } = legacy;

    // The guest's command line is in its memory already; this one only collects what
    // attaching writes to it.
    let mut cmdline = loader::new_cmdline("").map_err(MicroVmError::from)?;
    let virtio = attach_virtio_devices(&mut devices, vm.fd(), &mem, &mut cmdline, config)
        .map_err(MicroVmError::from)?;
    let saved = &state.devices;
    if virtio.len() != saved.virtio.len()
        || virtio
            .iter()
            .zip(&saved.virtio)
            .any(|(h, s)| h.kind != s.kind || h.id != s.id)
    {
        return Err(SnapshotError::Config(
            "its devices do not match the saved device states".into(),
        ));
    }
    let (sysctl, generation) = add_noxs_page(&mut devices)?;

    serial
        .lock()
        .map_err(|_| SnapshotError::Poisoned("serial"))?
        .restore_state(&saved.serial)
        .map_err(|e| SnapshotError::Device {
            what: "serial".into(),
            reason: e.to_string(),
        })?;
    i8042
        .lock()
        .map_err(|_| SnapshotError::Poisoned("i8042"))?
        .restore_state(&saved.i8042)
        .map_err(device_err("i8042"))?;
    acpi_pm
        .lock()
        .map_err(|_| SnapshotError::Poisoned("ACPI PM"))?
        .restore_state(&saved.acpi_pm)
        .map_err(device_err("ACPI PM"))?;
    watch.panicked.store(saved.panicked, Ordering::Release);
    let request = match saved.sysctl {
        1 => Sysctl::PowerOff,
        2 => Sysctl::Suspend,
        _ => Sysctl::None,
    };
    sysctl.post(request);
    generation.set(options.generation.max(1));
    for (handle, s) in virtio.iter().zip(&saved.virtio) {
        let mut t = handle
            .transport
            .lock()
            .map_err(|_| SnapshotError::Poisoned("virtio transport"))?;
        t.restore_state(&s.transport)
            .map_err(|e| SnapshotError::Device {
                what: format!("{} {}", s.kind, s.id),
                reason: e.to_string(),
            })?;
        if let (Some(saved), Some(balloon)) = (&s.balloon, t.device_mut::<Balloon>()) {
            balloon
                .restore_state(saved)
                .map_err(device_err(format!("{} {}", s.kind, s.id)))?;
        }
        if t.device_type() == device_id::VSOCK {
            if let Some(vsock) = t.device_mut::<Vsock>() {
                vsock.reset_transport_on_activation();
            }
        }
    }

    // The shell's PIT may still be being created beside the rest of its setup (vm.rs): it
    // must exist before its state is put back.
    vm.finish_setup().map_err(|e| SnapshotError::Device {
        what: "PIT".into(),
        reason: e.to_string(),
    })?;
    let devices_done = started.elapsed();
    kvm_state::restore_vm(vm.fd(), &state.vm)?;
    let mut vcpus: Vec<Vcpu> = vcpus.into_iter().take(count).collect();
    for (vcpu, saved) in vcpus.iter_mut().zip(&state.vcpus) {
        vcpu.configure_cpu(&supported_cpuid, vcpu_count)
            .map_err(MicroVmError::from)?;
        kvm_state::restore_vcpu(vcpu.fd(), saved)?;
    }

    log::debug!(
        "restore: memory mapped in {mapped:?}, devices by {devices_done:?}, KVM state by {:?}",
        started.elapsed()
    );
    let mut subs = vec![doorbells];
    subs.extend(subscribers(&virtio));
    let unstarted = vcpus.into_iter().zip(threads).collect();
    Ok(MicroVm {
        vcpus: Vcpus::default(),
        unstarted,
        first_entry: None,
        serial,
        boot_timer,
        watch: watch.clone(),
        io: devices.into_io(),
        subscribers: subs,
        exit,
        sysctl,
        generation,
        i8042,
        acpi_pm,
        panicked: watch.panicked,
        virtio,
        memory_registered: true,
        memory_from_file: true,
        vm,
        mem,
    })
}
