//! `wisp run`: boot a guest now, console on stdio, exit status from the guest's outcome.

use crate::cli::RunArgs;
use crate::device_args::{parse_disk, parse_fs, parse_net, parse_vsock, DeviceArgError};
use crate::terminal::TerminalClaim;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;
use wisp_api::{
    new_request_id, BootSource, Entropy, HostLimits, MachineConfig, VmConfig, VmResources,
    VmmAction,
};
use wisp_vmm::vmm_loop::{lock, VmmLoopError};
use wisp_vmm::x86_64::mptable::MAX_CPUS;
use wisp_vmm::{Controller, ControllerHooks, MicroVmOptions, Outcome, VmmLoop};

/// Exit status when the VMM could not build or run the VM.
pub const EXIT_VMM_ERROR: i32 = 1;
/// Exit status when the guest ended badly (triple fault, panic, KVM error).
pub const EXIT_GUEST_FAILURE: i32 = 3;

/// An unbuffered handle on one of our standard streams, for the vCPU threads.
pub fn dup_stream(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<File> {
    let owned: OwnedFd = fd.try_clone_to_owned()?;
    Ok(File::from(owned))
}

/// The configuration `wisp run`'s options describe.
pub fn config_from_args(args: &RunArgs) -> Result<VmConfig, DeviceArgError> {
    let drives = args
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| parse_disk(d, i))
        .collect::<Result<Vec<_>, _>>()?;
    let network_interfaces = args
        .nets
        .iter()
        .enumerate()
        .map(|(i, n)| parse_net(n, i))
        .collect::<Result<Vec<_>, _>>()?;
    let vsock = args.vsock.as_deref().map(parse_vsock).transpose()?;
    let fs = (args.fs.iter().enumerate())
        .map(|(i, f)| parse_fs(f, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VmConfig {
        boot_source: Some(BootSource {
            // clap makes --kernel required unless --restore is given (then this is unused).
            kernel_image_path: args.kernel.clone().unwrap_or_default(),
            initrd_path: args.initrd.clone(),
            boot_args: Some(args.cmdline.clone()),
        }),
        machine_config: MachineConfig {
            vcpu_count: args.vcpus,
            mem_size_mib: args.mem,
            smt: false,
            mem_shared: args.mem_shared,
            ..Default::default()
        },
        drives,
        network_interfaces,
        vsock,
        entropy: args.rng.then(Entropy::default),
        fs,
        ..Default::default()
    })
}

/// Builds and runs `config` through the controller (one `ConfigureAll`, then `InstanceStart`:
/// the same validation as every other front end); returns the process exit status.
/// `legacy_console_lifecycle`: see `MicroVmOptions`.
pub fn run_vm(
    start: Instant,
    config: &VmConfig,
    print_boot_time: bool,
    legacy_console_lifecycle: bool,
) -> i32 {
    run_vm_with(
        start,
        config,
        print_boot_time,
        legacy_console_lifecycle,
        host_limits(),
    )
}

/// `run_vm` validated against `limits`.
pub fn run_vm_with(
    start: Instant,
    config: &VmConfig,
    print_boot_time: bool,
    legacy_console_lifecycle: bool,
    limits: HostLimits,
) -> i32 {
    let actions = vec![
        VmmAction::ConfigureAll(Box::new(config.clone())),
        VmmAction::StartMicroVm,
    ];
    run_actions(
        start,
        actions,
        print_boot_time,
        legacy_console_lifecycle,
        limits,
    )
}

/// `wisp run --restore DIR`: loads and resumes the snapshot in `dir` through the controller
/// (the same `LoadSnapshot` as `PUT /snapshot/load`), console on stdio.
pub fn restore_vm(start: Instant, dir: &std::path::Path, limits: HostLimits) -> i32 {
    let files = wisp_vmm::snapshot::SnapshotDir::new(dir);
    let load = wisp_api::snapshot::SnapshotLoadParams {
        snapshot_path: files.state(),
        mem_file_path: Some(files.memory()),
        resume_vm: true,
        ..Default::default()
    };
    run_actions(
        start,
        vec![VmmAction::LoadSnapshot(load)],
        false,
        false,
        limits,
    )
}

/// Runs a VM the `actions` create, console on stdio; returns the process exit status.
fn run_actions(
    start: Instant,
    actions: Vec<VmmAction>,
    print_boot_time: bool,
    legacy_console_lifecycle: bool,
    limits: HostLimits,
) -> i32 {
    // Before the VM's threads exist, so they inherit the blocked ending signals (terminal.rs).
    let terminal = TerminalClaim::new(libc::STDIN_FILENO);
    let (stdout, stdin) = match (
        dup_stream(std::io::stdout().as_fd()),
        dup_stream(std::io::stdin().as_fd()),
    ) {
        (Ok(out), Ok(input)) => (out, input),
        (Err(e), _) | (_, Err(e)) => {
            report!("wisp: error: cannot set up the console: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let on_boot: Option<Box<dyn FnOnce(u64) + Send>> = if print_boot_time {
        Some(Box::new(|us| {
            let _ = writeln!(std::io::stderr(), "boot-time-us={us}");
        }))
    } else {
        None
    };
    let opts = MicroVmOptions {
        start,
        console_out: Box::new(stdout),
        console_in: Some(stdin),
        on_boot,
        on_first_entry: None,
        legacy_console_lifecycle,
    };
    let controller = Controller::new(VmResources::new(limits), opts, ControllerHooks::default());
    let vmm = match VmmLoop::new(controller) {
        Ok(vmm) => vmm,
        Err(e) => {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let request_id = new_request_id();
    {
        let shared = vmm.controller();
        let mut controller = lock(&shared);
        for action in actions {
            if let Err(e) = controller.handle(&request_id, action) {
                report!("wisp: error: {e}");
                return EXIT_VMM_ERROR;
            }
        }
    }
    // Our exit then waits for no kernel VM teardown: a helper does it after our parent has the
    // outcome (wisp_vmm::vm::teardown). Created after the start, off the path to the guest.
    if let Err(e) = wisp_vmm::vm::teardown::hand_off() {
        log::debug!("{e}");
    }
    let terminal = terminal.and_then(TerminalClaim::enable);
    let outcome = vmm.run();
    drop(terminal);
    exit_status(outcome)
}

/// The host's limits the configuration is validated against (no memory overcommit).
pub fn host_limits() -> HostLimits {
    HostLimits::with_max_vcpus(MAX_CPUS)
}

/// `host_limits`, with the memory ceiling lifted when `allow_overcommit`.
pub fn host_limits_with(allow_overcommit: bool) -> HostLimits {
    HostLimits {
        allow_overcommit,
        ..host_limits()
    }
}

/// The process exit status for how the VMM ended, with its one line on stderr.
pub fn exit_status(outcome: Result<Outcome, VmmLoopError>) -> i32 {
    match outcome {
        Ok(Outcome::Exited(exit)) if exit.is_clean() => {
            log::info!("{exit}");
            0
        }
        Ok(Outcome::Exited(exit)) => {
            report!("wisp: guest failed: {exit}");
            EXIT_GUEST_FAILURE
        }
        Ok(Outcome::NothingToRun) => 0,
        Ok(Outcome::StartFailed(e)) => {
            report!("wisp: error: cannot start the microVM: {e}");
            EXIT_VMM_ERROR
        }
        Err(e) => {
            report!("wisp: error: {e}");
            EXIT_VMM_ERROR
        }
    }
}
