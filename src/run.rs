//! `wisp run`: boot a guest now, console on stdio, exit status from the guest's outcome.

use crate::cli::RunArgs;
use crate::device_args::{parse_disk, parse_net, parse_vsock, DeviceArgError};
use crate::terminal::RawTerminal;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;
use wisp_api::{BootSource, Entropy, MachineConfig, VmConfig};
use wisp_vmm::{MicroVm, MicroVmOptions, VmExit};

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
    Ok(VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: args.kernel.clone(),
            initrd_path: args.initrd.clone(),
            boot_args: Some(args.cmdline.clone()),
        }),
        machine_config: MachineConfig {
            vcpu_count: args.vcpus,
            mem_size_mib: args.mem,
            smt: false,
        },
        drives,
        network_interfaces,
        vsock,
        entropy: args.rng.then(Entropy::default),
        ..Default::default()
    })
}

/// Builds and runs `config`; returns the process exit status.
pub fn run_vm(start: Instant, config: &VmConfig, print_boot_time: bool) -> i32 {
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
    };
    let vm = match MicroVm::build(config, opts) {
        Ok(vm) => vm,
        Err(e) => {
            report!("wisp: error: {e}");
            return EXIT_VMM_ERROR;
        }
    };
    let terminal = RawTerminal::enable(libc::STDIN_FILENO);
    let outcome = vm.run();
    drop(terminal);
    match outcome {
        Ok(exit) if exit.is_clean() => {
            log::info!("{exit}");
            0
        }
        Ok(exit @ (VmExit::GuestPanic | VmExit::TripleFault { .. } | VmExit::Error(_))) => {
            report!("wisp: guest failed: {exit}");
            EXIT_GUEST_FAILURE
        }
        Ok(exit) => {
            report!("wisp: guest stopped: {exit}");
            EXIT_GUEST_FAILURE
        }
        Err(e) => {
            report!("wisp: error: {e}");
            EXIT_VMM_ERROR
        }
    }
}
