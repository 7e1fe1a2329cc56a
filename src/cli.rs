//! Command-line interface of `wisp`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Kernel command line used when none is given: console on COM1, reset through the i8042
/// (the only reset a microVM has), reboot at once on panic so the VMM sees it, no PCI probing.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 pci=off nomodule";

#[derive(Parser, Debug)]
#[command(
    name = "wisp",
    version,
    about = "Wisp: a lightweight KVM microVM monitor"
)]
pub struct Cli {
    /// Log level for the VMM's own messages (off, error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "WISP_LOG")]
    pub log_level: String,

    /// Run without the per-thread seccomp filters (docs/seccomp.md). For debugging only.
    #[arg(long, global = true)]
    pub no_seccomp: bool,

    /// Serve the REST API (Firecracker's resources) on this Unix socket; boot on InstanceStart.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,

    /// Boot at once from this JSON configuration (the API's schema, as one document).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Let the API socket's group connect too (mode 0660 with this group id instead of 0600).
    #[arg(long, value_name = "GID", requires = "api_sock")]
    pub api_sock_group: Option<u32>,

    /// Accept guests with more memory than this host has (refused by default).
    #[arg(long, global = true)]
    pub allow_overcommit: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Boot a guest now, with its console on this terminal.
    Run(RunArgs),
    /// Boot the demo microVM (the Wisp unikernel) and show its console and boot time.
    Demo(crate::demo::DemoArgs),
    /// A prepared VM shell driven by wispd over a control page (internal).
    #[command(hide = true)]
    Shell(ShellArgs),
    /// Talk to wispd: create, list, pause, resume, destroy VMs, show a console.
    Ctl(CtlArgs),
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    /// The control page memfd.
    #[arg(long)]
    pub control: i32,
    /// Eventfd wispd rings.
    #[arg(long)]
    pub doorbell: i32,
    /// Eventfd the shell rings.
    #[arg(long)]
    pub ack: i32,
    /// Guest memory to reserve, MiB.
    #[arg(long, default_value_t = wisp_api::config::DEFAULT_MEM_SIZE_MIB)]
    pub mem: u32,
    /// vCPUs to create.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    /// Where the guest's console output goes.
    #[arg(long)]
    pub console: Option<PathBuf>,
    /// Serve the VM's REST API on this socket once it runs.
    #[arg(long)]
    pub api_sock: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// wispd's socket.
    #[arg(long, default_value = "/run/wispd.sock")]
    pub socket: PathBuf,
    /// Id sent with the request and returned with its answer (default: generated), to follow
    /// it through wispd's log; 1-64 characters of A-Z a-z 0-9 . _ : -
    #[arg(long)]
    pub request_id: Option<String>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Create a VM from a JSON configuration (the REST API's schema); prints its id and timing.
    Create {
        #[arg(long)]
        config: PathBuf,
        /// Wait until the guest writes the boot timer and report that time too.
        #[arg(long)]
        wait_boot: bool,
    },
    /// List the VMs.
    List,
    /// Destroy a VM.
    Destroy { id: String },
    /// Pause a VM's vCPUs.
    Pause { id: String },
    /// Resume a paused VM.
    Resume { id: String },
    /// Print a VM's console output so far.
    Console { id: String },
    /// Prepared shells and running VMs.
    Status,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kernel image: an ELF vmlinux (PVH or 64-bit entry) or a bzImage.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = wisp_api::config::DEFAULT_MEM_SIZE_MIB)]
    pub mem: u32,
    /// Number of vCPUs.
    #[arg(long, default_value_t = wisp_api::config::DEFAULT_VCPU_COUNT)]
    pub vcpus: u8,
    /// Print `boot-time-us=N` on stderr when the guest writes the boot timer.
    #[arg(long)]
    pub boot_timer: bool,
    /// A virtio-blk disk: `path=FILE[,ro][,id=NAME][,root]` (repeatable).
    #[arg(long = "disk", value_name = "SPEC")]
    pub disks: Vec<String>,
    /// A virtio-net interface on a tap device: `tap=NAME[,mac=MAC]` (repeatable).
    #[arg(long = "net", value_name = "SPEC")]
    pub nets: Vec<String>,
    /// A virtio-vsock device, host side on a Unix socket: `cid=N,uds=PATH`.
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,
    /// A virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// For legacy guests without ACPI (e.g. Linux with `acpi=off`): also end the VM when
    /// Linux prints its halt/power-off line, and report a reset after its panic banner as a
    /// panic. Off by default: console text from any guest process would decide the VM's fate.
    #[arg(long)]
    pub legacy_console_lifecycle: bool,
}
