//! The controller's snapshot actions: `CreateSnapshot` on a paused VM and `LoadSnapshot` into
//! a VMM with nothing configured (or its prepared shell). Every check that can fail on the
//! request's input (state file, memory file, configuration) runs before anything changes; a
//! refused load leaves the VMM as fresh as it was.

use crate::controller::{Controller, Outcome};
use crate::prepared::PreparedVm;
use crate::snapshot::memory_file::MemoryFile;
use crate::snapshot::{self, RestoreOptions};
use wisp_api::snapshot::{SnapshotCreateParams, SnapshotLoadParams, SnapshotType};
use wisp_api::{VmConfig, VmResources, VmState, VmmActionError, VmmData, VmmResult};

pub(crate) fn create(
    c: &mut Controller,
    request_id: &str,
    params: &SnapshotCreateParams,
) -> VmmResult {
    let refuse = VmmActionError::CreateSnapshot;
    if c.state() != VmState::Paused {
        return Err(VmmActionError::not_allowed(format!(
            "cannot create a snapshot: the microVM must be Paused; its state is {:?}",
            c.state()
        )));
    }
    let vm =
        c.vm.as_ref()
            .ok_or_else(|| VmmActionError::not_allowed("the microVM is not running"))?;
    let info = snapshot::create(
        vm,
        c.resources.vm_config(),
        &params.snapshot_path,
        &params.mem_file_path,
        match params.snapshot_type {
            SnapshotType::Full => snapshot::Kind::Full,
            SnapshotType::Diff => snapshot::Kind::Diff,
        },
    )
    .map_err(|e| refuse(e.to_string()))?;
    log::info!(
        "[{request_id}] snapshot created in {:?}: {} state bytes, {} memory bytes written",
        info.elapsed,
        info.state_bytes,
        info.memory_bytes_written
    );
    Ok(VmmData::Empty)
}

/// Whether anything that describes a guest has been configured (logger and metrics are the
/// VMM's own and may be set before a load, as in Firecracker).
fn guest_configured(config: &VmConfig) -> bool {
    let guest = VmConfig {
        logger: None,
        metrics: None,
        ..config.clone()
    };
    guest != VmConfig::default()
}

/// Firecracker's `network_overrides` and `vsock_override`: the restored devices use new host
/// backends (a tap, a socket path); each must name a device the snapshot has.
fn apply_overrides(config: &mut VmConfig, params: &SnapshotLoadParams) -> Result<(), String> {
    for o in &params.network_overrides {
        let iface = config
            .network_interfaces
            .iter_mut()
            .find(|i| i.iface_id == o.iface_id)
            .ok_or_else(|| {
                format!(
                    "network_overrides: the snapshot has no network interface {:?}",
                    o.iface_id
                )
            })?;
        iface.host_dev_name.clone_from(&o.host_dev_name);
    }
    if let Some(o) = &params.vsock_override {
        let vsock = config
            .vsock
            .as_mut()
            .ok_or("vsock_override: the snapshot has no vsock device")?;
        vsock.uds_path.clone_from(&o.uds_path);
    }
    Ok(())
}

pub(crate) fn load(c: &mut Controller, request_id: &str, params: &SnapshotLoadParams) -> VmmResult {
    let refuse = |e: String| VmmActionError::LoadSnapshot(e);
    let started = std::time::Instant::now();
    if c.state() != VmState::NotStarted || c.vm.is_some() {
        return Err(VmmActionError::not_allowed(format!(
            "cannot load a snapshot: a microVM was already started (state {:?})",
            c.state()
        )));
    }
    if guest_configured(c.resources.vm_config()) {
        return Err(VmmActionError::not_allowed(
            "cannot load a snapshot into a configured microVM: load it into a fresh `wisp \
             --api-sock` (logger and metrics may be set first)",
        ));
    }
    let mem_path = params.mem_file().map_err(refuse)?;
    let (state, mut config) =
        snapshot::load_state(&params.snapshot_path).map_err(|e| refuse(e.to_string()))?;
    apply_overrides(&mut config, params).map_err(refuse)?;
    let dirty_log = params.dirty_pages() || config.machine_config.track_dirty_pages;
    config.machine_config.track_dirty_pages = dirty_log;
    let mem_file = MemoryFile::open(mem_path, state.mem_mib).map_err(|e| refuse(e.to_string()))?;
    // The restored VM's configuration is the saved one, validated again (its disks and
    // sockets must still be there); it has no boot source, as it never boots. The VMM's own
    // logger and metrics stay as configured here.
    let restored = VmConfig {
        boot_source: None,
        logger: c.resources.vm_config().logger.clone(),
        metrics: c.resources.vm_config().metrics.clone(),
        ..config.clone()
    };
    let resources = VmResources::from_config(restored, c.resources.limits())
        .map_err(|e| refuse(format!("its configuration: {e}")))?;
    let vcpus = u8::try_from(state.vcpus.len()).unwrap_or(u8::MAX);
    if let Some(shell) = &c.shell {
        // Checked before the shell is taken: a snapshot too large for it changes nothing.
        if dirty_log && !shell.vm.dirty_log() {
            return Err(refuse(
                "track_dirty_pages: this VM shell was prepared without dirty page logging".into(),
            ));
        }
        if shell.mem_mib() < state.mem_mib || shell.vcpu_count() < vcpus {
            return Err(refuse(format!(
                "its guest ({} MiB, {vcpus} vCPUs) does not fit this VM shell ({} MiB, {} vCPUs)",
                state.mem_mib,
                shell.mem_mib(),
                shell.vcpu_count()
            )));
        }
    }
    let (shell, spent_shell) = match c.shell.take() {
        Some(shell) => (shell, true),
        None => {
            // Plain pages: the memory file is mapped over them.
            let shell = PreparedVm::prepare_backed(
                state.mem_mib,
                vcpus,
                wisp_api::HugePages::None,
                dirty_log,
                false,
            )
            .map_err(|e| VmmActionError::LoadSnapshot(e.to_string()))?;
            (shell, false)
        }
    };
    let shell_ready = started.elapsed();
    let generation = params
        .vm_generation
        .unwrap_or_else(snapshot::new_generation);
    let mut vm = match snapshot::restore(
        shell,
        &state,
        &config,
        &mem_file,
        RestoreOptions { generation },
    ) {
        Ok(vm) => vm,
        // A shell built for this request is gone with it: nothing changed.
        Err(e) if !spent_shell => return Err(refuse(e.to_string())),
        // A prepared shell is spent: this VMM cannot try again.
        Err(e) => {
            c.set_state(VmState::Failed);
            c.finish(Outcome::StartFailed(e.to_string()));
            return Err(refuse(e.to_string()));
        }
    };
    let Some(options) = c.options.take() else {
        return Err(VmmActionError::not_allowed(
            "cannot load a snapshot: the microVM has already been started",
        ));
    };
    vm.attach_host(options);
    let launched = if params.resume_vm {
        vm.start()
    } else {
        vm.start_paused()
    };
    if let Err(e) = launched {
        return Err(c.start_failed(e));
    }
    c.new_subscribers.extend(vm.take_subscribers());
    c.metrics_timer_wanted = resources.vm_config().metrics.is_some();
    c.vm = Some(vm);
    c.resources = resources;
    c.start_request = Some(request_id.to_string());
    log::info!(
        "[{request_id}] snapshot {} loaded in {:?} (checks{} {shell_ready:?}; generation \
         {generation:#x})",
        params.snapshot_path.display(),
        started.elapsed(),
        if spent_shell {
            ""
        } else {
            " and a new VM shell"
        },
    );
    c.set_state(if params.resume_vm {
        VmState::Running
    } else {
        VmState::Paused
    });
    Ok(VmmData::Empty)
}
